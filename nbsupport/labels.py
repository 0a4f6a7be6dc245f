"""Generic predictions and labels (ALGORITHM.md sections 2 and 4).

For logits at one position,

    v_generic = v_B - alpha * ReLU(v_R - v_B)

pushes down only the tokens that reinforcement raised.
"""
from __future__ import annotations

import pandas as pd
import torch


def generic_logits(v_base: torch.Tensor, v_reinforced: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_B - alpha * ReLU(v_R - v_B), elementwise; any shape [..., vocab]."""
    if v_base.shape != v_reinforced.shape:
        raise ValueError(f"logit shapes differ: {tuple(v_base.shape)} vs {tuple(v_reinforced.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    return v_base - alpha * torch.relu(v_reinforced - v_base)


def generic_topk(model, tok, prompt: str, alpha: float, k: int = 10, base=None) -> pd.DataFrame:
    """Top-k of softmax(v_generic) after ``prompt``, next to B's probabilities.

    ``model`` is R (a LoRA PeftModel, or a full copy with ``base`` given).
    """
    from .reinforce import paired_logits

    ids = tok(prompt, return_tensors="pt")["input_ids"]
    v_b, v_r = paired_logits(model, ids, base)
    p_gen = torch.softmax(generic_logits(v_b[0, -1], v_r[0, -1], alpha), -1).cpu()
    p_b = torch.softmax(v_b[0, -1], -1).cpu()
    values, idx = p_gen.topk(k)
    return pd.DataFrame({"token": [tok.decode([int(i)]) for i in idx], "prob": values.tolist(),
                         "p_baseline": p_b[idx].tolist()})
