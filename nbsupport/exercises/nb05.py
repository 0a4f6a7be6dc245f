"""Exercises of notebook 05 (finetuning): ``soft_cross_entropy``, ``kl_retain``."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .. import generic_labels
from .harness import Report, diagnose, generator, same, short, solution_of

NAMES = ("soft_cross_entropy", "kl_retain")


@solution_of("soft_cross_entropy")
def solution_soft_cross_entropy(logits: torch.Tensor, topk_ids: torch.Tensor, topk_values: torch.Tensor,
                                labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against softmax of the top-k generic logits, averaged over trained positions.

    ``logits`` [b, L, V]: position t predicts token t+1. ``topk_ids``/``topk_values``
    [b, L, k] and ``labels`` [b, L] are aligned with the input (the Hugging Face
    convention), so the target of position t sits at t+1; label -100 = not trained.
    Returns a 0-dim tensor (0 when nothing is trained)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)                  # [b, L-1, V]
    target = torch.softmax(topk_values[:, 1:].float(), -1)               # [b, L-1, k]
    per_position = -(target * logp.gather(-1, topk_ids[:, 1:])).sum(-1)  # [b, L-1]
    trained = (labels[:, 1:] != generic_labels.IGNORE).float()
    return (per_position * trained).sum() / trained.sum().clamp(min=1)


# A hand-made batch (b = 2, L = 4, V = 3, k = 2). Sequence 1, position 0 predicts the target
# at 1: softmax([0, 0]) = 1/2, 1/2 on ids 2 and 0, whose probabilities in row 0 are 1/2 and
# 1/4, so -(1/2 log 1/2 + 1/2 log 1/4) = 1.5 log 2. Position 1 predicts the target at 2:
# softmax([log 3, 0]) = 3/4, 1/4 on ids 0 and 1, probabilities 3/5 and 1/5 in row 1.
# Position 2's target (at 3) is not trained (label -100). Sequence 2 trains one position,
# uniform logits (1/3 each): log 3. The mean is over the batch's three trained positions.
_SOFT_UNIFORM = [[0.0, 0.0, 0.0]] * 4
SOFT_HAND = {
    "logits": [[[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0], [0.0, math.log(4), 0.0], [0.0, 0.0, 0.0]],
               _SOFT_UNIFORM],
    "topk_ids": [[[0, 1], [2, 0], [0, 1], [1, 2]], [[0, 1]] * 4],
    "topk_values": [[[0.0, 0.0], [0.0, 0.0], [math.log(3), 0.0], [0.0, 0.0]], [[0.0, 0.0]] * 4],
    "labels": [[-100, 2, 0, -100], [-100, 0, -100, -100]],
    "expected": (1.5 * math.log(2) - 0.75 * math.log(0.6) - 0.25 * math.log(0.2) + math.log(3)) / 3,
}


def _soft_case(g: torch.Generator, b: int, L: int, V: int, k: int, untrained: float = 0.3):
    logits = torch.randn(b, L, V, generator=g) * 2
    topk_ids = torch.stack([torch.randperm(V, generator=g)[:k] for _ in range(b * L)]).reshape(b, L, k)
    topk_values = torch.sort(torch.randn(b, L, k, generator=g) * 2, dim=-1, descending=True).values
    labels = topk_ids[..., 0].clone()
    labels[torch.rand(b, L, generator=g) < untrained] = generic_labels.IGNORE
    labels[:, 0] = generic_labels.IGNORE          # nothing predicts the first token
    return logits, topk_ids, topk_values, labels


def _soft_variants(logits, ids, vals, labels) -> dict[str, torch.Tensor]:
    """Known wrong answers, by hint."""
    logp = torch.log_softmax(logits, -1)
    trained = (labels[:, 1:] != generic_labels.IGNORE).float()
    target = torch.softmax(vals[:, 1:], -1)
    per = -(target * logp[:, :-1].gather(-1, ids[:, 1:])).sum(-1)
    no_shift = -(torch.softmax(vals, -1) * logp.gather(-1, ids)).sum(-1)
    mask0 = (labels != generic_labels.IGNORE).float()
    return {
        "position t's logits predict token t+1: compare logits[:, :-1] with the targets at [:, 1:].":
            (no_shift * mask0).sum() / mask0.sum(),
        "average over TRAINED positions only (labels != -100), not over every position.": per.mean(),
        "the target distribution is softmax(topk_values), not the raw values.":
            (-(vals[:, 1:] * logp[:, :-1].gather(-1, ids[:, 1:])).sum(-1) * trained).sum() / trained.sum(),
        "take log_softmax of the model's logits before gathering.":
            (-(target * logits[:, :-1].gather(-1, ids[:, 1:])).sum(-1) * trained).sum() / trained.sum(),
        "a soft target spreads over all k ids, not only the top one (that is the hard label).":
            (-logp[:, :-1].gather(-1, ids[:, 1:, :1]).squeeze(-1) * trained).sum() / trained.sum(),
        "average over all trained positions of the batch at once, not per sequence then over sequences.":
            ((per * trained).sum(-1) / trained.sum(-1).clamp(min=1)).mean(),
    }


def check_soft_cross_entropy(fn: Callable) -> bool:
    """Check ``fn(logits [b, L, V], topk_ids [b, L, k], topk_values [b, L, k], labels [b, L])``
    on a hand-made batch and against ``finetune.soft_cross_entropy`` on random ones."""
    from .. import finetune

    with Report("soft_cross_entropy") as r:
        g = generator(3)
        h = SOFT_HAND
        hand = [torch.tensor(h[key]) for key in ("logits", "topk_ids", "topk_values", "labels")]
        got = r.call(fn, *[x.clone() for x in hand], case="the hand-made batch")
        r.expect(same(got, h["expected"]),
                 "hand-made: three trained positions, 1.5 log 2, -(3/4 log 3/5 + 1/4 log 1/5) and log 3, "
                 f"average {h['expected']:.5f}",
                 f"the hand-made batch (2 x 4 x 3, three trained positions) should give {h['expected']:.5f}: "
                 "in sequence 1 position 0 puts 1/2, 1/2 on ids 2, 0 of row 0 (probabilities 1/2, 1/4) and "
                 "position 1 puts 3/4, 1/4 on ids 0, 1 of row 1 (3/5, 1/5); sequence 2 trains one position "
                 "of uniform logits (log 3); "
                 f"got {short(got)}.{diagnose(got, _soft_variants(*hand))}")
        failures = []
        for i, shape in enumerate([(2, 6, 11, 3), (1, 8, 7, 4), (3, 5, 9, 2), (2, 7, 13, 5)]):
            logits, ids, vals, labels = _soft_case(g, *shape)
            got = r.call(fn, logits.clone(), ids.clone(), vals.clone(), labels.clone(), case=f"random case {i + 1}")
            expected = finetune.soft_cross_entropy(logits, ids, vals, labels)
            if not same(got, expected):
                hint = diagnose(got, _soft_variants(logits, ids, vals, labels))
                failures.append(f"random case {i + 1} (b, L, V, k = {shape}): expected {expected.item():.5f}, "
                                f"got {short(got)}.{hint}")
        r.cases(failures, "matches finetune.soft_cross_entropy on 4 random batches with untrained (-100) positions")
        logits, ids, vals, labels = _soft_case(g, 1, 4, 6, 2)
        labels[:] = generic_labels.IGNORE
        got = r.call(fn, logits, ids, vals, labels, case="a block with no trained position")
        r.expect(same(got, 0.0), "a block with no trained position gives 0 (not nan)",
                 f"with no trained position the loss should be 0, got {short(got)}: divide by "
                 "max(number of trained positions, 1)")
    return r.passed


@solution_of("kl_retain")
def solution_kl_retain(logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_B || P_model) per position, averaged over positions.

    ``logits`` [b, L, V] of the model being trained, ``base_logits`` [b, L, V] of the
    baseline B. KL(P_B || P_M) = sum_v P_B(v) (log P_B(v) - log P_M(v)) weighs each
    token by the baseline's belief. Returns a 0-dim tensor."""
    logp = torch.log_softmax(logits.float(), -1)
    logp_b = torch.log_softmax(base_logits.float(), -1)
    return (logp_b.exp() * (logp_b - logp)).sum(-1).mean()


