"""Step 2, continued: finding anchored terms in a text and proposing generic translations.

The paper asked GPT-4 for anchored terms passage by passage. Offline, we mine them
from the target text alone:

* ``candidate_terms``: capitalised spans (proper nouns, with "of"/"the" and
  possessives inside, e.g. "Order of the Phoenix", "Dumbledore's Army"), the
  parts of those spans, and rare lower-case words;
* ``rank_candidates``: what a term is worth anchoring: its frequency in the
  text against general English (``wordfreq``), so the text's core names come
  first even when they are common English words ("Harry", "Ron"), plus, with a
  ``ModelPair`` of B and R, how much reinforcement raised it
  (``reinforcement_boost``);
* ``infer_types``: person, place, organisation, object, spell (or magic term),
  creature or event, from the text's own cues (titles, "at X", "the X of",
  pronouns and verbs around the term, plural forms, head nouns);
* ``propose_translations``: generic counterparts, type-matched names from
  ``name_pools.json`` (B's own masked predictions when a pair is given and they
  pass the rules), consistent across a full name and its parts;
* ``validate_translations``: the rules every translation must pass (offline or
  from an LLM): never a key, a piece of a key or of another target term, a
  function word, a word reinforcement marks as target-specific, or a word of
  another type (a person is never translated as a place). ``rejections`` lists
  what was dropped and why, for the review table;
* ``llm_propose``: the optional LLM step (an OpenAI-compatible client).

The result is an ``AnchorDict`` (``nbsupport.dictionary``) with provenance
``extracted`` or ``llm``; each entry's ``note`` holds the inferred type.
"""
from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Iterable, Sequence

import pandas as pd
from wordfreq import word_frequency, zipf_frequency

from . import package_data, scoring, terms
from .dictionary import AnchorDict, AnchorError, Entry, apply_merge_rules
from .pair import ModelPair

TYPES = ("person", "place", "organisation", "object", "spell", "creature", "event")

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")
_CONNECTORS = {"of", "the", "and"}
_SENTENCE_END = re.compile(r"[.!?:\n\"]\s*$")

# Words a translation may never be (alone), and never a candidate term either.
FUNCTION_WORDS = frozenset("""
a about above across after afterwards again against all almost alone along already also although always am
among an and another any anybody anyone anything anyway anywhere are around as at back be became because
become becomes been before beforehand behind being below beside besides between beyond both but by can
cannot could did do does doing done down during each either else elsewhere enough even ever every everyone
everything everywhere except few first for former formerly from further furthermore had has have having he
hence her here hers herself him himself his how however i if in indeed instead into is it its itself just
last later latter least less many may maybe me meanwhile might mine more moreover most mostly much must my
myself neither never nevertheless next no nobody none nor not nothing now nowhere of off often on once one
only onto or other others otherwise our ours ourselves out over perhaps please quite rather really same
second several shall she should since so some somebody someone something sometimes somewhere still such
than that the their theirs them themselves then there thereafter therefore these they this those though
through throughout thus to together too toward towards under unless until up upon us very via was we well
were what whatever when whenever where whereas wherever whether which while who whoever whole whom whose
why will with within without would yes yet you your yours yourself yourselves
q a oh ok okay hello thanks thank fun note see
""".split())

TITLES = {"Mr", "Mrs", "Ms", "Miss", "Mister", "Madam", "Madame", "Professor", "Prof", "Dr", "Doctor", "Sir",
          "Lady", "Lord", "Uncle", "Aunt", "Auntie", "Headmaster", "Headmistress", "Minister", "Captain",
          "Master", "Mistress", "Dame", "King", "Queen", "Prince", "Princess", "Saint", "St", "Monsieur"}
_MALE_TITLES = {"Mr", "Mister", "Sir", "Lord", "Uncle", "King", "Prince", "Headmaster", "Monsieur"}
_FEMALE_TITLES = {"Mrs", "Ms", "Miss", "Madam", "Madame", "Lady", "Aunt", "Auntie", "Headmistress", "Dame",
                  "Queen", "Princess", "Mistress"}
