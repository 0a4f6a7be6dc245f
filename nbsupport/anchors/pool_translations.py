"""Offline translations for typed terms, drawn from the name pools (notebook 03,
issue 15).

``translate`` gives each new term type-matched translations from the pools,
consistent across a full name and its parts ("Harry Potter" -> "Jon Parker"),
spells in the form their key is used in; every one passes
``translation_rules.translation_problems``. It knows nothing of texts or models:
the caller (``anchors.proposals``) passes the terms to stay clear of, each key's
type and features, and any model proposals.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Iterable, Sequence

import pandas as pd

from .dictionary import AnchorDict, AnchorError, Entry
from .name_pools import name_pools, translation_type
from .translation_rules import REJECTED_COLUMNS, specific_words, translation_problems, validate
from .vocabulary import CONNECTORS, HEADS, TITLES, coarse_type, note_for, plural_pair


def _a(noun: str) -> str:
    """ "a place", "an object"."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _plural(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def _pluralise(phrase: str) -> str:
    ws = phrase.split()
    return " ".join(ws[:-1] + [_plural(ws[-1])])


def _title(phrase: str) -> str:
    return " ".join(w if w in CONNECTORS else w[:1].upper() + w[1:] for w in phrase.split())


class _Picker:
    """Draws translations from the pools: seeded, each used once, and only ones
    that pass ``translation_problems`` for the key."""

    def __init__(self, targets: set[str], seed: int):
        self.pools = {k: [p.removeprefix("the ") for p in v] for k, v in name_pools().items()}
        self.targets, self.specific = targets, specific_words(targets)
        self.rng, self.used = random.Random(seed), set()
        self.rejected: list[dict] = []

    def pick(self, key: str, kind: str, pools: Sequence[str], form=lambda s: s, avoid: Iterable[str] = ()) -> str:
        """A valid pool entry for ``key``; one no other key has yet, while there is one."""
        items = [form(p) for name in pools for p in self.pools.get(name, [])]
        avoid = {a.lower() for a in avoid}
        fallback = None
        for t in self.rng.sample(items, len(items)):
            if t.lower() in avoid:
                continue
            if t.lower() in self.used:
                fallback = fallback or t
                continue
            problems = translation_problems(key, t, kind, self.targets, self.specific)
            if problems:
                self.rejected.append({"key": key, "translation": t, "source": "pool", "reason": "; ".join(problems)})
                continue
            self.used.add(t.lower())
            return t
        if fallback is not None and not translation_problems(key, fallback, kind, self.targets, self.specific):
            return fallback   # the pools are used up: share an entry rather than fail
        raise AnchorError(f"the pools {list(pools)} have no usable translation left for {key!r}: "
                          "add entries to name_pools.json")


def _first_name_pools(gender: str) -> list[str]:
    return {"male": ["first_names_male"], "female": ["first_names_female"]}.get(
        gender, ["first_names_male", "first_names_female"])


def _type_pools(kind: str, row: dict) -> list[str]:
    """The pools for a non-person term of ``kind``; ``row`` holds its
    features (``the``: how often the text says "the X"; ``noun_use``: how often
    an article, a possessive or "his"/"her" comes before it)."""
    the = float(row.get("the", 0.0) or 0.0)
    if kind == "place":
        return ["place_nouns"] if the >= 0.5 else ["places"]
    if kind == "organisation":
        if row.get("countable", False):
            return ["members"]   # "an Auror", "Death Eaters": one member of a group
        return ["organisations"] if the >= 0.5 else ["organisation_names"]
    if kind == "creature":
        named = the < 0.2 and not row.get("countable", False)
        return ["pet_names"] if named else ["creatures"]
    if kind == "spell":
        # "cast a Patronus", "the Polyjuice": a magic thing, named by a noun ("Memory Charm");
        # "shouted Expelliarmus": an incantation, one word of command ("Shield")
        noun = float(row.get("noun_use", 0.0) or 0.0) >= 0.2 or row.get("countable", False)
        return ["magic_nouns"] if noun else ["spells"]
    if kind == "event":
        return ["events"]
    if row.get("sport", False):
        return ["games"]
    return ["objects"]


