"""Plots for the course. Every function returns ``(fig, ax)`` and never calls
``plt.show()``; call ``set_style()`` once in a notebook (never on import)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .scoring import PERPLEXITY_LIMIT_PCT

TARGET_COLOR = "#b5332e"   # Harry-Potter-specific continuations
GENERIC_COLOR = "#3b6ea8"  # generic continuations
NEUTRAL_COLOR = "#7a7a7a"


def set_style() -> None:
    """The course's plot and table style; call it explicitly in a notebook's setup cell.

    Tables show 4 significant decimals and whole texts (completions are the main
    qualitative evidence: never cut them to 50 characters)."""
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 200)
    plt.rcParams.update({
        "figure.figsize": (8, 4), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
    })


def topk_bars(table: pd.DataFrame, title: str = "", highlight: set[str] | None = None, ax=None,
              value: str = "prob", xlabel: str = "probability", label: str = "token"):
    """Horizontal bars of a top-k table (columns ``label`` and ``value``), largest on top.

    Tokens in ``highlight`` (compared without surrounding spaces) are drawn in the
    target colour, so a learner sees at a glance where the Harry Potter answers sit.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 0.3 * len(table) + 1))
    highlight = {h.strip() for h in (highlight or ())}
    labels = [repr(t) for t in table[label]]
    colors = [TARGET_COLOR if str(t).strip() in highlight else GENERIC_COLOR for t in table[label]]
    ax.barh(range(len(table))[::-1], table[value], color=colors)
    ax.set_yticks(range(len(table))[::-1], labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig, ax


def probe_summary(table: pd.DataFrame, title: str = "Token-probability probes", ax=None):
    """Mean probability on target vs generic continuations, per probe category.

    ``table`` is the output of ``probe.token_familiarity``.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots()
    means = table.groupby("category")[["p_target", "p_generic"]].mean().sort_values("p_target")
    y = range(len(means))
    ax.barh([i + 0.2 for i in y], means["p_target"], height=0.4, color=TARGET_COLOR,
            label="Harry Potter continuations")
    ax.barh([i - 0.2 for i in y], means["p_generic"], height=0.4, color=GENERIC_COLOR,
            label="generic continuations")
    ax.set_yticks(list(y), means.index)
    ax.set_xlabel("mean probability mass")
    ax.set_title(f"{title} (n={len(table)}, familiarity {table['p_target'].mean():.3f})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)   # beside the bars, never on them
    return fig, ax


def loss_curve(losses: list[dict], title: str = "Training loss", ax=None):
    """Loss by optimizer step from ``training.loss_history``."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3))
    ax.plot([h["step"] for h in losses], [h["loss"] for h in losses], marker=".", color=TARGET_COLOR)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    return fig, ax


def histogram(values, title: str = "", xlabel: str = "", bins: int = 80, log: bool = True, ax=None):
    """A histogram (log counts by default: logit differences are heavy-tailed)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3))
    ax.hist(values, bins=bins, color=NEUTRAL_COLOR, log=log)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return fig, ax


def steps_plot(histories: dict, title: str = "Along finetuning"):
    """Target-probe familiarity and generic perplexity by optimizer step, one line
    per run; ``histories`` maps a name to ``finetune.StepProbe.history``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for name, hist in histories.items():
        steps = [h["step"] for h in hist]
        left.plot(steps, [h["familiarity"] for h in hist], marker="o", label=name)
        right.plot(steps, [h["perplexity"] for h in hist], marker="o", label=name)
    left.set(xlabel="optimizer step", ylabel="mean target probability", title="forgetting (lower is better)")
    right.set(xlabel="optimizer step", ylabel="perplexity on generic text", title="keeping (lower is better)")
    left.legend()
    fig.suptitle(title, y=1.04)   # above the two panel titles
    return fig, (left, right)


def tradeoff(points: pd.DataFrame, title: str = "Forgetting against keeping", ax=None):
    """Each row a model: ``familiarity_drop`` (%) against ``perplexity_rise`` (%),
    labelled by ``name``. The target region (drop >= 90%, rise <= 3%) is shaded."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.5))
    ax.axhspan(90, 100, xmin=0, xmax=1, color="#dfeedd", zorder=0)
    ax.axvline(PERPLEXITY_LIMIT_PCT, color=NEUTRAL_COLOR, linestyle="--", linewidth=1)
    labelled = []
    for group, rows in points.groupby("group", sort=False):
        ax.plot(rows["perplexity_rise"], rows["familiarity_drop"], marker="o", linestyle="-" if
                group.startswith("steps") else "", label=group)
        labelled += [(r["perplexity_rise"], r["familiarity_drop"], r["name"]) for _, r in rows.iterrows()
                     if r.get("annotate", True)]
    annotate_points(ax, labelled)
    ax.set_xlabel("perplexity rise on generic text (%)")
    ax.set_ylabel("drop in mean target probability (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, ax


def annotate_points(ax, points, fontsize: int = 7, min_gap: float = 0.045):
    """Label ``points`` ([(x, y, text), ...]) so that no two labels overlap: labels
    are placed right of their point, and a label that would sit within ``min_gap``
    (a fraction of the axes' height) of one already placed moves down or up, to the
    nearest free place inside the axes, with a thin line back to its point.
    Returns the label artists."""
    placed, artists = [], []
    ax.figure.canvas.draw()  # the limits are final once everything is plotted
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        fx, fy = (x - x0) / ((x1 - x0) or 1), (y - y0) / ((y1 - y0) or 1)
        shifts = [0.0] + [sign * k * min_gap for k in range(1, 40) for sign in (-1, 1)]
        free = [fy + d for d in shifts if 0.02 <= fy + d <= 0.98
                and not any(abs(fy + d - py) < min_gap and abs(fx - px) < 0.25 for px, py in placed)]
        ty = free[0] if free else fy
        placed.append((fx, ty))
        artists.append(ax.annotate(text, (x, y), xytext=(fx + 0.015, ty), textcoords="axes fraction",
                                   fontsize=fontsize, va="center",
                                   arrowprops={"arrowstyle": "-", "lw": 0.4, "color": NEUTRAL_COLOR}
                                   if ty != fy else None))
    return artists


def recovery_curves(table: pd.DataFrame, title: str = "Relearning: how much comes back"):
    """Familiarity of probe groups A (the relearning text states them) and B (it
    does not) along relearning steps, as a percentage of the baseline's before any
    relearning; one line per model. ``table`` has columns ``model``, ``step``,
    ``group A % of baseline`` and ``group B % of baseline``. A model with only its
    step-0 row (not relearned) has no curve and is left out."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    curves = [(name, rows) for name, rows in table.groupby("model", sort=False) if len(rows) > 1]
    for ax, group, what in zip(axes, ("A", "B"), ("relearned (stated in the text)", "recovered (never shown)")):
        for name, rows in curves:
            ax.plot(rows["step"], rows[f"group {group} % of baseline"], marker="o", label=name)
        ax.axhline(100, color=NEUTRAL_COLOR, linestyle="--", linewidth=1)
        ax.set(xlabel="relearning step", title=f"group {group}: {what}")
    axes[0].set_ylabel("familiarity, % of the baseline's")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title, y=1.04)
    return fig, axes
