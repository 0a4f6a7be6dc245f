"""The one training skeleton of the course (reinforcement and finetuning share it):
attach LoRA (or unfreeze everything), train with the transformers Trainer
(progress bars, checkpoints, resume), save in Hugging Face format, record the losses.

Both stages train a causal LM on fixed-length token blocks; they differ only in
their labels (the text itself for reinforcement, generic labels for finetuning)
and, for finetuning, in the loss (a Trainer subclass).

The same code runs on one process and under ``torchrun`` / ``accelerate launch``
(DDP on N processes, or FSDP for a full finetune): the Trainer reads the launch
from the environment, the profile's batch x accumulation is kept as the GLOBAL
batch (``settings_from`` divides it over the processes), and only the first
process writes the saved model, the losses and the records.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import (PrinterCallback, Trainer, TrainerControl, TrainerState, TrainingArguments,
                          default_data_collator)

from . import memory
from .precision import CpuBf16Autocast, master_weights_in_fp32, on_gpu
from .progress import TrainingProgress
from .runs import is_main_process, write_text_atomic


class TrainingError(RuntimeError):
    """Training cannot start or resume as asked; the message says what to change."""


@dataclass
class TrainSettings:
    method: str = "lora"          # "lora" (adapter on the base) or "full" (all weights)
    epochs: float = 2.0
    learning_rate: float = 3e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = -1           # > 0 overrides epochs (smoke runs)
    warmup_steps: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: Sequence[str] | str = "all-linear"
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 0
    gradient_checkpointing: bool = False   # recompute activations in the backward pass (GPU profiles)
    memory_check: bool = False             # fit the batch per GPU to the memory plan (GPU profiles)
    cpu_bf16: bool | None = None           # bf16 autocast on the CPU; None: where the CPU has native bf16

    def __post_init__(self):
        if self.method not in ("lora", "full"):
            raise TrainingError(f"method must be 'lora' or 'full', got {self.method!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise TrainingError("learning_rate must be > 0, batch_size and grad_accum >= 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise TrainingError("give epochs > 0 or max_steps > 0")
        if not (self.cpu_bf16 is None or isinstance(self.cpu_bf16, bool)):   # 1 == True: not a flag
            raise TrainingError(f"cpu_bf16 must be True, False or None (auto), got {self.cpu_bf16!r}")


class BlockDataset(torch.utils.data.Dataset):
    """Token blocks [n, L] with labels [n, L] (the same tokens for plain language
    modelling; -100 marks positions that are not trained)."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [n_blocks, block_size], got {tuple(input_ids.shape)}")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels {tuple(labels.shape)} must match input_ids {tuple(input_ids.shape)}")
        self.input_ids, self.labels = input_ids, input_ids if labels is None else labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i],
                "attention_mask": torch.ones_like(self.input_ids[i])}


def settings_from(cfg, stage: str, processes: int | None = None) -> TrainSettings:
    """The training settings of ``stage`` ("reinforce" or "finetune") from a resolved
    profile: its ``<stage>_method``, ``_epochs``, ``_lr``, ``_batch_size``,
    ``_grad_accum`` and ``_max_steps`` parameters, the shared LoRA shape, and the
    profile's ``gradient_checkpointing`` and ``memory_check``.

    ``batch_size x grad_accum`` is the global batch of one optimizer step: on N
    processes (``processes``, default ``WORLD_SIZE``) each takes 1/N of it, so a
    run on 4 GPUs trains the same model as one on 1 GPU.
    """
    if stage not in ("reinforce", "finetune"):
        raise ValueError(f"stage must be 'reinforce' or 'finetune', got {stage!r}")
    settings = TrainSettings(method=cfg[f"{stage}_method"], epochs=cfg[f"{stage}_epochs"],
                             learning_rate=cfg[f"{stage}_lr"], batch_size=cfg[f"{stage}_batch_size"],
                             grad_accum=cfg[f"{stage}_grad_accum"], max_steps=cfg[f"{stage}_max_steps"],
                             lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed,
                             gradient_checkpointing=cfg.get("gradient_checkpointing", False),
                             memory_check=cfg.get("memory_check", False), cpu_bf16=cfg.get("cpu_bf16"))
    processes = num_processes() if processes is None else processes
    if processes == 1:
        return settings
    batch, accum = memory.split_global_batch(settings.batch_size * settings.grad_accum, processes,
                                             settings.batch_size)
    return replace(settings, batch_size=batch, grad_accum=accum)


