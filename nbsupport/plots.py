"""Plots for the course. Every function returns ``(fig, ax)`` and never calls
``plt.show()``; call ``set_style()`` once in a notebook (never on import).

Every plot that draws models gives each model its own colour and marker
(``model_style``), the same in every notebook of the series, so a reader can match
a model from one plot to the next; overlapping lines stay apart by their markers.
Legends lie inside the figure, and an axis that shows a ratio or a probability
starts at zero."""
from __future__ import annotations

import zlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from .scoring import PERPLEXITY_LIMIT_PCT

TARGET_COLOR = "#b5332e"   # Harry-Potter-specific continuations
GENERIC_COLOR = "#3b6ea8"  # generic continuations
NEUTRAL_COLOR = "#7a7a7a"
BAND_COLOR = "#e6e6e6"     # the tradeoff's target region: a pale grey that no model uses

# (colour, marker) of every model of the series, by ``model_key``. The keys cover
# finetune.RECIPES, the ablations of finetune.planned_variants, methods.METHODS and
# methods.inference_name (tests/test_plots.py checks that they stay covered).
MODEL_STYLES = {
    "baseline": ("#333333", "o"),
    "paper": ("#1f77b4", "o"),               # WHP, the paper's recipe (notebooks 05-07)
    "soft+kl": ("#9467bd", "D"),             # WHP, soft targets + KL
    "selective": ("#0b5345", "d"),           # WHP, soft+kl trained only where the labels move away from B
    "reinforcement only": ("#8c564b", "v"),  # ablations (notebook 06)
    "anchors only": ("#e377c2", "^"),
    "both": ("#bcbd22", "P"),
    "ga": ("#d62728", "X"),                  # other methods (notebook 07)
    "graddiff": ("#ff7f0e", "s"),
    "npo": ("#2ca02c", "*"),
    "whp at inference": ("#17becf", "h"),    # inference-time WHP, no weights of its own
}
# markers are drawn hollow and lines of one plot alternate their dash, so that models on
# the same values (GA and NPO often are) stay visible one through the other
LINESTYLES = ("-", "--", "-.", ":")
HOLLOW = {"markerfacecolor": "none", "markeredgewidth": 1.6}
# models with no style of their own (the sweeps, a new recipe): a spare colour and marker
SPARE_COLORS = ("#00796b", "#b8860b", "#283593", "#880e4f", "#556b2f", "#607d8b")
SPARE_MARKERS = ("p", "<", ">", "d", "H", "8")


def model_key(name) -> str:
    """The model a plotted name stands for: ``"WHP paper"``, ``"steps: paper"`` and
    ``"paper"`` are all ``"paper"``; ``"WHP at inference (alpha=3)"`` is
    ``"whp at inference"``; ``"baseline (light)"`` is ``"baseline"``."""
    key = str(name).strip().lower()
    if key.startswith("steps:"):
        key = key[len("steps:"):].strip()
    if key.startswith("whp at inference"):
        return "whp at inference"
    if key.startswith("whp "):
        key = key[len("whp "):].strip()
    if key.endswith(" (light)"):
        key = key[:-len(" (light)")]
    return key


def model_styles(names) -> dict[str, tuple[str, str]]:
    """``{name: (colour, marker)}`` for the models of one plot: ``MODEL_STYLES``'s for
    a known model; a model without one gets a spare colour (picked from its name, so
    the same in every plot where it can be) that no other model of the plot has while
    one is left, and never the colour and marker of another model of the plot."""
    names = list(dict.fromkeys(names))
    by_key = {model_key(n): MODEL_STYLES[model_key(n)] for n in names if model_key(n) in MODEL_STYLES}
    for key in dict.fromkeys(model_key(n) for n in names):
        if key in by_key:
            continue
        h = zlib.crc32(key.encode())
        options = [(SPARE_COLORS[(h + i) % len(SPARE_COLORS)], SPARE_MARKERS[(h + j) % len(SPARE_MARKERS)])
                   for i in range(len(SPARE_COLORS)) for j in range(len(SPARE_MARKERS))]
        colours, taken = {c for c, _ in by_key.values()}, set(by_key.values())
        by_key[key] = next((o for o in options if o[0] not in colours),
                           next((o for o in options if o not in taken), options[0]))
    return {n: by_key[model_key(n)] for n in names}


def model_style(name) -> tuple[str, str]:
    """The ``(colour, marker)`` of model ``name`` in every plot of the series."""
    return model_styles([name])[name]


def _figure(ax, figsize):
    """``(fig, ax, own)``: the caller's axes, or new ones in a figure of their own
    (constrained layout, which makes room for a legend beside the axes)."""
    if ax is not None:
        return ax.figure, ax, False
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax, True


