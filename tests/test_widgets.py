"""Widgets: the static fallbacks return the same content the interactive
versions show, and the interactive versions call the tested package functions."""
import pandas as pd
import pytest

from nbsupport import anchors, labels, probe, widgets
from nbsupport.anchors import AnchorDict, Entry


def test_topk_explorer_static_and_interactive(tiny_model, tiny_tokenizer):
    table = widgets.topk_explorer(tiny_model, tiny_tokenizer, ["The cat", "The owl"], k=3, interactive=False)
    assert list(table.columns) == ["prompt", "token", "prob"] and len(table) == 6
    expected = probe.next_token_topk(tiny_model, tiny_tokenizer, "The owl", 3)
    assert table[table.prompt == "The owl"]["token"].tolist() == expected["token"].tolist()
    box = widgets.topk_explorer(tiny_model, tiny_tokenizer, ["The cat"], k=3, interactive=True)
    assert box.children[0].value == "The cat"


def test_alpha_explorer_static_matches_generic_topk(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_model
    R = get_peft_model(make_tiny_model(len(tiny_tokenizer), seed=5),
                       LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).eval()
    table = widgets.alpha_explorer(R, tiny_tokenizer, "Harry Potter studies", [0.0, 5.0], k=4, interactive=False)
    assert sorted(set(table.alpha)) == [0.0, 5.0]
    at5 = labels.generic_topk(R, tiny_tokenizer, "Harry Potter studies", 5.0, 4)
    assert table[table.alpha == 5.0]["token"].tolist() == at5["token"].tolist()
    # alpha 0 is the baseline's own distribution
    zero = table[table.alpha == 0.0]
    assert zero["prob"].tolist() == pytest.approx(zero["p_baseline"].tolist(), rel=1e-5)


def test_dictionary_review_applies_edits():
    d = AnchorDict([Entry("Harry", ["Jon"]), Entry("Ron", ["Tom"]), Entry("Hogwarts", ["Academy"])])
    static = widgets.DictionaryReview(d, ["Harry", "Ron"], interactive=False)
    assert isinstance(static.widget, pd.DataFrame) and static.result().keys() == d.keys()
    review = widgets.DictionaryReview(d, ["Harry", "Ron"], interactive=True)
    box, text = review.rows["Ron"]
    box.value = False
    review.rows["Harry"][1].value = "Paul | Sam"
    out = review.result()
    assert out.keys() == ["Harry", "Hogwarts"] and out["Harry"].translations == ["Paul", "Sam"]


def test_translation_html_marks_both_sides():
    d = AnchorDict([Entry("Hogwarts", ["Mystic Academy"])])
    html = widgets.translation_html(anchors.translate("Off to Hogwarts & back.", d)).data
    assert "<mark" in html and "Mystic Academy" in html and "&amp;" in html


def test_completion_comparer_static(tiny_model, tiny_tokenizer):
    table = widgets.completion_comparer({"a": (tiny_model, None), "b": (tiny_model, None)}, tiny_tokenizer,
                                        ["The cat"], max_new_tokens=4, interactive=False)
    assert table.loc[0, "a"] == table.loc[0, "b"] == probe.complete(tiny_model, tiny_tokenizer, ["The cat"], 4,
                                                                    progress=False)[0]
