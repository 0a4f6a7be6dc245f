"""How good the extraction is (notebook 03): precision and recall against a
reference dictionary (``extraction_quality``), and the order a reviewer should
read the extracted keys in, the doubtful ones first (``review_order``).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
from wordfreq import zipf_frequency

from .. import terms
from .dictionary import AnchorDict


def extraction_quality(extracted: Iterable[str], reference: AnchorDict, text: str,
                       min_count: int = 2) -> dict:
    """Precision and recall of extracted keys against a reference dictionary.

    Recall counts only the reference keys that occur at least ``min_count`` times
    in ``text`` (no extractor can find a term the text does not contain)."""
    extracted = set(extracted)
    present = {k for k in reference.keys() if terms.count(k, text) >= min_count}
    hits = extracted & set(reference.keys())
    return {"extracted": len(extracted), "reference_present": len(present), "hits": len(hits),
            "precision": len(hits) / len(extracted) if extracted else 0.0,
            "recall": len(extracted & present) / len(present) if present else 0.0}


ORDINARY = "ordinary English"
COMMON_ZIPF = 4.5     # wordfreq's zipf: "London" 5.3, "Irish" 4.5; "Hermione" 3.3, "Voldemort" 3.0


def _capitalized_by_position(key: str, initial: float) -> bool:
    """A common English word ("Location", "Technically") that the text capitalizes
    only at the start of a sentence or a line: no name at all."""
    return initial >= 1.0 and zipf_frequency(key.lower(), "en") >= 3.0


def ordinary_english(review: pd.DataFrame) -> list[str]:
    """The keys of a ``review_order`` table flagged as ordinary English: they become
    anchors only with a person's yes (unticked in the review, rejected in batch runs)."""
    return [k for k, f in zip(review.key, review.flag) if f.startswith(ORDINARY) or f"; {ORDINARY}" in f]


def review_order(ranked: pd.DataFrame, keys: Iterable[str], min_specificity: float = 1.5,
                 min_margin: float = 1.0, min_boost: float = 0.5) -> pd.DataFrame:
    """The extracted ``keys`` in the order a reviewer should read them: first those
    with a reason to look twice, then the rest by rank. Reasons: the term is not
    much more frequent in the text than in general English (``specificity`` below
    ``min_specificity``: a real place, an ordinary word, "London", "Location")
    and reinforcement did not single it out either (``boost`` below ``min_boost``
    nats, or not measured: a core name like "Harry" has a high boost), or it is a
    common word the text capitalizes only at the start of a sentence ("Technically"), or
    one of the common words of English (zipf >= ``COMMON_ZIPF``) not singled out either:
    all three are flagged ``ordinary English`` (see ``ordinary_english``); or its type was a
    close call (``type_margin`` below ``min_margin``), so its
    translations may be of the wrong kind. Columns: key, count, type, specificity,
    type_margin, flag (the reasons, "" when none)."""
    if not {"term", "type", "specificity"} <= set(ranked.columns):
        raise ValueError("review_order needs the table of extract_candidates (term, type, specificity columns)")
    cols = ["term", "count", "type", "specificity", "boost", "type_margin", "initial"]
    table = ranked[[c for c in cols if c in ranked]].copy()
    table["rank"] = range(len(table))
    table = table.drop_duplicates("term").set_index("term")
    keys = list(dict.fromkeys(keys))
    unknown = [k for k in keys if k not in table.index]
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not among the ranked candidates (e.g. {unknown[0]!r}): "
                         "pass the keys extract_candidates ranked")
    out = table.loc[keys].rename_axis("key").reset_index()
    flags = []
    for row in out.itertuples(index=False):
        why = []
        boosted = "boost" in out and row.boost >= min_boost          # NaN (not measured) is not boosted
        single = " " not in row.key
        # a phrase of ordinary words ("Order of the Phoenix") is rarer than its words: a lower bar
        if row.specificity < (min_specificity if single else min_specificity - 0.5) and not boosted:
            why.append(f"{ORDINARY} ({10 ** row.specificity:.0f}x its English frequency)")
        elif single and not boosted and _capitalized_by_position(row.key, getattr(row, "initial", 0.0)):
            why.append(f"{ORDINARY} (a common word, capitalized only where a sentence starts)")
        elif single and not boosted and zipf_frequency(row.key, "en") >= COMMON_ZIPF:
            # a short text makes any word look specific to it: general frequency says "London"
            why.append(f"{ORDINARY} (one of the common words of English: zipf {zipf_frequency(row.key, 'en'):.1f})")
        if "type_margin" in out and row.type_margin < min_margin:
            why.append(f"type unsure ({row.type}, margin {row.type_margin:.1f})")
        flags.append("; ".join(why))
    out["flag"] = flags
    flagged = out.flag != ""
    out = pd.concat([out[flagged].sort_values(["specificity", "rank"]), out[~flagged].sort_values("rank")])
    return out.drop(columns=[c for c in ("rank", "initial") if c in out]).reset_index(drop=True)