_SURNAME_TITLES = {"Mr", "Mrs", "Ms", "Miss", "Mister", "Madam", "Madame", "Professor", "Prof", "Dr", "Doctor",
                   "Minister", "Captain", "Headmaster", "Headmistress", "Monsieur"}

# Head nouns: the last word of a multi-word name (or the word before "of") says its type.
_HEADS = {
    "place": """alley street drive lane road avenue hall tower towers forest wood woods lake castle manor village
        hollow shack station platform room chamber cottage inn pub shop store hill valley square place corridor
        library hospital school academy prison bank garden gardens grounds cave island bridge ward floor court
        house mountain mountains field fields park river sea bay harbour harbor port town city row yard market
        cellar dungeon dungeons passage gate gates common quarter district moor marsh farm tavern""",
    "organisation": """ministry department office order army society club squad council committee league team
        united network bureau guild brigade association union party agency company firm family eaters
        alliance circle legion brotherhood sisterhood federation organisation organization wizards""",
    "object": """hat cloak stone wand map sword cup locket diadem ring mirror book books beans frog frogs cakes cards
        ears broom broomstick diary egg quill quills glasses key keys prophet newspaper magazine potion? robes
        box chest clock watch goblet basin pensieve vanishing cabinet chess snap gum toffee pops fudge nougat
        creams pasties wands cauldron tea butterbeer""",
    "spell": """curse curses charm charms jinx jinxes hex hexes spell spells potion potions draught draughts elixir
        serum incantation enchantment transfiguration magic""",
    "event": """battle tournament ball ceremony war match feast championship festival wedding funeral trial games
        task tasks world_cup""",
    "creature": """dog cat owl rat toad snake dragon spider horse bird elf elves beast beasts giant giants""",
}
_HEADS = {k: {w.strip("?") for w in v.split()} for k, v in _HEADS.items()}

# Cue words around an occurrence (lower case) and what they say about the term's type.
_CUES = {
    "person": {
        "next": """said says asked asks replied told tells thinks thought knew knows wanted wants decided believes
            felt feels smiled laughed shouted whispered married marries died dies loves loved hates hated learns
            learned learnt realises realizes realised realized admits admitted tries tried became becomes worked
            works joins joined teaches taught studies grew grows visits visited discovers discovered helps helped
            meets met sees saw gives gave kills killed is_a_character family survived survives leads led
            confronts confronted argues argued insists insisted explains explained remembers remembered""",
        "possessed": """father mother son daughter wife husband brother brothers sister sisters parents parent
            friend friends aunt uncle cousin godfather godson scar eyes hair face hand hands death mind life
            wand office heart voice patronus owl pet boggart grandmother grandfather grandson family""",
        "around": "he she his her him himself herself character",
    },
    "place": {
        "prev": """at in into to from near inside outside toward towards reach reached leave left visit visited
            visits enter entered enters return returns returned arrive arrives arrived through across around
            within beyond behind above below escapes escaped""",
        "next": """castle grounds village station street lane corridor gates kitchens library lake located""",
    },
    "organisation": {
        "next": """house members member common team students student table dormitory dormitories tower ghost
            prefect prefects captain seeker keeper quidditch pupils alumni headquarters officials official
            employee employees agents uniform""",
        "prev2": """sorted_into member_of members_of head_of joined_the join_the points_for house_of work_for
            worked_for works_for joined join""",
    },
    "creature": {
        "around": """owl rat cat toad snake serpent dragon spider dog hound horse bird phoenix elf house-elf giant
            centaur goblin ghost poltergeist werewolf beast creature creatures animal animals pet hippogriff
            unicorn tail wings claws fur feathers hooted hoots swooped flew bites bit bark barked hatched""",
    },
    "spell": {
        "prev": """cast casts casting cried shouted incantation brewed brew brewing drank drink drinks perform
            performs performed uses produce produced conjure conjured master mastered""",
        "next": """spell charm curse jinx hex potion incantation cast hits hit""",
    },
    "event": {
        "prev": "during after before since throughout",
        "next": "champion champions task tasks final took_place began ended",
    },
    "object": {
        "prev": """wore wear wears holds held carried carries bought buy buys found destroyed destroy hid hidden
            opened stole stolen ate eat eats read reads play plays played playing owns owned""",
        "next": """match matches pitch player players game games season robes destroyed hidden made""",
    },
}
_CUES = {t: {k: set(v.split()) for k, v in c.items()} for t, c in _CUES.items()}