def planned_settings(cfg, stage: str) -> TrainSettings:
    """``settings_from(cfg, stage)``, checked against the memory plan before any model
    is loaded: with ``memory_check`` (GPU profiles) a batch per GPU that fits (same
    global batch) or ``memory.DoesNotFitError`` with what to change; unchanged otherwise."""
    settings = settings_from(cfg, stage)
    if not settings.memory_check:
        return settings
    fitted = fit_to_memory(settings, memory.model_shape(cfg.model), cfg.block_size)
    return replace(fitted, memory_check=settings.memory_check)


def fit_to_memory(settings: TrainSettings, shape: "memory.ModelShape | None", seq_len: int,
                  gpu_bytes: int | None = None, processes: int | None = None, fsdp: bool | None = None,
                  quiet: bool = False) -> TrainSettings:
    """With ``settings.memory_check`` and a GPU: the settings with the largest batch
    per GPU that the memory plan (``memory.plan``) says fits, and more accumulation
    so the global batch stays the same; ``memory.DoesNotFitError`` (with the plan
    and what to do) if not even one sequence fits. Unchanged without the check, a
    GPU or a known ``shape``.

    ``gpu_bytes`` defaults to this process's GPU less what other tensors already
    hold there (e.g. the frozen baseline kept beside a full reinforcement);
    ``processes`` and ``fsdp`` to the launch (``memory.launch_environment``).
    """
    if not settings.memory_check:
        return settings
    env_processes, env_fsdp = memory.launch_environment()
    processes = env_processes if processes is None else processes
    fsdp = env_fsdp if fsdp is None else fsdp
    gpu_bytes = memory.gpu_bytes() if gpu_bytes is None else gpu_bytes
    if gpu_bytes is None or shape is None:
        if gpu_bytes is not None:
            print("memory plan skipped: the model's shape is unknown")
        return settings
    kw = dict(method=settings.method, seq_len=seq_len, processes=processes, fsdp=fsdp,
              checkpointing=settings.gradient_checkpointing, lora_r=settings.lora_r)
    fits = memory.largest_batch(shape, gpu_bytes, limit=settings.batch_size, **kw)
    if fits == 0:
        memory.check_fits(memory.plan(shape, batch_size=1, **kw), gpu_bytes, shape)
    if not quiet and is_main_process():
        print(memory.plan(shape, batch_size=fits, **kw))
    if fits == settings.batch_size:
        return settings
    batch, accum = memory.split_global_batch(settings.batch_size * settings.grad_accum * processes, processes, fits)
    if not quiet and is_main_process():
        print(f"batch per GPU lowered to fit: {batch} x {accum} accumulation x {processes} process(es) "
              f"(the global batch of {settings.batch_size} x {settings.grad_accum} x {processes} is kept)")
    return replace(settings, batch_size=batch, grad_accum=accum)


def _gpu_bytes_left_for(model) -> int | None:
    """This GPU's usable memory less what tensors other than ``model``'s already hold."""
    total = memory.gpu_bytes()
    if total is None:
        return None
    mine = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if t.is_cuda)
    return total - max(0, torch.cuda.memory_allocated() - mine)


