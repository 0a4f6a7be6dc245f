"""What a candidate term is worth anchoring (notebook 03, issue 15).

``rank_candidates``: its frequency in the text against general English
(``specificity``, from ``wordfreq``), so the text's core names come first even
when they are common English words ("Harry", "Ron"), plus, with a ``ModelPair``
of B and R, how much reinforcement raised it (``boost.reinforcement_boost``).
``extract_candidates`` finds, types and ranks a text's candidates;
``new_terms`` picks the best that are not keys yet.
"""
from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd
from wordfreq import word_frequency

from ..pair import ModelPair
from .boost import reinforcement_boost
from .candidates import candidate_terms, index_of, split_words
from .contexts import is_coordination, term_features
from .dictionary import AnchorDict
from .entity_types import infer_types, is_name_span
from .vocabulary import common


def specificity(table: pd.DataFrame, n_words: int) -> pd.Series:
    """log10 of (frequency in the target) / (frequency in general English, wordfreq).

    Terms wordfreq has never seen get a floor frequency of 1e-9 (zipf 0)."""
    def score(term, count):
        general = max(word_frequency(term, "en"), 1e-9)
        return math.log10(count / n_words) - math.log10(general)

    return pd.Series([score(t, c) for t, c in zip(table["term"], table["count"])], index=table.index)


# Specificity above this (the term is this many powers of ten more frequent here
# than in English) counts the same: past it, how often the text uses a term
# decides, so "Harry" (common in English, everywhere in the text) beats a rare
# name the text mentions twice.
SPECIFICITY_CAP = 2.5


def rank_candidates(table: pd.DataFrame, text: str, boost: pd.Series | None = None) -> pd.DataFrame:
    """Add ``specificity`` (and ``boost`` if given) and a combined ``score``, best first.

    score = min(specificity, 2.5) + log10(count), less what says "an ordinary word"
    (one word nearly always sentence-initial, "Thoughts?"; also written in lower case), plus 2 x the
    reinforcement boost (nats per token) when given. The log of the count is the
    text's own weight on a term: the core names come first whatever their
    general frequency."""
    out = table.copy()
    if "initial" not in out:
        out = term_features(out, text)
    out["specificity"] = specificity(out, max(1, len(split_words(text))))
    spec = out["specificity"].clip(upper=SPECIFICITY_CAP)
    out["score"] = spec + out["count"].clip(lower=1).map(math.log10) \
        - 4.0 * (out["initial"] - 0.8).clip(lower=0) * ~out["term"].str.contains(" ") - 3.0 * out["lower"]
    if boost is not None:
        out["boost"] = out["term"].map(boost).fillna(0.0)
        out["score"] = out["score"] + 2.0 * out["boost"]
    out = out.sort_values(["score", "term"], ascending=[False, True]).reset_index(drop=True)
    return out


def _keep_parts(table: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """A part of a longer name is anchored only where the text uses it on its own:
    a part common in English ("Black" of "Sirius Black") needs ``min_count`` uses
    of its own; a rare one one use ("Triwizard" of "Triwizard Tournament"), or
    none if it is part of a person's name ("Filius" of "Filius Flitwick");
    "Hangleton", only ever in "Little Hangleton", is left to the full name.
    A family name the text gives several persons ("Harry Potter", "Lily Potter",
    "James Potter") is kept even if never used alone: as a key of its own it makes
    the family's full names translate to one family ("Jon Parker", "Mary Parker")."""
    full_names = [t.split() for t, k in zip(table["term"], table["type"]) if k == "person" and is_name_span(t)]
    name_words = {w for ws in full_names for w in ws}
    firsts = defaultdict(set)
    for ws in full_names:
        firsts[ws[-1]].add(ws[0])
    family = {w for w, f in firsts.items() if len(f) >= 2}
    keep = []
    for row in table.itertuples():
        if row.kind != "proper noun" or row.inside == 0:
            keep.append(True)
        elif row.term in family and row.type == "person":
            keep.append(True)
        elif common(row.term, 3.5) or " " in row.term:
            keep.append(row.alone >= min_count)
        else:
            keep.append(row.alone >= 1 or row.term in name_words)
    return table.loc[pd.Series(keep, index=table.index, dtype=bool)]


def _drop_covered(ranked: pd.DataFrame) -> pd.DataFrame:
    """Drop a multi-word name whose words are all terms ranked above it ("Harry
    Potter" after "Harry" and "Potter"; "Fred and George" after "Fred" and
    "George"): translating word by word covers it (the paper's merge rule)."""
    seen, keep, have = set(), [], set(ranked["term"])
    for term in ranked["term"]:
        ws = [w.removesuffix("'s") for w in term.split()]
        if is_coordination(term):   # two names: covered by both, wherever they rank
            keep.append(not all(n in have for n in term.split(" and ")))
        else:
            keep.append(not (len(ws) > 1 and all(w in seen for w in ws)))
        seen.add(term)
    return ranked.loc[pd.Series(keep, index=ranked.index, dtype=bool)].reset_index(drop=True)


def extract_candidates(text: str, pair: ModelPair | None = None, tok=None, boost_candidates: int = 60,
                       min_count: int = 2) -> pd.DataFrame:
    """Candidates with their type, ranked (``rank_candidates``); parts of names kept
    only where they stand for something on their own (``_keep_parts``), full names
    covered by their parts dropped. With B and R (``pair``), the top
    ``boost_candidates`` are re-ranked with the reinforcement boost and placed
    first (scoring every candidate with the models would be slow).

    Columns: term, count, kind, type, role, gender, specificity, score (and boost)."""
    table = candidate_terms(text, min_count)
    index = index_of(text)
    table = infer_types(term_features(table, text, index), text, index)
    table = _keep_parts(table, min_count)
    ranked = _drop_covered(rank_candidates(table, text))
    if pair is None or boost_candidates <= 0:
        return ranked
    head, tail = ranked.iloc[:boost_candidates], ranked.iloc[boost_candidates:]
    boost = reinforcement_boost(pair, tok, text, list(head["term"]))
    head = rank_candidates(head.drop(columns=["specificity", "score"]), text, boost)
    out = pd.concat([head, tail], ignore_index=True)
    return out


def new_terms(ranked: pd.DataFrame, existing: AnchorDict, n: int) -> list[str]:
    """The ``n`` best-ranked candidates that are not keys yet (ignoring case) and
    not "X's" of a key."""
    have = {k.lower() for k in existing.keys()}
    out = []
    for term in ranked["term"]:
        if term.lower() not in have and term.lower().removesuffix("'s") not in have:
            out.append(term)
        if len(out) == n:
            break
    return out


# notebook 03's view of the ranking (``tabular.show``); every column is in anchors/candidates.csv
RANKED_COLUMNS = {"term": ("term", "the candidate"), "count": ("count", "uses in the text"),
                  "type": ("type", "the guessed type"), "specificity": ("specificity", "log10(frequency here / in English)"),
                  "boost": ("boost", "how much more likely R finds it than B, nats per token"),
                  "initial": ("initial", "share of its uses at a sentence start"),
                  "lower": ("lower", "share of its uses in lower case"), "score": ("score", "the rank's score")}
