"""Entity types of candidate terms, from the text's own cues (notebook 03, issue 15).

``infer_types`` gives each term a type (person, place, organisation, object,
spell or magic term, creature or event; ``TYPES``), and persons a role and a
gender, from the words around its occurrences (the cue lexicon,
``anchors.cues``): titles, "at X", "the X of", pronouns and verbs around the term,
plural forms, head nouns, what the text says a term is ("Gringotts, the bank
that..."), lists, family names. Names lend each other their type.
"""
from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd

from ..terms import FUNCTION_WORDS
from .candidates import TextIndex, index_of, starts_sentence
from .contexts import longer_spans, occurrences
from .cues import (ALL_HEADS, ARTICLES, CALLED, CUES, DETERMINERS, FEMALE_TITLES, MALE_TITLES, PRONOUNS,
                   SENTENCE_WORDS, SPORT_AFTER, SPORT_BEFORE, SURNAME_TITLES)
from .vocabulary import CONNECTORS, HEADS, TITLES, TYPES, common, head_noun, plural_pair


def _type_scores(term: str, occ: list[dict], have: set[str]) -> dict[str, float]:
    """Cue weight per ten uses for each type, from the words around the term's
    occurrences, plus the head noun of a multi-word name."""
    scores = dict.fromkeys(TYPES, 0.0)
    n = max(1, len(occ))
    cues = CUES
    heads_of = {w: t for t, heads in HEADS.items() for w in heads}

    def add(kind, weight, *hits):
        if any(hits):
            scores[kind] += weight

    for o in occ:
        before, after = o["before"], o["after"]
        if o["next_upper"] and after and after[0] in heads_of and " " not in term:
            # the first word of a place's name ("to Gryffindor Tower", "at Malfoy Manor"): the
            # cues around it are the place's; the name says only that the term can name a place
            scores[heads_of[after[0]]] += 0.3
            continue
        prev = before[-1] if before else ""
        prev2 = "_".join(before[-2:])
        # the word before an article or a possessive determiner: "cast a Patronus", "into the Pensieve"
        far = before[-2] if len(before) > 1 and (prev in ARTICLES or prev in DETERMINERS) else ""
        # after a possessive, the next word is what the term owns ("Fleur's wedding"), no cue to its type
        nxt = "" if o["possessive"] else (after[0] if after else "")
        nxt2, nxt3 = ("_".join(after[:2]), "_".join(after[:3])) if nxt else ("", "")
        # "the Gaunt shack", "a Gringotts goblin": the term modifies a noun, whose cues are weaker
        modifier = bool(nxt) and prev in ARTICLES | DETERMINERS and nxt not in FUNCTION_WORDS
        w_next = 0.5 if modifier else 1.0
        c = cues["person"]
        add("person", 3.0, o["title"])
        add("person", 1.0, nxt in c["next"], nxt2 in c["next"], nxt3 in c["next"])
        # the verb past an adverb, the surname or a second name ("Wormtail finally becomes")
        add("person", 0.7, not o["possessive"] and o["verb"] != nxt and o["verb"] in c["next"])
        if o["defined"]:   # what the text says it is ("Felix Felicis: a rare potion")
            # half as much for a creature: a named poltergeist or house-elf that speaks is
            # read as a person as often as not
            scores[o["defined"]] += 1.5 if o["defined"] == "creature" else 3.0
        # "a rat called Scabbers": the kind noun before "called" says the type, not "called"
        kind_called = prev in CALLED and len(before) > 1 and before[-2] in cues["creature"]["kind"]
        add("person", 0.7, not kind_called and (prev in c["prev"] or prev2 in c["prev"]))
        if o["possessive"]:
            add("person", 1.5 if after[:1] and after[0] in c["possessed"] else 0.3, True)
        add("person", 0.3, *(w in c["around"] for w in before + after))
        # "the Burrow is", "the Quibbler.": a thing, not a person ("the Weasleys": a family)
        add("person", -0.8, prev == "the" and not modifier and not term.endswith("s"))
        add("person", -1.5, prev in DETERMINERS)
        # "the sword of X", "the locket of X": the owner of a thing is a person (or a group)
        add("person", 1.0, prev == "of" and len(before) > 1 and before[-2] in HEADS["object"])
        c = cues["place"]
        add("place", 1.0, prev in c["prev"], prev2 in c["prev"])
        add("place", 0.4, prev in c["weak"], far in c["prev"])
        add("place", w_next, nxt in c["next"])
        add("place", 1.0, o["where"])   # "the Hog's Head where the Order met" (not "the scene, where")
        c = cues["organisation"]
        add("organisation", 1.5 * w_next, nxt in c["next"])
        add("organisation", 1.5, prev2 in c["prev"], prev in c["prev"])
        c = cues["creature"]
        # "the owl Hedwig", "Buckbeak the hippogriff", "a rat called Scabbers"; not "the last
        # Horcrux, the snake Nagini", where the kind noun goes with the name after it
        add("creature", 1.5, prev in c["kind"], far in c["kind"], kind_called, o["kind_after"])
        add("creature", 1.0, nxt in c["next"])
        c = cues["spell"]
        add("spell", 1.5, prev in c["prev"], far in c["prev"])
        add("spell", 1.5 * w_next, nxt in c["next"])
        add("spell", 1.0, o["exclaim"])
        c = cues["event"]
        add("event", 1.5, prev in c["prev"], prev2 in c["prev"])
        add("event", 1.5 * w_next, nxt in c["next"], nxt2 in c["next"])
        c = cues["object"]
        add("object", 1.0, prev in c["prev"], far in c["prev"])
        add("object", w_next, nxt in c["next"])
        if nxt in heads_of and " " not in term:   # "Hogwarts castle", "the Triwizard tournament"
            scores[heads_of[nxt]] += 1.5 * w_next
        for kind, vocab in SENTENCE_WORDS.items():
            scores[kind] += 0.3 * len(o["bag"] & vocab)
        if prev in ("a", "an") or (prev == "the" and term[0].islower()):
            # a countable common noun: a creature, an object, a member of a group
            scores["object"] += 0.4
            scores["creature"] += 0.3
            scores["organisation"] += 0.3
    scores = {t: v / n * 10 for t, v in scores.items()}
    ws = term.split()
    if len(ws) == 1 and "-" in term.strip("-"):   # a compound's head is its last part ("house-elf")
        for t, heads in HEADS.items():
            if term.rsplit("-", 1)[-1].lower() in heads:
                scores[t] += 6.0
    if len(ws) > 1:   # the head noun of a multi-word name outweighs the cues
        head, first = head_noun(term), ws[0].lower()
        for t, heads in HEADS.items():
            if head in heads or (first in heads and t in ("organisation", "event") and "of" in ws):
                scores[t] += 6.0
    if plural_pair(term, have) or (term + "s") in have or (term + "es") in have:
        scores["creature"] += 1.0   # a common noun with a plural: a kind of thing, not a name
        scores["object"] += 1.0
        scores["organisation"] += 0.5
        scores["person"] -= 2.0
    if term[0].islower():
        scores["person"] -= 5.0
    return scores