def _legend(fig, ax, own: bool, fontsize: int = 8):
    """A legend inside the figure: beside the axes in a figure of our own, inside the
    caller's axes otherwise (their figure has no room kept for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if own:
        return fig.legend(handles, labels, loc="outside right upper", fontsize=fontsize)
    return ax.legend(handles, labels, loc="best", fontsize=fontsize)


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
    fig, ax, own = _figure(ax, (8, 4))
    means = table.groupby("category")[["p_target", "p_generic"]].mean().sort_values("p_target")
    y = range(len(means))
    ax.barh([i + 0.2 for i in y], means["p_target"], height=0.4, color=TARGET_COLOR,
            label="Harry Potter continuations")
    ax.barh([i - 0.2 for i in y], means["p_generic"], height=0.4, color=GENERIC_COLOR,
            label="generic continuations")
    ax.set_yticks(list(y), means.index)
    ax.set_xlim(left=0)
    ax.set_xlabel("mean probability mass")
    ax.set_title(f"{title} (n={len(table)}, familiarity {table['p_target'].mean():.3f})")
    _legend(fig, ax, own)   # beside the bars in a figure of our own, never on them
    return fig, ax


def loss_curve(losses: list[dict], title: str = "Training loss", ax=None, name: str | None = None):
    """Loss by optimizer step from ``training.loss_history``; in the colour and marker
    of model ``name`` (a recipe or method) when given."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3))
    colour, marker = model_style(name) if name is not None else (TARGET_COLOR, ".")
    ax.plot([h["step"] for h in losses], [h["loss"] for h in losses], marker=marker, color=colour,
            markersize=4)
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


