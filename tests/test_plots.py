"""The plots a reader matches across the notebook series: one colour and marker per
model in every plot, a model's point and its step line alike, a target band in a
colour no model uses, every model in a legend that lies inside the figure, labels
inside the axes and ratio or probability axes from zero. Drawn with Agg."""
import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402

from nbsupport import config, plots  # noqa: E402

ABLATIONS = ("reinforcement only", "anchors only", "both")   # finetune.planned_variants


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def hex_of(artist) -> str:
    return to_hex(artist.get_color())


def model_lines(ax) -> dict[str, matplotlib.lines.Line2D]:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def legend_labels(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def assert_inside_figure(fig, artist):
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, \
        (box, page)


def notebook_06_points() -> pd.DataFrame:
    rows = [{"group": "main", "name": "paper", "perplexity_rise": 2.5, "familiarity_drop": 60.0},
            {"group": "main", "name": "soft+kl", "perplexity_rise": 1.0, "familiarity_drop": 40.0},
            *({"group": "ablation", "name": n, "perplexity_rise": 1.5 + i, "familiarity_drop": 20.0 + 10 * i}
              for i, n in enumerate(ABLATIONS)),
            {"group": "sweep", "name": "alpha=10, 1 epoch", "perplexity_rise": 4.0, "familiarity_drop": 75.0}]
    for recipe, end in (("paper", (2.2, 55.0)), ("soft+kl", (0.8, 38.0))):
        for k, step in enumerate((0, 10, 20)):
            rows.append({"group": f"steps: {recipe}", "name": str(step), "annotate": False,
                         "perplexity_rise": end[0] * k / 2, "familiarity_drop": end[1] * k / 2})
    return pd.DataFrame(rows)


def notebook_07_points() -> pd.DataFrame:
    # GA and NPO at the same place (they overlap in notebook 07), one model far to the right
    values = {"WHP paper": (2.0, 55.0), "ga": (30.0, 97.0), "graddiff": (2.5, 20.0), "npo": (30.0, 97.0),
              "WHP at inference (alpha=3)": (45.0, 80.0)}
    return pd.DataFrame([{"group": "methods", "name": n, "perplexity_rise": x, "familiarity_drop": y}
                         for n, (x, y) in values.items()])


# ----------------------------------------------------------------- the styles

def test_every_model_of_the_series_has_a_style_of_its_own():
    from nbsupport import finetune, methods

    names = ["baseline", *finetune.RECIPES, *ABLATIONS, *methods.METHODS, methods.inference_name(3.0)]
    names += list(config.PARAMS["finetune_recipes"].choices) + list(config.PARAMS["methods"].choices)
    assert all(plots.model_key(n) in plots.MODEL_STYLES for n in names), \
        [n for n in names if plots.model_key(n) not in plots.MODEL_STYLES]
    # the same model under the names the notebooks give it
    assert plots.model_style("WHP paper") == plots.model_style("steps: paper") == plots.model_style("paper")
    assert plots.model_style("WHP soft+kl") == plots.model_style("soft+kl")
    assert plots.model_style("WHP at inference (alpha=2.5)") == plots.model_style(methods.inference_name(3.0))
    assert plots.model_style("baseline (light)") == plots.model_style("baseline")


def test_no_two_models_share_a_colour_or_a_style_and_the_band_is_no_models():
    styles = list(plots.MODEL_STYLES.values())
    colours = [c for c, _ in styles] + list(plots.SPARE_COLORS)
    assert len({c.lower() for c in colours}) == len(colours)
    assert len(set(styles)) == len(styles)
    for colour in colours:   # the band is far from every model colour, not merely another hex
        assert np.abs(np.subtract(to_rgb(colour), to_rgb(plots.BAND_COLOR))).max() > 0.3, colour


def test_models_without_a_style_get_distinct_spare_ones_the_same_every_time():
    names = ["paper", "alpha=2.5, 1 epoch", "alpha=10, 1 epoch", "lr=1e-4, 1 epoch"]
    styles = plots.model_styles(names)
    assert styles == plots.model_styles(names)
    assert len({c for c, _ in styles.values()}) == len(names)
    assert all(styles[n][0] not in {c for c, _ in plots.MODEL_STYLES.values()} for n in names[1:])
    many = plots.model_styles([f"lr={i}e-5, 1 epoch" for i in range(10)])   # more than the spare colours
    assert len(set(many.values())) == 10


# ----------------------------------------------------------------- notebook 06's tradeoff

def test_tradeoff_points_share_their_step_lines_colour_and_the_band_is_apart():
    points = notebook_06_points()
    fig, ax = plots.tradeoff(points)
    lines = model_lines(ax)
    for recipe in ("paper", "soft+kl"):
        point, steps = lines[recipe], lines[f"{recipe}: along its steps"]
        assert point.get_linestyle() == "None" and steps.get_linestyle() != "None"
        assert hex_of(point) == hex_of(steps) == to_hex(plots.model_style(recipe)[0])
    model_points = [line for line in lines.values() if line.get_linestyle() == "None"]
    assert len(model_points) == 6
    assert len({(hex_of(p), p.get_marker()) for p in model_points}) == 6
    assert len({hex_of(p) for p in model_points}) == 6
    band = next(p for p in ax.patches if p.get_label().startswith("drop >= 90%"))
    assert to_hex(band.get_facecolor()) not in {hex_of(line) for line in lines.values()}
    assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0   # percentages from zero


def test_tradeoff_legend_lists_every_model_inside_the_figure():
    fig, ax = plots.tradeoff(notebook_06_points())
    legend = fig.legends[0] if fig.legends else ax.get_legend()
    labels = legend_labels(legend)
    for name in ("paper", "soft+kl", "alpha=10, 1 epoch", *ABLATIONS):
        assert any(label.startswith(name) for label in labels), (name, labels)
    assert "paper: along its steps" in labels and "soft+kl: along its steps" in labels
    assert_inside_figure(fig, legend)


def test_tradeoff_on_a_callers_axes_keeps_its_legend_in_them():
    fig, (ax, _) = plt.subplots(1, 2, figsize=(12, 4.5))
    plots.tradeoff(notebook_07_points(), ax=ax)
    legend = ax.get_legend()
    assert legend is not None and not fig.legends
    assert_inside_figure(fig, legend)


# ----------------------------------------------------------------- notebook 07's tradeoff

def test_tradeoff_of_the_other_methods_names_each_and_keeps_labels_inside():
    points = notebook_07_points()
    fig, ax = plots.tradeoff(points, title="Forgetting against keeping, every method")
    legend = fig.legends[0]
    labels = legend_labels(legend)
    assert all(name in labels for name in points["name"]), labels
    lines = model_lines(ax)
    ga, npo = lines["ga"], lines["npo"]
    assert ga.get_xydata().tolist() == npo.get_xydata().tolist()
    assert (hex_of(ga), ga.get_marker()) != (hex_of(npo), npo.get_marker())
    assert ga.get_marker() != npo.get_marker()   # told apart where they overlap
    fig.canvas.draw()
    box = ax.get_window_extent()
    texts = [matplotlib.text.Text.get_window_extent(t) for t in ax.texts]   # the text, not its line
    assert len(texts) == len(points)
    assert all(box.x0 <= t.x0 and t.x1 <= box.x1 and box.y0 <= t.y0 and t.y1 <= box.y1 for t in texts)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(texts, 2))
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0


