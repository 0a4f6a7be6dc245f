"""The rules every translation obeys, wherever it comes from (offline pools, B's
masked proposals, an LLM; notebook 03, issue 15).

``translation_problems``: why a translation may not stand for a key: a key or
target term, a piece of one, only function words, or another type.
``validate``: those rules over a whole dictionary, with what was rejected and
why; ``rejections``: what a dictionary's builder rejected, for the review table.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
from wordfreq import zipf_frequency

from .. import terms
from ..terms import FUNCTION_WORDS
from .dictionary import AnchorDict, Entry
from .name_pools import translation_type
from .vocabulary import CONNECTORS, WORD, coarse_type, common


def is_function_word(translation: str) -> bool:
    """Only function words ("The", "However", "of the"), or one very common word."""
    ws = [w.lower() for w in WORD.findall(translation)]
    return not ws or all(w in FUNCTION_WORDS for w in ws) or (len(ws) == 1 and zipf_frequency(ws[0], "en") >= 6.0)


def specific_words(targets: Iterable[str]) -> set[str]:
    """The words of target terms that point at the target: a target that is one
    word ("Harry", however common), and every word of a longer one that is not
    ordinary English (zipf 3 or more: "Diagon" of "Diagon Alley", not "Alley")."""
    out = set()
    for t in targets:
        ws = [w.removesuffix("'s") for w in t.split()]
        if len(ws) == 1:
            out.add(ws[0].lower())
        out |= {w.lower() for w in ws if w not in CONNECTORS and not common(w, 3.0)}
    return {w for w in out if len(w) >= 3}


def translation_problems(key: str, translation: str, kind: str, targets: set[str],
                         specific: set[str] | None = None) -> list[str]:
    """Why ``translation`` may not stand for ``key`` (empty if it may).

    ``kind`` is the key's type (``TYPES``, "" if unknown); ``targets`` every key
    and target term. A translation is never a key or target term, never contains
    one, never a piece of one (a word of it inside a target word, "Hog" of
    "Hogwarts", unless it is ordinary English; or a target word inside a word of
    it, "Ron" in "Ronson"), never only function words, and never reads as another
    type than the key's (a person is not translated as a place, nor a spell as a
    creature; a word no pool or head noun types, "Portsmouth", may stand)."""
    if specific is None:
        specific = specific_words(targets)
    low = translation.lower()
    problems = []
    target_low = {t.lower() for t in targets}
    if low in target_low or low.removeprefix("the ") in target_low:
        problems.append("is a key or target term")
    else:
        inside = [t for t in targets if t.lower() != key.lower() and terms.mentions(translation, t)
                  and (" " in t or t.lower() in specific)]
        if inside:
            problems.append(f"contains the target term {inside[0]!r}")
    words = [w.removesuffix("'s").lower() for w in WORD.findall(translation)]
    key_words = {w.lower() for w in key.split()}
    for w in words:
        if w in key_words and w not in specific:
            continue   # the key's own ordinary words ("Hat" of "Sorting Hat") may stay
        if w in specific and not problems:
            problems.append(f"{w!r} is a word of a target term")
            break
        if not common(w, 4.0):
            host = next((s for s in specific if w != s and w in s), None)
            if len(w) >= 2 and host:
                problems.append(f"{w!r} is a piece of the target word {host!r}")
                break
        part = next((s for s in specific if s != w and s in w), None)
        if part:
            problems.append(f"contains the target word {part!r}")
            break
    if is_function_word(translation):
        problems.append("only function words")
    reads_as = translation_type(translation, kind)
    if kind == "person" and reads_as and reads_as != "person":
        problems.append(f"a person translated as a {reads_as}")
    elif kind == "person" and not all(w[:1].isupper() for w in translation.split()):
        problems.append("a person translated as a common noun")
    elif kind and reads_as and reads_as != kind:
        problems.append(f"a {kind} translated as a {reads_as}")
    return problems


REJECTED_COLUMNS = ["key", "translation", "source", "reason"]

def validate(dictionary: AnchorDict, targets: Iterable[str], types: dict[str, str],
             boosts: dict[str, dict[str, float]] | None = None, boost_threshold: float = 0.5,
             source: str = "") -> tuple[AnchorDict, pd.DataFrame]:
    """Check every translation with the rules of ``translation_problems`` (and,
    where ``boosts`` holds key -> {translation: reinforcement boost in the key's
    contexts}, that reinforcement did not raise it by more than ``boost_threshold``
    nats per token).

    ``targets``: terms to stay clear of (the dictionary's keys always count);
    ``types``: key -> type (``TYPES`` or a note; the entry's note where missing).
    Returns (the entries with their valid translations, keys without any left
    out; a DataFrame of what was rejected: key, translation, source, reason)."""
    keys = dictionary.keys()
    targets = set(targets) | set(keys)
    specific = specific_words(targets)
    out, rejected = AnchorDict(), []
    for key in keys:
        entry = dictionary[key]
        kind = types.get(key) or coarse_type(entry.note)
        kind = coarse_type(kind) or kind
        boost = (boosts or {}).get(key, {})
        good = []
        for t in entry.translations:
            problems = translation_problems(key, t, kind, targets, specific)
            if boost.get(t, 0.0) > boost_threshold:
                problems.append(f"reinforcement raised it (boost {boost[t]:.2f} nats/token): target-specific")
            if problems:
                rejected.append({"key": key, "translation": t, "source": source or entry.provenance,
                                 "reason": "; ".join(problems)})
            else:
                good.append(t)
        if good:
            out.add(Entry(key, good, entry.provenance, entry.note))
        else:
            rejected.append({"key": key, "translation": "", "source": source or entry.provenance,
                             "reason": "no valid translation left: key dropped"})
    return out, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def rejections(dictionary: AnchorDict) -> pd.DataFrame:
    """What ``propose_translations`` or ``llm_propose`` rejected while building
    ``dictionary``, and why (key, translation, source, reason): for the review table."""
    found = getattr(dictionary, "rejected", None)
    return found.copy() if found is not None else pd.DataFrame(columns=REJECTED_COLUMNS)
