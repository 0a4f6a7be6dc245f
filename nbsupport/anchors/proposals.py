"""Translations for a text's terms, from the text's side (notebook 03, issue 15).

The keys' types and the terms to stay clear of come from the text, B's masked
proposals and the reinforcement boost from the models (``anchors.boost``); the
pools and the rules every translation obeys are ``anchors.pool_translations`` and
``anchors.translation_rules``. ``propose_translations`` builds extracted entries,
``validate_translations`` checks any dictionary against a text.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from ..pair import ModelPair
from . import pool_translations
from .boost import boost_in_contexts, masked_predictions
from .candidates import candidate_terms, index_of, split_words
from .contexts import contexts_of, term_features
from .dictionary import AnchorDict
from .entity_types import infer_types
from .ranking import specificity
from .translation_rules import validate
from .vocabulary import coarse_type


def target_terms(text: str, ranked: pd.DataFrame | None = None, min_specificity: float = 2.0,
                 extra: Iterable[str] = ()) -> set[str]:
    """Terms a translation must stay clear of: every candidate of ``text``
    (names and their parts, "Alley" of "Diagon Alley" included) at least 100
    times more frequent there than in English (``min_specificity`` 2), the
    ranked terms as specific as that, and ``extra`` (the dictionary's keys, terms
    to avoid). A capitalised word the text also writes in lower case, as an
    ordinary word, at least twice ("Potion" of "Polyjuice Potion": "a potion")
    is no target term of its own: "Shrink Potion" may stand for "Polyjuice Potion"."""
    table = candidate_terms(text, min_count=2)
    out = set(table.loc[specificity(table, max(1, len(split_words(text)))) >= min_specificity, "term"])
    if ranked is not None and "specificity" in ranked:
        out |= set(ranked.loc[ranked["specificity"] >= min_specificity, "term"])
    index = index_of(text)
    out = {t for t in out if " " in t or not t[:1].isupper() or index.count(t.lower()) < 2}
    return out | set(extra)


def typed_rows(keys: Sequence[str], text: str, ranked: pd.DataFrame | None = None) -> dict[str, dict]:
    """key -> its ``extract_candidates`` row (type, role, gender, features): from
    ``ranked`` when it holds every key and its parts, else inferred from ``text``
    (with the text's other candidates as company)."""
    parts = {w.removesuffix("'s") for k in keys if " " in k for w in k.split()}
    if ranked is not None and "type" in ranked and set(keys) <= set(ranked["term"]):
        rows = ranked.set_index("term")
        return {k: rows.loc[k].to_dict() for k in [*keys, *parts] if k in rows.index}
    table = candidate_terms(text, min_count=1)
    index = index_of(text)
    extra = [k for k in keys if k not in set(table["term"])]
    if extra:
        table = pd.concat([table, pd.DataFrame({"term": extra, "count": [index.count(k) for k in extra],
                                                "kind": "proper noun"})], ignore_index=True)
    typed = infer_types(term_features(table, text, index), text, index).set_index("term")
    return {k: typed.loc[k].to_dict() for k in [*keys, *parts] if k in typed.index}


def validate_translations(dictionary: AnchorDict, text: str, targets: Iterable[str] | None = None,
                          types: dict[str, str] | None = None, pair: ModelPair | None = None, tok=None,
                          boost_threshold: float = 0.5, source: str = "") -> tuple[AnchorDict, pd.DataFrame]:
    """``translation_rules.validate`` against ``text``: every translation checked with
    the rules of ``translation_problems`` (and, with B and R, that reinforcement
    did not raise it: boost in the key's contexts at most ``boost_threshold``
    nats per token).

    ``targets``: terms to stay clear of (default: ``target_terms(text)``); the
    dictionary's keys always count. ``types``: key -> type (default: from each
    entry's note, else inferred from ``text``). Returns (the entries with their
    valid translations, keys without any left out; a DataFrame of what was
    rejected: key, translation, source, reason)."""
    keys = dictionary.keys()
    targets = target_terms(text) if targets is None else set(targets)
    types = dict(types or {})
    missing = [k for k in keys if k not in types and not coarse_type(dictionary[k].note)]
    if missing:
        types.update({k: row["type"] for k, row in typed_rows(missing, text).items() if k in missing})
    boosts = {}
    if pair is not None and tok is not None:
        for key in keys:
            contexts = contexts_of(key, text, n=2)
            if contexts:
                boosts[key] = boost_in_contexts(pair, tok, contexts, dictionary[key].translations)
    return validate(dictionary, targets, types, boosts, boost_threshold, source)


def propose_translations(new: Sequence[str], text: str, pair: ModelPair | None = None, tok=None, seed: int = 0,
                         n: int = 2, avoid: Iterable[str] = (), ranked: pd.DataFrame | None = None,
                         boost_threshold: float = 0.5) -> AnchorDict:
    """Generic translations for extracted terms, offline, generic by construction
    (``pool_translations.translate``).

    Each term gets a type (from ``ranked``, the table ``extract_candidates``
    returned, or inferred from ``text``), recorded in its note, and ``n``
    translations from the pools of that type; a full name agrees with its parts
    ("Harry Potter" -> "Jon Parker" when "Harry" -> "Jon"). With B and R
    (``pair``), B's own top predictions where the term is masked are tried first,
    kept only if they pass every rule, read as the term's type and were not
    raised by reinforcement.

    Every translation passes ``translation_problems`` against the terms, ``avoid``
    (existing keys) and the text's target terms. What was rejected on the way
    is in ``rejections(result)``."""
    new = list(dict.fromkeys(new))
    rows = typed_rows(new, text, ranked)
    targets = target_terms(text, ranked, extra=[*new, *avoid])
    model = None
    if pair is not None and tok is not None:
        def model(key):
            found = masked_predictions(pair, tok, key, text, n=2 * n)
            return boost_in_contexts(pair, tok, contexts_of(key, text, n=2), found) if found else {}
    return pool_translations.translate(new, rows, targets, seed, n, model, boost_threshold)