# ----------------------------------------------------------------- lines along steps, relearning

def history(values):
    return [{"step": 4 * i, "familiarity": f, "perplexity": 20 + i} for i, f in enumerate(values)]


def test_steps_plot_gives_overlapping_models_their_own_colour_and_marker():
    curves = {"ga": history([0.7, 0.72, 0.71]), "graddiff": history([0.7, 0.5, 0.4]),
              "npo": history([0.7, 0.72, 0.71])}
    fig, (left, right) = plots.steps_plot(curves)
    for ax in (left, right):
        lines = model_lines(ax)
        assert set(lines) == set(curves)
        assert len({(hex_of(line), line.get_marker()) for line in lines.values()}) == 3
        assert all(hex_of(lines[n]) == to_hex(plots.model_style(n)[0]) for n in curves)
        ga, npo = lines["ga"], lines["npo"]   # on the same values: each visible through the other
        assert ga.get_linestyle() != npo.get_linestyle()
        assert ga.get_markerfacecolor() == npo.get_markerfacecolor() == "none"
    assert left.get_ylim()[0] == 0   # a probability, though every value is near 0.7
    legend = fig.legends[0]
    assert sorted(legend_labels(legend)) == sorted(curves)
    assert_inside_figure(fig, legend)
    assert_inside_figure(fig, fig._suptitle)


