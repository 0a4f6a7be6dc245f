"""Tables a reader can take in: at most eight columns with short headers, a legend
under the table for what each header means, percentages with one decimal, counts
as integers. The full table stays where the code saved it (a CSV in the run)."""
from __future__ import annotations

import pandas as pd

MAX_COLUMNS = 8


def compact(table: pd.DataFrame, columns: dict[str, tuple[str, str]], percent: tuple[str, ...] = (),
            digits: int = 3) -> tuple[pd.DataFrame, str]:
    """``(view, legend)``: the ``columns`` of ``table`` that exist, in order, renamed
    ``{short header: (column, meaning)}``; columns named in ``percent`` (by short header)
    rounded to one decimal, whole-number columns as integers, the rest to ``digits``.
    At most ``MAX_COLUMNS`` headers (a ValueError says to split the table)."""
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"{len(columns)} columns: show at most {MAX_COLUMNS} (split the table in two)")
    present = {short: (col, meaning) for short, (col, meaning) in columns.items() if col in table}
    view = table[[col for col, _ in present.values()]].copy()
    view.columns = list(present)
    for short in view.columns:
        values = pd.to_numeric(view[short], errors="coerce")
        if short in percent:
            view[short] = values.round(1)
        elif values.notna().any() and (values.dropna() % 1 == 0).all() and values.notna().all():
            view[short] = values.astype(int)
        elif values.notna().any():
            view[short] = values.round(digits)
    legend = "; ".join(f"{short}: {meaning}" for short, (_, meaning) in present.items())
    return view, legend


def show(table: pd.DataFrame, columns: dict[str, tuple[str, str]], percent: tuple[str, ...] = (),
         digits: int = 3) -> pd.DataFrame:
    """Display the compact view of ``table`` with its legend under it; return the view."""
    from IPython.display import display

    view, legend = compact(table, columns, percent, digits)
    display(styled(view, percent, digits))
    print(legend)
    return view


def styled(view: pd.DataFrame, percent: tuple[str, ...] = (), digits: int = 3):
    """``view`` as shown: whole numbers without a decimal (also beside a missing value),
    percentages with one, the rest with ``digits``, missing values blank."""
    formats = {}
    for col in view.columns:
        values = pd.to_numeric(view[col], errors="coerce").dropna()
        if values.empty:
            continue
        formats[col] = "{:.1f}" if col in percent else "{:.0f}" if (values % 1 == 0).all() else f"{{:.{digits}f}}"
    return view.style.format(formats, na_rep="")


def one_line(text: str) -> str:
    """A completion on one line: each line break shown as " / ", runs of spaces collapsed."""
    return " ".join(" / ".join(part.strip() for part in str(text).splitlines() if part.strip()).split())


def text_table(table: pd.DataFrame, text_columns: tuple[str, ...], width_em: int = 28):
    """``table`` with its ``text_columns`` (prompts, completions) on one line each,
    wrapped inside a column of ``width_em`` and aligned left: a Styler to display."""
    view = table.copy()
    cols = [c for c in text_columns if c in view]
    for c in cols:
        view[c] = view[c].map(one_line)
    return view.style.set_properties(subset=cols, **{"white-space": "normal", "text-align": "left",
                                                     "min-width": f"{width_em // 2}em",
                                                     "max-width": f"{width_em}em"}).format(precision=3)