def attach_lora(model, settings: TrainSettings):
    """Wrap ``model`` in a trainable LoRA adapter named "default"."""
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                        lora_dropout=settings.lora_dropout, target_modules=settings.target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def enable_checkpointing(model, reentrant: bool = False) -> None:
    """Gradient (activation) checkpointing: recompute each layer's activations in the
    backward pass instead of keeping them, for a fraction of the memory.

    With LoRA the embedding output does not require grad (the base is frozen), and
    reentrant checkpointing then drops the gradient of every adapter inside a
    checkpointed layer: lora_B stays zero and nothing trains, silently. So the
    inputs are made to require grad (``enable_input_require_grads``) whatever the
    transformers version does by itself.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    enable = getattr(inner, "activation_checkpointing_enable", None) or inner.gradient_checkpointing_enable
    enable({"use_reentrant": reentrant})
    inner.config.use_cache = False
    model.enable_input_require_grads()


def train(model, dataset: torch.utils.data.Dataset, output_dir: str | Path, settings: TrainSettings,
          resume: bool = True, callbacks: Sequence = (), progress: bool = True, trainer_class=None,
          desc: str = "training"):
    """Train ``model`` in place; return the Trainer (its ``state.log_history`` has the losses).

    Its progress is one bar named ``desc`` with the latest loss (:mod:`nbsupport.progress`),
    not the Trainer's own bar and dicts.

    Checkpoints go to ``output_dir``; with ``resume`` an interrupted run continues
    from the last one, provided it was made with the same settings.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = output_dir / "settings.json"
    mine = _record(settings)
    last = last_complete_checkpoint(output_dir) if resume else None
    if last and record.exists() and record.read_text() != mine:
        raise TrainingError(f"the checkpoints in {output_dir} were made with other settings "
                            "(or another number of processes); delete that folder or train with resume=False")
    if is_main_process():
        write_text_atomic(record, mine)
    gpu = on_gpu(model)
    precision, cpu_bf16 = master_weights_in_fp32(model, settings.cpu_bf16)
    if settings.gradient_checkpointing and os.environ.get("FSDP_ACTIVATION_CHECKPOINTING") != "true":
        enable_checkpointing(model)   # (under FSDP, its own checkpointing is set in the accelerate config)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.learning_rate, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, warmup_steps=settings.warmup_steps,
        lr_scheduler_type="linear", logging_steps=settings.logging_steps, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=2, seed=settings.seed, report_to="none",
        disable_tqdm=True, remove_unused_columns=False, use_cpu=not gpu,
        dataloader_pin_memory=gpu, **precision)
    trainer_class = trainer_class or Trainer
    if cpu_bf16:
        trainer_class = type(trainer_class.__name__, (CpuBf16Autocast, trainer_class), {})
    trainer = trainer_class(model=model, args=args, train_dataset=dataset,
                            data_collator=default_data_collator,
                            callbacks=[*callbacks, TrainingProgress(desc, progress)])
    trainer.remove_callback(PrinterCallback)     # no dict of numbers at every logging step
    trainer.train(resume_from_checkpoint=last)
    model.eval()
    return trainer


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The checkpoint with the highest step that was written completely, or None.

    The Trainer writes a checkpoint folder file by file and its state file last; a
    run killed in between leaves a folder without ``trainer_state.json`` (or
    without weights), which is skipped rather than resumed from.
    """
    found = []
    for path in Path(output_dir).iterdir() if Path(output_dir).is_dir() else ():
        m = _CHECKPOINT.match(path.name)
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        if m and path.is_dir() and (path / "trainer_state.json").is_file() and has_weights:
            found.append((int(m.group(1)), path))
    return str(max(found)[1]) if found else None


def train_and_save(model, dataset: torch.utils.data.Dataset, run, out: str, settings: TrainSettings,
                   resume: bool = True, callbacks: Sequence = (), trainer_class=None, tok=None,
                   save_merged: bool = False, inputs: dict[str, str] | None = None):
    """The skeleton both stages share: attach LoRA (or unfreeze all weights), train,
    save to ``<out>/adapter`` (LoRA) or ``<out>/model`` (full), losses to
    ``<out>/losses.json``, and with ``save_merged`` full weights with the adapter
    merged in ``<out>/merged``. Checkpoints go to ``<out>/checkpoints``;
    ``<out>/trained.json``, written last, marks the training finished.

    With ``resume``, a training already finished with the same settings (the same
    global batch, on any number of processes: e.g. by ``python -m nbsupport stage``
    under ``accelerate launch``) from the same ``inputs`` is not repeated: its saved
    weights are loaded into ``model`` and its losses read back, and each callback's
    ``on_train_begin`` is called at the final step, as on a resume at the end.

    ``inputs`` names what the training is made from, by digest (the blocks, the
    labels, the retain text, ...); it is recorded in ``<out>/inputs.json``. When an
    input changed since, the earlier training (finished or interrupted) is stale: it
    is trained again from the start, and a message names the inputs that changed.

    Returns ``(trained model, losses)``; a LoRA model is a PeftModel around ``model``.
    """
    final = f"{out}/adapter" if settings.method == "lora" else f"{out}/model"
    inputs = dict(inputs or {})
    changed = stale_inputs(run, out, inputs)
    if changed:
        if is_main_process():
            print(f"{out}: made from another {' and '.join(changed)}: training again from the start")
            for name in ("checkpoints", "trained.json"):
                path = run.path(f"{out}/{name}")
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        wait_for_everyone()
    done = finished_training(run, out, settings) if resume else None
    if done is not None:
        return _reuse_finished(model, run, out, final, settings, done, callbacks, tok, save_merged)
    if is_main_process():
        run.write_json(f"{out}/inputs.json", inputs)
    if settings.memory_check:
        seq_len = int(dataset[0]["input_ids"].shape[-1])
        settings = fit_to_memory(settings, memory.ModelShape.from_config(model.config.to_dict()), seq_len,
                                 gpu_bytes=_gpu_bytes_left_for(model))
    if settings.method == "lora":
        model = attach_lora(model, settings)
    else:
        model.requires_grad_(True)
    trainer = train(model, dataset, run.path(f"{out}/checkpoints"), settings, resume=resume,
                    callbacks=callbacks, trainer_class=trainer_class, desc=f"training {out}")
    losses = loss_history(trainer)
    # under FSDP every process holds a shard: gathering the full weights takes all of them
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.is_world_process_zero():
        with run.atomic_dir(final) as tmp:
            save_model(model, tmp, state_dict=state_dict)
            if tok is not None and settings.method == "full":
                tok.save_pretrained(tmp)
        run.write_json(f"{out}/losses.json", losses)
        if save_merged and settings.method == "lora":
            save_merged_copy(model, run, f"{out}/merged", tok)
        run.write_json(f"{out}/trained.json", {"settings": _global_form(settings),
                                               "global_step": trainer.state.global_step})
    trainer.accelerator.wait_for_everyone()
    return model, losses


def num_processes() -> int:
    """The processes of this launch (WORLD_SIZE; 1 outside torchrun / accelerate)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def _record(settings: TrainSettings) -> str:
    """The settings a checkpoint can be resumed with (the process count included when > 1)."""
    extra = {"processes": num_processes()} if num_processes() > 1 else {}
    return json.dumps({**asdict(settings), **extra}, sort_keys=True, default=list)


