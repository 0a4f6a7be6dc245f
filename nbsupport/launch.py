"""Paper scale: the three heavy stages as scripts that run on several GPUs.

    python -m nbsupport stage reinforce --profile paper --run-dir runs/paper
    accelerate launch --config_file configs/accelerate/ddp_4gpu.yaml \\
        -m nbsupport stage labels --profile paper --run-dir runs/paper

Each stage does what its notebook's heavy cells do, with the same parameters,
and writes the same outputs into the run directory:

* ``reinforce`` (notebook 02): the corpus blocks and the reinforced model R;
* ``labels`` (notebook 04): the generic labels, each process writing its shards;
* ``finetune`` (notebook 05): one unlearned model per recipe (with its step
  curve), then the ablation and sweep variants.

The notebook, run afterwards on one process, finds that work finished and
reuses it (``training.train_and_save`` loads a finished training,
``generic_labels.generate`` skips written shards), so it only makes its tables
and plots. ``python -m nbsupport run --processes N`` does both in order: before
notebooks 02, 04 and 05 it launches the stage on N processes (``torchrun``, or
``accelerate launch`` with ``--accelerate-config``), then runs the notebook.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from . import config, finetune, generic_labels, memory, reinforce, runs
from .anchors.dictionary import AnchorDict



class StageFailed(RuntimeError):
    """A launched stage exited with an error; its output above says why."""


def stage_device() -> torch.device:
    """This process's device: its own GPU (``LOCAL_RANK``), the CPU without one, and
    the CPU under FSDP, which shards the model onto the GPUs itself."""
    if not torch.cuda.is_available() or memory.launch_environment()[1]:
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def config_overrides(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The profile parameters among notebook parameters (``MODEL``, ``ALPHA``, ...),
    lower-cased; notebook-only ones (``RESUME``, ``INTERACTIVE``, ...) are dropped."""
    return {k.lower(): v for k, v in (parameters or {}).items() if k.lower() in config.PROFILES["cpu"]}


def _stage_config(run_dir, profile: str, stage: str, parameters) -> tuple[runs.Run, config.Config]:
    if runs.is_main_process():
        return runs.open_stage(run_dir, profile, stage, **config_overrides(parameters))
    # the other processes read the same configuration without recording it again
    return runs.Run(run_dir), runs.inherited_config(run_dir, profile, stage, **config_overrides(parameters))


def reinforce_stage(run_dir, profile: str, parameters: dict | None = None) -> None:
    """Notebook 02's corpus and reinforcement (``reinforce.run_stage``)."""
    run, cfg = _stage_config(run_dir, profile, "reinforce", parameters)
    reinforce.run_stage(run, cfg, device=stage_device(), keep_base=False)


def labels_stage(run_dir, profile: str, parameters: dict | None = None) -> None:
    """Notebook 04's label generation (``generic_labels.run_stage``), each process
    writing the shards whose number is its rank modulo the process count."""
    run, cfg = _stage_config(run_dir, profile, "labels", parameters)
    blocks = run.load_tensors("corpus/blocks.safetensors")["input_ids"]
    anchor_dict = AnchorDict.load(run.require("anchors/dictionary.json"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else None
    pair, tok = reinforce.load_reinforced(run, cfg.model, cfg.reinforce_method, device=device)
    generic_labels.run_stage(run, cfg, pair, tok, anchor_dict, blocks)


def finetune_stage(run_dir, profile: str, parameters: dict | None = None) -> None:
    """Notebook 05's finetuning: every recipe with its step curve, then the
    ablation and sweep variants of the recipe the curves choose."""
    run, cfg = _stage_config(run_dir, profile, "finetune", parameters)
    labels = generic_labels.load(run)
    device = stage_device()
    histories, _ = finetune.train_recipes(cfg, run, labels, device=device)
    finetune.train_variants(cfg, run, labels, finetune.choose_recipe(histories), device=device)


# the stages that can run on several processes (their notebook runs them on one)
STAGES = {"reinforce": reinforce_stage, "labels": labels_stage, "finetune": finetune_stage}
# the notebook number of each (the runner launches the stage just before that notebook)
STAGE_NOTEBOOKS = {name: config.STAGES[name][:2] for name in STAGES}


def run_stage(stage: str, profile: str, run_dir, parameters: dict | None = None) -> None:
    """Run one stage in this process (one of N when launched by torchrun / accelerate)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    STAGES[stage](run_dir, profile, parameters)


def launch_command(stage: str, profile: str, run_dir, parameters: dict | None = None, processes: int = 1,
                   accelerate_config: str | os.PathLike | None = None) -> list[str]:
    """The command that runs ``stage`` on ``processes`` processes: ``accelerate launch``
    with a config file (FSDP, mixed precision, ...), else ``torchrun`` (DDP)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    script = ["-m", "nbsupport", "stage", stage, "--profile", profile, "--run-dir", str(run_dir)]
    for name, value in (parameters or {}).items():
        script += ["-p", name, json.dumps(value)]
    if accelerate_config is not None:
        if not Path(accelerate_config).is_file():
            raise FileNotFoundError(f"accelerate config {accelerate_config} not found; the course ships "
                                    "configs/accelerate/*.yaml")
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                "--num_processes", str(processes), *script]
    if processes == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            *script]


def launch_stage(stage: str, profile: str, run_dir, parameters: dict | None = None, processes: int = 1,
                 accelerate_config: str | os.PathLike | None = None) -> None:
    """Run ``stage`` on ``processes`` processes and wait; ``StageFailed`` if it fails."""
    command = launch_command(stage, profile, run_dir, parameters, processes, accelerate_config)
    print(f"==> stage {stage} on {processes} process(es): {' '.join(command)}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise StageFailed(f"stage {stage!r} failed on {processes} process(es); its output is above. "
                          f"Rerun it alone with: {' '.join(command)}")
