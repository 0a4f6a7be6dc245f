"""Where the forgetting signal of the generic labels lives (notebook 04's diagnosis).

Finetuning starts from B. At a position where the generic label is what B itself
predicts on the original text, the loss asks U to stay B: no forgetting there. The
signal to forget sits where the label moves away from B's prediction. For every
trained position this module measures how far:

* ``divergence``: the soft target's excess divergence from B on the original text,
  ``KL(q || P_B) - KL(q_B || P_B)``, in nats, where ``q`` is the softmax of the
  position's top-k generic logits and ``q_B`` B's own top-k, renormalized. The
  second term (``-log`` of the mass B puts on its own top-k) is what truncating
  to k tokens costs by itself, so a label equal to B's truncated prediction scores 0;
* ``top1_changed``: the label's first choice is not B's;

and puts each position in one of three kinds, by the token the text has there:

* ``anchor``: a piece of an anchored term (``generic_labels.anchor_token_ids``);
* ``raised by R``: reinforcement raised that token's log-probability by more than
  ``raised_nats`` (the world's own facts and phrases, as R learned them);
* ``prose``: everything else.

``signal_table`` sums it up by kind: the share of positions and the share of the
signal each holds. Shapes follow ``GenericLabels`` (the HF convention: the label at
index t is the target of the prediction made at t-1).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from .generic_labels import IGNORE, GenericLabels
from .pair import ModelPair
from .progress import bar

KINDS = ("anchor", "raised by R", "prose")
RAISED_NATS = 1.0   # R raised the text's token by more than this (nats): "raised by R"


def excess_divergence(logp_b: torch.Tensor, topk_ids: torch.Tensor, topk_values: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``KL(q || P_B) - KL(q_B || P_B)`` per position, in nats (see the module docstring).

    ``logp_b`` [..., V] are B's log-probabilities at the predicting positions;
    ``topk_ids`` [..., k] and ``topk_values`` [..., k] the soft targets of the same
    positions (already shifted onto them). Returns [...]. ``KL(q_B || P_B)`` is
    ``-log`` of B's mass on its own top k, k being the targets' k.
    """
    q_log = torch.log_softmax(topk_values.float() / temperature, -1)
    kl = (q_log.exp() * (q_log - logp_b.gather(-1, topk_ids.long()))).sum(-1)
    own_mass = logp_b.topk(topk_ids.shape[-1], dim=-1).values.logsumexp(-1)       # log of B's top-k mass
    return kl + own_mass


@torch.no_grad()
def position_signal(pair: ModelPair, labels: GenericLabels, alpha: float, anchor_ids: set[int],
                    batch_size: int = 4, raised_nats: float = RAISED_NATS, blocks: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """One row per trained position of the first ``blocks`` blocks (all by default):
    ``block``, ``position`` (index of the predicted token), ``kind``, ``divergence``,
    ``top1_changed``, ``label_is_text`` (the hard label is the text's own token) and
    ``raised`` (R's log-probability of the text's token minus B's, nats).
    ``pair`` is B and R (notebook 02's); ``labels`` need soft targets for ``alpha``."""
    ids_all, vals_all = labels.soft(alpha)
    hard_all, inputs = labels.labels(alpha), labels.input_ids
    n = len(inputs) if blocks is None else min(blocks, len(inputs))
    anchors = torch.tensor(sorted(anchor_ids), dtype=inputs.dtype)
    parts = []
    for lo in bar(range(0, n, batch_size), "label signal", unit="batches", progress=progress):
        hi = min(lo + batch_size, n)
        x = inputs[lo:hi]
        v_b, v_r = pair.logits(x)                                              # [b, L, V] each
        logp_b = torch.log_softmax(v_b[:, :-1], -1).cpu()                      # predicts t+1 at t
        logp_r = torch.log_softmax(v_r[:, :-1], -1).cpu()
        target = x[:, 1:]
        hard = hard_all[lo:hi, 1:]
        trained = hard != IGNORE
        divergence = excess_divergence(logp_b, ids_all[lo:hi, 1:], vals_all[lo:hi, 1:])
        raised = (logp_r.gather(-1, target[..., None]) - logp_b.gather(-1, target[..., None]))[..., 0]
        kind = torch.where(torch.isin(target, anchors), 0, torch.where(raised > raised_nats, 1, 2))
        rows, cols = torch.nonzero(trained, as_tuple=True)
        parts.append(pd.DataFrame({
            "block": (rows + lo).numpy(), "position": (cols + 1).numpy(),
            "kind": [KINDS[k] for k in kind[rows, cols].tolist()],
            "divergence": divergence[rows, cols].numpy(),
            "top1_changed": (hard[rows, cols] != logp_b[rows, cols].argmax(-1)).numpy(),
            "label_is_text": (hard[rows, cols] == target[rows, cols]).numpy(),
            "raised": raised[rows, cols].numpy()}))
    if not parts:
        raise ValueError("no blocks to measure")
    return pd.concat(parts, ignore_index=True)


def signal_table(positions: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """By kind (and ``all``): ``positions``, ``% of positions``, ``top-1 changed %``,
    ``mean divergence`` (nats) and ``% of the signal`` (its share of the summed
    divergence); with ``threshold``, ``% above`` (positions whose divergence exceeds it)."""
    if positions.empty:
        raise ValueError("no positions to sum up")
    total = positions.divergence.clip(lower=0).sum()
    rows = {}
    for kind, part in [*((k, positions[positions.kind == k]) for k in KINDS), ("all", positions)]:
        if part.empty:
            continue
        row = {"positions": len(part), "% of positions": 100 * len(part) / len(positions),
               "top-1 changed %": 100 * part.top1_changed.mean(), "mean divergence": part.divergence.mean(),
               "% of the signal": 100 * part.divergence.clip(lower=0).sum() / total if total > 0 else 0.0}
        if threshold is not None:
            row["% above"] = 100 * (part.divergence > threshold).mean()
        rows[kind] = row
    return pd.DataFrame(rows).T.astype({"positions": int})


def by_prefix(positions: pd.DataFrame, block_counts: Sequence[int], block_size: int) -> pd.DataFrame:
    """The signal of the text's first N blocks, for each N of ``block_counts``: one row
    per N with the tokens, the share of positions whose top-1 changed, the mean
    divergence and, per kind, its share of positions and of the signal."""
    rows = []
    for n in block_counts:
        part = positions[positions.block < n]
        if part.empty:
            continue
        table = signal_table(part)
        row = {"blocks": n, "tokens": n * block_size, "top-1 changed %": table.loc["all", "top-1 changed %"],
               "mean divergence": table.loc["all", "mean divergence"]}
        for kind in KINDS:
            if kind in table.index:
                row[f"{kind}: % of positions"] = table.loc[kind, "% of positions"]
                row[f"{kind}: % of the signal"] = table.loc[kind, "% of the signal"]
        rows.append(row)
    return pd.DataFrame(rows)
