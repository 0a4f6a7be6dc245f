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
REMINDER_GAIN = 1.5          # the primer multiplies familiarity by at least this: it "brings knowledge back"
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
                     f"{', '.join(budget)}; with more steps they might forget more at the same cost.")
    return lines


def reminder_line(reminder: pd.DataFrame) -> str:
    """What the in-context reminder did to each model (``attacks.reminder_table``), in words,
    whatever it did: a gain of at least ``REMINDER_GAIN`` times counts as bringing knowledge back."""
    gain = reminder["with primer"] / reminder["without primer"]
    back = [m for m in reminder.index if m != "baseline" and gain[m] >= REMINDER_GAIN]
    base = f"the baseline {gain['baseline']:.1f}x" if "baseline" in gain else ""
    per = ", ".join(f"{m} {gain[m]:.1f}x" for m in reminder.index if m != "baseline")
    verdict = (f"the reminder brought familiarity back (at least {REMINDER_GAIN:g}x) for {', '.join(back)}"
               if back else f"the reminder did not bring familiarity back for any unlearned model here "
                            f"(none gained {REMINDER_GAIN:g}x): in this run the attack failed")
    return f"In-context reminder, familiarity with it / without it: {base}; {per}. So {verdict}."


def verdict(row: pd.Series, last_step: int) -> str:
    """One model's verdict from its row of the summary table."""
    after = row.get(f"group B after {last_step} relearning steps (% of baseline)")
    before = row.get("group B before relearning (% of baseline)")
    if pd.isna(row.get("familiarity_drop")) or row["familiarity_drop"] < FORGOT:
        return NOT_FORGOTTEN
    if pd.notna(after) and pd.notna(before) and before < NOT_SUPPRESSED and after >= (100 + before) / 2:
        return HIDDEN                       # relearning group A brought group B at least half-way back
    if pd.notna(row.get("indirect_drop")) and row["indirect_drop"] < row["familiarity_drop"] / 2:
        return AVOIDS_NAMES                 # the direct probes forget, the indirect ones much less
    return HOLDS


def verdict_lines(summary: pd.DataFrame, last_step: int) -> list[str]:
    """The verdict per model that notebook 07 promises, with the rule each one follows."""
    rules = {NOT_FORGOTTEN: f"less than {FORGOT:g}% of the token familiarity gone",
             HIDDEN: "relearning group A brought group B at least half-way back to the baseline",
             AVOIDS_NAMES: "the indirect probes lost less than half of what the token probes lost",
             HOLDS: "forgot, and neither of the two signs of hiding shows"}
    out = []
    for name in [m for m in summary.index if m != "baseline"]:
        v = verdict(summary.loc[name], last_step)
        out.append(f"{name}: {v} ({rules[v]}).")
    return out


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