# proposes words for a key, most likely first, with how much reinforcement raised each
# (nats per token in the key's contexts): B's masked predictions, from ``anchors.proposals``
ModelProposals = Callable[[str], dict[str, float]]


def translate(new: Sequence[str], rows: dict[str, dict], targets: Iterable[str], seed: int = 0, n: int = 2,
              model: ModelProposals | None = None, boost_threshold: float = 0.5) -> AnchorDict:
    """``n`` generic translations for each term of ``new``, generic by construction.

    ``rows``: term -> its row of ``ranking.extract_candidates`` (``type``;
    for persons ``role`` and ``gender``; ``the``, ``noun_use``, ``countable``,
    ``sport``), for the terms of ``new`` and any of their parts. ``targets``:
    terms to stay clear of (``new`` always counts). The type is recorded in each
    entry's note; translations come from the pools of that type
    (``name_pools.json``): first names for first names (by gender), surnames for
    surnames, places for places... A full name is translated part by part, so
    "Harry Potter" -> "Jon Parker" when "Harry" -> "Jon" and "Potter" -> "Parker"
    (the i-th translations agree); a plural follows its singular; ordinary words
    of a name stay ("Sorting Hat" -> "Velvet Hat", "Imperius Curse" -> "Bind
    Curse"). ``model`` (B's masked proposals) is tried first for one-word
    non-person terms; a proposal is kept only if it passes every rule and reads
    as the term's type (never "Question" for a spell).

    Every translation passes ``translation_problems``; what was rejected on the
    way is in ``rejections(result)``."""
    new = list(dict.fromkeys(new))
    targets = set(targets) | set(new)
    picker = _Picker(targets, seed)
    out, words = AnchorDict(), {}   # words: a name part -> its n translations, shared by every key using it
    have = set(new)

    def n_picks(key, kind, pools, form=_title):
        picks = []
        for _ in range(n):
            picks.append(picker.pick(key, kind, pools, form, avoid=picks))
        return picks

    def by_model(key, kind):
        if model is None or " " in key:
            return []
        keep = []
        for t, boost in model(key).items():
            problems = translation_problems(key, t, kind, targets, picker.specific)
            if translation_type(t, kind) != kind:
                problems.append(f"reads as {translation_type(t) or 'no known type'}, not {_a(kind)}: "
                                "not a generic word of the key's type")
            if boost > boost_threshold:
                problems.append(f"reinforcement raised it (boost {boost:.2f} nats/token): target-specific")
            if problems or t.lower() in picker.used:
                picker.rejected.append({"key": key, "translation": t, "source": "model",
                                        "reason": "; ".join(problems) or "already used"})
            else:
                keep.append(t)
                picker.used.add(t.lower())
        return keep[:n]

    def person_part(word, role, gender):
        if word not in words:
            # unknown gender: one gender for all of the key's translations
            gender = gender or picker.rng.choice(["male", "female"])
            pools = ["surnames"] if role == "surname" else _first_name_pools(gender)
            words[word] = n_picks(word, "person", pools)
        return words[word]

    order = sorted(new, key=lambda t: (len(t.split()), bool(plural_pair(t, have))))
    for key in order:
        row = rows[key]
        kind = row.get("type") or "object"
        singular = plural_pair(key, have)
        if singular and singular in out:
            translations = [_pluralise(t) for t in out[singular].translations]
        elif kind == "person":
            translations = _person_translations(key, row, person_part, rows)
        else:
            translations = by_model(key, kind)
            translations += _thing_translations(key, kind, row, words, picker, n - len(translations))
        translations = translations[:n]
        if key[0].islower() and kind != "person":
            translations = [t.lower() for t in translations]
        if " " not in key and key not in words:
            words[key] = translations
        out.add(Entry(key, translations, "extracted", note_for({**row, "type": kind})))
    # composed names and plurals were built from checked parts: check every entry once more, as a whole
    out = AnchorDict(out[k] for k in new)
    valid, rejected = validate(out, targets, {k: coarse_type(out[k].note) for k in out.keys()})
    valid.rejected = pd.DataFrame(picker.rejected + rejected.to_dict("records"), columns=REJECTED_COLUMNS)
    return valid