def _countable(term: str, have: set[str], index: TextIndex) -> bool:
    """A common noun written with a capital: it has a plural among the terms and
    is used with "a"/"an" ("an Auror", "a Death Eater"); a surname in the plural
    ("the Weasleys") is not."""
    singular = plural_pair(term, have) or term
    has_plural = singular != term or singular + "s" in have or singular + "es" in have
    with_article = sum(index.count(f"{a} {singular}") for a in ("a", "an", "the", "A", "An", "The"))
    return has_plural and index.count("a " + singular) + index.count("an " + singular) >= 2 \
        and with_article >= 0.25 * index.count(singular)   # "in Gryffindor", "a Gryffindor": a house


def _members(occ: list[dict]) -> bool:
    """Used as the name of one of a kind ("Slughorn is a Slytherin", "every
    Slytherin is", "a true Gryffindor") at least twice, or in a quarter of its uses."""
    hits = sum(o["member"] for o in occ)
    return hits >= 2 or (hits >= 1 and hits >= 0.25 * len(occ))


def _sport_share(occ: list[dict]) -> float:
    """Share of uses that read like a sport ("play X", "the X match")."""
    hits = sum(1 for o in occ if o["before"][-1:] and o["before"][-1] in SPORT_BEFORE
               or (not o["possessive"] and o["after"][:1] and o["after"][0] in SPORT_AFTER))
    return hits / max(1, len(occ))