# ----------------------------------------------------------------- finding terms in the text
class TextIndex:
    """A text and where each of its words starts, so a term's matches are looked for
    only where its first word starts. ``spans(term)`` is ``terms.spans(term, text)``
    (the one term matcher, same matches), found far faster for thousands of terms."""

    def __init__(self, text: str):
        self.text = text
        self.starts: dict[str, list[int]] = defaultdict(list)
        for m in re.finditer(r"(?<!\w)\w+", text):
            self.starts[m.group()].append(m.start())
        self._cache: dict[str, list[tuple[int, int]]] = {}

    def spans(self, term: str) -> list[tuple[int, int]]:
        if term in self._cache:
            return self._cache[term]
        lead = re.match(r"\w+", term)
        if lead is None:
            out = terms.spans(term, self.text)
        else:
            pattern, out, last = terms.pattern(term, False, False), [], -1
            for pos in self.starts.get(lead.group(), ()):
                if pos < last:
                    continue
                m = pattern.match(self.text, pos)
                if m:
                    out.append(m.span())
                    last = m.end()
        self._cache[term] = out
        return out

    def count(self, term: str) -> int:
        return len(self.spans(term))


def _index(text, index: TextIndex | None = None) -> TextIndex:
    return index if index is not None and index.text is text else TextIndex(text)


