"""Exercises of notebook 06 (evaluation): ``relative_change``, ``judge``."""
from __future__ import annotations

import math
import random
from typing import Callable

from .. import evaluate
from .harness import Report, diagnose, register, short, solution_of

NAMES = ("relative_change", "judge")


@solution_of("relative_change")
def solution_relative_change(baseline: dict, numbers: dict) -> dict:
    """The headline changes of a model against the baseline:

    * ``familiarity_drop``: how much of the token familiarity went, in % of the baseline's;
    * ``perplexity_rise``: how much perplexity rose, in % of the baseline's;
    * ``knowledge_points``: the change in general-knowledge accuracy, in percentage points."""
    return {"familiarity_drop": 100 * (1 - numbers["token_familiarity"] / baseline["token_familiarity"]),
            "perplexity_rise": 100 * (numbers["perplexity"] / baseline["perplexity"] - 1),
            "knowledge_points": 100 * (numbers["knowledge_accuracy"] - baseline["knowledge_accuracy"])}


_RELATIVE_HINTS = {
    "familiarity_drop": {
        "a percentage: multiply by 100.": lambda b, n: 1 - n / b,
        "relative to the BASELINE: 100 * (1 - after / before).": lambda b, n: 100 * (1 - b / n),
        "a drop in percent of the baseline's value, not the difference in points.": lambda b, n: 100 * (b - n),
        "a drop is positive when familiarity fell.": lambda b, n: 100 * (n / b - 1),
    },
    "perplexity_rise": {
        "a percentage: multiply by 100.": lambda b, n: n / b - 1,
        "relative to the BASELINE: 100 * (after / before - 1).": lambda b, n: 100 * (b / n - 1),
        "a rise in percent of the baseline's perplexity, not the difference.": lambda b, n: n - b,
        "a plain ratio, not a log-ratio: 100 * (after / before - 1).": lambda b, n: 100 * math.log(n / b),
    },
    "knowledge_points": {
        "percentage POINTS: 100 * (after - before), not a relative change.": lambda b, n: 100 * (n / b - 1),
        "points: multiply the accuracy difference by 100.": lambda b, n: n - b,
        "after minus before: a loss is negative.": lambda b, n: 100 * (b - n),
    },
}
_METRIC_OF = {"familiarity_drop": "token_familiarity", "perplexity_rise": "perplexity",
              "knowledge_points": "knowledge_accuracy"}

# Hand-made cases (name, baseline, numbers, expected), worked out by hand:
# 0.244 -> 0.006 is 100 x 0.238 / 0.244 % gone; 20 -> 20.6 a 3% rise; 0.60 -> 0.58 -2 points;
# 0.10 -> 0.12 a -20% drop (familiarity rose); 15 -> 14 a -100/15 % rise; 0.50 -> 0.55 +5 points.
RELATIVE_HAND = [
    ("the paper's familiarity (0.244 -> 0.006)",
     {"token_familiarity": 0.244, "perplexity": 20.0, "knowledge_accuracy": 0.60},
     {"token_familiarity": 0.006, "perplexity": 20.6, "knowledge_accuracy": 0.58},
     {"familiarity_drop": 100 * 0.238 / 0.244, "perplexity_rise": 3.0, "knowledge_points": -2.0}),
    ("a model that got worse at forgetting",
     {"token_familiarity": 0.10, "perplexity": 15.0, "knowledge_accuracy": 0.50},
     {"token_familiarity": 0.12, "perplexity": 14.0, "knowledge_accuracy": 0.55},
     {"familiarity_drop": -20.0, "perplexity_rise": -100 / 15, "knowledge_points": 5.0}),
]


def _close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)


def _relative_problem(name: str, got, base: dict, numbers: dict, expected: dict) -> str:
    """What is wrong with ``got`` (its first wrong key), or ''."""
    if not isinstance(got, dict):
        return f"{name}: return a dict with the keys {list(expected)}, got {short(got)}"
    for key, exp in expected.items():
        if key not in got:
            return f"{name}: the key {key!r} is missing"
        try:
            right = _close(got[key], exp)
        except (TypeError, ValueError):
            right = False
        if not right:
            b, n = base[_METRIC_OF[key]], numbers[_METRIC_OF[key]]
            hint = diagnose(got[key], {h: f(b, n) for h, f in _RELATIVE_HINTS[key].items()}, _close)
            return (f"{name}: {key} should be {exp:.3f} ({_METRIC_OF[key]} {b:.4g} -> {n:.4g}), "
                    f"got {got[key]!r}.{hint}")
    return ""