def _noun_share(occ: list[dict]) -> float:
    """Share of uses after an article, a possessive determiner or a possessive
    ("cast a Patronus", "Harry's Patronus"): a thing named by a noun, not a word
    of command ("shouted Expelliarmus")."""
    nouns = ARTICLES | DETERMINERS | {"her"}
    hits = sum(1 for o in occ if o["before"][-1:] and (o["before"][-1] in nouns or o["before"][-1].endswith("'s")))
    return hits / max(1, len(occ))


def _margin(scores: dict[str, float], kind: str) -> float:
    return scores[kind] - max(v for k, v in scores.items() if k != kind)


def is_name_span(term: str) -> bool:
    """A multi-word span that could be a person's full name: no connector, no
    possessive, no head noun ("Sirius Black" yes; "Diagon Alley", "Dumbledore's Army" no)."""
    ws = term.split()
    return len(ws) > 1 and not set(ws) & CONNECTORS and "'s " not in term and \
        not any(head_noun(term) in heads for heads in HEADS.values())


def infer_types(table: pd.DataFrame, text: str, index: TextIndex | None = None) -> pd.DataFrame:
    """Add ``type`` (one of ``TYPES``), for persons ``role`` ("first name",
    "surname", "full name") and ``gender`` ("male", "female", ""), inferred from
    the text's own cues (``_type_scores``). Names lend each other their type: a
    full name whose parts are used as persons is a person, and the parts of a
    person's full name are persons, of a thing's name that thing's type; a word
    after several first names is a family name; the items of one list share a
    type; a name used as "one of a kind" ("is a Slytherin") that reads as a
    person is a group's; a plural takes its singular's type ("Weasleys" of
    "Weasley"). ``type_margin``: how far the type's score is ahead."""
    index = index_of(text, index)
    out = table.copy()
    have = set(out["term"])
    longer = longer_spans(out, index)
    occ = {t: occurrences(t, text, index, longer=longer) for t in out["term"]}
    base = {t: _type_scores(t, occ[t], have) for t in out["term"]}
    the_share = {t: sum(o["before"][-1:] == ["the"] for o in occ[t]) / max(1, len(occ[t])) for t in out["term"]}
    scores = {t: dict(s) for t, s in base.items()}
    # coordination: "Harry, Ron and Hermione", "Dobby, Kreacher, Narcissa" are things of one kind
    for t in out["term"]:
        n = max(1, len(occ[t]))
        for o in occ[t]:
            for w in o["coord"]:
                if w in base and w != t:
                    kind = max(TYPES, key=lambda k: base[w][k])
                    if _margin(base[w], kind) > 0.5:
                        scores[t][kind] += 7.0 / n
    part_of: dict[str, list[str]] = defaultdict(list)
    for f in out["term"]:
        if is_name_span(f):
            parts = [w for w in f.split() if w in base and w not in TITLES]
            scores[f]["person"] += min(6.0, sum(max(0.0, _margin(base[w], "person")) for w in parts))
            # a name used without "the": "Alicia Spinnet" (not "the Whomping Willow")
            scores[f]["person"] += 2.0 * (1 - the_share[f])
            for w in parts:
                part_of[w].append(f)
        elif " " in f and "'s " not in f:
            # a word mostly used inside a name with a head noun takes its type ("Polyjuice" of "Polyjuice Potion")
            kind = max(TYPES, key=lambda k: base[f][k])
            for w in f.split()[:-1]:
                if w in base and w not in CONNECTORS and base[f][kind] > 0:
                    scores[w][kind] += 4.0 * min(1.0, 2 * index.count(f) / max(1, index.count(w)))
    for w, fulls in part_of.items():
        persons = [f for f in fulls if _margin(scores[f], "person") > 0]
        for f in fulls:
            # a part takes its name's type: a person's, or a thing's ("Hallows" of "Deathly Hallows")
            kind = "person" if f in persons else max(TYPES, key=lambda k: scores[f][k])
            if scores[f][kind] > 0:
                scores[w][kind] += 4.0 * min(1.0, 2 * index.count(f) / max(1, index.count(w)))
        firsts = {f.split()[0] for f in persons if f.split()[-1] == w} | _first_names_before(w, text, index)
        if len(firsts) >= 2:
            # the family name of several persons ("Morfin Gaunt", "Merope Gaunt"), whether or
            # not each full name is used often enough to be a candidate of its own
            scores[w]["person"] += 6.0
    for w in out["term"]:
        if w not in part_of and len(_first_names_before(w, text, index)) >= 2:
            scores[w]["person"] += 6.0
    # items of one list are things of one kind (a list of spells, of houses): each other
    # item votes for its type as strongly as its cues say it (its margin); a type with two
    # thirds of the votes is added, as much as one strong cue
    for items in _list_items(text, have):
        for t in set(items):
            votes = defaultdict(float)
            for w in set(items) - {t}:
                kind = max(TYPES, key=lambda k: base[w][k])
                votes[kind] += max(0.0, _margin(base[w], kind))
            kind = max(votes, key=votes.get, default="")
            if len(items) >= 3 and kind and votes[kind] > 0 and votes[kind] >= 2 / 3 * sum(votes.values()):
                scores[t][kind] += 15.0 / max(1, len(occ[t]))
    chosen = {}
    for t in sorted(out["term"], key=lambda t: bool(plural_pair(t, have))):   # singulars first
        s = scores[t]
        if t[0].isupper() and " " not in t and max(s.values()) <= 0.5:
            s = {**s, "person": s["person"] + 0.6}   # a bare capitalised word without cues: a name
        best = max(TYPES, key=lambda k: s[k]) if max(s.values()) > 0 else "object"
        singular = plural_pair(t, have)
        if singular:
            best = chosen[singular][0]
        elif (_countable(t, have, index) and best in ("person", "object", "creature", "organisation")
              or _members(occ[t]) and best == "person"):
            # a kind of thing, never one person: people of that kind ("an Auror", "Death Eaters")
            # are members of a group, so what speaks for a person speaks for a group here
            group = {**s, "organisation": s["organisation"] + max(0.0, s["person"] + 2.0), "person": -1e9}
            best = max(("organisation", "object", "creature"), key=lambda k: group[k])
        chosen[t] = (best, _margin(s, best))
    types, roles, votes, margins = [], [], {}, []
    for t in out["term"]:
        best, margin = chosen[t]
        role = ""
        if best == "person":
            role, votes[t] = _person_role(t, occurrences(t, text, index), have, index)
        types.append(best)
        margins.append(margin)
        roles.append(role)
    # a full name and its first name share their gender evidence
    pooled = dict(votes)
    for f in votes:
        ws = f.split()
        if len(ws) > 1:
            first = next((w for w in ws if w not in TITLES), ws[0])
            if first in votes:
                pooled[f] = pooled[f] + votes[first]
                pooled[first] = pooled[first] + votes[f]
    genders = []
    for t in out["term"]:
        m, f = pooled.get(t, (0, 0))
        genders.append("male" if m > f else "female" if f > m else "")
    out["type"], out["role"], out["gender"], out["type_margin"] = types, roles, genders, margins
    out["countable"] = [_countable(t, have, index) for t in out["term"]]
    out["sport"] = [_sport_share(occ[t]) >= 0.15 for t in out["term"]]
    out["noun_use"] = [_noun_share(occ[t]) for t in out["term"]]
    return out


