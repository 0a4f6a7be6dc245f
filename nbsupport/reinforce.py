"""Step 1: reinforcement (ALGORITHM.md section 1).

Train the baseline B further on the target text to get the reinforced model R,
which is "more Harry Potter" than B. By default R is a LoRA adapter on B, so both
share one copy of the weights: ``with model.disable_adapter():`` gives B back
exactly. ``method="full"`` trains a full copy instead.
"""
from __future__ import annotations

from contextlib import nullcontext

import pandas as pd
import torch

from . import probe
from .training import BlockDataset, TrainSettings, attach_lora, loss_history, save_model, train


def settings_from(cfg) -> TrainSettings:
    """Reinforcement settings from a resolved profile (``config.resolve``)."""
    return TrainSettings(method=cfg.reinforce_method, epochs=cfg.reinforce_epochs,
                         learning_rate=cfg.reinforce_lr, batch_size=cfg.reinforce_batch_size,
                         grad_accum=cfg.reinforce_grad_accum, max_steps=cfg.reinforce_max_steps,
                         lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed)


def reinforce(model, blocks: torch.Tensor, run, settings: TrainSettings, resume: bool = True,
              callbacks=()):
    """Train R on ``blocks`` ([n_blocks, block_size] token ids) and save it to the run.

    Returns ``(R, losses)``. With LoRA, R is a PeftModel around ``model``; the
    adapter is saved to ``reinforce/adapter``, a full model to ``reinforce/model``.
    """
    if settings.method == "lora":
        model = attach_lora(model, settings)
    else:
        model.requires_grad_(True)
    trainer = train(model, BlockDataset(blocks), run.path("reinforce/checkpoints"), settings,
                    resume=resume, callbacks=callbacks)
    with run.atomic_dir("reinforce/adapter" if settings.method == "lora" else "reinforce/model") as tmp:
        save_model(model, tmp)
    losses = loss_history(trainer)
    run.write_json("reinforce/losses.json", losses)
    return model, losses


def load_reinforced(run, cfg, device=None):
    """R from an earlier notebook 02 run: ``(R, tok, base)``. For a LoRA R, ``base``
    is None (switch the adapter off to get B); for a full R, ``base`` is B."""
    from . import models

    if cfg.reinforce_method == "lora":
        R, tok = models.load_model(cfg.model, adapter=run.require("reinforce/adapter"), device=device)
        return R, tok, None
    R, tok = models.load_model(run.require("reinforce/model"), device=device)
    base, _ = models.load_model(cfg.model, device=device)
    return R, tok, base


def base_view(model, base=None):
    """Context in which ``model`` computes the baseline: the adapter switched off
    (LoRA), or nothing to do when a separate ``base`` model is given (full R)."""
    if base is not None or not hasattr(model, "disable_adapter"):
        return nullcontext()
    return model.disable_adapter()


@torch.no_grad()
def paired_logits(model, input_ids: torch.Tensor, base=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_B, v_R) for the same input: both [batch, seq, vocab], float32, on the model's device.

    ``model`` is R; B is ``base`` if given, else R with its adapter disabled.
    """
    input_ids = input_ids.to(next(model.parameters()).device)
    v_r = model(input_ids=input_ids).logits.float()
    with base_view(model, base):
        v_b = (base or model)(input_ids=input_ids).logits.float()
    return v_b, v_r


def compare_topk(model, tok, prompt: str, k: int = 10, base=None) -> pd.DataFrame:
    """Top-k next tokens of B and of R side by side for one prompt."""
    r = probe.next_token_topk(model, tok, prompt, k)
    with base_view(model, base):
        b = probe.next_token_topk(base or model, tok, prompt, k)
    return pd.DataFrame({"baseline": b["token"], "p_baseline": b["prob"],
                         "reinforced": r["token"], "p_reinforced": r["prob"]})


@torch.no_grad()
def reinforcement_effect(model, blocks: torch.Tensor, max_blocks: int = 8, batch_size: int = 2,
                         sample_per_position: int = 64, base=None, seed: int = 0) -> dict:
    """What reinforcement changed on the target text (the first ``max_blocks`` blocks).

    Returns
    * ``diff_sample`` [positions * sample_per_position]: v_R - v_B at randomly sampled
      vocabulary entries, for a histogram (the full [positions, vocab] tensor would
      not fit in memory on a real corpus);
    * ``gain_sum`` and ``gain_count`` [vocab]: per token id, the summed gain in
      log-probability of that token where it is the text's actual next token,
      and how often it occurs there.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = blocks[:max_blocks]
    samples, gain_sum, gain_count = [], None, None
    for lo in range(0, len(blocks), batch_size):
        batch = blocks[lo:lo + batch_size]
        v_b, v_r = paired_logits(model, batch, base)
        diff = (v_r - v_b).flatten(0, 1).cpu()          # [positions, vocab]
        cols = torch.randint(diff.shape[1], (diff.shape[0], sample_per_position), generator=gen)
        samples.append(diff.gather(1, cols).flatten())
        nxt = batch[:, 1:].to(v_b.device).unsqueeze(-1)  # [b, seq-1, 1]
        gain = (torch.log_softmax(v_r[:, :-1], -1).gather(-1, nxt)
                - torch.log_softmax(v_b[:, :-1], -1).gather(-1, nxt)).flatten().cpu()
        if gain_sum is None:
            gain_sum, gain_count = torch.zeros(diff.shape[1]), torch.zeros(diff.shape[1])
        gain_sum.index_add_(0, nxt.flatten().cpu(), gain)
        gain_count.index_add_(0, nxt.flatten().cpu(), torch.ones_like(gain))
    return {"diff_sample": torch.cat(samples), "gain_sum": gain_sum, "gain_count": gain_count}


def most_boosted(effect: dict, tok, k: int = 20, min_count: int = 3) -> pd.DataFrame:
    """The ``k`` tokens whose log-probability, where they really come next in the
    target text, reinforcement raised most on average (seen at least ``min_count`` times)."""
    count = effect["gain_count"]
    mean = torch.where(count >= min_count, effect["gain_sum"] / count.clamp(min=1), torch.tensor(float("-inf")))
    k = min(k, int((count >= min_count).sum()))
    values, ids = mean.topk(k)
    return pd.DataFrame({"token": [tok.decode([int(i)]) for i in ids], "mean_logprob_gain": values.tolist(),
                         "occurrences": count[ids].long().tolist()})
