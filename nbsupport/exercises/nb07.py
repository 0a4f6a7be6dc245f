"""Exercises of notebook 07 (other methods and attacks): ``biggest_comeback``, ``relearning_auc``.

Both read the relearning attack's table, ``attacks.recovery_table``: one row per
(model, relearning step) with the columns ``model``, ``step``, ``group A``,
``group B`` (familiarity) and ``group A % of baseline``, ``group B % of baseline``
(in % of the baseline's familiarity before relearning). A model that was not
relearned has its step-0 row only.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from .harness import Report, short, solution_of

NAMES = ("biggest_comeback", "relearning_auc")
B_SHARE = "group B % of baseline"


# ----------------------------------------------------------------- biggest_comeback
@solution_of("biggest_comeback")
def solution_biggest_comeback(table: pd.DataFrame):
    """``(model, points)``: the unlearned model (not the baseline) whose group B rose
    the most from step 0 to the last relearning step, and that rise in percentage
    points of the baseline's familiarity; None when no unlearned model was relearned."""
    last = table["step"].max()
    share = table.pivot(index="model", columns="step", values=B_SHARE)
    rise = (share[last] - share[0]).drop("baseline").dropna()     # not relearned: no row at the last step
    if rise.empty:
        return None
    return rise.idxmax(), float(rise.max())


def _answer(table: pd.DataFrame, column: str = B_SHARE, baseline: bool = False, step: str = "last",
            how: str = "rise", skipped: bool = False):
    """The check's own reading of ``table`` (the defaults: the right answer); the other
    settings give the known wrong answers."""
    steps = sorted(table["step"].unique())
    at = steps[-1] if step == "last" else steps[1]
    share = table.pivot(index="model", columns="step", values=column)
    if skipped:                                    # a model without later rows read at its own last step
        share = share.ffill(axis=1)
    value = {"rise": share[at] - share[0], "level": share[at], "ratio": share[at] / share[0]}[how]
    value = value.dropna()
    if not baseline:
        value = value.drop("baseline", errors="ignore")
    if value.empty:
        return None
    return str(value.idxmax()), float(value.max())


_COMEBACK_HINTS = {
    "leave the baseline out: its rise is the yardstick (the relearning text also teaches some of group B), "
    "not a candidate.": dict(baseline=True),
    "a model with only its step-0 row was not relearned (group B never suppressed): leave it out, it has no "
    "rise to compare.": dict(skipped=True),
    "'comes back' is the RISE from step 0 to the last step, not the level reached at the last step.":
        dict(how="level"),
    "'comes back' is the rise from step 0, not the level reached (and the baseline is not a candidate).":
        dict(how="level", baseline=True),
    "percentage POINTS: the difference of the two shares, not their ratio.": dict(how="ratio"),
    f"points of the baseline's familiarity: use the column {B_SHARE!r}, not the raw familiarity 'group B'.":
        dict(column="group B"),
    "group B is the one never shown again: use 'group B % of baseline', not group A.":
        dict(column="group A % of baseline"),
    "the LAST step is the largest step number, not the second one.": dict(step="second"),
}


def _same_answer(got, expected) -> bool:
    if expected is None or got is None:
        return got is None and expected is None
    try:
        model, points = got
        return model == expected[0] and math.isclose(float(points), expected[1], rel_tol=1e-6, abs_tol=1e-6)
    except (TypeError, ValueError):
        return False


def _comeback_hint(got, table: pd.DataFrame) -> str:
    for hint, settings in _COMEBACK_HINTS.items():
        try:
            if _same_answer(got, _answer(table, **settings)):
                return " Hint: " + hint
        except (KeyError, IndexError, ValueError):
            continue
    return ""


def hand_table(curves: dict[str, dict[int, tuple[float, float]]]) -> pd.DataFrame:
    """A table as ``attacks.recovery_table`` builds it, from ``{model: {step: (group A,
    group B familiarity)}}``; the shares are in % of the baseline's familiarity at step 0."""
    base_a, base_b = curves["baseline"][0]
    return pd.DataFrame([{"model": name, "step": step, "group A": a, "group B": b,
                          "group A % of baseline": 100 * a / base_a, B_SHARE: 100 * b / base_b}
                         for name, curve in curves.items() for step, (a, b) in curve.items()])


