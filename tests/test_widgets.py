"""Widgets: the static fallbacks return the same content the interactive
versions show, and the interactive versions call the tested package functions."""
import pandas as pd
import pytest

from contextlib import nullcontext

from nbsupport import reinforce, scoring, widgets
from nbsupport.anchors import dictionary
from nbsupport.anchors.dictionary import AnchorDict, Entry


def test_topk_explorer_static_and_interactive(tiny_model, tiny_tokenizer):
    table = widgets.topk_explorer(tiny_model, tiny_tokenizer, ["The cat", "The owl"], k=3, interactive=False)
    assert list(table.columns) == ["prompt", "token", "prob"] and len(table) == 6
    expected = scoring.next_token_topk(tiny_model, tiny_tokenizer, "The owl", 3)
    assert table[table.prompt == "The owl"]["token"].tolist() == expected["token"].tolist()
    box = widgets.topk_explorer(tiny_model, tiny_tokenizer, ["The cat"], k=3, interactive=True)
    assert box.children[0].value == "The cat"


def test_alpha_explorer_static_matches_generic_topk(tiny_pair, tiny_tokenizer):
    R = tiny_pair
    table = widgets.alpha_explorer(R, tiny_tokenizer, "Harry Potter studies", [5.0, 0.0], k=4, interactive=False)
    assert table.alpha.tolist() == sorted(table.alpha)  # shown in increasing alpha
    assert sorted(set(table.alpha)) == [0.0, 5.0]
    at5 = reinforce.generic_topk(R, tiny_tokenizer, "Harry Potter studies", 5.0, 4)
    assert table[table.alpha == 5.0]["token"].tolist() == at5["token"].tolist()
    # alpha 0 is the baseline's own distribution
    zero = table[table.alpha == 0.0]
    assert zero["prob"].tolist() == pytest.approx(zero["p_baseline"].tolist(), rel=1e-5)


def test_dictionary_review_applies_edits():
    d = AnchorDict([Entry("Harry", ["Jon"]), Entry("Ron", ["Tom"]), Entry("Hogwarts", ["Academy"])])
    static = widgets.DictionaryReview(d, ["Harry", "Ron"], interactive=False)
    assert isinstance(static.widget, pd.DataFrame) and static.result().keys() == d.keys()
    assert "flag" not in static.widget
    flagged = widgets.DictionaryReview(d, ["Harry", "Ron"], interactive=False, flags={"Ron": "type unsure"})
    assert flagged.widget.flag.tolist() == ["", "type unsure"]
    with pytest.raises(KeyError, match="'Dumbledore'"):
        widgets.DictionaryReview(d, ["Harry", "Dumbledore"], interactive=False)
    review = widgets.DictionaryReview(d, ["Harry", "Ron"], interactive=True, flags={"Ron": "type <unsure>"})
    box, text, flag = review.rows["Ron"]
    assert "type &lt;unsure&gt;" in flag.value and review.rows["Harry"][2].value == "<i></i>"
    box.value = False
    review.rows["Harry"][1].value = "Paul | Sam"
    out = review.result()
    assert out.keys() == ["Harry", "Hogwarts"] and out["Harry"].translations == ["Paul", "Sam"]


def test_ordinary_words_stay_anchors_only_with_a_persons_yes():
    d = AnchorDict([Entry("Harry", ["Jon"]), Entry("London", ["Tilford"]), Entry("Hogwarts", ["Academy"])])
    batch = widgets.DictionaryReview(d, ["Harry"], interactive=False, unless_ticked=["London"])
    assert batch.widget.key.tolist() == ["London", "Harry"]                 # listed, first
    assert batch.widget.kept.tolist()[0].startswith("no") and batch.widget.kept.tolist()[1] == "yes"
    assert batch.result().keys() == ["Harry", "Hogwarts"]                   # batch: rejected
    review = widgets.DictionaryReview(d, ["Harry"], interactive=True, unless_ticked=["London"])
    assert review.rows["London"][0].value is False and review.rows["Harry"][0].value is True
    assert "London" not in review.result()                                 # nobody ticked it
    review.rows["London"][0].value = True                                  # a person's yes
    assert review.result().keys() == d.keys()


def test_translation_html_marks_both_sides():
    d = AnchorDict([Entry("Hogwarts", ["Mystic Academy"])])
    html = widgets.translation_html(dictionary.translate("Off to Hogwarts & back.", d)).data
    assert "<mark" in html and "Mystic Academy" in html and "&amp;" in html


def test_completion_comparer_static(tiny_model, tiny_tokenizer):
    views = {"a": lambda: nullcontext(tiny_model), "b": lambda: nullcontext(tiny_model)}
    table = widgets.completion_comparer(views, tiny_tokenizer,
                                        ["The cat"], max_new_tokens=4, interactive=False)
    assert table.loc[0, "a"] == table.loc[0, "b"] == scoring.complete(tiny_model, tiny_tokenizer, ["The cat"], 4,
                                                                    progress=False)[0]


def test_generation_explorer_static_is_inference_time_whp(tiny_pair, tiny_tokenizer):
    from nbsupport.generic_decoding import GenericModel

    table = widgets.generation_explorer(tiny_pair, tiny_tokenizer, "Harry Potter studies", [5.0, 0.0],
                                        max_new_tokens=5, interactive=False)
    assert table.alpha.tolist() == [0.0, 5.0]
    expected = GenericModel(tiny_pair, 5.0).generate_text(tiny_tokenizer, ["Harry Potter studies"], 5)[0]
    assert table.completion.tolist()[1] == expected
    with tiny_pair.base() as B:   # alpha 0 is B's own greedy completion
        assert table.completion.tolist()[0] == scoring.complete(B, tiny_tokenizer, ["Harry Potter studies"], 5,
                                                                progress=False)[0]
    box = widgets.generation_explorer(tiny_pair, tiny_tokenizer, "Harry", [1.0, 5.0], max_new_tokens=3)
    assert box.children[1].value == 5.0


def test_tradeoff_labels_never_overlap():
    import matplotlib
    matplotlib.use("Agg")
    from nbsupport import plots

    # five models at almost the same place: their labels must be spread out
    points = pd.DataFrame({"group": ["main"] * 5, "name": [f"model {i}" for i in range(5)],
                           "perplexity_rise": [2.0, 2.05, 2.1, 2.0, 2.02], "familiarity_drop": [70, 70.5, 71, 69.8, 70.2]})
    fig, ax = plots.tradeoff(points)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [matplotlib.text.Text.get_window_extent(t, renderer) for t in ax.texts]   # the text, not its line
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    axes_box = ax.get_window_extent()
    assert all(axes_box.y0 <= b.y0 and b.y1 <= axes_box.y1 for b in boxes)   # inside the axes