def _first_names_before(term: str, text: str, index: TextIndex) -> set[str]:
    """The distinct capitalised words right before ``term`` that could be first
    names ("Lucius Malfoy", "Draco Malfoy", "Narcissa Malfoy"): no title, no head
    noun, no possessive, no common word at a sentence start. Empty for a term of
    several words, a title or a head noun ("Alley" of "Diagon Alley", "Knockturn Alley")."""
    if " " in term or term in TITLES or term.lower() in ALL_HEADS or not term[:1].isupper():
        return set()
    out = set()
    for s, _ in index.spans(term):
        m = re.search(r"(?<![\w'])([A-Z][a-z]+) $", text[max(0, s - 30):s])
        if not m:
            continue
        w = m.group(1)
        if w in TITLES or w in CONNECTORS or w.lower() in ALL_HEADS or w.lower() in FUNCTION_WORDS:
            continue
        if common(w) and starts_sentence(text, s - len(w) - 1):
            continue
        out.add(w)
    return out


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*)$")


def _list_items(text: str, have: set[str]) -> list[list[str]]:
    """The lists of the text (consecutive lines starting with "-", "*" or "1."),
    each as the terms its items start with ("- Accio summons an object." -> "Accio")."""
    lists, current = [], []
    by_first = defaultdict(list)
    for t in have:
        by_first[t.split()[0]].append(t)
    for line in text.splitlines() + [""]:
        m = _BULLET.match(line)
        if not m:
            if len(current) >= 3:
                lists.append(current)
            current = []
            continue
        item = m.group(1)
        first = re.match(r"[\w\-']+", item)
        found = [t for t in by_first.get(first.group().removesuffix("'s"), []) if first and
                 re.match(re.escape(t) + r"(?![\w\-])", item)] if first else []
        if found:
            current.append(max(found, key=len))
    return lists


