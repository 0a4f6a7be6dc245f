"""The one training skeleton of the course (reinforcement and finetuning share it):
attach LoRA (or unfreeze everything), train with the transformers Trainer
(progress bars, checkpoints, resume), save in Hugging Face format, record the losses.

Both stages train a causal LM on fixed-length token blocks; they differ only in
their labels (the text itself for reinforcement, generic labels for finetuning)
and, for finetuning, in the loss (a Trainer subclass).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, get_peft_model
from transformers import PrinterCallback, Trainer, TrainingArguments, default_data_collator


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

    def __post_init__(self):
        if self.method not in ("lora", "full"):
            raise TrainingError(f"method must be 'lora' or 'full', got {self.method!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise TrainingError("learning_rate must be > 0, batch_size and grad_accum >= 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise TrainingError("give epochs > 0 or max_steps > 0")


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


def settings_from(cfg, stage: str) -> TrainSettings:
    """The training settings of ``stage`` ("reinforce" or "finetune") from a resolved
    profile: its ``<stage>_method``, ``_epochs``, ``_lr``, ``_batch_size``,
    ``_grad_accum`` and ``_max_steps`` parameters, and the shared LoRA shape."""
    if stage not in ("reinforce", "finetune"):
        raise ValueError(f"stage must be 'reinforce' or 'finetune', got {stage!r}")
    return TrainSettings(method=cfg[f"{stage}_method"], epochs=cfg[f"{stage}_epochs"],
                         learning_rate=cfg[f"{stage}_lr"], batch_size=cfg[f"{stage}_batch_size"],
                         grad_accum=cfg[f"{stage}_grad_accum"], max_steps=cfg[f"{stage}_max_steps"],
                         lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed)


def attach_lora(model, settings: TrainSettings):
    """Wrap ``model`` in a trainable LoRA adapter named "default"."""
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                        lora_dropout=settings.lora_dropout, target_modules=settings.target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _master_weights_in_fp32(model) -> dict:
    """Make every trainable weight fp32 and return the Trainer's autocast flags.

    A model loaded in bf16 or fp16 must not be *trained* in it: at the paper's
    learning rate of 1e-6 most bf16 updates round to nothing, and fp16 full
    finetuning with a grad scaler fails on fp16 master weights. So the weights that
    train are kept in fp32 (the frozen base of a LoRA model may stay in half
    precision) and the forward pass runs under bf16/fp16 autocast on a GPU.
    """
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    on_gpu = next(model.parameters()).device.type == "cuda"
    if not (half and on_gpu):
        return {}
    return {"bf16": torch.bfloat16 in half, "fp16": torch.bfloat16 not in half}


def train(model, dataset: torch.utils.data.Dataset, output_dir: str | Path, settings: TrainSettings,
          resume: bool = True, callbacks: Sequence = (), progress: bool = True, trainer_class=None):
    """Train ``model`` in place; return the Trainer (its ``state.log_history`` has the losses).

    Checkpoints go to ``output_dir``; with ``resume`` an interrupted run continues
    from the last one, provided it was made with the same settings.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = output_dir / "settings.json"
    mine = json.dumps(asdict(settings), sort_keys=True, default=list)
    last = last_complete_checkpoint(output_dir) if resume else None
    if last and record.exists() and record.read_text() != mine:
        raise TrainingError(f"the checkpoints in {output_dir} were made with other settings; "
                            "delete that folder or train with resume=False")
    record.write_text(mine)
    on_gpu = next(model.parameters()).device.type == "cuda"
    precision = _master_weights_in_fp32(model)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.learning_rate, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, warmup_steps=settings.warmup_steps,
        lr_scheduler_type="linear", logging_steps=settings.logging_steps, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=2, seed=settings.seed, report_to="none",
        disable_tqdm=not progress, remove_unused_columns=False, use_cpu=not on_gpu,
        dataloader_pin_memory=on_gpu, **precision)
    trainer = (trainer_class or Trainer)(model=model, args=args, train_dataset=dataset,
                                         data_collator=default_data_collator, callbacks=list(callbacks))
    if not progress:  # quiet means quiet: no loss dict printed at every logging step either
        trainer.remove_callback(PrinterCallback)
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
                   save_merged: bool = False):
    """The skeleton both stages share: attach LoRA (or unfreeze all weights), train,
    save to ``<out>/adapter`` (LoRA) or ``<out>/model`` (full), losses to
    ``<out>/losses.json``, and with ``save_merged`` full weights with the adapter
    merged in ``<out>/merged``. Checkpoints go to ``<out>/checkpoints``.

    Returns ``(trained model, losses)``; a LoRA model is a PeftModel around ``model``.
    """
    if settings.method == "lora":
        model = attach_lora(model, settings)
    else:
        model.requires_grad_(True)
    trainer = train(model, dataset, run.path(f"{out}/checkpoints"), settings, resume=resume,
                    callbacks=callbacks, trainer_class=trainer_class)
    with run.atomic_dir(f"{out}/adapter" if settings.method == "lora" else f"{out}/model") as tmp:
        save_model(model, tmp)
        if tok is not None and settings.method == "full":
            tok.save_pretrained(tmp)
    losses = loss_history(trainer)
    run.write_json(f"{out}/losses.json", losses)
    if save_merged and settings.method == "lora":
        save_merged_copy(model, run, f"{out}/merged", tok)
    return model, losses


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


def save_model(model, directory: str | Path) -> None:
    """``save_pretrained`` in standard Hugging Face format (an adapter for a PeftModel).

    Adapters skip the embedding-layer check, which would look the base model up
    on the hub (offline here, and pointless: we never resize the vocabulary).
    """
    if hasattr(model, "peft_config"):
        model.save_pretrained(directory, save_embedding_layers=False)
    else:
        model.save_pretrained(directory)