def fraction_by_alpha(fractions: pd.Series, ylabel: str = "labels that differ from the text",
                      title: str = "Generic labels by alpha", ax=None):
    """A fraction (0-1) by alpha (``fractions``' index), on a percent axis from zero,
    so a change of a few points does not look like a leap."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot(fractions.index, fractions.values, marker="o", color=TARGET_COLOR)
    ax.set_ylim(0, max(1.15 * float(fractions.max()), 0.05) if len(fractions) else 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="alpha", ylabel=ylabel, title=title)
    return fig, ax


def signal_shares(table: pd.DataFrame, title: str = "Where the forgetting signal lives", ax=None):
    """Per kind of position (``label_signal.signal_table``'s rows but ``all``): its share
    of the trained positions beside its share of the signal, in percent, from zero."""
    kinds = [k for k in table.index if k != "all"]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3), layout="constrained")
    x = np.arange(len(kinds))
    ax.bar(x - 0.2, table.loc[kinds, "% of positions"], width=0.4, color="#bbbbbb", label="% of positions")
    ax.bar(x + 0.2, table.loc[kinds, "% of the signal"], width=0.4, color=TARGET_COLOR, label="% of the signal")
    ax.set_xticks(x, kinds)
    ax.set_ylim(0, 100)
    ax.set(ylabel="percent", title=title)
    ax.legend(loc="upper left")
    return fig, ax


def steps_plot(histories: dict, title: str = "Along finetuning"):
    """Target-probe familiarity and generic perplexity by optimizer step, one line
    per run in its model's colour and marker; ``histories`` maps a name to
    ``finetune.StepProbe.history``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
    styles = model_styles(histories)
    for name, hist in histories.items():
        steps = [h["step"] for h in hist]
        colour, marker = styles[name]
        for ax, what in ((left, "familiarity"), (right, "perplexity")):
            ax.plot(steps, [h[what] for h in hist], color=colour, marker=marker, markersize=8, label=name,
                    linestyle=LINESTYLES[list(histories).index(name) % len(LINESTYLES)], **HOLLOW)
    left.set(xlabel="optimizer step", ylabel="mean target probability", title="forgetting (lower is better)")
    right.set(xlabel="optimizer step", ylabel="perplexity on generic text", title="keeping (lower is better)")
    left.set_ylim(bottom=0)   # a probability: from zero
    _legend(fig, left, True)
    fig.suptitle(title)
    return fig, (left, right)


def _annotated(row) -> bool:
    flag = row.get("annotate", True)
    return bool(flag) if not pd.isna(flag) else True


def tradeoff(points: pd.DataFrame, title: str = "Forgetting against keeping", ax=None):
    """Each row a model: ``familiarity_drop`` (%) against ``perplexity_rise`` (%),
    labelled by ``name``, in ``group`` ("main", "ablation", "sweep", "methods", ... or
    ``"steps: <recipe>"``: the recipe along its finetuning steps, one line and not
    annotated). Every model's point, and its step line, has the model's colour and
    marker (``model_style``) and its own legend entry. The target region (drop >= 90%)
    is shaded in a colour no model uses; the perplexity limit is a dashed line. Both
    axes start at zero unless a value is negative."""
    fig, ax, own = _figure(ax, (8.5, 4.8))
    steps = {g: g.split(":", 1)[1].strip() for g in points["group"].unique() if str(g).startswith("steps")}
    styles = model_styles([*points.loc[~points["group"].isin(list(steps)), "name"], *steps.values()])
    ax.axhspan(90, 100, color=BAND_COLOR, zorder=0, label="drop >= 90%, all probes")
    ax.axvline(PERPLEXITY_LIMIT_PCT, color=NEUTRAL_COLOR, linestyle="--", linewidth=1,
               label=f"perplexity limit (+{PERPLEXITY_LIMIT_PCT:g}%)")
    labelled = []
    for group, rows in points.groupby("group", sort=False):
        if group in steps:
            colour, _ = styles[steps[group]]
            ax.plot(rows["perplexity_rise"], rows["familiarity_drop"], color=colour, linestyle=":", marker=".",
                    markersize=5, linewidth=1.3, zorder=2, label=f"{steps[group]}: along its steps")
        else:
            for _, r in rows.iterrows():
                colour, marker = styles[r["name"]]
                extra = f" ({group})" if group in ("ablation", "sweep") else ""
                ax.plot([r["perplexity_rise"]], [r["familiarity_drop"]], linestyle="", color=colour, marker=marker,
                        markersize=10, zorder=3, label=f"{r['name']}{extra}", **HOLLOW)
        labelled += [(r["perplexity_rise"], r["familiarity_drop"], r["name"]) for _, r in rows.iterrows()
                     if _annotated(r)]
    x, y = points["perplexity_rise"].astype(float), points["familiarity_drop"].astype(float)
    lo, hi = min(0.0, x.min()), max(PERPLEXITY_LIMIT_PCT, x.max())
    pad = 0.08 * (hi - lo or 1)
    ax.set_xlim(lo - pad if lo < 0 else 0, hi + pad)
    ax.set_ylim(y.min() - 5 if y.min() < 0 else 0, max(105.0, y.max() + 5))
    ax.set_xlabel("perplexity rise on generic text (%)")
    ax.set_ylabel("drop in mean target probability (%)")
    ax.set_title(title)
    _legend(fig, ax, own, fontsize=7)
    annotate_points(ax, labelled)
    return fig, ax


def annotate_points(ax, points, fontsize: int = 7, min_gap: float = 0.045):
    """Label ``points`` ([(x, y, text), ...]) so that no two labels overlap and every
    label stays inside the axes: labels are placed right of their point (left of it
    where the axes end first), and a label that would sit within ``min_gap`` (a
    fraction of the axes' height) of one already placed moves down or up, to the
    nearest free place inside the axes, with a thin line back to its point.
    Returns the label artists."""
    placed, artists = [], []
    ax.figure.canvas.draw()  # the limits and the layout are final once everything is plotted
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    box = ax.get_window_extent()
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        fx, fy = (x - x0) / ((x1 - x0) or 1), (y - y0) / ((y1 - y0) or 1)
        shifts = [0.0] + [sign * k * min_gap for k in range(1, 40) for sign in (-1, 1)]
        free = [fy + d for d in shifts if 0.02 <= fy + d <= 0.98
                and not any(abs(fy + d - py) < min_gap and abs(fx - px) < 0.25 for px, py in placed)]
        ty = free[0] if free else min(max(fy, 0.02), 0.98)
        placed.append((fx, ty))
        label = ax.annotate(text, (x, y), xytext=(fx + 0.015, ty), textcoords="axes fraction",
                            fontsize=fontsize, va="center", annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": NEUTRAL_COLOR}
                            if ty != fy else None)
        if label.get_window_extent().x1 > box.x1 - 2:   # it would run past the right edge
            label.xyann = (fx - 0.015, ty)
            label.set_horizontalalignment("right")
        artists.append(label)
    return artists


def recovery_curves(table: pd.DataFrame, title: str = "Relearning: how much comes back"):
    """Familiarity of probe groups A (the relearning text states them) and B (it
    does not) along relearning steps, as a percentage of the baseline's before any
    relearning; one line per model, in its colour and marker, on axes from zero.
    ``table`` has columns ``model``, ``step``, ``group A % of baseline`` and
    ``group B % of baseline``. A model with only its step-0 row (not relearned) has
    no curve and is left out."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True, layout="constrained")
    curves = [(name, rows) for name, rows in table.groupby("model", sort=False) if len(rows) > 1]
    styles = model_styles([name for name, _ in curves])
    for ax, group, what in zip(axes, ("A", "B"), ("relearned (stated in the text)", "recovered (never shown)")):
        for i, (name, rows) in enumerate(curves):
            colour, marker = styles[name]
            ax.plot(rows["step"], rows[f"group {group} % of baseline"], color=colour, marker=marker,
                    markersize=8, linestyle=LINESTYLES[i % len(LINESTYLES)], label=name, **HOLLOW)
        ax.axhline(100, color=NEUTRAL_COLOR, linestyle="--", linewidth=1)
        ax.set(xlabel="relearning step", title=f"group {group}: {what}")
    axes[0].set_ylabel("familiarity, % of the baseline's")
    axes[0].set_ylim(bottom=0)   # a ratio: from zero (the axes share it)
    _legend(fig, axes[1], True)
    fig.suptitle(title)
    return fig, axes