class _Votes(tuple):
    """(male, female) gender evidence; ``+`` adds them up."""

    def __add__(self, other):
        return _Votes((self[0] + other[0], self[1] + other[1]))


def _person_role(term: str, occ: list[dict], have: set[str], index: TextIndex) -> tuple[str, "_Votes"]:
    """(role, gender votes) of a person term: a first name (used before another
    name, after Uncle/Aunt/Sir) or a surname (after another name or
    Mr/Mrs/Professor, in the plural, before "family"); male or female votes from
    titles and the he/she that follows it before another name comes up."""
    first = [o["pronouns"][0] for o in occ if o["pronouns"]]   # the first pronoun after each use
    male = sum(o["title"] in MALE_TITLES for o in occ) * 3 + sum(w for p, w in first if PRONOUNS[p] == "male")
    female = sum(o["title"] in FEMALE_TITLES for o in occ) * 3 + sum(w for p, w in first if PRONOUNS[p] == "female")
    female += 1.5 if term.split()[0].endswith("a") else 0   # Minerva, Narcissa: a common ending of women's names
    gender = _Votes((male, female))
    ws = term.split()
    if len(ws) > 1:
        return "full name", gender
    first = sum(o["right_name"] for o in occ) + sum(o["title"] in ("Uncle", "Aunt", "Sir") for o in occ)
    last = sum(o["left_name"] for o in occ) + 2 * sum(o["title"] in SURNAME_TITLES for o in occ)
    if plural_pair(term, have) or index.count(term + "s") >= 2:
        last += 3   # "the Weasleys": a family name
    last += sum(2 for o in occ if o["after"][:1] == ["family"])
    return ("surname" if last > first else "first name"), gender
