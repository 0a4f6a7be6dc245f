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
