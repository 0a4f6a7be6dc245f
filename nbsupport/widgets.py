"""Interactive explorers. Each widget only calls pure, tested package functions;
with ``interactive=False`` (batch runs, no browser attached) it returns the same
content as static tables and figures instead."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from . import plots, probe


def topk_explorer(model, tok, prompts: Sequence[str], k: int = 10, interactive: bool = True):
    """Type a prompt, see the model's top-k next tokens.

    Interactive: returns an ipywidgets box (a text field and its output).
    Static: returns one table with the top-k of every prompt in ``prompts``.
    """
    if not interactive:
        tables = [probe.next_token_topk(model, tok, p, k).assign(prompt=p) for p in prompts]
        return pd.concat(tables, ignore_index=True)[["prompt", "token", "prob"]]

    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    text = w.Text(value=prompts[0] if prompts else "", description="Prompt:",
                  layout=w.Layout(width="80%"), continuous_update=False)
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            if not text.value:
                print("Type a prompt and press Enter.")
                return
            fig, _ = plots.topk_bars(probe.next_token_topk(model, tok, text.value, k), title=text.value)
            display(fig)
            plt.close(fig)

    text.observe(show, names="value")
    show()
    return w.VBox([text, out])


def alpha_explorer(model, tok, prompt: str, alphas: Sequence[float], k: int = 10,
                   interactive: bool = True, base=None):
    """Move alpha, watch v_generic = v_B - alpha * ReLU(v_R - v_B) change the top-k.

    Interactive: a slider and a prompt field. Static: one table with the top-k
    for each alpha in ``alphas``.
    """
    from .labels import generic_topk

    if not interactive:
        tables = [generic_topk(model, tok, prompt, a, k, base).assign(alpha=a) for a in alphas]
        return pd.concat(tables, ignore_index=True)[["alpha", "token", "prob", "p_baseline"]]

    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    text = w.Text(value=prompt, description="Prompt:", layout=w.Layout(width="80%"),
                  continuous_update=False)
    slider = w.FloatSlider(value=alphas[len(alphas) // 2] if alphas else 5.0, min=0.0,
                           max=max(20.0, *alphas) if alphas else 20.0, step=0.5,
                           description="alpha", continuous_update=False)
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            table = generic_topk(model, tok, text.value, slider.value, k, base)
            fig, _ = plots.topk_bars(table, title=f"generic prediction, alpha={slider.value:g}")
            display(fig)
            plt.close(fig)

    text.observe(show, names="value")
    slider.observe(show, names="value")
    show()
    return w.VBox([text, slider, out])
