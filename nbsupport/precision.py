"""Precision of training: fp32 master weights, bf16 autocast on GPUs and, where the
CPU computes bf16 in hardware, for the loss on the CPU (``training.train`` uses it)."""
from __future__ import annotations

import torch

from . import memory


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles).

    There bf16 autocast trains the course's LoRA about 1.4x faster than fp32
    (``benchmarks/cpu_precision.py``); elsewhere bf16 is emulated and slower.
    """
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


class CpuBf16Autocast:
    """A Trainer mixin: the loss (forward passes included) runs under bf16 autocast
    on the CPU; the backward pass follows the forward's dtypes.

    The Trainer's own ``bf16=True`` would hand this to accelerate, which wraps the
    model's ``forward`` in autocast for good: the callbacks' step measures and every
    measure after training would then run in bf16 too. Here only the loss does.
    """

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled)


def master_weights_in_fp32(model, cpu_bf16: bool | None = None) -> tuple[dict, bool]:
    """Make every trainable weight fp32; return the Trainer's GPU autocast flags and
    whether the loss runs under bf16 autocast on the CPU.

    A model loaded in bf16 or fp16 must not be *trained* in it: at the paper's
    learning rate of 1e-6 most bf16 updates round to nothing, and fp16 full
    finetuning with a grad scaler fails on fp16 master weights. So the weights that
    train are kept in fp32 (the frozen base of a LoRA model may stay in half
    precision) and the forward pass runs under bf16/fp16 autocast on a GPU.

    On the CPU the weights are fp32 and the loss runs under bf16 autocast when
    ``cpu_bf16`` says so (None: where the CPU has native bf16). Only the loss
    does: the step measures and every measure after training stay in fp32.
    """
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if not on_gpu(model):
        return {}, cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    if not half:
        return {}, False
    return {"bf16": torch.bfloat16 in half, "fp16": torch.bfloat16 not in half}, False


def on_gpu(model) -> bool:
    """Train on the GPU: the model is there, or FSDP will shard it there from the CPU."""
    if next(model.parameters()).device.type == "cuda":
        return True
    return memory.launch_environment()[1] and torch.cuda.is_available()
