"""Interactive explorers. Each widget only calls pure, tested package functions;
with ``interactive=False`` (batch runs, no browser attached) it returns the same
content as static tables and figures instead."""
from __future__ import annotations

import html
from typing import Callable, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

from . import plots, scoring, tabular
from .anchors.dictionary import apply_review
from .generic_decoding import GenericModel
from .pair import ModelPair
from .reinforce import generic_topk


def topk_explorer(model, tok, prompts: Sequence[str], k: int = 10, interactive: bool = True):
    """Type a prompt, see the model's top-k next tokens.

    Interactive: returns an ipywidgets box (a text field and its output).
    Static: returns one table with the top-k of every prompt in ``prompts``.
    """
    if not interactive:
        tables = [scoring.next_token_topk(model, tok, p, k).assign(prompt=p) for p in prompts]
        return pd.concat(tables, ignore_index=True)[["prompt", "token", "prob"]]

    text = _prompt_field(prompts[0] if prompts else "")
    return _live([text], lambda: plots.topk_bars(scoring.next_token_topk(model, tok, text.value, k),
                                                 title=text.value)[0] if text.value else None)


def _prompt_field(value: str):
    return w.Text(value=value, description="Prompt:", layout=w.Layout(width="80%"), continuous_update=False)


def _live(controls: list, figure: Callable):
    """A box of ``controls`` above an output that shows ``figure()`` (a matplotlib
    figure, or None for "type a prompt") again whenever a control changes."""
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            fig = figure()
            if fig is None:
                print("Type a prompt and press Enter.")
                return
            display(fig)
            plt.close(fig)

    for control in controls:
        control.observe(show, names="value")
    show()
    return w.VBox([*controls, out])