# Hand-made tables (name, curves, expected answer). The baseline's familiarity at step 0 is
# 0.4 (group A) and 0.5 (group B), so group B's share is 200 x its familiarity: 0.15 is 30%.
COMEBACK_HAND = [
    ("three models, NPO not relearned", {
        "baseline": {0: (0.40, 0.50), 10: (0.60, 0.52), 25: (0.80, 0.55)},   # B: 100 -> 104 -> 110
        "WHP": {0: (0.10, 0.15), 10: (0.30, 0.225), 25: (0.50, 0.31)},       # B: 30 -> 45 -> 62, +32
        "GA": {0: (0.20, 0.30), 10: (0.25, 0.33), 25: (0.30, 0.35)},         # B: 60 -> 66 -> 70, +10
        "NPO": {0: (0.39, 0.49)}},                                           # 98%: not relearned
     ("WHP", 32.0)),
    ("the baseline rises the most", {
        "baseline": {0: (0.40, 0.50), 10: (0.60, 0.55), 25: (0.80, 0.625)},  # B: 100 -> 125, +25
        "WHP": {0: (0.10, 0.20), 10: (0.20, 0.25), 25: (0.30, 0.275)},       # B: 40 -> 55, +15
        "GA": {0: (0.05, 0.10), 10: (0.10, 0.12), 25: (0.15, 0.15)}},        # B: 20 -> 30, +10
     ("WHP", 15.0)),
    ("group B falls under the attack (steps 0, 5, 40)", {
        "baseline": {0: (0.40, 0.50), 5: (0.50, 0.50), 40: (0.60, 0.60)},    # B: 100 -> 120
        "WHP": {0: (0.10, 0.20), 5: (0.20, 0.19), 40: (0.30, 0.175)},        # B: 40 -> 35, -5
        "GA": {0: (0.10, 0.15), 5: (0.12, 0.16), 40: (0.14, 0.14)},          # B: 30 -> 28, -2
        "NPO": {0: (0.38, 0.48)}},                                           # 96%: not relearned
     ("GA", -2.0)),
    ("no unlearned model was relearned", {          # the last: checked on its own
        "baseline": {0: (0.40, 0.50), 10: (0.60, 0.60)},
        "WHP": {0: (0.39, 0.49)}, "GA": {0: (0.40, 0.50)}},
     None),
]


def _show(answer) -> str:
    """An answer as a ✗ line shows it: ('WHP', 32.0), or what it was."""
    try:
        model, points = answer
        return f"({model!r}, {float(points):.6g})"
    except (TypeError, ValueError):
        return short(answer)


def _comeback_problem(name: str, got, expected, table: pd.DataFrame) -> str:
    if _same_answer(got, expected):
        return ""
    if got is not None and not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"{name}: return a pair (model, points), or None, got {short(got)}"
    if expected is None:
        want = "None (no unlearned model was relearned: only the baseline has rows past step 0)"
    elif got is not None and got[0] == expected[0]:
        want = f"{expected[0]!r}, the right model, with a rise of {expected[1]:+.6g} points"
    else:
        want = _show(expected)
    return f"{name}: expected {want}, got {_show(got)}.{_comeback_hint(got, table)}"


def check_biggest_comeback(fn: Callable, table: pd.DataFrame | None = None) -> bool:
    """Check ``fn(table) -> (model, points) or None`` on hand-made tables and, with
    ``table`` (the notebook's ``recovery_table``), on this run's relearning."""
    with Report("biggest_comeback") as r:
        failures = []
        for name, curves, expected in COMEBACK_HAND[:-1]:
            t = hand_table(curves)
            problem = _comeback_problem(name, r.call(fn, t.copy(), case=f"the table {name!r}"), expected, t)
            if problem:
                failures.append(problem)
        r.cases(failures, f"right on {len(COMEBACK_HAND) - 1} hand-made tables: models not relearned left out, "
                          "the baseline the yardstick, and a fall under the attack")
        name, curves, expected = COMEBACK_HAND[-1]     # last: an empty candidate list crashes a naive answer
        t = hand_table(curves)
        problem = _comeback_problem(name, r.call(fn, t.copy(), case=f"the table {name!r}"), expected, t)
        r.expect(not problem, "None when no unlearned model was relearned (only the baseline has later rows)",
                 problem)
        if table is not None:
            if table["step"].max() == 0:
                r.ok("this run measured no relearning step past 0: nothing to compare on it")
            else:
                expected = _answer(table)
                got = r.call(fn, table.copy(), case="this run's recovery_table")
                problem = _comeback_problem("this run's recovery_table", got, expected, table)
                last = table["step"].max()
                r.expect(not problem, "on this run: " + ("no unlearned model was relearned" if expected is None else
                         f"{expected[0]}'s group B came back the most, {expected[1]:+.1f} points of the "
                         f"baseline's familiarity in {last} relearning steps"), problem)
    return r.passed


# ----------------------------------------------------------------- relearning_auc
@solution_of("relearning_auc")
def solution_relearning_auc(steps, shares) -> float:
    """The area under the curve ``shares`` (group B, % of the baseline's familiarity)
    against ``steps`` by the trapezoid rule, divided by the steps it spans: its mean height."""
    area = sum((s1 - s0) * (y0 + y1) / 2 for s0, s1, y0, y1 in zip(steps, steps[1:], shares, shares[1:]))
    return area / (steps[-1] - steps[0])


