"""Exercises of notebook 02 (reinforcement): ``generic_logits``, ``alpha_puzzle``."""
from __future__ import annotations

from typing import Callable

import torch

from .. import pair
from .harness import Report, diagnose, generator, register, same, short, solution_of

NAMES = ("generic_logits", "alpha_puzzle")


@solution_of("generic_logits")
def solution_generic_logits(v_b: torch.Tensor, v_r: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_B - alpha * ReLU(v_R - v_B), elementwise; shapes [..., vocab] in and out.

    Only the logits that reinforcement raised (v_R > v_B) are pushed down."""
    return v_b - alpha * torch.relu(v_r - v_b)


# A hand-made case: R raised ' Hermione' by 1 and ' Ginny' by 1.5, left ' her' and lowered
# ' the'; with alpha = 2: 4 - 2 x 1 = 2, 2 - 2 x 1.5 = -1, and the other two unchanged.
GENERIC_HAND = {"v_b": [4.0, 2.0, 3.0, 1.0], "v_r": [5.0, 3.5, 3.0, 0.5], "alpha": 2.0,
                "expected": [2.0, -1.0, 3.0, 1.0]}


def _generic_variants(v_b: torch.Tensor, v_r: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Known wrong answers, by hint."""
    return {
        "clip the difference with ReLU: only tokens R raised are pushed down.": v_b - alpha * (v_r - v_b),
        "alpha multiplies the difference ReLU(v_R - v_B), not v_R.": v_b - torch.relu(alpha * v_r - v_b),
        "start from v_B, the baseline, not from v_R.": v_r - alpha * torch.relu(v_r - v_b),
        "subtract: tokens reinforcement raised are pushed DOWN.": v_b + alpha * torch.relu(v_r - v_b),
        "the difference is v_R - v_B (what reinforcement added), not v_B - v_R.":
            v_b - alpha * torch.relu(v_b - v_r),
    }


def check_generic_logits(fn: Callable) -> bool:
    """Check ``fn(v_b, v_r, alpha)`` on a hand-made case, edge cases, and against
    ``pair.generic_logits`` on random ones."""
    with Report("generic_logits") as r:
        g = generator(1)
        shapes_ok = True
        for shape in [(7,), (3, 11), (2, 4, 5)]:
            v_b, v_r = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
            got = r.call(fn, v_b.clone(), v_r.clone(), 2.0, case=f"shape {shape}")
            if not isinstance(got, torch.Tensor) or got.shape != v_b.shape:
                shapes_ok = False
                r.fail(f"inputs of shape {shape} should give a tensor of the same shape, got {short(got)}")
                break
        if shapes_ok:
            r.ok("shapes: [vocab], [positions, vocab] and [batch, positions, vocab] are kept")
        h = GENERIC_HAND
        hand_b, hand_r = torch.tensor(h["v_b"]), torch.tensor(h["v_r"])
        got = r.call(fn, hand_b.clone(), hand_r.clone(), h["alpha"], case="the hand-made case")
        r.expect(same(got, h["expected"]),
                 f"hand-made: v_B = {h['v_b']}, v_R = {h['v_r']}, alpha = 2 gives {h['expected']}",
                 f"v_B = {h['v_b']}, v_R = {h['v_r']}, alpha = 2 should give {h['expected']} (R raised the first "
                 f"two by 1 and 1.5, so 4 - 2 x 1 and 2 - 2 x 1.5; the others stay), got {short(got)}."
                 + diagnose(got, _generic_variants(hand_b, hand_r, h["alpha"])))
        v_b, v_r = torch.randn(9, generator=g), torch.randn(9, generator=g)
        got = r.call(fn, v_b.clone(), v_r.clone(), 0.0, case="alpha = 0")
        r.expect(same(got, v_b), "alpha = 0 gives v_B back",
                 f"alpha = 0 should give v_B back ({short(v_b)}), got {short(got)}")
        lower = v_b - torch.rand(9, generator=g) - 0.1
        got = r.call(fn, v_b.clone(), lower.clone(), 5.0, case="v_R below v_B everywhere")
        r.expect(same(got, v_b), "tokens that reinforcement lowered are left alone (the ReLU)",
                 f"where v_R < v_B everywhere nothing was raised, so the result is v_B; got {short(got)}."
                 + diagnose(got, {"clip the difference with ReLU: only tokens R raised are pushed down.":
                                  v_b - 5.0 * (lower - v_b)}))
        failures = []
        for i in range(5):
            v_b, v_r = torch.randn(4, 13, generator=g) * 2, torch.randn(4, 13, generator=g) * 2
            alpha = [0.5, 1.0, 2.5, 5.0, 10.0][i]
            got = r.call(fn, v_b.clone(), v_r.clone(), alpha, case=f"random case {i + 1}")
            expected = pair.generic_logits(v_b, v_r, alpha)
            if not same(got, expected):
                failures.append(f"random case {i + 1} (alpha={alpha:g}): expected {short(expected)}, "
                                f"got {short(got)}.{diagnose(got, _generic_variants(v_b, v_r, alpha))}")
        r.cases(failures, "matches pair.generic_logits on 5 random cases (alpha 0.5 to 10)")
    return r.passed


ALPHA_PUZZLE = {
    "tokens": [" Hermione", " Ginny", " her", " the"],
    "v_b": [4.0, 2.0, 3.0, 1.0],
    "v_r": [5.0, 3.5, 3.0, 0.5],
    "v_b_sure": [9.0, 2.0, 3.0, 1.0],
    "v_r_sure": [9.5, 3.5, 3.0, 0.5],
}
register("alpha_puzzle", {"alpha": 1.0, "token": " her", "token_sure": " Hermione"})


def check_alpha_puzzle(answer: dict) -> bool:
    """Check your predictions for ``ALPHA_PUZZLE``: ``{"alpha": the alpha at which
    " Hermione" stops being the generic top, "token": the token on top just above
    it, "token_sure": the top at alpha = 5 when B is already sure}``; then show the
    generic logits for a few alphas."""
    with Report("alpha_puzzle") as r:
        if not isinstance(answer, dict) or any(answer.get(k) is None for k in ("alpha", "token", "token_sure")):
            r.fail('fill in all three answers: {"alpha": ..., "token": ..., "token_sure": ...}')
            return r.passed
        tokens = ALPHA_PUZZLE["tokens"]
        norm = lambda s: str(s).strip().lower()  # noqa: E731
        try:
            alpha = float(answer["alpha"])
        except (TypeError, ValueError):
            alpha = float("nan")
        r.expect(abs(alpha - 1.0) < 1e-6,
                 "alpha = 1: there ' Hermione' (4 - 1 x alpha) meets ' her' (3, which R did not raise)",
                 f"alpha should be 1, got {answer['alpha']!r}. ' Hermione' falls as 4 - alpha x ReLU(5 - 4) "
                 "= 4 - alpha; ' Ginny' falls faster (2 - 1.5 alpha); ' her' stays at 3 (R did not raise it). "
                 "4 - alpha = 3 at alpha = 1")
        r.expect(norm(answer["token"]) == "her",
                 "' her' takes over: the top becomes a token reinforcement did not raise",
                 f"above alpha = 1 the top is ' her', got {answer['token']!r}. "
                 + ("' Ginny' was raised even more than ' Hermione' (by 1.5), so it sinks faster."
                    if norm(answer["token"]) == "ginny" else
                    "' the' was LOWERED by R: the ReLU leaves it at 1, below ' her' (3)."
                    if norm(answer["token"]) == "the" else ""))
        r.expect(norm(answer["token_sure"]) == "hermione",
                 "when B is already sure, ' Hermione' stays on top at alpha = 5 (9 - 5 x 0.5 = 6.5 > 3): "
                 "the paper's failure mode, which anchored terms fix",
                 f"at alpha = 5 the top is still ' Hermione', got {answer['token_sure']!r}: B is so sure "
                 "(9) that R raised it by only 0.5, so it needs alpha > 12 to fall below ' her'. "
                 "That is the paper's failure mode, which anchored terms (notebook 03) fix")
        for name, vb, vr in (("B unsure", "v_b", "v_r"), ("B sure", "v_b_sure", "v_r_sure")):
            v_b, v_r = torch.tensor(ALPHA_PUZZLE[vb]), torch.tensor(ALPHA_PUZZLE[vr])
            print(f"  {name}: v_B = {ALPHA_PUZZLE[vb]}, v_R = {ALPHA_PUZZLE[vr]}")
            for a in (0.0, 0.5, 1.5, 5.0, 12.5):
                gen = pair.generic_logits(v_b, v_r, a)
                cells = "  ".join(f"{t!r}: {v:5.2f}" for t, v in zip(tokens, gen.tolist()))
                print(f"    alpha {a:4g}:  {cells}   top {tokens[int(gen.argmax())]!r}")
    return r.passed
