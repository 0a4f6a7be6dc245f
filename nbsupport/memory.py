"""Memory plan: how much GPU memory one training process will need, before loading.

Running out of GPU memory an hour into a run is the most common failure of
unlearning code at scale. This module estimates the peak memory of one process
from the model's shape alone (read from ``config.json``, no weights loaded), so
a run that cannot fit stops at once with advice, and a profile can pick the
largest batch that fits.

The estimate counts, per GPU:

* **weights**: the frozen base in the loading dtype (LoRA), or every weight in
  fp32 (full finetuning keeps fp32 master weights, ``training.py``), plus the
  half-precision copies autocast makes of fp32 weights during the forward pass;
* **grads**: fp32, one per trainable weight (DDP keeps a second copy in its
  communication buckets);
* **optimizer**: AdamW's two fp32 moments per trainable weight (8 bytes);
* **activations**: what a Llama-style layer saves for the backward pass, about
  ``12 h + 5 i`` numbers per token and layer with a fused attention kernel (no
  ``seq x seq`` matrix), or, with gradient checkpointing, one ``h`` per token and
  layer plus one layer recomputed at a time;
* **logits**: ``batch x seq x vocab`` in half precision, their fp32 copy for the
  loss and its gradient;
* **margin**: the CUDA context and allocator slack, 1 GiB plus 5 %.

With FSDP (full sharding over ``processes`` GPUs) weights, grads and optimizer
states are divided by the process count, plus two layers gathered whole at a
time. Full finetuning with AdamW without sharding therefore needs 16 bytes per
parameter before activations: 4 (fp32 weight) + 4 (grad) + 8 (moments); a 7B
model needs ~108 GB for those alone, which is why the paper profile shards it.

These are estimates, good to ~15 %: the point is to refuse a plan that is
clearly too big and to size the batch, not to predict the allocator exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

GiB = 1024 ** 3


class DoesNotFitError(MemoryError):
    """The training plan will not fit in GPU memory; the message says what to change."""


@dataclass(frozen=True)
class ModelShape:
    """What the memory plan needs to know about a decoder-only transformer."""
    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    tie_embeddings: bool = False
    name: str = ""

    @property
    def kv_dim(self) -> int:
        return self.hidden_size * self.num_kv_heads // self.num_heads

    @property
    def layer_params(self) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h   # q,o + k,v + gate,up,down + 2 norms

    @property
    def n_params(self) -> int:
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return embed + self.num_layers * self.layer_params + self.hidden_size

    def lora_params(self, r: int) -> int:
        """Trainable parameters of a rank-``r`` LoRA on every linear layer of every block."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        per_layer = r * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))
        return self.num_layers * per_layer

    @classmethod
    def from_config(cls, cfg: dict, name: str = "") -> "ModelShape":
        """From a Hugging Face ``config.json`` (as a dict) of a Llama-style model."""
        try:
            heads = cfg["num_attention_heads"]
            return cls(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                       num_layers=cfg["num_hidden_layers"], vocab_size=cfg["vocab_size"], num_heads=heads,
                       num_kv_heads=cfg.get("num_key_value_heads") or heads,
                       tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), name=name)
        except KeyError as err:
            raise ValueError(f"config of {name or 'the model'} lacks {err}: the memory plan knows "
                             "Llama-style decoders (hidden_size, intermediate_size, num_hidden_layers, "
                             "vocab_size, num_attention_heads)") from None


