import pandas as pd
import pytest

from nbsupport import tabular


def test_a_compact_view_has_short_headers_integers_and_one_decimal_percentages():
    full = pd.DataFrame({"count": [50.0, 100.0], "familiarity_drop": [70.8123, 73.25], "perplexity": [24.44071, 28.1],
                         "unused": [1, 2]}, index=["baseline", "paper"])
    view, legend = tabular.compact(full, {"n": ("count", "how often"), "drop %": ("familiarity_drop", "gone"),
                                         "ppl": ("perplexity", "on generic text"), "absent": ("nope", "not here")},
                                  percent=("drop %",))
    assert list(view.columns) == ["n", "drop %", "ppl"]
    assert view["n"].tolist() == [50, 100] and str(view["n"].dtype).startswith("int")
    assert view["drop %"].tolist() == [70.8, 73.2] or view["drop %"].tolist() == [70.8, 73.3]
    assert view["ppl"].tolist() == [24.441, 28.1]
    assert legend == "n: how often; drop %: gone; ppl: on generic text"


def test_more_than_eight_columns_is_refused():
    with pytest.raises(ValueError, match="at most 8"):
        tabular.compact(pd.DataFrame({"a": [1]}), {str(i): ("a", "x") for i in range(9)})


def test_completions_are_shown_on_one_line_and_wrapped_in_their_column():
    assert tabular.one_line("Harry said\n\n  'hello'   there\n") == "Harry said / 'hello' there"
    styled = tabular.text_table(pd.DataFrame({"prompt": ["a\nb"], "completion": ["x\ny"], "score": [2]}),
                               ("prompt", "completion"))
    html = styled.to_html()
    assert "a / b" in html and "x / y" in html and "white-space: normal" in html and "\n" not in "a / b"


def test_the_shown_table_has_whole_steps_and_blank_gaps():
    view = pd.DataFrame({"stop step": [4.0, None, 12.0], "gone %": [71.64, 100.0, None], "KL": [0.0312, 0.1, 0.2]})
    html = tables_html = tabular.styled(view, percent=("gone %",), digits=2).to_html()
    assert ">4<" in html and ">12<" in html and "4.0" not in html and "nan" not in html.lower()
    assert ">71.6<" in html and ">0.03<" in html