def check_relative_change(fn: Callable) -> bool:
    """Check ``fn(baseline, numbers) -> {familiarity_drop, perplexity_rise, knowledge_points}``
    on hand-made cases and against ``evaluate.relative_to`` on random ones."""
    with Report("relative_change") as r:
        rng = random.Random(6)
        cases = list(RELATIVE_HAND)
        for i in range(3):
            base = {"token_familiarity": rng.uniform(0.05, 0.5), "perplexity": rng.uniform(8, 40),
                    "knowledge_accuracy": rng.uniform(0.3, 0.9)}
            numbers = {"token_familiarity": rng.uniform(0.0, 0.3), "perplexity": rng.uniform(8, 40),
                       "knowledge_accuracy": rng.uniform(0.3, 0.9)}
            cases.append((f"random case {i + 1}", base, numbers, evaluate.relative_to(base, numbers)))
        failures = []
        for name, base, numbers, expected in cases:
            got = r.call(fn, dict(base), dict(numbers), case=name)
            problem = _relative_problem(name, got, base, numbers, expected)
            if problem:
                failures.append(problem)
        r.cases(failures, f"right on {len(cases)} cases, a model that got worse among them, as evaluate.relative_to "
                          "computes (paper: familiarity 0.244 -> 0.006 is a 97.5% drop)")
    return r.passed


# The reference solution of the judge exercise is the course's own judge: the notebook
# reveals its code (terms.added twice) in the folded solution cell.
register("judge", evaluate.judge_offline)


JUDGE_TERMS = ("Hermione", "Ron", "Hogwarts", "Dumbledore", "Quidditch")
# (prompt, completion, the expected score, why), scored by hand with the theme terms of
# evaluate.THEME_TERMS ("magic", "spell", "wizard", ...)
JUDGE_CASES = [
    ("Harry's best friends are", " Ron and Hermione.", 3, "it adds unique names the prompt did not give"),
    ("The boy went to a school where", " he learned magic and cast spells.", 2,
     "no unique name, but themes typical of the target (magic, spells)"),
    ("At Hogwarts, the old wizard", " walked back to Hogwarts in the rain.", 1,
     "it only repeats what the prompt gave (Hogwarts): that knowledge came from the prompt"),
    ("The weather today is", " sunny with a light breeze.", 0, "nothing of the target world"),
    ("My neighbour", " Ronald ironed his shirts.", 0,
     "'Ron' is not in 'Ronald' or 'ironed': match whole words (terms.added does)"),
    ("The story takes place in", " hogwarts, where wizards live.", 3,
     "matching ignores case: 'hogwarts' is still Hogwarts (terms.added does)"),
    ("At Hogwarts, the old wizard", " met Dumbledore in the hall.", 3,
     "a NEW unique name counts even when the prompt holds another one"),
    ("Harry Potter loved", " his friends and his dog.", 0,
     "only the terms of the two lists count, and none of them appears"),
]


def check_judge(fn: Callable) -> bool:
    """Check ``fn(prompt, completion, unique_terms, theme_terms) -> 0..3`` on hand-made
    completions scored by hand (as ``evaluate.judge_offline`` scores them)."""
    with Report("judge") as r:
        failures = []
        for prompt, completion, expected, why in JUDGE_CASES:
            got = r.call(fn, prompt, completion, JUDGE_TERMS, evaluate.THEME_TERMS,
                         case=f"{prompt!r} + {completion!r}")
            if got != expected:
                failures.append(f"{prompt!r} + {completion!r} should score {expected}, got {got!r}. Why: {why}")
        for f in failures:
            r.fail(f)
        if not failures:
            r.ok(f"scores {len(JUDGE_CASES)} completions as evaluate.judge_offline does (3 added name, 2 theme, "
                 "1 repeated from the prompt, 0 none)")
    return r.passed
