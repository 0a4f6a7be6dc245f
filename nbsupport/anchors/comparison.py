"""What two dictionaries anchor in one text (notebook 03: curated alone against
curated + extracted): ``coverage``, ``added_terms``, and per token
``token_anchors`` and ``newly_anchored``; for the labels, the blocks with the most
newly anchored tokens (``most_newly_anchored``) and what the labels of both
dictionaries teach there (``label_comparison``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .dictionary import AnchorDict, Translator


def coverage(text: str, dictionaries: Mapping[str, AnchorDict]) -> pd.DataFrame:
    """How much of ``text`` each dictionary anchors, one row per dictionary:
    ``keys`` (entries), ``keys_in_text`` (entries that occur), ``occurrences``
    (spans the translation replaces) and ``text_share`` (the fraction of the text's
    characters inside an anchored term)."""
    rows = {}
    for name, d in dictionaries.items():
        found = Translator(d).find(text)
        rows[name] = {"keys": len(d), "keys_in_text": len({key for _, _, key in found}),
                      "occurrences": len(found),
                      "text_share": sum(end - start for start, end, _ in found) / max(len(text), 1)}
    return pd.DataFrame.from_dict(rows, orient="index")   # per-column types: counts stay integers


def added_terms(text: str, base: AnchorDict, extended: AnchorDict) -> pd.DataFrame:
    """The terms ``extended`` anchors in ``text`` where ``base`` anchors nothing (no
    overlap with any of base's spans): one row per key, most frequent first, with
    its ``occurrences``, ``translations`` and ``provenance``."""
    base_spans = Translator(base).find(text)
    counts: dict[str, int] = {}
    for start, end, key in Translator(extended).find(text):
        if not any(s < end and e > start for s, e, _ in base_spans):
            counts[key] = counts.get(key, 0) + 1
    rows = [{"key": key, "occurrences": n, "translations": " | ".join(extended[key].translations),
             "provenance": extended[key].provenance}
            for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return pd.DataFrame(rows, columns=["key", "occurrences", "translations", "provenance"])


def token_anchors(pieces: Sequence[str], dictionary: AnchorDict) -> list[str | None]:
    """For the tokens of a text, given as their strings in order (the text is their
    concatenation), the key of the anchored term each token overlaps, or None."""
    found = Translator(dictionary).find("".join(pieces))
    out: list[str | None] = []
    at, k = 0, 0
    for piece in pieces:
        start, end = at, at + len(piece)
        while k < len(found) and found[k][1] <= start:
            k += 1
        inside = k < len(found) and found[k][0] < end and end > start
        out.append(found[k][2] if inside else None)
        at = end
    return out


def newly_anchored(pieces: Sequence[str], base: AnchorDict, extended: AnchorDict) -> list[bool]:
    """Per token (strings, as in ``token_anchors``): True where ``extended`` anchors
    it and ``base`` does not, e.g. the tokens of terms only extraction found."""
    return [b is None and e is not None
            for b, e in zip(token_anchors(pieces, base), token_anchors(pieces, extended))]


# ----------------------------------------------------------------- labels with both dictionaries
def most_newly_anchored(blocks: Sequence[Sequence[int]], tok, base: AnchorDict, extended: AnchorDict,
                        n: int = 2) -> tuple[list[int], list[list[bool]]]:
    """(the indices of the ``n`` blocks with the most tokens ``extended`` anchors and
    ``base`` does not, in block order; the ``newly_anchored`` flags of every block's
    tokens). ``blocks``: token ids per block, ``tok`` their tokenizer."""
    new = [newly_anchored([tok.decode([t]) for t in b], base, extended) for b in blocks]
    few = sorted(sorted(range(len(blocks)), key=lambda i: -sum(new[i]))[:n])
    return few, new


def label_comparison(labels: Mapping[str, pd.DataFrame], blocks: Sequence[int]) -> tuple[pd.DataFrame, str]:
    """Compare the labels two dictionaries give the same ``blocks`` (block indices).

    ``labels``: name -> the ``generic_labels.explain_block`` rows of those blocks, the
    base dictionary's first and the extended one's second, each with ``at_term``
    (the text goes on with a newly anchored term) and ``in_term`` (the position is
    inside one). Returns (at each position where the text goes on with a newly
    anchored term: the token, the text's next token and each dictionary's label,
    "(not trained)" where there is none; a report: per dictionary how many of those
    positions are taught the term's own next token or not trained, and how many
    labels changed elsewhere)."""
    rows = next(iter(labels.values()))        # the text's tokens are the same in both
    at_term, n = rows.at_term, int(rows.at_term.sum())
    table = pd.DataFrame({"token": rows.token, "next (text)": rows["next (text)"],
                          **{f"label: {name}": t.label.where(t.trained, "(not trained)")
                             for name, t in labels.items()}})[at_term]
    report = [f"{name}: of the {n} positions in blocks {blocks} where the text goes on with a newly anchored term, "
              f"{int((t.trained & (t.label == t['next (text)']))[at_term].sum())} are taught the term's own next token "
              f"and {int((~t.trained)[at_term].sum())} are not trained" for name, t in labels.items()]
    elsewhere = ~(rows.at_term | rows.in_term)
    base, extended = list(labels.values())[:2]
    changed = int(((base.label != extended.label) & elsewhere).sum())
    report.append(f"Elsewhere in these blocks {changed} of {int(elsewhere.sum())} labels changed too: B reads a "
                  "different translated text from the first new anchor on (and other translations may be drawn "
                  "for later keys).")
    return table, "\n".join(report)
