"""Other unlearning methods, side by side with WHP (ALGORITHM.md section 8).

All three train on the same forget blocks (the target text), with the same
settings and the same training skeleton (``training.train_and_save``); only the
loss differs:

* ``"ga"``, gradient ascent: maximise the LM loss on the forget blocks
  (minimise -NLL). Unbounded: it collapses the model quickly, so it needs early
  stopping (``best_step``, ``BestAdapter``).
* ``"graddiff"``, gradient difference: GA on the forget blocks plus the ordinary
  LM loss (NLL) on retain text.
* ``"npo"`` (Zhang et al. 2024): per forget sequence y,
  ``(2/beta) * log(1 + (pi_theta(y) / pi_ref(y))^beta)`` with pi_ref the
  baseline B, plus a retain term (KL to B on retain text by default). Bounded:
  at most ``(2/beta) log 2`` at the start, falling towards 0 as pi_theta(y) drops.

The reference B of NPO and of the KL retain term is the model with its LoRA
adapter switched off (``ModelPair``): no second copy in memory, so both need
``method="lora"``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer

from . import config, corpus, models, probe
from .generic_decoding import GenericModel
from .finetune import KL_BLOCKS_PER_STEP, LabelDataset, StepProbe, kl_retain, retain_blocks
from .generic_labels import IGNORE
from .pair import ModelPair
from .reinforce import load_reinforced
from .runs import atomic_path
from .scoring import PERPLEXITY_LIMIT_PCT
from .training import TrainingError, TrainSettings, last_complete_checkpoint, save_model, train_and_save

METHODS = {
    # gradient ascent alone: no retain term
    "ga": {"retain_weight": 0.0},
    # GA + NLL on retain text, weighted equally
    "graddiff": {"retain_weight": 1.0, "retain_loss": "nll"},
    # NPO with beta 0.1 (the paper's usual value) + KL(P_B || P_theta) on retain text
    "npo": {"beta": 0.1, "retain_weight": 1.0, "retain_loss": "kl"},
}
_OPTIONS = {"beta": 0.1, "retain_weight": 0.0, "retain_loss": "nll", "retain_per_step": KL_BLOCKS_PER_STEP}


# ----------------------------------------------------------------- losses
def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log P(sequence) = sum of next-token log-probs: [b, L, V] logits and [b, L]
    labels (HF convention, -100 = not scored) in, [b] out."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)                    # [b, L-1, V]
    target = labels[:, 1:]
    mask = target != IGNORE
    token = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)     # [b, L-1]
    return (token * mask).sum(-1)


def npo_loss(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO per sequence: (2/beta) * log(1 + (pi_theta / pi_ref)^beta), from sequence
    log-probs [b] (model and reference); returns [b].

    Written as (2/beta) * softplus(beta * (logp_theta - logp_ref)), the same
    number without overflow: sequence log-prob ratios of long blocks are huge.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return (2.0 / beta) * F.softplus(beta * (logp_theta - logp_ref))


def _retain_term(model, retain_ids: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "kl":
        return kl_retain(model, retain_ids)
    return model(input_ids=retain_ids, labels=retain_ids).loss


def make_trainer_class(method: str, beta: float = 0.1, retain_weight: float = 0.0,
                       retain_loss: str = "nll", retain_per_step: int = KL_BLOCKS_PER_STEP):
    """A Trainer whose loss is ``method`` ("ga", "graddiff" or "npo", see the module
    docstring) plus ``retain_weight`` times the retain term (``"nll"`` or ``"kl"``)
    on the first ``retain_per_step`` retain blocks of the batch."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if retain_loss not in ("nll", "kl"):
        raise ValueError(f"retain_loss must be 'nll' or 'kl', got {retain_loss!r}")
    if retain_weight < 0 or retain_per_step < 1:
        raise ValueError("retain_weight must be >= 0 and retain_per_step >= 1")

    class MethodTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            retain_ids = inputs.pop("retain_ids", None)
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"])
            if method == "npo":
                logp = sequence_logprobs(out.logits, inputs["labels"])
                with torch.no_grad(), ModelPair(model).base() as B:
                    ref = B(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                    logp_ref = sequence_logprobs(ref, inputs["labels"])
                loss = npo_loss(logp, logp_ref, beta).mean()
            else:  # ga and graddiff: ascend the forget loss
                loss = -out.loss
            if retain_weight > 0:
                loss = loss + retain_weight * _retain_term(model, retain_ids[:retain_per_step], retain_loss)
            return (loss, out) if return_outputs else loss

    return MethodTrainer


def method_options(method: str, **overrides) -> dict:
    """The full options of ``method``: its defaults in ``METHODS``, then ``overrides``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    unknown = set(overrides) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for {method!r}: use {', '.join(_OPTIONS)}")
    return {**_OPTIONS, **METHODS[method], **overrides}


# ----------------------------------------------------------------- training
def train_method(model, method: str, forget_blocks: torch.Tensor, retain_blocks: torch.Tensor | None,
                 run, out: str, settings: TrainSettings, callbacks: Sequence = (), resume: bool = True,
                 **method_kwargs):
    """Unlearn ``forget_blocks`` [n, L] with ``method`` (options: ``METHODS[method]``
    overridden by ``method_kwargs``: ``beta``, ``retain_weight``, ``retain_loss``,
    ``retain_per_step``). Item i of the data pairs forget block i with retain
    block i mod m (``retain_blocks`` [m, L'], generic text, e.g.
    ``finetune.retain_blocks(tok, L)``), as WHP finetuning does.

    Saves like every stage: ``<out>/adapter`` (or ``<out>/model``), losses in
    ``<out>/losses.json``, the options in ``<out>/method.json``. Returns ``(model, losses)``.
    """
    options = method_options(method, **method_kwargs)
    needs_base = method == "npo" or (options["retain_weight"] > 0 and options["retain_loss"] == "kl")
    if needs_base and settings.method != "lora":
        raise ValueError(f"{method} with these options needs the baseline in memory "
                         "(the model with its adapter off): use method='lora'")
    if options["retain_weight"] > 0 and (retain_blocks is None or len(retain_blocks) == 0):
        raise ValueError(f"{method} has a retain term: pass retain_blocks (e.g. finetune.retain_blocks(tok, L))")
    record = {"method": method, **options}
    earlier = run.path(f"{out}/method.json")
    if resume and last_complete_checkpoint(run.path(f"{out}/checkpoints")) and earlier.is_file() \
            and json.loads(earlier.read_text()) != record:
        raise TrainingError(f"the checkpoints in {run.path(out)} were made with another method or options; "
                            "delete that folder or train with resume=False")
    run.write_json(f"{out}/method.json", record)
    dataset = LabelDataset(forget_blocks, forget_blocks, retain=retain_blocks if options["retain_weight"] > 0 else None)
    trainer_class = make_trainer_class(method, **options)
    return train_and_save(model, dataset, run, out, settings, resume=resume, callbacks=callbacks,
                          trainer_class=trainer_class)


# ----------------------------------------------------------------- early stopping
def within_limit(record: dict, start: dict, max_perplexity_rise: float = PERPLEXITY_LIMIT_PCT) -> bool:
    """Whether ``record``'s perplexity rose at most ``max_perplexity_rise`` percent over
    ``start``'s (a record that is not a number never is)."""
    limit = start["perplexity"] * (1 + max_perplexity_rise / 100)
    return math.isfinite(record["perplexity"]) and record["perplexity"] <= limit


def _start_record(history: Sequence[dict]) -> dict | None:
    return next((h for h in history if h["step"] == 0), None)


def best_step(history: Sequence[dict], max_perplexity_rise: float = PERPLEXITY_LIMIT_PCT) -> int | None:
    """The step with the lowest familiarity among records whose perplexity rose at
    most ``max_perplexity_rise`` percent over the step-0 record, or None.

    ``history`` is ``StepProbe.history`` (``[{"step", "familiarity", "perplexity"}]``).
    Ties go to the earliest step (fewer changes to the model).
    """
    start = _start_record(history)
    if start is None:
        raise ValueError("the history has no step-0 record: give StepProbe a path= so that a resumed "
                         "curve keeps its start")
    if not math.isfinite(start["perplexity"]):
        raise ValueError("the step-0 perplexity is not a number: give StepProbe some texts")
    ok = [h for h in history if within_limit(h, start, max_perplexity_rise)]
    if not ok:
        return None
    return min(ok, key=lambda h: (h["familiarity"], h["step"]))["step"]


class BestAdapter(StepProbe):
    """A ``StepProbe`` that also keeps the early-stopped model: whenever the newest
    record is ``best_step`` of the history so far, the model's weights (the adapter
    for LoRA) are saved to ``directory`` in Hugging Face format, with the record
    in ``directory/early_stop.json``. Load it later with
    ``models.load_model(base, adapter=directory)``; no retraining needed.

    With ``stop_past_limit`` the training also stops at the first record whose
    perplexity rose more than ``max_perplexity_rise`` percent over step 0. That makes
    it an early-stopping rule, not only the choice of a step: later steps are refused
    as long as perplexity keeps climbing (as gradient ascent's and NPO's did at every
    measured step in notebook 07), so they are not trained. A method whose
    perplexity would come back under the limit later is stopped all the same;
    ``stopped_at`` says where.
    """

    def __init__(self, tok, probes, texts, directory: str | Path, max_perplexity_rise: float = PERPLEXITY_LIMIT_PCT,
                 stop_past_limit: bool = False, **step_probe_kwargs):
        if stop_past_limit and not texts:
            raise ValueError("stop_past_limit needs texts to measure perplexity on (e.g. corpus.heldout_texts(limit=1))")
        super().__init__(tok, probes, texts, **step_probe_kwargs)
        self.directory, self.max_perplexity_rise = Path(directory), max_perplexity_rise
        self.stop_past_limit = stop_past_limit
        self.saved_step: int | None = None
        self.stopped_at: int | None = None

    def past_limit(self, record: dict) -> bool:
        """Whether ``record``'s perplexity rose more than the limit over the step-0 record's."""
        start = _start_record(self.history)
        return start is not None and not within_limit(record, start, self.max_perplexity_rise)

    def on_step_end(self, args, state, control, model=None, **kw):
        super().on_step_end(args, state, control, model=model, **kw)
        newest = self.history[-1] if self.history else None
        if (self.stop_past_limit and newest is not None and newest["step"] == state.global_step
                and state.global_step < state.max_steps and self.past_limit(newest)):
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def record(self, model, step: int) -> None:
        n = len(self.history)
        super().record(model, step)
        if len(self.history) == n:
            return  # this step was already measured
        if best_step(self.history, self.max_perplexity_rise) == step:
            with atomic_path(self.directory, directory=True) as tmp:
                save_model(model, tmp)
                (tmp / "early_stop.json").write_text(json.dumps(self.history[-1]))
            self.saved_step = step


def inference_time_whp(run, cfg, device=None):
    """``(GenericModel, tok)``: R from notebook 02 with the generic formula applied at
    every step at the run's alpha (MUSE's inference-time WHP), as a model to measure."""
    pair, tok = load_reinforced(run, cfg.model, cfg.reinforce_method, device=device)
    return GenericModel(pair, cfg.alpha), tok


# ----------------------------------------------------------------- notebook 07
def train_all(run, cfg, blocks: torch.Tensor, device=None, resume: bool = True) -> tuple[dict, dict, dict]:
    """Train every method of ``cfg.methods`` from B on the forget ``blocks``, one after
    the other, with the same LoRA settings (``cfg.method_steps`` steps at ``cfg.method_lr``)
    and the same retain text, each seeded with ``cfg.seed``.

    Every ``cfg.method_probe_every`` steps a ``BestAdapter`` measures the dev probes and one
    held-out text, keeps the best adapter within the perplexity limit in
    ``methods/<method>/best_adapter`` and stops the method past the limit. Step 0 is measured
    once (every method starts from B). Returns ``(curves, stopped, seconds)``: each method's
    ``StepProbe.history``, its ``best_step`` and its training time in seconds (with its step
    measures; near 0 when resumed).
    """
    dev_probes = probe.split(probe.load_probes("hp_token"), "dev")[:cfg.step_probes]
    settings = TrainSettings(method="lora", learning_rate=cfg.method_lr, batch_size=cfg.method_batch_size,
                             max_steps=cfg.method_steps, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                             seed=cfg.seed, save_steps=10**6, cpu_bf16=cfg.cpu_bf16)
    curves, stopped, seconds, step0 = {}, {}, {}, None
    for method in cfg.methods:
        config.set_seed(cfg.seed)
        model, tok = models.load_model(cfg.model, device=device)
        keeper = BestAdapter(tok, dev_probes, corpus.heldout_texts(limit=1), run.path(f"methods/{method}/best_adapter"),
                             every=cfg.method_probe_every, path=run.path(f"methods/{method}/steps.json"), start=step0,
                             stop_past_limit=True)   # past the limit: stop, later steps would be refused
        print(f"--- {method}: {method_options(method)}")
        start = time.perf_counter()
        train_method(model, method, blocks, retain_blocks(tok, blocks.shape[1]), run, f"methods/{method}",
                     settings, callbacks=[keeper], resume=resume)
        seconds[method] = time.perf_counter() - start
        curves[method] = keeper.history
        stopped[method] = best_step(keeper.history)
        step0 = step0 or keeper.history[0]   # every method starts from B (its LoRA starts at zero)
        del model
    return curves, stopped, seconds


def early_stop_line(stopped: dict) -> str:
    """``train_all``'s early stops in a line: the step of each method, or why it has none."""
    limit = f"+{PERPLEXITY_LIMIT_PCT:g}%"
    words = {m: (f"never within {limit}" if s is None else "no step forgot more than the start" if s == 0 else s)
             for m, s in stopped.items()}
    return f"early stop (step with the best forgetting within {limit} perplexity): {words}"


def inference_name(alpha: float) -> str:
    """The name of inference-time WHP at ``alpha`` in notebook 07's tables."""
    return f"WHP at inference (alpha={alpha:g})"


def models_to_compare(run, cfg, recipes: Sequence[str], stopped: dict, device=None) -> tuple[dict, dict]:
    """Notebook 07's models: the baseline, WHP (each of notebook 05's ``recipes``), each
    method with an early-stopped model (``stopped``: ``train_all``'s; a method stopped at
    step 0 learned nothing and is left out) and inference-time WHP at ``cfg.alpha``.

    Returns ``(adapters, loaders)``: ``{model: adapter directory}`` (None for the
    baseline; inference-time WHP has none: no weights of its own) and ``{model: a function
    returning (model, tok)}`` for a ``models.ModelShelf``, each adapter merged into its
    model's weights (a plain model, as fast as the baseline).
    """
    adapters = {"baseline": None, **{f"WHP {r}": run.path(f"finetune/{r}/adapter") for r in recipes},
                **{m: run.path(f"methods/{m}/best_adapter") for m, s in stopped.items() if s}}
    loaders = {name: (lambda a=adapter: models.load_model(cfg.model, adapter=a, device=device, merge=True))
               for name, adapter in adapters.items()}
    # inference-time WHP (MUSE's way): R from notebook 02, the formula at every step; nothing to finetune
    loaders[inference_name(cfg.alpha)] = lambda: inference_time_whp(run, cfg, device)
    return adapters, loaders
