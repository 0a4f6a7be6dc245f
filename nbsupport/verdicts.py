"""Notebook 07's closing sentences, printed from its numbers: which models keep the
+3% rule and which stopped for the step budget, what the in-context reminder did,
and a verdict per model. Nothing here is typed from a run: rerun, and it follows.
"""
from __future__ import annotations

import pandas as pd

from .attacks import NOT_SUPPRESSED
from .scoring import PERPLEXITY_LIMIT_PCT

AVOIDS_NAMES = "avoids the names"
HIDDEN = "hidden, not removed"
HOLDS = "no sign of hiding under these attacks"
NOT_FORGOTTEN = "forgot little"
CAME_BACK = 25.0             # % of what was removed that relearning brings back, beyond the baseline's rise
FORGOT = 50.0                # % of the baseline's familiarity gone: a model that forgot


def rule_lines(summary: pd.DataFrame, stopped: dict, last_steps: dict, method_steps: int) -> list[str]:
    """Who keeps the +3% perplexity rule, and who stopped because the steps ran out.

    ``summary``: notebook 07's table (``perplexity_rise``); ``stopped``: each method's
    early-stop step (``methods.train_all``); ``last_steps``: the last step each method trained."""
    limit = PERPLEXITY_LIMIT_PCT
    rise = summary["perplexity_rise"].drop("baseline", errors="ignore").dropna()
    over = [f"{m} ({r:+.1f}%)" for m, r in rise.items() if r > limit]
    lines = [f"The +{limit:g}% rule: the methods trained here are early-stopped within it; "
             + (f"these models are not, and break it: {', '.join(over)}. WHP's recipes are trained for their "
                "fixed budget (notebook 05), and inference-time WHP has no training to stop, so they are "
                "compared here at a higher cost than the methods." if over else "every model here keeps it.")]
    budget = [m for m, s in stopped.items() if s and s == last_steps.get(m) == method_steps]
    if budget:
        lines.append(f"Stopped because the budget of {method_steps} steps ended, not by the rule: "
                     f"{', '.join(budget)}; with more steps {'they' if len(budget) > 1 else 'it'} might forget more.")
    return lines


def reminder_line(reminder: pd.DataFrame) -> str:
    """What the in-context reminder did to each model (``attacks.reminder_table``), in words,
    whatever it did, against the baseline's own gain: a model that removed the knowledge
    gains less than the baseline; one that hides it (or never forgot) gains as much."""
    gain = reminder["with primer"] / reminder["without primer"]
    base = gain.get("baseline")
    others = [m for m in reminder.index if m != "baseline"]
    per = ", ".join(f"{m} {gain[m]:.1f}x" for m in others)
    if base is None:
        return f"In-context reminder, familiarity with it / without it: {per}."
    level = [m for m in others if gain[m] >= base * 0.9]
    below = [m for m in others if gain[m] < base * 0.9]
    said = [f"the reminder raises {', '.join(level)} as much as the baseline (within 10%): it finds in them "
            "what it finds in a model that never forgot" if level else "",
            f"it raises {', '.join(below)} less than the baseline: there, it does not bring back what was removed"
            if below else ""]
    return (f"In-context reminder, familiarity with it / without it: the baseline {base:.1f}x; {per}. So "
            + "; ".join(x for x in said if x) + ".")


def verdict(row: pd.Series, last_step: int, base_rise: float = 0.0) -> str:
    """One model's verdict from its row of the summary table; ``base_rise``: how many points
    the baseline's own group B rose under the same attack (the relearning text teaches some
    of group B indirectly)."""
    after = row.get(f"group B after {last_step} relearning steps (% of baseline)")
    before = row.get("group B before relearning (% of baseline)")
    if pd.isna(row.get("familiarity_drop")) or row["familiarity_drop"] < FORGOT:
        return NOT_FORGOTTEN
    if pd.notna(after) and pd.notna(before) and before < NOT_SUPPRESSED:
        back = (after - before - base_rise) / (100 - before) * 100
        if back >= CAME_BACK:
            return HIDDEN
    if pd.notna(row.get("indirect_drop")) and row["indirect_drop"] < row["familiarity_drop"] / 2:
        return AVOIDS_NAMES                 # the direct probes forget, the indirect ones much less
    return HOLDS


def verdict_lines(summary: pd.DataFrame, last_step: int) -> list[str]:
    """The verdict per model that notebook 07 promises, with the rule each one follows."""
    after_b = f"group B after {last_step} relearning steps (% of baseline)"
    base_rise = (summary.loc["baseline", after_b] - 100.0
                 if "baseline" in summary.index and after_b in summary and pd.notna(summary.loc["baseline", after_b])
                 else 0.0)
    rules = {NOT_FORGOTTEN: f"less than {FORGOT:g}% of the token familiarity gone",
             HIDDEN: f"relearning group A brought back at least {CAME_BACK:g}% of what was removed from group B, "
                     "beyond the baseline's own rise",
             AVOIDS_NAMES: "the indirect probes lost less than half of what the token probes lost",
             HOLDS: "forgot, and neither of the two signs of hiding shows"}
    return [f"{name}: {(v := verdict(summary.loc[name], last_step, base_rise))} ({rules[v]})."
            for name in summary.index if name != "baseline"]


def instrument_line(summary: pd.DataFrame, evaluation: dict) -> str:
    """Notebook 06's numbers for WHP beside this notebook's, said to be two instruments:
    06 measures all probes and the full held-out texts, 07 a lighter measure (the report
    probes, at most three texts). ``evaluation``: notebook 06's ``evaluate/summary.json``."""
    from .evaluate import relative_to

    results = evaluation["results"]
    parts = []
    for recipe in [r for r in results if r != "baseline"]:
        name = f"WHP {recipe}"
        if name not in summary.index:
            continue
        full = relative_to(results["baseline"], results[recipe])
        parts.append(f"{name}: {full['familiarity_drop']:.1f}% gone at {full['perplexity_rise']:+.1f}% perplexity in "
                     f"notebook 06, {summary.loc[name, 'familiarity_drop']:.1f}% at "
                     f"{summary.loc[name, 'perplexity_rise']:+.1f}% here")
    if not parts:
        return ""
    return ("Two instruments, one model: " + "; ".join(parts) + ". Notebook 06 reads every token probe and "
            "the full held-out texts; this notebook reads the report half of the probes and at most three texts "
            "(and notebook 05's step curves the development half and one short text), so their numbers differ "
            "by that much without the model changing.")


def summary_columns(last_step: int) -> dict[str, tuple[str, str]]:
    """Notebook 07's table in eight short columns (``tabular.show``); the full one is
    saved as ``methods/summary.csv`` (completions, KL, group A, seconds too)."""
    return {"gone %": ("familiarity_drop", "% of the baseline's token familiarity gone (report probes)"),
            "indirect %": ("indirect_drop", "the same on the indirect probes"),
            "ppl %": ("perplexity_rise", "perplexity rise on held-out text"),
            "GK pts": ("knowledge_points", "general-knowledge accuracy change, points"),
            "primer %": ("with primer (% of baseline)", "familiarity with the reminder, % of the baseline's"),
            "B before %": ("group B before relearning (% of baseline)", "group B before relearning, % of baseline"),
            f"B after {last_step} %": (f"group B after {last_step} relearning steps (% of baseline)",
                                       f"group B after {last_step} relearning steps, % of baseline"),
            "stop step": ("early stop step", "the method's early-stopped step (methods trained here)")}


PERCENT_COLUMNS = ("gone %", "indirect %", "ppl %", "GK pts", "primer %", "B before %")