# Hand-made curves (name, steps, shares, expected mean height), worked out by hand:
# flat at 50 -> 50; 20 -> 60 over 10 steps: a trapezoid of mean height 40;
# 20, 40, 80 at 0, 10, 25: 10 x 30 + 15 x 60 = 1200, / 25 = 48;
# 100, 90, 100, 130 at 0, 5, 10, 25: 5 x 95 + 5 x 95 + 15 x 115 = 2675, / 25 = 107;
# 30 -> 45 over 2 steps (the smoke profile's): 37.5.
AUC_HAND = [
    ("a flat curve at 50 over 10 steps", [0, 10], [50.0, 50.0], 50.0),
    ("a line from 20 to 60 over 10 steps", [0, 10], [20.0, 60.0], 40.0),
    ("20, 40, 80 at the steps 0, 10, 25 (uneven)", [0, 10, 25], [20.0, 40.0, 80.0], 48.0),
    ("100, 90, 100, 130 at the steps 0, 5, 10, 25", [0, 5, 10, 25], [100.0, 90.0, 100.0, 130.0], 107.0),
    ("30 -> 45 over 2 steps", [0, 2], [30.0, 45.0], 37.5),
]


def _trapezoid(steps, shares) -> float:
    integrate = getattr(np, "trapezoid", None) or np.trapz      # numpy < 2 names it trapz
    return float(integrate(np.asarray(shares, dtype=float), np.asarray(steps, dtype=float)))


def _auc_variants(steps, shares) -> list[tuple[str, float]]:
    """Known wrong answers: (hint, value)."""
    area, span, y = _trapezoid(steps, shares), steps[-1] - steps[0], np.asarray(shares, dtype=float)
    unit = float(((y[1:] + y[:-1]) / 2).sum())             # every segment one step wide
    uneven = "the steps are unevenly spaced: weigh each segment by its width in steps (the x of the trapezoids)."
    return [
        ("normalise: divide the area by the number of steps the curve spans (last step - first step), "
         "so that a flat curve at 50 gives 50.", area),
        ("divide by the number of steps the curve spans (last - first), not by the number of points.",
         area / len(steps)),
        ("off by one: the curve spans last - first steps (0 to 10 is 10 steps), not last - first + 1.",
         area / (span + 1)),
        ("divide by the number of steps the curve spans (last - first), not by the number of intervals "
         "between points.", area / (len(steps) - 1)),
        (uneven, unit), (uneven, unit / max(len(steps) - 1, 1)), (uneven, unit / span),
        ("a trapezoid averages its two ends, (y0 + y1) / 2, not only the left one.",
         float((np.diff(steps) * y[:-1]).sum()) / span),
        ("a trapezoid averages its two ends, (y0 + y1) / 2, not only the right one.",
         float((np.diff(steps) * y[1:]).sum()) / span),
        ("the trapezoid rule, not the plain mean of the points: they are not evenly spaced.", float(y.mean())),
    ]


def _auc_problem(name: str, got, steps, shares, expected: float) -> str:
    try:
        right = math.isclose(float(got), expected, rel_tol=1e-6, abs_tol=1e-6)
    except (TypeError, ValueError):
        return f"{name}: return a number, got {short(got)}"
    if right:
        return ""
    hints = list(dict.fromkeys(h for h, value in _auc_variants(steps, shares)      # on 2 points some coincide
                               if math.isclose(float(got), value, rel_tol=1e-6, abs_tol=1e-6)))
    hint = "".join((" Hint: " if i == 0 else " Or: ") + h for i, h in enumerate(hints))
    return f"{name}: expected {expected:.4g}, got {float(got):.6g}.{hint}"


def relearned_curves(table: pd.DataFrame) -> dict[str, tuple[list, list]]:
    """``{model: (steps, group B shares)}`` of every model of ``table`` measured at two
    steps or more (relearned), in step order."""
    curves = {}
    for model, rows in table.sort_values("step", kind="stable").groupby("model", sort=False):
        if len(rows) >= 2:
            curves[str(model)] = (rows["step"].tolist(), rows[B_SHARE].astype(float).tolist())
    return curves


def check_relearning_auc(fn: Callable, table: pd.DataFrame | None = None) -> bool:
    """Check ``fn(steps, shares) -> mean height`` on hand-made curves and, with ``table``
    (the notebook's ``recovery_table``), against numpy's trapezoid rule on this run's curves."""
    with Report("relearning_auc") as r:
        failures = []
        for name, steps, shares, expected in AUC_HAND:
            got = r.call(fn, list(steps), list(shares), case=name)
            problem = _auc_problem(name, got, steps, shares, expected)
            if problem:
                failures.append(problem)
        r.cases(failures, f"right on {len(AUC_HAND)} hand-made curves (a flat curve at 50 gives 50; "
                          "20, 40, 80 at the steps 0, 10, 25 gives 48)")
        if table is not None:
            curves = relearned_curves(table)
            if not curves:
                r.ok("this run has no curve past step 0: nothing to compare on it")
            else:
                failures, heights = [], {}
                for model, (steps, shares) in curves.items():
                    expected = _trapezoid(steps, shares) / (steps[-1] - steps[0])
                    got = r.call(fn, list(steps), list(shares), case=f"{model}'s curve")
                    problem = _auc_problem(f"{model}'s curve (steps {steps})", got, steps, shares, expected)
                    failures += [problem] if problem else []
                    heights[model] = expected
                r.cases(failures, "on this run's curves, as numpy's trapezoid rule gives: "
                        + ", ".join(f"{m} {h:.1f}" for m, h in heights.items()))
    return r.passed
