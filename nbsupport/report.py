"""The results page: a run's before/after table rendered as Markdown.

``python -m nbsupport report --run-dir R`` prints it;
``--markdown docs/RESULTS.md`` writes the whole page.
"""
from __future__ import annotations

import pandas as pd

REPORT_COLUMNS = {  # results.csv column -> Markdown header
    "token_familiarity": "target prob.", "familiarity_drop": "drop %", "familiarity_report_drop": "drop % (report half)",
    "indirect_drop": "indirect drop %", "completion_familiarity": "completion fam.",
    "knowledge_accuracy": "GK acc.", "knowledge_points": "GK pts", "perplexity": "ppl generic",
    "perplexity_rise": "ppl rise %", "perplexity_nearby": "ppl nearby", "kl_to_baseline": "KL to B",
}


def results_markdown(run) -> str:
    """The before/after table of notebook 06 as Markdown (``python -m nbsupport report``)."""
    table = run.read_table("evaluate/results.csv").set_index("model")
    cols = [c for c in REPORT_COLUMNS if c in table]
    lines = ["| model | " + " | ".join(REPORT_COLUMNS[c] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, row in table.iterrows():
        cells = ["" if pd.isna(row[c]) else (f"{row[c]:.1f}" if c.endswith(("drop", "rise", "points")) or
                                             c.startswith("perplexity") else f"{row[c]:.4f}") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
