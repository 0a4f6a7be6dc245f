"""Step 4: finetuning on generic labels (ALGORITHM.md section 5).

Train B with the ORIGINAL blocks as input and the generic labels as targets.

* ``targets="hard"``: plain cross-entropy on the argmax labels (the paper's recipe);
* ``targets="soft"``: cross-entropy against softmax of the top-k combined logits
  kept by label generation (an option beyond the paper);
* ``kl_weight > 0``: plus KL(P_B || P_model) on generic "retain" text, which
  holds the model near the baseline away from the target (beyond the paper).

With LoRA (default) the unlearned model U is an adapter on B, saved in Hugging
Face format, together with merged full weights.
"""
from __future__ import annotations

from itertools import cycle
from typing import Sequence

import torch
import torch.nn.functional as F

from . import labels as labels_mod
from .training import BlockDataset, TrainSettings, attach_lora, loss_history, save_model, train

RECIPES = {
    # the paper's recipe: hard labels, plain cross-entropy
    "paper": {"targets": "hard", "kl_weight": 0.0},
    # soft top-k targets plus a KL term on generic text (the best measured start)
    "soft+kl": {"targets": "soft", "kl_weight": 1.0},
}


class SoftLabelDataset(BlockDataset):
    """Blocks with hard labels [n, L] and soft top-k targets [n, L, k]."""

    def __init__(self, input_ids, labels, topk_ids=None, topk_values=None):
        super().__init__(input_ids, labels)
        self.topk_ids, self.topk_values = topk_ids, topk_values

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if self.topk_ids is not None:
            item["topk_ids"] = self.topk_ids[i].long()
            item["topk_values"] = self.topk_values[i].float()
        return item