# A hand-made pair of positions (V = 3). Position 0: P_B = 1/3 each, P_model = 1/2, 1/4, 1/4,
# so KL = 1/3 log(2/3) + 2/3 log(4/3) = log(32/27) / 3. Position 1: P_B = 2/5, 2/5, 1/5,
# P_model = 1/3 each, so KL = 4/5 log(6/5) + 1/5 log(3/5). The other direction differs.
KL_HAND = {"logits": [[[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]]],
           "base_logits": [[[0.0, 0.0, 0.0], [math.log(2), math.log(2), 0.0]]],
           "expected": (math.log(32 / 27) / 3 + 0.8 * math.log(1.2) + 0.2 * math.log(0.6)) / 2}


def _kl_of(logits: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """KL(P_B || P_model) summed over the vocabulary, averaged over positions (with F.kl_div)."""
    positions = logits.numel() // logits.shape[-1]
    return F.kl_div(torch.log_softmax(logits, -1), torch.log_softmax(base, -1), log_target=True,
                    reduction="sum") / positions


def _kl_variants(logits, base) -> dict[str, torch.Tensor]:
    """Known wrong answers, by hint."""
    logp, logp_b = torch.log_softmax(logits, -1), torch.log_softmax(base, -1)
    per = (logp_b.exp() * (logp_b - logp)).sum(-1)
    return {
        "wrong direction: KL(P_B || P_model) = sum P_B (log P_B - log P_model) weighs tokens by "
        "the BASELINE's belief (with F.kl_div(input, target) that is input = log P_model, "
        "target = P_B).": _kl_of(base, logits),
        "F.kl_div's reduction='mean' divides by the vocabulary size too: sum over the "
        "vocabulary, then average over positions.": per.mean() / logits.shape[-1],
        "average over positions (mean), do not add them up.": per.sum(),
        "F.kl_div's reduction='batchmean' divides by the first dimension only: with "
        "[b, L, V] logits sum over the vocabulary, then average over all b x L positions.":
            per.sum() / logits.shape[0],
        "turn logits into log-probabilities (log_softmax) first.":
            (torch.softmax(base, -1) * (base - logits)).sum(-1).mean(),
    }


def check_kl_retain(fn: Callable) -> bool:
    """Check ``fn(logits [b, L, V], base_logits [b, L, V]) -> KL(P_B || P_model)``, the
    retain term of ``finetune.kl_retain``, on hand-made and random logits."""
    with Report("kl_retain") as r:
        g = generator(5)
        x = torch.randn(2, 3, 8, generator=g)
        got = r.call(fn, x.clone(), x.clone(), case="identical logits")
        r.expect(same(got, 0.0), "identical distributions: KL = 0",
                 f"the same logits twice should give 0, got {short(got)}")
        h = KL_HAND
        hand, hand_base = torch.tensor(h["logits"]), torch.tensor(h["base_logits"])
        got = r.call(fn, hand.clone(), hand_base.clone(), case="the hand-made 1 x 2 x 3 logits")
        r.expect(same(got, h["expected"]),
                 f"hand-made: (log(32/27)/3 + 4/5 log(6/5) + 1/5 log(3/5)) / 2 = {h['expected']:.5f}",
                 f"the hand-made logits should give {h['expected']:.5f}: at position 0 P_B = 1/3 each and "
                 "P_model = 1/2, 1/4, 1/4, at position 1 P_B = 2/5, 2/5, 1/5 and P_model = 1/3 each; "
                 f"got {short(got)}.{diagnose(got, _kl_variants(hand, hand_base))}")
        failures = []
        for i in range(4):
            logits, base = torch.randn(2, 5, 9, generator=g) * 2, torch.randn(2, 5, 9, generator=g) * 2
            got = r.call(fn, logits.clone(), base.clone(), case=f"random case {i + 1}")
            expected = _kl_of(logits, base)
            if not same(got, expected):
                failures.append(f"random case {i + 1}: expected {expected.item():.5f}, got {short(got)}."
                                f"{diagnose(got, _kl_variants(logits, base))}")
        r.cases(failures, "matches KL(P_B || P_model) on 4 random batches (the retain term of finetune.kl_retain)")
        logits, base = torch.randn(1, 4, 7, generator=g), torch.randn(1, 4, 7, generator=g)
        plain = r.call(fn, logits.clone(), base.clone(), case="random logits")
        got = r.call(fn, logits + 3.0, base - 2.0, case="logits shifted by a constant")
        r.expect(same(got, plain),
                 "adding a constant to the logits changes nothing (they are turned into probabilities)",
                 "adding a constant to every logit leaves the probabilities, and so the KL, unchanged: "
                 "use log_softmax")
    return r.passed