# The models of the course's profiles, so a plan needs no network.
KNOWN_SHAPES = {
    "embedded": ModelShape(576, 1536, 30, 49152, 9, 3, True, "SmolLM2-135M-Instruct"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ModelShape(576, 1536, 30, 49152, 9, 3, True, "SmolLM2-135M-Instruct"),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ModelShape(2048, 8192, 24, 49152, 32, 32, True, "SmolLM2-1.7B-Instruct"),
    "meta-llama/Llama-2-7b-chat-hf": ModelShape(4096, 11008, 32, 32000, 32, 32, False, "Llama-2-7b-chat"),
    "meta-llama/Llama-2-7b-hf": ModelShape(4096, 11008, 32, 32000, 32, 32, False, "Llama-2-7b"),
}


def model_shape(spec: str | os.PathLike, network: bool = True) -> ModelShape | None:
    """The shape of a model spec without loading weights: a profile's model from
    ``KNOWN_SHAPES``, a local directory from its ``config.json``, a hub id from the
    Hugging Face cache, else (with ``network``) its config.json from the hub. None
    when it cannot be found."""
    spec = str(spec)
    if spec in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec]
    local = Path(spec).expanduser()
    if (local / "config.json").is_file():
        return ModelShape.from_config(json.loads((local / "config.json").read_text()), name=local.name)
    if (local / "adapter_config.json").is_file():   # an adapter: plan for its base
        base = json.loads((local / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return model_shape(base, network) if base else None
    from transformers import AutoConfig
    for local_only in (True, False) if network else (True,):
        try:
            return ModelShape.from_config(AutoConfig.from_pretrained(spec, local_files_only=local_only).to_dict(),
                                          name=spec)
        except Exception:   # not cached, offline, unknown, gated: the caller plans without it
            continue
    return None


@dataclass(frozen=True)
class MemoryPlan:
    """Expected peak memory of one training process, in bytes, part by part."""
    weights: int
    grads: int
    optimizer: int
    activations: int
    logits: int
    margin: int
    method: str
    batch_size: int
    seq_len: int
    processes: int
    fsdp: bool
    checkpointing: bool
    trainable: int
    model: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits + self.margin

    def rows(self) -> list[tuple[str, float]]:
        return [("weights", self.weights), ("grads", self.grads), ("optimizer (AdamW)", self.optimizer),
                ("activations", self.activations), ("logits + loss", self.logits),
                ("CUDA context + slack", self.margin), ("total per GPU", self.total)]

    def __str__(self) -> str:
        how = (f"{self.method}, batch {self.batch_size} x {self.seq_len} tokens per GPU, "
               f"{self.processes} process(es){' FSDP-sharded' if self.fsdp else ''}, "
               f"checkpointing {'on' if self.checkpointing else 'off'}")
        lines = [f"memory plan for {self.model or 'the model'} ({how}):"]
        lines += [f"  {name:<22}{value / GiB:8.2f} GiB" for name, value in self.rows()]
        return "\n".join(lines)


def plan(shape: ModelShape, method: str = "lora", seq_len: int = 512, batch_size: int = 1,
         processes: int = 1, fsdp: bool = False, checkpointing: bool = True, lora_r: int = 16,
         half: bool = True, frozen_copies: int = 0) -> MemoryPlan:
    """The expected peak memory per GPU of one training step (see the module docstring).

    ``half``: weights loaded and the forward run in bf16/fp16 (a GPU); False for fp32.
    ``fsdp``: full finetuning sharded over ``processes`` GPUs (ignored for LoRA, which
    is trained with DDP). ``frozen_copies``: extra frozen copies of the model kept on
    the GPU (reinforcement with ``method="full"`` keeps the baseline beside it).
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    if seq_len < 1 or batch_size < 1 or processes < 1:
        raise ValueError("seq_len, batch_size and processes must be >= 1")
    low = 2 if half else 4                      # bytes of a half-precision (or fp32) number
    n, h, i = shape.n_params, shape.hidden_size, shape.intermediate_size
    shard = processes if (fsdp and method == "full") else 1
    if method == "lora":
        trainable = shape.lora_params(lora_r)
        weights = n * low + trainable * 4
    else:
        trainable = n
        gathered = 2 * shape.layer_params * low if shard > 1 else 0   # layers all-gathered at a time
        autocast = (n * low if shard == 1 else 0) if half else 0      # half copies of fp32 weights
        weights = n * 4 // shard + gathered + autocast
    weights += frozen_copies * n * low
    grads = trainable * 4 // shard
    if processes > 1 and shard == 1:
        grads *= 2                              # DDP's gradient buckets
    optimizer = trainable * 8 // shard
    tokens = batch_size * seq_len
    per_layer = tokens * (12 * h + 5 * i) * low
    if checkpointing:
        activations = shape.num_layers * tokens * h * low + per_layer
    else:
        activations = shape.num_layers * per_layer
    logits = tokens * shape.vocab_size * (low + 8)
    margin = GiB + (weights + grads + optimizer + activations + logits) // 20
    return MemoryPlan(weights, grads, optimizer, activations, logits, margin, method, batch_size, seq_len,
                      processes, fsdp and method == "full", checkpointing, trainable, shape.name)


def largest_batch(shape: ModelShape, gpu_bytes: int, limit: int = 1024, **plan_kw) -> int:
    """The largest batch (per GPU, up to ``limit``) whose plan fits in ``gpu_bytes``; 0 if none."""
    if plan(shape, batch_size=1, **plan_kw).total > gpu_bytes:
        return 0
    lo, hi = 1, limit
    while lo < hi:                              # the plan grows with the batch: bisect
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if plan(shape, batch_size=mid, **plan_kw).total <= gpu_bytes else (lo, mid - 1)
    return lo


def check_fits(p: MemoryPlan, gpu_bytes: int, shape: ModelShape | None = None) -> None:
    """Raise ``DoesNotFitError`` with the plan and what to do when ``p`` exceeds ``gpu_bytes``."""
    if p.total <= gpu_bytes:
        return
    advice = []
    if shape is not None and p.batch_size > 1:
        kw = dict(method=p.method, seq_len=p.seq_len, processes=p.processes, fsdp=p.fsdp,
                  checkpointing=p.checkpointing)
        b = largest_batch(shape, gpu_bytes, limit=p.batch_size, **kw)
        if b:
            advice.append(f"a batch of {b} per GPU fits: lower the batch size and raise gradient accumulation "
                          "to keep the global batch")
    if not p.checkpointing:
        advice.append("turn gradient checkpointing on (GRADIENT_CHECKPOINTING = True)")
    if p.method == "full" and not p.fsdp:
        advice.append("shard the full finetune with FSDP over several GPUs "
                      "(accelerate launch --config_file configs/accelerate/fsdp_8gpu_full.yaml)")
    elif p.method == "full":
        advice.append("use more GPUs, or CPU offload (fsdp_offload_params: true)")
    if p.method == "full":
        advice.append("or train a LoRA adapter instead (REINFORCE_METHOD / FINETUNE_METHOD = 'lora')")
    advice.append("or a shorter BLOCK_SIZE or a smaller MODEL")
    raise DoesNotFitError(f"this training will not fit: it needs about {p.total / GiB:.1f} GiB per GPU, "
                          f"the GPU has {gpu_bytes / GiB:.1f} GiB.\n{p}\nWhat to do: " + "; ".join(advice) + ".")


def launch_environment() -> tuple[int, bool]:
    """``(processes, fsdp)`` of this launch, from the variables ``torchrun`` and
    ``accelerate launch`` set (``WORLD_SIZE``, ``ACCELERATE_USE_FSDP``)."""
    return int(os.environ.get("WORLD_SIZE", 1)), os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def gpu_bytes(fraction: float = 0.95) -> int | None:
    """The usable memory of this process's GPU (``fraction`` of the total), or None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
    return int(torch.cuda.get_device_properties(index).total_memory * fraction)


def split_global_batch(global_batch: int, processes: int, fits: int) -> tuple[int, int]:
    """``(batch per GPU, accumulation)`` giving exactly ``global_batch`` sequences per
    optimizer step over ``processes`` GPUs with at most ``fits`` sequences per GPU."""
    if global_batch % processes:
        raise DoesNotFitError(f"a global batch of {global_batch} sequences cannot be split evenly over "
                              f"{processes} processes: choose a batch size x accumulation divisible by {processes}")
    per_process = global_batch // processes
    for b in range(min(fits, per_process), 0, -1):
        if per_process % b == 0:
            return b, per_process // b
    raise DoesNotFitError("not even one sequence per GPU fits")

