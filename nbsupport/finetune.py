"""Notebook 05: finetuning on generic labels (docs/ALGORITHM.md section 5).

Train B with the ORIGINAL blocks as input and the generic labels as targets.

* ``targets="hard"``: plain cross-entropy on the argmax labels (the paper's recipe);
* ``targets="soft"``: cross-entropy against softmax of the top-k combined logits
  kept by label generation (an option beyond the paper);
* ``kl_weight > 0``: plus KL(P_B || P_model) on generic "retain" text, which
  holds the model near the baseline away from the target (beyond the paper);
* ``select`` (nats, soft targets): token-selective training, the soft targets only
  where they move away from B's own prediction by more than that, and KL(P_B || P_model)
  at the other positions of the same blocks (``selective_loss``; beyond the paper).

With LoRA (default) the unlearned model U is an adapter on B, saved in Hugging
Face format, together with merged full weights. ``train_recipes`` and
``train_variants`` are notebook 05's stage (the notebook and the multi-process
stage both call them): every recipe with its step curve, then the ablation and
sweep variants, so that evaluation only measures.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from . import config, corpus, generic_labels, models, probe, scoring
from .config import EMBEDDED
from .generic_labels import IGNORE, GenericLabels
from .label_signal import excess_divergence
from .pair import ModelPair
from .runs import is_main_process, tensor_digest
from .training import BlockDataset, TrainSettings, planned_settings, settings_from, train_and_save

RECIPES = {
    # the paper's recipe: hard labels, plain cross-entropy
    "paper": {"targets": "hard", "kl_weight": 0.0},
    # soft top-k targets plus a KL term on generic text (beyond the paper)
    "soft+kl": {"targets": "soft", "kl_weight": 1.0},
    # soft+kl, token-selective: the soft targets only where they move away from B's own
    # prediction by more than 1 nat, KL to B at the other positions (beyond the paper)
    "selective": {"targets": "soft", "kl_weight": 1.0, "select": 1.0},
}
KL_BLOCKS_PER_STEP = 2   # retain blocks in each KL term (a cost/variance compromise on CPU)


class LabelDataset(BlockDataset):
    """Blocks [n, L] with hard labels [n, L], optionally soft top-k targets [n, L, k]
    and, for the KL term, one retain block per item (``retain`` [m, L'], item i
    takes row i mod m: which retain text goes with which forget block is then fixed
    by the Trainer's seeded data order, so a resumed run sees the same pairs)."""

    def __init__(self, input_ids, labels, topk_ids=None, topk_values=None, retain=None):
        super().__init__(input_ids, labels)
        self.topk_ids, self.topk_values, self.retain = topk_ids, topk_values, retain

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if self.topk_ids is not None:
            item["topk_ids"] = self.topk_ids[i].long()
            item["topk_values"] = self.topk_values[i].float()
        if self.retain is not None:
            item["retain_ids"] = self.retain[i % len(self.retain)]
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
    mask = (labels[:, 1:] != IGNORE).float()
    return (per_pos * mask).sum() / mask.sum().clamp(min=1)


def selective_loss(logits: torch.Tensor, base_logits: torch.Tensor, topk_ids: torch.Tensor,
                   topk_values: torch.Tensor, labels: torch.Tensor, threshold: float,
                   temperature: float = 1.0) -> torch.Tensor:
    """Token-selective training (beyond the paper; the idea of Wan et al. 2025, "Not
    every token needs forgetting"): the soft cross-entropy only at the trained positions
    whose generic target moves away from B's prediction on the original text by more
    than ``threshold`` nats (``label_signal.excess_divergence``), and KL(P_B || P_model)
    at the other trained positions, each term averaged over its own positions.

    ``logits`` and ``base_logits`` [b, L, V] (the model's and B's on the same blocks;
    position t predicts token t+1), ``topk_*`` [b, L, k] and ``labels`` [b, L] in the HF
    convention, as in ``soft_cross_entropy``. A term without positions is 0.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), -1)                  # [b, L-1, V]
    logp_b = torch.log_softmax(base_logits[:, :-1].float(), -1)
    ids, vals = topk_ids[:, 1:].long(), topk_values[:, 1:]                 # [b, L-1, k]
    trained = labels[:, 1:] != IGNORE
    forget = trained & (excess_divergence(logp_b, ids, vals, temperature) > threshold)
    keep = trained & ~forget
    target = torch.softmax(vals.float() / temperature, -1)
    cross_entropy = -(target * logp.gather(-1, ids)).sum(-1)              # [b, L-1]
    kl = (logp_b.exp() * (logp_b - logp)).sum(-1)                          # KL(P_B || P_model)
    return ((cross_entropy * forget).sum() / forget.sum().clamp(min=1)
            + (kl * keep).sum() / keep.sum().clamp(min=1))


def kl_retain(model, input_ids: torch.Tensor) -> torch.Tensor:
    """KL(P_B || P_model) per position, averaged: [b, L] retain tokens in, scalar out.

    B is the same model with its adapter disabled (no gradient)."""
    logp = torch.log_softmax(model(input_ids=input_ids).logits.float(), -1)
    with torch.no_grad(), ModelPair(model).base() as B:
        logp_b = torch.log_softmax(B(input_ids=input_ids).logits.float(), -1)
    return F.kl_div(logp, logp_b, log_target=True, reduction="none").sum(-1).mean()


def make_trainer_class(targets: str, kl_weight: float, temperature: float = 1.0, select: float | None = None):
    """A Trainer whose loss is the chosen recipe (see the module docstring); with
    ``select`` (soft targets, LoRA) the forget term is ``selective_loss``."""
    if targets not in ("hard", "soft"):
        raise ValueError(f"targets must be 'hard' or 'soft', got {targets!r}")
    if select is not None and targets != "soft":
        raise ValueError("select (token-selective training) needs soft targets: targets='soft'")

    class UnlearningTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            topk_ids, topk_values = inputs.pop("topk_ids", None), inputs.pop("topk_values", None)
            retain_ids = inputs.pop("retain_ids", None)
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"] if targets == "hard" else None)
            if targets == "hard":
                loss = out.loss
            elif select is not None:
                with torch.no_grad(), ModelPair(model).base() as B:
                    base_logits = B(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                loss = selective_loss(out.logits, base_logits, topk_ids, topk_values, inputs["labels"], select,
                                      temperature)
            else:
                loss = soft_cross_entropy(out.logits, topk_ids, topk_values, inputs["labels"], temperature)
            if kl_weight > 0:
                loss = loss + kl_weight * kl_retain(model, retain_ids[:KL_BLOCKS_PER_STEP])
            return (loss, out) if return_outputs else loss

    return UnlearningTrainer


def finetune(model, labels: GenericLabels, alpha: float, run, settings: TrainSettings, targets: str = "hard",
             kl_weight: float = 0.0, retain: torch.Tensor | None = None, out: str = "finetune",
             callbacks: Sequence = (), resume: bool = True, save_merged: bool = True, tok=None,
             temperature: float = 1.0, select: float | None = None):
    """Train B on the generic labels of ``alpha`` (``generic_labels.load(run)``); save
    U to ``<out>/adapter`` (and ``<out>/merged``) and the losses to ``<out>/losses.json``.

    Returns ``(U, losses)``. ``retain`` [n, L] are generic-text blocks for the KL term.
    A finished training is reused only if it was made from the same labels (and
    retain text) with the same settings; otherwise it is trained again.
    """
    soft = targets == "soft"
    hard = labels.labels(alpha)
    topk_ids, topk_values = labels.soft(alpha) if soft else (None, None)
    if select is not None and settings.method != "lora":
        raise ValueError("token-selective training (select) needs the baseline in memory: use method='lora'")
    if kl_weight > 0:
        if settings.method != "lora":
            raise ValueError("the KL term needs the baseline in memory: use method='lora'")
        if retain is None or len(retain) == 0:
            raise ValueError("a KL term needs retain blocks (generic text): pass retain=retain_blocks(tok, L)")
    dataset = LabelDataset(labels.input_ids, hard, topk_ids, topk_values, retain if kl_weight > 0 else None)
    recipe = f"{targets} kl={kl_weight:g} T={temperature:g}" + ("" if select is None else f" select={select:g}")
    inputs = {"labels": labels.digest(alpha, soft), "recipe": recipe,
              **({"retain": tensor_digest(retain)} if kl_weight > 0 else {})}
    return train_and_save(model, dataset, run, out, settings, resume=resume, callbacks=callbacks,
                          trainer_class=make_trainer_class(targets, kl_weight, temperature, select), tok=tok,
                          save_merged=save_merged, inputs=inputs)


class StepProbe(TrainerCallback):
    """Measures forgetting and keeping every ``every`` optimizer steps.

    Records ``{"step", "familiarity", "perplexity"}`` in ``self.history``: the mean
    target probability on ``probes`` and perplexity on ``texts``, both with the
    course's scorers, so the curve ends on the same instrument as the final
    measure of the same probes and texts. The first record is taken when training
    starts, at the step it starts from: step 0 for a fresh run, the checkpoint's
    step after a resume. With ``path`` the history is saved after every record and
    read back on a resume, so an interrupted curve continues with the right step
    numbers. ``on_record(history)`` is called after each measurement (a live plot).
    ``start`` (a record with ``familiarity`` and ``perplexity``) is the step-0 record
    when it was already measured on the same starting model with the same probes and
    texts (several trainings from B: one step-0 measure serves them all); it is then
    not measured again.
    """

    def __init__(self, tok, probes, texts, every: int = 10, batch_size: int = 16, on_record=None,
                 path: str | Path | None = None, start: dict | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if start is not None and not (isinstance(start, dict) and {"familiarity", "perplexity"} <= set(start)):
            raise ValueError("start must be a record with 'familiarity' and 'perplexity' (a history's first entry)")
        self.start = None if start is None else {**start, "step": 0}
        self.tok, self.probes, self.texts, self.every = tok, probes, texts, every
        self.batch_size, self.on_record, self.path = batch_size, on_record, path
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.path is not None and Path(self.path).is_file():
            earlier = json.loads(Path(self.path).read_text())
            self.history = [h for h in earlier if h["step"] < state.global_step]
        if self.start is not None and state.global_step == 0:
            self.history = []
            self._append(dict(self.start))
        self.record(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.record(model, state.global_step)

    def record(self, model, step: int) -> None:
        if self.history and self.history[-1]["step"] == step:
            return
        table = probe.token_familiarity(model, self.tok, self.probes, self.batch_size, progress=False)
        ppl = scoring.perplexity(model, self.tok, self.texts) if self.texts else float("nan")
        self._append({"step": step, "familiarity": probe.familiarity_score(table), "perplexity": ppl})

    def _append(self, record: dict) -> None:
        self.history.append(record)
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(self.history))
        if self.on_record:
            self.on_record(self.history)


def choose_recipe(histories: dict[str, list[dict]], max_perplexity_rise: float = scoring.PERPLEXITY_LIMIT_PCT) -> str:
    """The recipe to carry forward, chosen by measurement: the largest drop in
    familiarity at the last step (on the step probes, which come from the
    development half) among those whose perplexity rose at most
    ``max_perplexity_rise`` percent; if none stays within it, the one whose
    perplexity rose least. ``histories`` maps a recipe to its ``StepProbe.history``."""
    return recipe_choice(histories, max_perplexity_rise)[0]


def recipe_choice(histories: dict[str, list[dict]],
                  max_perplexity_rise: float = scoring.PERPLEXITY_LIMIT_PCT) -> tuple[str, str]:
    """``choose_recipe``'s choice and why, in words: ``(name, reason)``."""
    if not histories:
        raise ValueError("no recipe was trained")

    def drop(h):
        return 1 - h[-1]["familiarity"] / h[0]["familiarity"]

    def rise(h):
        return scoring.rise_pct(h[0]["perplexity"], h[-1]["perplexity"])

    if len(histories) == 1:
        return next(iter(histories)), "the only recipe trained"
    within = {name: h for name, h in histories.items() if rise(h) <= max_perplexity_rise}
    if len(within) == 1:
        return (next(iter(within)), f"the only recipe whose perplexity rose at most {max_perplexity_rise:g}% "
                                    "(the rule: the largest drop on the step probes within that limit)")
    if within:
        return (max(within, key=lambda name: drop(within[name])),
                f"the largest drop on the step probes with a perplexity rise of at most {max_perplexity_rise:g}%")
    return (min(histories, key=lambda name: rise(histories[name])),
            f"no recipe stayed within +{max_perplexity_rise:g}% perplexity: the one whose perplexity rose least")


def retain_blocks(tok, block_size: int) -> torch.Tensor:
    """The retain text (``corpus.retain_texts``) as [n, block_size] blocks (KL term)."""
    return corpus.make_blocks("\n\n".join(corpus.retain_texts()), tok, block_size)


def train_variant(cfg, run, labels: GenericLabels, alpha: float, recipe: str, out: str, device=None,
                  recipe_options: dict | None = None, **overrides):
    """Train one more unlearned model from B (an ablation or a sweep point) with
    the profile's settings, ``overrides`` applied to them (e.g. ``epochs=1``,
    ``learning_rate=1e-4``) and ``recipe_options`` to the recipe (e.g.
    ``{"kl_weight": 0.5, "temperature": 0.5}``). Returns ``(U, tok)``."""
    config.set_seed(cfg.seed)
    model, tok = models.load_model(cfg.model, device=device)
    settings = replace(settings_from(cfg, "finetune"), **overrides)
    options = {**RECIPES[recipe], **(recipe_options or {})}
    U, _ = finetune(model, labels, alpha, run, settings, **options, retain=retain_blocks(tok, cfg.block_size),
                    out=out, save_merged=False, tok=tok)
    return U, tok


# ----------------------------------------------------------------- notebook 05's stage
def step_probes(cfg) -> list:
    """The token probes measured along the steps: the first ``cfg.step_probes`` of the
    development half (the recipe is chosen on them, never on the report half)."""
    return probe.split(probe.load_probes("hp_token"), "dev")[:cfg.step_probes]


def train_recipes(cfg, run, labels: GenericLabels, device=None, resume: bool = True) -> tuple[dict, dict]:
    """Every recipe of ``cfg.finetune_recipes`` from B, each with its step curve on
    development probes (``finetune/<recipe>/steps.json``). Returns ``(histories,
    losses)`` by recipe. On several processes every one measures (under FSDP a
    forward pass needs them all) and the first writes."""
    probes = step_probes(cfg)
    settings = planned_settings(cfg, "finetune")   # GPU profiles: a clear error here if training cannot fit
    histories, losses = {}, {}
    for recipe in cfg.finetune_recipes:
        config.set_seed(cfg.seed)
        model, tok = models.load_model(cfg.model, device=device)
        path = run.path(f"finetune/{recipe}/steps.json") if is_main_process() else None
        steps = StepProbe(tok, probes, corpus.heldout_texts(limit=1), every=cfg.probe_every, path=path)
        retain = retain_blocks(tok, cfg.block_size)
        options = RECIPES[recipe]
        print(f"--- recipe {recipe!r}: {options['targets']} targets, KL weight {options['kl_weight']:g}"
              + (f", forget only above {options['select']:g} nat{'s' * (options['select'] != 1)}"
                 if options.get("select") is not None else ""))
        U, losses[recipe] = finetune(model, labels, cfg.alpha, run, settings, **RECIPES[recipe], retain=retain,
                                     out=f"finetune/{recipe}", callbacks=[steps], resume=resume, tok=tok)
        histories[recipe] = steps.history
        if is_main_process():
            run.write_json(f"finetune/{recipe}/steps.json", steps.history)
        del model, U
    return histories, losses


def variant_folder(name: str) -> str:
    """The folder of a variant: ``finetune/variants/<name with - for spaces and =>``."""
    return "finetune/variants/" + name.replace(" ", "-").replace(",", "").replace("=", "-")


def planned_variants(cfg, run, labels: GenericLabels) -> dict[str, tuple]:
    """The ablation (with ``cfg.ablations`` and notebook 04's reinforcement-only labels)
    and the sweeps: ``{name: (group, labels, alpha, setting overrides)}``."""
    variants, short = {}, {"epochs": cfg.ablation_epochs}
    if cfg.ablations and run.exists(f"{generic_labels.ABLATION_OUT}/meta.json"):
        only_r = generic_labels.load(run, generic_labels.ABLATION_OUT)
        variants["reinforcement only"] = ("ablation", only_r, cfg.alpha, short)
        variants["anchors only"] = ("ablation", labels, 0.0, short)
        variants["both"] = ("ablation", labels, cfg.alpha, short)
    for alpha in cfg.sweep_alphas:
        variants[f"alpha={alpha:g}, 1 epoch"] = ("sweep", labels, alpha, {"epochs": 1.0})
    for lr in cfg.sweep_lrs:
        variants[f"lr={lr:g}, 1 epoch"] = ("sweep", labels, cfg.alpha, {"epochs": 1.0, "learning_rate": lr})
    return variants


def train_variants(cfg, run, labels: GenericLabels, recipe: str, device=None) -> dict[str, dict]:
    """Train every planned variant with ``recipe`` (the one the step curves chose);
    record them in ``finetune/variants.json`` and return that record."""
    trained = {}
    for name, (group, labels_of, alpha, overrides) in planned_variants(cfg, run, labels).items():
        out = variant_folder(name)
        print(f"--- {group}: {name}")
        train_variant(cfg, run, labels_of, alpha, recipe, out=out, device=device, **overrides)
        trained[name] = {"group": group, "adapter": f"{out}/adapter", "alpha": alpha, "recipe": recipe, **overrides}
    if is_main_process():
        run.write_json("finetune/variants.json", trained)
    return trained


PAPER_SETTING = {  # Eldan & Russinovich (2023), as restated in docs/ALGORITHM.md sections 1 and 5
    "model": "Llama-2-7b-chat (7B)", "target text (tokens)": "~3.1M (2.1M books + ~1M synthetic)",
    "block size": "512", "finetuning": "full", "learning rate": "1e-06", "epochs": "2",
    "batch (sequences x accumulation)": "8 x 16", "optimizer steps": "~120-150",
}


def paper_comparison(cfg, n_blocks: int, steps: int) -> pd.DataFrame:
    """The paper's finetuning setting next to this run's, row by row, so "the paper's
    recipe" on a laptop says plainly what it keeps (hard labels, plain cross-entropy)
    and what it changes (model, text, LoRA, learning rate, steps)."""
    model = f"{models.EMBEDDED_NAME} (embedded)" if cfg.model == EMBEDDED else cfg.model
    this = {"model": model, "target text (tokens)": f"{n_blocks * cfg.block_size:,}",
            "block size": str(cfg.block_size), "finetuning": cfg.finetune_method,
            "learning rate": f"{cfg.finetune_lr:g}", "epochs": f"{cfg.finetune_epochs:g}",
            "batch (sequences x accumulation)": f"{cfg.finetune_batch_size} x {cfg.finetune_grad_accum}",
            "optimizer steps": str(steps)}
    return pd.DataFrame({"paper": PAPER_SETTING, "this run": this})
