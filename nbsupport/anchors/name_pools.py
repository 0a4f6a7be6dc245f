"""The name pools (``data/anchors/name_pools.json``): generic replacement words by
kind, and the type a translation reads as (``translation_types``,
``translation_type``): the pools it comes from, a first name plus surname, or its
head noun (notebook 03).
"""
from __future__ import annotations

import json
from functools import lru_cache

from .. import package_data
from .vocabulary import HEADS, TITLES, head_noun


def name_pools() -> dict[str, list[str]]:
    """Generic replacement words by kind (``data/anchors/name_pools.json``)."""
    doc = json.loads(package_data("anchors", "name_pools.json").read_text("utf-8"))
    return {k: v for k, v in doc.items() if isinstance(v, list)}


# which pools hold which type (a translation found in one has that type)
_POOL_TYPES = {"first_names_male": "person", "first_names_female": "person", "surnames": "person",
               "places": "place", "place_nouns": "place", "organisations": "organisation",
               "organisation_names": "organisation", "objects": "object", "creatures": "creature",
               "pet_names": "creature", "spells": "spell", "magic_nouns": "spell", "events": "event",
               "members": "organisation", "games": "object"}


@lru_cache(maxsize=1)
def _pool_index() -> dict[str, tuple[str, ...]]:
    """Pool entry (lower case, no article) -> the types of the pools holding it
    ("Seal": a spell and a creature; "Redcliffe": a place and an organisation)."""
    out: dict[str, list[str]] = {}
    for pool, items in name_pools().items():
        kind = _POOL_TYPES.get(pool, "")
        for item in items:
            kinds = out.setdefault(item.lower().removeprefix("the "), [])
            if kind and kind not in kinds:
                kinds.append(kind)
    return {k: tuple(v) for k, v in out.items()}


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"), ("ses", "s"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[:-len(suffix)] + repl
    return word


def translation_types(translation: str) -> tuple[str, ...]:
    """The types a translation can read as: the pools it comes from (also in the
    plural, or after a title or modifier: "Lord Oswald", "Little Pembury"), a
    first name plus surname (person), or its head noun ("the northern village":
    place, "Regional Office of Magic": organisation); () when nothing says."""
    pools = _pool_index()
    ws = [w for w in translation.lower().removeprefix("the ").split() if w.title() not in TITLES]
    if not ws:
        return ()
    for phrase in (" ".join(ws), " ".join(ws[:-1] + [_singular(ws[-1])])):
        if pools.get(phrase):
            return pools[phrase]
    if all("person" in pools.get(w, ()) or "person" in pools.get(_singular(w), ()) for w in ws):
        return ("person",)
    head = head_noun(" ".join(ws))
    for kind in ("place", "organisation", "event", "spell", "object", "creature"):
        if head in HEADS[kind] or _singular(head) in HEADS[kind]:
            return (kind,)
    last = ws[-1] if "of" not in ws[1:] else head
    return pools.get(last) or pools.get(_singular(last)) or ()


def translation_type(translation: str, prefer: str = "") -> str:
    """The type a translation reads as (``translation_types``): ``prefer`` where
    it can read as that, else its first reading; "" when nothing says."""
    kinds = translation_types(translation)
    return prefer if prefer in kinds else (kinds[0] if kinds else "")