def _global_form(settings: TrainSettings) -> dict:
    """The settings that decide the trained model: the split of the global batch over
    processes, accumulation and memory (and checkpointing) left out."""
    record = json.loads(json.dumps(asdict(settings), default=list))
    record["global_batch"] = record.pop("batch_size") * record.pop("grad_accum") * num_processes()
    record.pop("gradient_checkpointing")
    record.pop("memory_check")
    return record


def stale_inputs(run, out: str, inputs: dict[str, str]) -> list[str]:
    """The names of the inputs that differ from those ``out`` was trained from (all
    of them for a training that recorded none); [] when nothing is there yet."""
    if not run.exists(f"{out}/inputs.json"):
        trained_before = run.exists(f"{out}/trained.json") or run.exists(f"{out}/checkpoints")
        return sorted(inputs) or ["inputs"] if trained_before else []
    recorded = run.read_json(f"{out}/inputs.json")
    return sorted(k for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k))


def wait_for_everyone() -> None:
    """A barrier across the processes of a launch (nothing on one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def finished_training(run, out: str, settings: TrainSettings) -> dict | None:
    """The ``trained.json`` record of a training of ``out`` finished with these
    settings (same global batch), or None."""
    if not run.exists(f"{out}/trained.json"):
        return None
    done = run.read_json(f"{out}/trained.json")
    if done.get("settings") != _global_form(settings):
        return None
    return done


def _reuse_finished(model, run, out: str, final: str, settings: TrainSettings, done: dict,
                    callbacks: Sequence, tok, save_merged: bool):
    if settings.method == "lora":
        model = PeftModel.from_pretrained(model, run.require(final), is_trainable=False)
    else:
        load_weights(model, run.require(final))
    model.eval()
    losses = run.read_json(f"{out}/losses.json")
    if save_merged and settings.method == "lora" and not run.exists(f"{out}/merged") and is_main_process():
        save_merged_copy(model, run, f"{out}/merged", tok)
    state = TrainerState(global_step=done["global_step"], max_steps=done["global_step"])
    for callback in callbacks:
        callback.on_train_begin(None, state, TrainerControl(), model=model)
    print(f"{out}: training already finished (step {done['global_step']}); loaded from {run.path(final)}. "
          "Train again with RESUME = False.")
    return model, losses


def load_weights(model, directory: str | Path) -> None:
    """Load a saved full model's safetensors (one file or shards) into ``model`` in place."""
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise TrainingError(f"no .safetensors weights in {directory}")
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for f in files:
        _, unexpected = model.load_state_dict(load_file(str(f)), strict=False)
        if set(unexpected) - tied:
            raise TrainingError(f"{f} holds weights this model does not have: {sorted(unexpected)[:3]}")


def save_merged_copy(model, run, name: str, tok=None) -> None:
    """Full weights with the adapter merged in (a plain HF model directory, with
    the tokenizer if given), without touching ``model``."""
    merged = copy.deepcopy(model).merge_and_unload()
    with run.atomic_dir(name) as tmp:
        merged.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
    del merged


def loss_history(trainer) -> list[dict]:
    """``[{"step": s, "loss": l}, ...]`` from the Trainer's log."""
    return [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]


def save_model(model, directory: str | Path, state_dict: dict | None = None) -> None:
    """``save_pretrained`` in standard Hugging Face format (an adapter for a PeftModel).

    Adapters skip the embedding-layer check, which would look the base model up
    on the hub (offline here, and pointless: we never resize the vocabulary).
    ``state_dict``: the full weights gathered from FSDP shards.
    """
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory, save_embedding_layers=False, **extra)
    else:
        model.save_pretrained(directory, **extra)