def _words(text: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, word, possessive) of every word; "Harry's" is "Harry" with possessive=True."""
    out = []
    for m in _WORD.finditer(text):
        w, end, poss = m.group(0), m.end(), False
        if w.endswith("'s"):
            w, end, poss = w[:-2], end - 2, True
        out.append((m.start(), end, w.strip("'"), poss))
    return out


def _initial(text: str, start: int) -> bool:
    """Does a sentence (or a line, a quote, a Q/A) start at ``start``?"""
    return start == 0 or _SENTENCE_END.search(text[max(0, start - 3):start]) is not None


def _common(word: str, zipf: float = 5.0) -> bool:
    return word.lower() in FUNCTION_WORDS or zipf_frequency(word.lower(), "en") >= zipf


def candidate_terms(text: str, min_count: int = 2, max_words: int = 4) -> pd.DataFrame:
    """Candidate anchored terms of ``text``: capitalised spans (proper nouns, with
    "of"/"the" and possessives inside, e.g. "Order of the Phoenix", "Dumbledore's
    Army") and their sub-spans, plus rare lower-case and hyphenated words.

    Returns columns ``term``, ``count`` (``terms.count``: whole-word, case-sensitive),
    ``kind`` ("proper noun" or "rare word"), sorted by count.
    """
    words = _words(text)
    spans: set[str] = set()
    i = 0
    while i < len(words):
        s, e, w, _ = words[i]
        if not w[0].isupper():
            i += 1
            continue
        j, last = i, i
        while j + 1 < len(words):
            between = text[words[j][1]:words[j + 1][0]]
            nxt = words[j + 1][2]
            if between not in (" ", "'s ", "' ") and (between.strip(" '") or "\n" in between):
                break
            if nxt[0].isupper():
                last = j = j + 1
            elif between == " " and nxt in _CONNECTORS and j + 2 < len(words) and (
                    words[j + 2][2][0].isupper() or words[j + 2][2] in _CONNECTORS):
                j += 1
            else:
                break
        initial = _initial(text, s)
        span = words[i:last + 1]
        for a in range(len(span)):
            # a sentence-initial common word is no part of the name ("The Sorting Hat", "When Harry")
            if a == 0 and initial and len(span) > 1 and _common(span[0][2], 4.5):
                continue
            for b in range(a + 1, min(len(span), a + max_words) + 1):
                sub = span[a:b]
                first, end = sub[0][2], sub[-1][2]
                if first in _CONNECTORS or end in _CONNECTORS or not first[0].isupper():
                    continue
                if a == 0 and b == 1 and initial:
                    continue   # sentence-initial single words are ambiguous ("When", "The")
                if len(sub) > 1 and (first in TITLES and first != "Lord" or end in TITLES):
                    continue   # "Professor Snape" is Snape with a title, not a name of its own
                term = "".join(w + ("'s" if p and k < len(sub) - 1 else "") + " "
                               for k, (_, _, w, p) in enumerate(sub)).strip()
                spans.add(term)
        i = last + 1
    # single letters, titles and function words capitalised mid-sentence are no terms
    spans = {t for t in spans if " " in t or (len(t) > 1 and t not in TITLES and not _common(t, 5.5))}
    rows = [(t, "proper noun") for t in spans]
    lower = {w for _, _, w, _ in words if w.islower() and len(w) >= 4}
    rows += [(w, "rare word") for w in lower
             if zipf_frequency(w, "en") < 2.5 or ("-" in w and zipf_frequency(w, "en") < 3.0)]
    index = TextIndex(text)
    table = pd.DataFrame([{"term": t, "count": index.count(t), "kind": k} for t, k in rows],
                         columns=["term", "count", "kind"])
    table = table[table["count"] >= min_count].sort_values(["count", "term"], ascending=[False, True])
    table = table.reset_index(drop=True)
    table.attrs["index"] = index
    return table


# ----------------------------------------------------------------- occurrences and their contexts
_LEFT_WORD = re.compile(r"([A-Za-z][\w'\-]*?)(?:'s)? $")
_LEFT_OF = re.compile(r"[A-Z][\w'\-]* of (?:the )?$")
_RIGHT_NAME = re.compile(r" (?:of (?:the )?)?([A-Z][\w\-]*)")


def _occurrence(text: str, s: int, e: int) -> dict:
    """What surrounds one occurrence: sentence-initial?, the words before and after
    (lower case, within the sentence), the word just left/right if it is a
    capitalised name word, a title just before, a possessive "'s" after."""
    left_text = text[max(0, s - 80):s]
    cut = max(left_text.rfind(c) for c in ".!?\n:")
    before = [w.lower() for w in _WORD.findall(left_text[cut + 1:])][-3:]
    right_text = text[e:e + 100]
    m = re.search(r"[.!?\n]", right_text)
    after_sentence = right_text[:m.start()] if m else right_text
    after = [w.lower() for w in _WORD.findall(after_sentence)][:4]
    initial = _initial(text, s)
    left = _LEFT_WORD.search(left_text) if left_text.endswith(" ") else None
    left_word = left.group(1) if left else ""
    title = left_word if left_word in TITLES else ""
    left_name = bool(left_word and left_word[0].isupper() and not title
                     and not (_initial(text, s - len(left.group(0))) and _common(left_word, 4.5)))
    left_name = left_name or _LEFT_OF.search(left_text) is not None
    right = _RIGHT_NAME.match(text, e)
    right_name = bool(right and right.group(1) not in TITLES)
    return {"initial": initial, "before": before, "after": after, "title": title,
            "left_name": left_name, "right_name": right_name, "possessive": text.startswith("'s", e),
            "the": bool(before and before[-1] == "the"), "exclaim": text.startswith("!", e),
            "pronouns": [w.lower() for w in _WORD.findall(text[e:e + 160])[:15]
                         if w.lower() in ("he", "him", "his", "himself", "she", "her", "hers", "herself")]}


def occurrences(term: str, text: str, index: TextIndex | None = None, limit: int = 80) -> list[dict]:
    """The contexts of up to ``limit`` occurrences of ``term`` (``_occurrence``), spread over the text."""
    found = _index(text, index).spans(term)
    step = max(1, len(found) // limit)
    return [_occurrence(text, s, e) for s, e in found[::step][:limit]]


def term_features(table: pd.DataFrame, text: str, index: TextIndex | None = None) -> pd.DataFrame:
    """Add what each term's occurrences say: ``initial`` (sentence-initial share),
    ``alone`` (uses not inside a longer name), ``lower`` (share of the same word
    written in lower case: "Black"/"black"), ``the`` (share after "the")."""
    index = _index(text, table.attrs.get("index", index))
    out = table.copy()
    rows = []
    for term in out["term"]:
        occ = occurrences(term, text, index)
        n = max(1, len(occ))
        scale = index.count(term) / n
        alone = sum(1 for o in occ if not o["initial"] and not o["left_name"] and not o["right_name"])
        lower = 0.0
        if term[0].isupper():
            low = index.count(term[0].lower() + term[1:])
            lower = low / (low + index.count(term))
        rows.append({"initial": sum(o["initial"] for o in occ) / n, "alone": alone * scale, "lower": lower,
                     "the": sum(o["the"] for o in occ) / n})
    feats = pd.DataFrame(rows, index=out.index, columns=["initial", "alone", "lower", "the"])
    for c in feats:
        out[c] = feats[c]
    out.attrs["index"] = index
    return out


# ----------------------------------------------------------------- entity types
def _head(term: str) -> str:
    """The head noun of a multi-word name: the word before "of" ("Battle of Hogwarts"),
    else the last word ("Diagon Alley")."""
    ws = term.split()
    if "of" in ws[1:]:
        return ws[ws.index("of") - 1].lower()
    return ws[-1].lower().removesuffix("'s")


def _plural_pair(term: str, have) -> str | None:
    """The singular of ``term`` if that is a term too (Dementors -> Dementor), else None."""
    for cut in ("es", "s"):
        if term.endswith(cut) and term[:-len(cut)] in have:
            return term[:-len(cut)]
    return None


def _type_scores(term: str, occ: list[dict], have: set[str]) -> dict[str, float]:
    scores = dict.fromkeys(TYPES, 0.0)
    n = max(1, len(occ))
    for o in occ:
        before, after = o["before"], o["after"]
        prev = before[-1] if before else ""
        prev2 = "_".join(before[-2:])
        nxt = after[0] if after else ""
        nxt2 = "_".join(after[:2])
        nxt3 = "_".join(after[:3])
        if o["title"]:
            scores["person"] += 3.0
        if nxt in _CUES["person"]["next"] or nxt3 in _CUES["person"]["next"] or nxt2 in _CUES["person"]["next"]:
            scores["person"] += 1.0
        if o["possessive"] and nxt in _CUES["person"]["possessed"]:
            scores["person"] += 1.5
        if any(w in _CUES["person"]["around"] for w in before + after):
            scores["person"] += 0.3
        if prev in _CUES["place"]["prev"]:
            scores["place"] += 1.0
        elif prev == "the" and len(before) > 1 and before[-2] in _CUES["place"]["prev"]:
            scores["place"] += 0.5
        if nxt in _CUES["place"]["next"]:
            scores["place"] += 1.0
        if nxt in _CUES["organisation"]["next"]:
            scores["organisation"] += 1.5
        if prev2 in _CUES["organisation"]["prev2"] or prev in _CUES["organisation"]["prev2"]:
            scores["organisation"] += 1.5
        if any(w in _CUES["creature"]["around"] for w in before[-2:] + after[:2]):
            scores["creature"] += 1.0
        if prev in _CUES["spell"]["prev"] or nxt in _CUES["spell"]["next"]:
            scores["spell"] += 1.5
        if o["exclaim"]:
            scores["spell"] += 1.0
        if prev in _CUES["event"]["prev"] and prev != "after" or prev2 in ("during_the", "after_the", "before_the"):
            scores["event"] += 1.5
        if nxt in _CUES["event"]["next"] or nxt2 in _CUES["event"]["next"]:
            scores["event"] += 1.5
        if prev in _CUES["object"]["prev"] or (prev == "the" and len(before) > 1
                                                and before[-2] in _CUES["object"]["prev"]):
            scores["object"] += 1.0
        if nxt in _CUES["object"]["next"]:
            scores["object"] += 1.0
        if prev in ("a", "an") or (prev == "the" and term[0].islower()):
            # a countable common noun: a creature, an object, a member of a group
            scores["object"] += 0.4
            scores["creature"] += 0.3
    scores = {t: v / n * 10 for t, v in scores.items()}   # cue weight per ten uses
    ws = term.split()
    if len(ws) > 1:   # the head noun of a multi-word name outweighs the cues
        head, first = _head(term), ws[0].lower()
        for t, heads in _HEADS.items():
            if head in heads or (first in heads and t in ("organisation", "event") and "of" in ws):
                scores[t] += 6.0
    singular = _plural_pair(term, have)
    if singular or (term + "s") in have or (term + "es") in have:
        scores["creature"] += 1.0   # a common noun with a plural: a kind of thing, not a name
        scores["object"] += 1.0
        scores["person"] -= 2.0
    if term[0].islower():
        scores["person"] -= 5.0
    return scores


def infer_types(table: pd.DataFrame, text: str, index: TextIndex | None = None) -> pd.DataFrame:
    """Add ``type`` (one of ``TYPES``), for persons ``role`` ("first name",
    "surname", "full name") and ``gender`` ("male", "female", ""), inferred from
    the text's own cues; multi-word person names lend their type to their parts.
    Also ``type_margin``, how far the chosen type's cue score is ahead."""
    index = _index(text, table.attrs.get("index", index))
    out = table.copy()
    have = set(out["term"])
    occ = {t: occurrences(t, text, index) for t in out["term"]}
    scores = {t: _type_scores(t, occ[t], have) for t in out["term"]}
    # name structure: the parts of a multi-word person name are persons, and back
    part_of: dict[str, list[str]] = defaultdict(list)
    for t in out["term"]:
        ws = [w.removesuffix("'s") for w in t.split()]
        if len(ws) > 1 and not set(ws) & _CONNECTORS and "'s " not in t:
            for w in ws:
                if w in have:
                    part_of[w].append(t)
    for t, fulls in part_of.items():
        for f in fulls:
            if _head(f) in {h for v in _HEADS.values() for h in v}:
                continue
            share = index.count(f) / max(1, index.count(t))
            scores[t]["person"] += 4.0 * min(1.0, share * 2)
    for f in out["term"]:
        ws = f.split()
        if len(ws) > 1 and not set(ws) & _CONNECTORS and "'s " not in f and \
                _head(f) not in {h for v in _HEADS.values() for h in v}:
            parts = [scores[w]["person"] - max(v for k, v in scores[w].items() if k != "person")
                     for w in ws if w in scores and w not in TITLES]
            scores[f]["person"] += 2.0 + (max(parts) if parts else 0.0)
    types, roles, genders, margins = [], [], [], []
    for t in out["term"]:
        s = scores[t]
        if t[0].isupper() and " " not in t and max(s.values()) <= 0.5:
            s = {**s, "person": s["person"] + 0.6}   # a bare capitalised word without cues: a name
        best = max(TYPES, key=lambda k: s[k])
        if max(s.values()) <= 0:
            best = "object"
        second = sorted(s.values())[-2]
        types.append(best)
        margins.append(s[best] - second)
        role, gender = "", ""
        if best == "person":
            role, gender = _person_role(t, occ[t], part_of.get(t, []), have, index)
        roles.append(role)
        genders.append(gender)
    out["type"], out["role"], out["gender"], out["type_margin"] = types, roles, genders, margins
    out.attrs["index"] = index
    return out


def _person_role(term: str, occ: list[dict], fulls: list[str], have: set[str], index: TextIndex) -> tuple[str, str]:
    male = sum(o["title"] in _MALE_TITLES for o in occ) * 3 + sum(
        o["pronouns"][:1] in (["he"], ["him"], ["his"], ["himself"]) for o in occ)
    female = sum(o["title"] in _FEMALE_TITLES for o in occ) * 3 + sum(
        o["pronouns"][:1] in (["she"], ["her"], ["hers"], ["herself"]) for o in occ)
    gender = "male" if male > female else "female" if female > male else ""
    ws = term.split()
    if len(ws) > 1:
        return "full name", gender
    first = sum(o["right_name"] for o in occ) + sum(o["title"] in ("Uncle", "Aunt", "Sir") for o in occ)
    last = sum(o["left_name"] for o in occ) + 2 * sum(o["title"] in _SURNAME_TITLES for o in occ)
    if _plural_pair(term, have) or index.count(term + "s") >= 2:
        last += 3   # "the Weasleys": a family name
    last += sum(2 for o in occ if o["after"][:1] == ["family"])
    return ("surname" if last > first else "first name"), gender


def coarse_type(note: str) -> str:
    """Map a dictionary note onto ``TYPES`` ("" for no type, e.g. the curated
    "idiom"): person (male)/person (female)/surname -> person, house -> organisation,
    potion -> spell, sport/money -> object; our own notes ("person (surname)") too."""
    base = (note or "").split(" (")[0].strip().lower()
    mapping = {"surname": "person", "house": "organisation", "potion": "spell", "sport": "object",
               "money": "object", "organization": "organisation", "group": "organisation",
               "magic term": "spell", "spell or magic term": "spell"}
    base = mapping.get(base, base)
    return base if base in TYPES else ""


def _note(row) -> str:
    if row["type"] != "person":
        return row["type"]
    detail = ", ".join(x for x in (row.get("role", ""), row.get("gender", "")) if x)
    return f"person ({detail})" if detail else "person"


# ----------------------------------------------------------------- ranking
def specificity(table: pd.DataFrame, n_words: int) -> pd.Series:
    """log10 of (frequency in the target) / (frequency in general English, wordfreq).

    Terms wordfreq has never seen get a floor frequency of 1e-9 (zipf 0)."""
    def score(term, count):
        general = max(word_frequency(term, "en"), 1e-9)
        return math.log10(count / n_words) - math.log10(general)

    return pd.Series([score(t, c) for t, c in zip(table["term"], table["count"])], index=table.index)


def contexts_of(term: str, text: str, n: int = 2, chars: int = 160) -> list[str]:
    """Up to ``n`` stretches of text that precede occurrences of ``term``
    (each cut to start at a word boundary)."""
    out = []
    for start, _ in terms.spans(term, text):
        ctx = text[max(0, start - chars):start]
        if start > chars and " " in ctx:
            ctx = ctx[ctx.index(" ") + 1:]
        ctx = ctx.rstrip()
        if ctx:
            out.append(ctx)
        if len(out) == n:
            break
    return out


def reinforcement_boost(pair: ModelPair, tok, text: str, candidates: Sequence[str], n_contexts: int = 2,
                        batch_size: int = 8) -> pd.Series:
    """Per term: mean over its contexts of log P_R(" term" | context) - log P_B(...),
    divided by the term's token count. Positive = reinforcement made it likelier.
    ``pair`` is B and R (``ModelPair``)."""
    pairs, owners = [], []
    for i, term in enumerate(candidates):
        for ctx in contexts_of(term, text, n_contexts):
            pairs.append((ctx, " " + term))
            owners.append(i)
    if not pairs:
        return pd.Series([0.0] * len(candidates), index=list(candidates))
    with pair.trained() as R:
        lp_r = scoring.continuation_logprobs(R, tok, pairs, batch_size)
    with pair.base() as B:
        lp_b = scoring.continuation_logprobs(B, tok, pairs, batch_size)
    n_tok = [len(tok(" " + t, add_special_tokens=False)["input_ids"]) for t in candidates]
    sums, counts = [0.0] * len(candidates), [0] * len(candidates)
    for i, g in zip(owners, (lp_r - lp_b).tolist()):
        sums[i] += g
        counts[i] += 1
    return pd.Series([s / c / n if c else 0.0 for s, c, n in zip(sums, counts, n_tok)], index=list(candidates))


# Specificity above this (the term is this many powers of ten more frequent here
# than in English) counts the same: past it, how often the text uses a term
# decides, so "Harry" (common in English, everywhere in the text) beats a rare
# name the text mentions twice.
SPECIFICITY_CAP = 3.0


def rank_candidates(table: pd.DataFrame, text: str, boost: pd.Series | None = None) -> pd.DataFrame:
    """Add ``specificity`` (and ``boost`` if given) and a combined ``score``, best first.

    score = min(specificity, 3) + log10(count), less what says "an ordinary word"
    (mostly sentence-initial, also written in lower case), plus 2 x the
    reinforcement boost (nats per token) when given. The log of the count is the
    text's own weight on a term: the core names come first whatever their
    general frequency."""
    out = table.copy()
    if "initial" not in out:
        out = term_features(out, text)
    out["specificity"] = specificity(out, max(1, len(_words(text))))
    spec = out["specificity"].clip(upper=SPECIFICITY_CAP)
    out["score"] = spec + out["count"].clip(lower=1).map(math.log10) \
        - 2.0 * out["initial"] - 3.0 * out["lower"]
    if boost is not None:
        out["boost"] = out["term"].map(boost).fillna(0.0)
        out["score"] = out["score"] + 2.0 * out["boost"]
    out = out.sort_values(["score", "term"], ascending=[False, True]).reset_index(drop=True)
    out.attrs["index"] = table.attrs.get("index")
    return out


def _keep_parts(table: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """A part of a longer name is anchored only where the text uses it on its own
    ("Hangleton" only ever in "Little Hangleton": no), or for a rare word that is
    part of a person's name (a first name or surname: "Filius"). A part common in
    English ("Black" of "Sirius Black") needs uses of its own."""
    keep = []
    for row in table.itertuples():
        if row.kind != "proper noun":
            keep.append(True)
            continue
        own = row.alone >= min_count
        rare_name_part = row.type == "person" and " " not in row.term and not _common(row.term, 3.5)
        keep.append(own or rare_name_part)
    return table[keep]


def _drop_covered(ranked: pd.DataFrame) -> pd.DataFrame:
    """Drop a multi-word name whose words are all terms ranked above it ("Harry
    Potter" after "Harry" and "Potter"): translating word by word covers it (the
    paper's merge rule)."""
    seen, keep = set(), []
    for term in ranked["term"]:
        ws = [w.removesuffix("'s") for w in term.split()]
        keep.append(not (len(ws) > 1 and all(w in seen for w in ws)))
        seen.add(term)
    return ranked[keep].reset_index(drop=True)


def extract_candidates(text: str, pair: ModelPair | None = None, tok=None, boost_candidates: int = 60,
                       min_count: int = 2) -> pd.DataFrame:
    """Candidates with their type, ranked (``rank_candidates``); parts of names kept
    only where they stand for something on their own (``_keep_parts``), full names
    covered by their parts dropped. With B and R (``pair``), the top
    ``boost_candidates`` are re-ranked with the reinforcement boost and placed
    first (scoring every candidate with the models would be slow).

    Columns: term, count, kind, type, role, gender, specificity, score (and boost)."""
    table = candidate_terms(text, min_count)
    index = table.attrs["index"]
    table = infer_types(term_features(table, text, index), text, index)
    table = _keep_parts(table, min_count)
    ranked = _drop_covered(rank_candidates(table, text))
    ranked.attrs["index"] = index
    if pair is None or boost_candidates <= 0:
        return ranked
    head, tail = ranked.iloc[:boost_candidates], ranked.iloc[boost_candidates:]
    boost = reinforcement_boost(pair, tok, text, list(head["term"]))
    head = rank_candidates(head.drop(columns=["specificity", "score"]), text, boost)
    out = pd.concat([head, tail], ignore_index=True)
    out.attrs["index"] = index
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