def _person_translations(key: str, row: dict, person_part, rows: dict) -> list[str]:
    ws = key.split()
    if len(ws) == 1:
        role = row.get("role") or "first name"
        return list(person_part(key, "surname" if role == "surname" else "first name", row.get("gender", "")))
    gender = row.get("gender", "")
    parts = []
    for i, w in enumerate(ws):
        if w in TITLES or w in CONNECTORS:
            parts.append(None)
            continue
        part_row = rows.get(w, {})
        role = part_row.get("role") if part_row.get("type") == "person" else ""
        role = role or ("surname" if i == len(ws) - 1 else "first name")
        parts.append(person_part(w.removesuffix("'s"), role, part_row.get("gender") or gender))
    n = len(next(p for p in parts if p is not None))
    return [" ".join(w if p is None else p[i] + ("'s" if w.endswith("'s") else "") for w, p in zip(ws, parts))
            for i in range(n)]


def _thing_translations(key: str, kind: str, row: dict, words: dict, picker: _Picker, n: int) -> list[str]:
    """Translations of a non-person term: a type-matched pool entry. A multi-word
    name whose parts have translations is translated through them ("Battle of
    Hogwarts" -> "Battle of Westfield", "Malfoy Manor" -> "Fisher Manor"); one
    whose head is an ordinary word gets a new modifier ("Sorting Hat" -> "Velvet
    Hat"; a spell's head stays and gets a spell word: "Imperius Curse" -> "Bind
    Curse"). Whatever fails the rules is replaced by a pool entry."""
    if n <= 0:
        return []
    pools = _type_pools(kind, row)
    modifiers = ["spells"] if kind == "spell" else ["modifiers"]

    def whole(avoid):
        return picker.pick(key, kind, pools, _title, avoid=avoid)

    ws = key.split()
    content = [i for i, w in enumerate(ws) if w not in CONNECTORS and w not in TITLES]
    head = len(ws) - 1 if "of" not in ws[1:] else ws.index("of") - 1

    def ordinary(w):
        return w.lower() not in picker.specific   # a one-word target is specific, unless a head noun

    # parts translated by one word each ("Hogwarts" -> "Westfield"), not by a phrase
    translated = [i for i in content if ws[i].removesuffix("'s") in words
                  and all(" " not in t for t in words[ws[i].removesuffix("'s")])]
    if len(ws) == 1 or not content:
        plan = None
    elif translated and all(i in translated or ordinary(ws[i].removesuffix("'s")) for i in content):
        plan = translated   # every other word is ordinary English: keep it
    elif not translated and head == len(ws) - 1 and ordinary(ws[head]) and (
            all(ordinary(ws[i].removesuffix("'s")) for i in content) or ws[head].lower() in HEADS.get(kind, ())):
        # "Sorting Hat", "Great Hall"; "Polyjuice Potion", whose head says its type: the head stays,
        # with a new modifier
        plan = [i for i in content if i != head]
        words = {}
    else:
        plan = None
    out = []
    for j in range(n):
        t = None
        if plan:
            new_ws = list(ws)
            for i in plan:
                w, poss = ws[i].removesuffix("'s"), ("'s" if ws[i].endswith("'s") else "")
                new_ws[i] = (words[w][j % len(words[w])] + poss if w in words
                             else picker.pick(key, "", modifiers, _title))
            t = " ".join(new_ws)
            problems = translation_problems(key, t, kind, picker.targets, picker.specific)
            if kind and translation_type(t, kind) != kind:   # "Western Eater" says nothing of a group
                problems.append(f"reads as {translation_type(t) or 'no known type'}, not {_a(kind)}")
            if problems or t.lower() in picker.used or t in out:
                picker.rejected.append({"key": key, "translation": t, "source": "pool",
                                        "reason": "; ".join(problems) or "already used"})
                t = None
        t = t or whole(out)
        picker.used.add(t.lower())
        out.append(t)
    return out
