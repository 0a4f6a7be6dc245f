"""The baseline B and a model trained from it, side by side (docs/ALGORITHM.md sections 1-2).

Reinforcement makes R from B; finetuning makes the unlearned model U from B. With
LoRA (the default) the trained model is an adapter on B: one set of weights, and
switching the adapter off gives B back exactly. With a full finetune the two are
separate models. ``ModelPair`` hides the difference: every stage asks it for the
baseline's or the trained model's view, or for both logits at once, and never
passes ``base=None`` around.

The generic prediction of section 2 lives here too, because it is defined on a pair:

    v_generic = v_B - alpha * ReLU(v_R - v_B)
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def device_of(model) -> torch.device:
    """The device of a model's (first) parameters."""
    return next(model.parameters()).device


class ModelPair:
    """B and a model trained from it: ``ModelPair(model)`` when ``model`` carries a
    PEFT adapter (adapter on: trained; off: B), or ``ModelPair(model, base=B)`` for
    two separate models (a full finetune)."""

    def __init__(self, model, base=None):
        if base is None and not hasattr(model, "disable_adapter"):
            # Without an adapter the "baseline" would be the model itself: every
            # difference would be a silent 0.
            raise ValueError("this model has no adapter to switch off: pass the baseline as base=")
        self.model, self.separate_base = model, base

    @property
    def shares_weights(self) -> bool:
        """True when B is the model with its adapter switched off."""
        return self.separate_base is None

    @property
    def device(self) -> torch.device:
        return device_of(self.model)

    @contextmanager
    def base(self) -> Iterator:
        """Context whose value computes B: ``with pair.base() as B: B(input_ids)``."""
        if self.separate_base is not None:
            yield self.separate_base
        else:
            with self.model.disable_adapter():
                yield self.model

    def trained(self):
        """Context whose value computes the trained model (R or U)."""
        return nullcontext(self.model)

    def eval(self) -> "ModelPair":
        self.model.eval()
        if self.separate_base is not None:
            self.separate_base.eval()
        return self

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               base_input_ids: torch.Tensor | None = None,
               base_attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v_B, v_trained)``, float32 on the pair's device.

        Both read ``input_ids`` [b, L] unless B is given its own input
        (``base_input_ids`` [b, L'], e.g. the translated blocks of label
        generation); shapes [b, L', vocab] and [b, L, vocab].
        """
        device = self.device
        v_t = self.model(input_ids=input_ids.to(device),
                         attention_mask=None if attention_mask is None else attention_mask.to(device)).logits.float()
        if base_input_ids is None:
            base_input_ids, base_attention_mask = input_ids, attention_mask
        with self.base() as B:
            v_b = B(input_ids=base_input_ids.to(device),
                    attention_mask=None if base_attention_mask is None else base_attention_mask.to(device)).logits.float()
        return v_b, v_t


def generic_logits(v_base: torch.Tensor, v_reinforced: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_B - alpha * ReLU(v_R - v_B), elementwise; any shape [..., vocab].

    Only the logits that reinforcement raised are pushed down; alpha = 5 in the paper."""
    if v_base.shape != v_reinforced.shape:
        raise ValueError(f"logit shapes differ: {tuple(v_base.shape)} vs {tuple(v_reinforced.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    return v_base - alpha * torch.relu(v_reinforced - v_base)