def test_one_model_has_one_colour_in_every_plot():
    fig5, (left, _) = plots.steps_plot({"paper": history([0.5, 0.3]), "soft+kl": history([0.5, 0.4])})
    _, tradeoff_ax = plots.tradeoff(notebook_06_points())
    table = pd.DataFrame([{"model": m, "step": s, "group A % of baseline": a, "group B % of baseline": a}
                          for m in ("baseline", "WHP paper", "npo") for s, a in ((0, 50.0), (10, 80.0))])
    _, axes = plots.recovery_curves(table)
    _, loss_ax = plots.loss_curve([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], name="paper")
    paper = to_hex(plots.model_style("paper")[0])
    assert hex_of(model_lines(left)["paper"]) == paper
    assert hex_of(model_lines(tradeoff_ax)["paper"]) == hex_of(model_lines(tradeoff_ax)["paper: along its steps"]) == paper
    assert hex_of(model_lines(axes[0])["WHP paper"]) == paper
    assert hex_of(loss_ax.get_lines()[0]) == paper
    assert hex_of(model_lines(axes[1])["npo"]) == to_hex(plots.model_style("npo")[0])


def test_recovery_curves_start_at_zero_with_their_legend_inside():
    table = pd.DataFrame([{"model": m, "step": s, "group A % of baseline": a, "group B % of baseline": b}
                          for m, rows in {"baseline": [(0, 100, 100), (10, 120, 110)],
                                          "ga": [(0, 60, 70), (10, 90, 95)],
                                          "npo": [(0, 60, 70), (10, 90, 95)]}.items()
                          for s, a, b in rows])
    fig, axes = plots.recovery_curves(table)
    assert axes[0].get_ylim()[0] == 0 and axes[1].get_ylim()[0] == 0
    lines = model_lines(axes[1])
    assert (hex_of(lines["ga"]), lines["ga"].get_marker()) != (hex_of(lines["npo"]), lines["npo"].get_marker())
    legend = fig.legends[0]
    assert legend_labels(legend) == ["baseline", "ga", "npo"]
    assert_inside_figure(fig, legend)


# ----------------------------------------------------------------- ratios and probabilities from zero

def test_fraction_by_alpha_starts_at_zero():
    fractions = pd.Series([0.68, 0.71, 0.74, 0.76], index=[0.0, 1.0, 3.0, 5.0])
    fig, ax = plots.fraction_by_alpha(fractions)
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 0.76
    assert ax.get_lines()[0].get_ydata().tolist() == fractions.tolist()


def test_probe_summary_keeps_its_legend_inside_the_figure():
    table = pd.DataFrame({"category": ["a", "a", "b"], "p_target": [0.6, 0.7, 0.8], "p_generic": [0.1, 0.2, 0.1]})
    fig, ax = plots.probe_summary(table)
    assert ax.get_xlim()[0] == 0
    assert_inside_figure(fig, fig.legends[0])


def test_the_signal_figure_sets_each_kinds_share_of_positions_beside_its_share_of_the_signal():
    table = pd.DataFrame({"% of positions": [10.0, 20.0, 70.0, 100.0], "% of the signal": [30.0, 25.0, 45.0, 100.0]},
                         index=["anchor", "raised by R", "prose", "all"])
    fig, ax = plots.signal_shares(table)
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [10.0, 20.0, 70.0, 30.0, 25.0, 45.0]          # "all" is not a bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["anchor", "raised by R", "prose"]
    assert ax.get_ylim() == (0, 100)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["% of positions", "% of the signal"]
    plt.close(fig)
