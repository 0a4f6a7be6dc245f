"""Notebook 02: reinforcement (docs/ALGORITHM.md section 1).

Train the baseline B further on the target text to get the reinforced model R,
which is "more Harry Potter" than B. By default R is a LoRA adapter on B, so both
share one copy of the weights (a ``ModelPair``: adapter off gives B back exactly).
``method="full"`` trains a full copy instead. ``run_stage`` is notebook 02's
heavy work as one call (the multi-process stage uses it; the notebook calls its
two steps, ``target_blocks`` and ``reinforce``, with a section of prose between).
"""
from __future__ import annotations

import copy

import pandas as pd
import torch

from . import config, corpus, models, scoring
from .pair import ModelPair, generic_logits
from .runs import is_main_process, tensor_digest
from .training import BlockDataset, TrainSettings, planned_settings, train_and_save


def target_blocks(run, cfg, tok) -> tuple[str, torch.Tensor]:
    """The run's target text (``cfg.target_text``, its first ``cfg.corpus_tokens``) and
    its blocks [n_blocks, cfg.block_size], both saved in ``corpus/`` for later notebooks."""
    text = corpus.target_text(cfg.target_text, tok, seed=cfg.seed, max_tokens=cfg.corpus_tokens,
                              sha256=cfg.target_sha256, allow_download=cfg.target_download)
    blocks = corpus.make_blocks(text, tok, cfg.block_size)
    if is_main_process():
        run.write_text("corpus/target.txt", text)
        run.save_tensors("corpus/blocks.safetensors", {"input_ids": blocks})
    return text, blocks


def reinforce(model, blocks: torch.Tensor, run, settings: TrainSettings, resume: bool = True,
              callbacks=(), tok=None, keep_base: bool = True) -> tuple[ModelPair, list[dict]]:
    """Train R on ``blocks`` ([n_blocks, block_size] token ids) and save it to the run
    (``reinforce/adapter`` for LoRA, ``reinforce/model`` for a full copy).

    Returns ``(pair, losses)``: B and R as a ``ModelPair``. A full R needs B beside
    it: a frozen copy of ``model`` is kept before training (twice the memory, as
    label generation needs both anyway), unless ``keep_base`` is False (a stage that
    only trains and saves R). A finished R is reused only if it was trained on the
    same blocks with the same settings.
    """
    keep = keep_base and settings.method == "full"
    base = copy.deepcopy(model).eval().requires_grad_(False) if keep else None
    trained, losses = train_and_save(model, BlockDataset(blocks), run, "reinforce", settings, resume=resume,
                                     callbacks=callbacks, tok=tok, inputs={"blocks": tensor_digest(blocks)})
    return ModelPair(trained, base=base), losses


def run_stage(run, cfg, device=None, resume: bool = True, keep_base: bool = True):
    """Notebook 02's heavy work in one call: the target blocks, then R trained on them.
    Returns ``(pair, tok, blocks, losses)``."""
    config.set_seed(cfg.seed)
    settings = planned_settings(cfg, "reinforce")   # GPU profiles: a clear error here if training cannot fit
    model, tok = models.load_model(cfg.model, device=device)
    _, blocks = target_blocks(run, cfg, tok)
    pair, losses = reinforce(model, blocks, run, settings, resume=resume, tok=tok, keep_base=keep_base)
    return pair, tok, blocks, losses


def load_reinforced(run, model_spec: str, method: str, device=None) -> tuple[ModelPair, object]:
    """B and R from an earlier notebook 02 run: ``(pair, tok)``."""
    if method == "lora":
        R, tok = models.load_model(model_spec, adapter=run.require("reinforce/adapter"), device=device)
        return ModelPair(R), tok
    R, tok = models.load_model(run.require("reinforce/model"), device=device)
    base, _ = models.load_model(model_spec, device=device)
    return ModelPair(R, base=base), tok


def compare_topk(pair: ModelPair, tok, prompt: str, k: int = 10) -> pd.DataFrame:
    """Top-k next tokens of B and of R side by side for one prompt."""
    with pair.trained() as R:
        r = scoring.next_token_topk(R, tok, prompt, k)
    with pair.base() as B:
        b = scoring.next_token_topk(B, tok, prompt, k)
    return pd.DataFrame({"baseline": b["token"], "p_baseline": b["prob"],
                         "reinforced": r["token"], "p_reinforced": r["prob"]})


def generic_topk(pair: ModelPair, tok, prompt: str, alpha: float, k: int = 10) -> pd.DataFrame:
    """Top-k of softmax(v_generic) after ``prompt``, next to B's probabilities."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    v_b, v_r = pair.logits(ids)
    p_gen = torch.softmax(generic_logits(v_b[0, -1], v_r[0, -1], alpha), -1).cpu()
    p_b = torch.softmax(v_b[0, -1], -1).cpu()
    values, idx = p_gen.topk(k)
    return pd.DataFrame({"token": [tok.decode([int(i)]) for i in idx], "prob": values.tolist(),
                         "p_baseline": p_b[idx].tolist()})


@torch.no_grad()
def reinforcement_effect(pair: ModelPair, blocks: torch.Tensor, max_blocks: int = 8, batch_size: int = 2,
                         sample_per_position: int = 64, seed: int = 0) -> dict:
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
        v_b, v_r = pair.logits(batch)
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