def alpha_explorer(pair: ModelPair, tok, prompt: str, alphas: Sequence[float], k: int = 10,
                   interactive: bool = True):
    """Move alpha, watch v_generic = v_B - alpha * ReLU(v_R - v_B) change the top-k.

    Interactive: a slider and a prompt field. Static: one table with the top-k
    for each alpha in ``alphas``.
    """
    if not interactive:
        tables = [generic_topk(pair, tok, prompt, a, k).assign(alpha=a) for a in sorted(alphas)]
        return pd.concat(tables, ignore_index=True)[["alpha", "token", "prob", "p_baseline"]]

    text = _prompt_field(prompt)
    slider = w.FloatSlider(value=alphas[len(alphas) // 2] if alphas else 5.0, min=0.0,
                           max=max(20.0, *alphas) if alphas else 20.0, step=0.5,
                           description="alpha", continuous_update=False)
    return _live([text, slider], lambda: plots.topk_bars(
        generic_topk(pair, tok, text.value, slider.value, k),
        title=f"generic prediction, alpha={slider.value:g}")[0] if text.value else None)


def translation_html(translation, max_chars: int = 1200):
    """The original passage and its translation, anchored terms highlighted."""
    def mark(text, spans, color):
        out, at = [], 0
        for s, e in spans:
            if s >= max_chars:
                break
            out += [html.escape(text[at:s]), f'<mark style="background:{color}">{html.escape(text[s:e])}</mark>']
            at = e
        return "".join(out) + html.escape(text[at:max_chars])

    a = translation.anchors
    left = mark(translation.original, [(x.start, x.end) for x in a], "#f4c7c3")
    right = mark(translation.text, [(x.new_start, x.new_end) for x in a], "#c6dbef")
    cell = 'style="vertical-align:top;white-space:pre-wrap;width:50%;text-align:left"'
    return HTML(f"<table><tr><th>original</th><th>translated</th></tr>"
                f"<tr><td {cell}>{left}</td><td {cell}>{right}</td></tr></table>")


class DictionaryReview:
    """Accept, reject or edit dictionary entries.

    Interactive: a checkbox and an editable text per entry; ``result()`` applies
    what the reviewer set (``anchors.apply_review``). Static (batch runs): a table
    of the entries, and ``result()`` returns the dictionary without the ``unless_ticked``
    keys. ``flags`` (key -> why to look twice, e.g. from ``anchors.quality.review_order``)
    are shown beside the entries. ``unless_ticked`` (e.g. ``quality.ordinary_english``):
    keys that stay anchors only with a person's yes; their boxes start unticked.
    """

    def __init__(self, dictionary, keys, interactive: bool = True, flags: dict[str, str] | None = None,
                 unless_ticked=()):
        self.unless_ticked = list(dict.fromkeys(unless_ticked))
        self.dictionary, self.interactive = dictionary, interactive
        self.keys = list(dict.fromkeys([*self.unless_ticked, *keys]))
        missing = [k for k in self.keys if k not in dictionary]
        if missing:
            raise KeyError(f"{len(missing)} keys to review are not in the dictionary (e.g. {missing[0]!r})")
        flags = {k: (flags or {}).get(k, "") for k in self.keys}
        self.rows = {}
        if interactive:
            for key in self.keys:
                entry = dictionary[key]
                self.rows[key] = (w.Checkbox(value=key not in self.unless_ticked, description=key, indent=False,
                                             layout=w.Layout(width="25%")),
                                  w.Text(value=" | ".join(entry.translations), layout=w.Layout(width="40%")),
                                  w.HTML(f"<i>{html.escape(flags[key])}</i>", layout=w.Layout(width="35%")))
            self.widget = w.VBox([w.HTML("<b>accept</b> · translations (separate with |) · why to look twice")]
                                 + [w.HBox(list(r)) for r in self.rows.values()])
        else:
            self.widget = dictionary.to_frame().set_index("key").loc[self.keys].reset_index()
            if any(flags.values()):
                self.widget["flag"] = [flags[k] for k in self.keys]
            self.widget["kept"] = ["no (tick it in JupyterLab to keep it)" if k in self.unless_ticked else "yes"
                                   for k in self.keys]

    def decisions(self) -> dict:
        if not self.interactive:
            return {key: {"accept": False} for key in self.unless_ticked}
        return {key: {"accept": box.value, "translations": text.value}
                for key, (box, text, _) in self.rows.items()}

    def result(self):
        return apply_review(self.dictionary, self.decisions())


def completion_comparer(views: dict[str, Callable], tok, prompts: Sequence[str], max_new_tokens: int = 40,
                        interactive: bool = True):
    """Greedy completions of several models side by side (e.g. baseline and unlearned).

    ``views`` maps a name to a zero-argument context factory whose value is the
    model, e.g. ``{"baseline": pair.base, "unlearned": pair.trained}``.
    Interactive: type a prompt. Static: a table for ``prompts``.
    """
    def run_all(texts):
        cols = {"prompt": list(texts)}
        for name, view in views.items():
            with view() as model:
                outs = scoring.complete(model, tok, list(texts), max_new_tokens, progress=False)
                cols[name] = [tabular.one_line(t) if "\n" in t else t for t in outs]   # line breaks as " / "
        return pd.DataFrame(cols)

    if not interactive:
        return run_all(prompts)

    text = _prompt_field(prompts[0] if prompts else "")
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            if text.value:   # one row per model: its name, then what it wrote after the prompt
                row = run_all([text.value]).iloc[0].drop("prompt")
                display(pd.DataFrame({"model": row.index, "completion": row.values}).style.hide(axis="index"))

    text.observe(show, names="value")
    show()
    return w.VBox([text, out])


def generation_explorer(pair: ModelPair, tok, prompt: str, alphas: Sequence[float], max_new_tokens: int = 30,
                        interactive: bool = True):
    """Move alpha, read what inference-time WHP (``generic_decoding.GenericModel``)
    writes after the prompt: greedy generation from v_B - alpha * ReLU(v_R - v_B).

    Interactive: a prompt field and an alpha slider. Static: one row per alpha in
    ``alphas`` (sorted), the completion beside it.
    """
    def write(text: str, alpha: float) -> str:
        return GenericModel(pair, alpha).generate_text(tok, [text], max_new_tokens)[0]

    if not interactive:
        return pd.DataFrame({"alpha": sorted(alphas), "completion": [write(prompt, a) for a in sorted(alphas)]})

    text = _prompt_field(prompt)
    slider = w.FloatSlider(value=sorted(alphas)[len(alphas) // 2] if alphas else 5.0, min=0.0,
                           max=max(20.0, *alphas) if alphas else 20.0, step=0.5,
                           description="alpha", continuous_update=False)
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            print(text.value + write(text.value, slider.value) if text.value else "Type a prompt and press Enter.")

    text.observe(show, names="value")
    slider.observe(show, names="value")
    show()
    return w.VBox([text, slider, out])