def soft_cross_entropy(logits: torch.Tensor, topk_ids: torch.Tensor, topk_values: torch.Tensor,
                       labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy against softmax(top-k generic logits / T), averaged over trained positions.

    ``logits`` [b, L, V] predict token t+1 at t; ``topk_*`` [b, L, k] and
    ``labels`` [b, L] are in the HF convention (aligned with input_ids), so
    position t's target sits at t+1. Positions with label -100 are skipped.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), -1)                 # [b, L-1, V]
    ids, vals = topk_ids[:, 1:], topk_values[:, 1:]                       # [b, L-1, k]
    target = torch.softmax(vals / temperature, -1)
    per_pos = -(target * logp.gather(-1, ids)).sum(-1)                    # [b, L-1]
    mask = (labels[:, 1:] != labels_mod.IGNORE).float()
    return (per_pos * mask).sum() / mask.sum().clamp(min=1)


def kl_retain(model, input_ids: torch.Tensor) -> torch.Tensor:
    """KL(P_B || P_model) per position, averaged: [b, L] retain tokens in, scalar out.

    B is the same model with its adapter disabled (no gradient)."""
    logp = torch.log_softmax(model(input_ids=input_ids).logits.float(), -1)
    with torch.no_grad(), model.disable_adapter():
        logp_b = torch.log_softmax(model(input_ids=input_ids).logits.float(), -1)
    return F.kl_div(logp, logp_b, log_target=True, reduction="none").sum(-1).mean()


def make_trainer_class(targets: str, kl_weight: float, retain: torch.Tensor | None, temperature: float = 1.0):
    """A Trainer whose loss is the chosen recipe (see the module docstring)."""
    from transformers import Trainer

    if targets not in ("hard", "soft"):
        raise ValueError(f"targets must be 'hard' or 'soft', got {targets!r}")
    if kl_weight > 0 and (retain is None or len(retain) == 0):
        raise ValueError("a KL term needs retain blocks (generic text)")
    retain_batches = cycle(list(retain.split(2))) if kl_weight > 0 else None

    class UnlearningTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            topk_ids, topk_values = inputs.pop("topk_ids", None), inputs.pop("topk_values", None)
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"] if targets == "hard" else None)
            if targets == "hard":
                loss = out.loss
            else:
                loss = soft_cross_entropy(out.logits, topk_ids, topk_values, inputs["labels"], temperature)
            if kl_weight > 0:
                loss = loss + kl_weight * kl_retain(model, next(retain_batches).to(loss.device))
            return (loss, out) if return_outputs else loss

    return UnlearningTrainer


def finetune(model, data: dict, alpha: float, run, settings: TrainSettings, targets: str = "hard",
             kl_weight: float = 0.0, retain: torch.Tensor | None = None, out: str = "finetune",
             callbacks: Sequence = (), resume: bool = True, save_merged: bool = True, tok=None):
    """Train B on the generic labels of ``alpha`` from ``labels.load(run)``; save
    U to ``<out>/adapter`` (and ``<out>/merged``) and the losses to ``<out>/losses.json``.

    Returns ``(U, losses)``. ``retain`` [n, L] are generic-text blocks for the KL term.
    """
    if settings.method == "lora":
        model = attach_lora(model, settings)
    else:
        model.requires_grad_(True)
        if kl_weight > 0:
            raise ValueError("the KL term needs the baseline in memory: use method='lora'")
    key = f"labels@{alpha:g}"
    if key not in data:
        raise KeyError(f"no labels for alpha={alpha:g}; have {sorted(k for k in data if k.startswith('labels@'))}")
    soft = targets == "soft"
    if soft and f"topk_ids@{alpha:g}" not in data:
        raise ValueError("soft targets need top-k logits: generate labels with SOFT_TOP_K > 0")
    dataset = SoftLabelDataset(data["input_ids"], data[key], data[f"topk_ids@{alpha:g}"] if soft else None,
                               data[f"topk_values@{alpha:g}"] if soft else None)
    trainer_class = make_trainer_class(targets, kl_weight, retain)
    trainer = train(model, dataset, run.path(f"{out}/checkpoints"), settings, resume=resume,
                    callbacks=callbacks, trainer_class=trainer_class)
    with run.atomic_dir(f"{out}/adapter" if settings.method == "lora" else f"{out}/model") as tmp:
        save_model(model, tmp)
    losses = loss_history(trainer)
    run.write_json(f"{out}/losses.json", losses)
    if save_merged and settings.method == "lora":
        save_merged_copy(model, run, f"{out}/merged", tok)
    return model, losses


def save_merged_copy(model, run, name: str, tok=None) -> None:
    """Full weights with the adapter merged in (a plain HF model directory, with
    the tokenizer if given), without touching ``model``."""
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    with run.atomic_dir(name) as tmp:
        merged.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
    del merged


class StepProbe:
    """A Trainer callback that measures forgetting and keeping every ``every`` steps.

    Records ``{"step", "familiarity", "perplexity"}`` in ``self.history`` (step 0
    is measured at the start): the mean target probability on the token probes,
    and perplexity on ``texts`` (generic eval text). ``on_record(history)`` is
    called after each measurement, e.g. to redraw a live plot.
    """

    def __init__(self, tok, probes, texts, every: int = 10, batch_size: int = 16, on_record=None):
        from transformers import TrainerCallback

        self.tok, self.probes, self.texts, self.every = tok, probes, texts, every
        self.batch_size, self.on_record, self.history = batch_size, on_record, []
        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                if not outer.history:
                    outer.record(model, state.global_step)

            def on_step_end(self, args, state, control, model=None, **kw):
                if state.global_step % outer.every == 0 or state.global_step == state.max_steps:
                    outer.record(model, state.global_step)

        self.callback = _Callback()

    def record(self, model, step: int) -> None:
        from . import evaluate, probe

        if self.history and self.history[-1]["step"] == step:
            return
        was = model.training
        model.eval()
        fam = probe.familiarity_score(probe.token_familiarity(model, self.tok, self.probes, self.batch_size,
                                                              progress=False))
        ppl = evaluate.perplexity(model, self.tok, self.texts) if self.texts else float("nan")
        model.train(was)
        self.history.append({"step": step, "familiarity": fam, "perplexity": ppl})
        if self.on_record:
            self.on_record(self.history)


def settings_from(cfg) -> TrainSettings:
    """Finetuning settings from a resolved profile (``config.resolve``)."""
    return TrainSettings(method=cfg.finetune_method, epochs=cfg.finetune_epochs, learning_rate=cfg.finetune_lr,
                         batch_size=cfg.finetune_batch_size, grad_accum=cfg.finetune_grad_accum,
                         max_steps=cfg.finetune_max_steps, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                         seed=cfg.seed, save_steps=50)


def retain_blocks(tok, block_size: int) -> torch.Tensor:
    """The "retain" half of the generic texts as [n, block_size] blocks (KL term)."""
    from . import corpus, evaluate
    return corpus.make_blocks("\n\n".join(evaluate.generic_split("retain")), tok, block_size)


def train_variant(cfg, run, data: dict, alpha: float, recipe: str, out: str, device=None, **overrides):
    """Train one more unlearned model from B (an ablation or a sweep point) with
    the profile's settings, ``overrides`` applied (e.g. ``epochs=1``,
    ``learning_rate=1e-4``). Returns ``(U, tok)``; U is a LoRA adapter on B."""
    from dataclasses import replace

    from . import config, models
    config.set_seed(cfg.seed)
    model, tok = models.load_model(cfg.model, device=device)
    settings = replace(settings_from(cfg), **overrides)
    U, _ = finetune(model, data, alpha, run, settings, **RECIPES[recipe], retain=retain_blocks(tok, cfg.block_size),
                    out=out, save_merged=False, tok=tok)
    return U, tok
