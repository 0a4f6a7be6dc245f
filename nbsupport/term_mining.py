"""Step 2, continued: finding anchored terms in a text, typing them, and building
their dictionary from the text alone (issue 15).

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
  pronouns and verbs around the term, plural forms, head nouns, what the text
  says a term is: "Gringotts, the bank that...", lists, family names);
* ``propose_translations``, ``validate_translations``, ``llm_propose``: the
  text's side of ``nbsupport.translations`` (which holds the pools and the rules
  every translation obeys): the keys' types and the terms to stay clear of
  come from the text, B's masked proposals and the reinforcement boost from
  the models. ``rejections`` lists what was dropped and why, for the review table.

The result is an ``AnchorDict`` (``nbsupport.dictionary``) with provenance
``extracted`` or ``llm``; each entry's ``note`` holds the inferred type.
"""
from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from typing import Iterable, Sequence

import pandas as pd
from wordfreq import word_frequency, zipf_frequency

from . import scoring, terms, translations
from .dictionary import AnchorDict, apply_merge_rules
from .pair import ModelPair
from .translations import (  # noqa: F401  (the vocabulary and rules, also used from here by notebooks and tests)
    CONNECTORS, FUNCTION_WORDS, HEADS, LLM_SCHEMA, REJECTED_COLUMNS, TITLES, TYPES, WORD, coarse_type, common,
    head_noun, is_function_word, name_pools, plural_pair, rejections, translation_problems, translation_type)

_SENTENCE_END = re.compile(r"[.!?:\n\"]\s*$")

_MALE_TITLES = {"Mr", "Mister", "Sir", "Lord", "Uncle", "King", "Prince", "Headmaster", "Monsieur"}
_FEMALE_TITLES = {"Mrs", "Ms", "Miss", "Madam", "Madame", "Lady", "Aunt", "Auntie", "Headmistress", "Dame",
                  "Queen", "Princess", "Mistress"}
_SURNAME_TITLES = {"Mr", "Mrs", "Ms", "Miss", "Mister", "Madam", "Madame", "Professor", "Prof", "Dr", "Doctor",
                   "Minister", "Captain", "Headmaster", "Headmistress", "Monsieur"}

# Cue words around an occurrence (lower case) and what they say about the term's type.
_CUES = {
    "person": {
        "next": """said says asked asks replied told tells thinks thought knew knows wanted wants decided believes
            felt feels smiled laughed shouted whispered married marries died dies loves loved hates hated learns
            learned learnt realises realizes realised realized admits admitted tries tried became becomes worked
            works joins joined teaches taught studies grew grows visits visited discovers discovered helps helped
            meets met sees saw gives gave kills killed is_a_character family survived survives leads led
            confronts confronted argues argued insists insisted explains explained remembers remembered
            was_born is_born who whose married dated nicknamed is_a_child was_a_child smiles smiled lies lied
            drinks drank decorates becomes wears wearing running runs goes went comes came walks walked talks
            talked speaks spoke looks looked turns turned writes wrote spends spent takes took gets got loses
            lost wins won hides sits sat stands stood standing cries cried shouts screams laughs grins nods
            sighs agrees agreed refuses refused promises promised hopes hoped wishes wished fears feared likes
            liked trusts trusted betrays betrayed rescues rescued saves saved protects defends defended fights
            fought duels duelled arrives leaves returns escapes trying tries spends sacrifices sacrificed
            admits asks tells begs begged pretends pretended apologises apologized apologised winks""",
        "possessed": """father mother son daughter wife husband brother brothers sister sisters parents parent
            friend friends aunt uncle cousin godfather godson scar eyes hair face hand hands death mind life
            wand office heart voice patronus owl pet boggart grandmother grandfather grandson family""",
        "around": "he she his her him himself herself character",
        "prev": "by with who_is who_was belonged_to belongs_to married dated named called",
    },
    "place": {
        "prev": """at into near inside outside reach reached leave left visit visited visits enter entered
            enters return returns returned arrive arrives arrived through across within beyond behind escapes
            escaped where_is where_was located lived_in lives_in live_in born_in grew_up_in""",
        "weak": "in to from toward towards around above below",
        "next": """castle grounds village station street lane corridor gates kitchens library lake located""",
    },
    "organisation": {
        "next": """house members member common students student table dormitory dormitories ghost prefect
            prefects pupils alumni headquarters officials official employee employees agents uniform quidditch""",
        "prev": """sorted_into member_of members_of head_of joined_the join_the points_for house_of work_for
            worked_for works_for joined join""",
    },
    "creature": {
        "kind": """owl rat cat toad snake serpent dragon spider dog hound horse bird phoenix elf house-elf giant
            centaur goblin ghost poltergeist werewolf beast creature creatures animal animals pet hippogriff
            unicorn kitten puppy pony""",
        "next": """attacked attack attacks guard guards guarded feed feeds fed flew flies hatched bit bites
            swooped roared hissed hooted hoots galloped kiss kissed drained dwell dwells protected descend
            descended swarm swarmed hunt hunts hunted prowl prowls lurk lurks roam roams nest nests""",
    },
    "spell": {
        "prev": """cast casts casting cried shouted incantation brewed brew brewing drank drink drinks perform
            performs performed produce produced conjure conjured master mastered""",
        "next": """spell charm curse jinx hex potion incantation cast hits hit""",
    },
    "event": {
        "prev": "during throughout during_the throughout_the",
        "next": "champion champions task tasks final took_place began ended",
    },
    "object": {
        "prev": """wore wear wears holds held carried carries bought buy buys found destroyed destroy hid hidden
            opened stole stolen ate eat eats read reads play plays played playing owns owned his their my
            your our its""",
        "next": """match matches pitch player players game games season robes cup captain team practice
            tryouts trials fans league destroyed hidden""",
    },
}
_CUES = {t: {k: set(v.split()) for k, v in c.items()} for t, c in _CUES.items()}
# Words anywhere in the sentence around an occurrence: weak evidence, summed.
_BAG = {
    "person": """character characters born married wife husband son daughter father mother brother sister friend
        friends student pupil teacher boy girl man woman parents grandson granddaughter nephew niece godfather
        godson child children went wore fell died loves loved grew year-mate classmate sorted""",
    "place": """located village town city street road lane building shop pub inn castle room lake forest visit
        visited visiting lives lived entrance inside outside near situated address found""",
    "organisation": """member members founded founder department office employed organisation society group
        joined join leader""",
    "object": """made used use owned owns wood core broom book books sweets sweet eat ate sold sells buy bought
        magazine newspaper edition worn wear carried carry item object artefact brand flavour sport game match
        team played""",
    "spell": """charm charms spell spells curse curses jinx hex incantation cast casts casting disarming disarms
        disarm target effect counter-curse spellbook potion potions brew brewed brewing ingredient ingredients
        drink drank""",
    "creature": """creature creatures species pet pets beast beasts animal animals owl cat dog rat toad snake dragon
        spider bird eggs egg fur feathers wings tail bite bites breed magizoology shape-shifter""",
    "event": "place held during tournament task tasks battle fought war champion champions ceremony final",
}
_BAG = {t: set(v.split()) for t, v in _BAG.items()}
_DETERMINERS = {"his", "their", "my", "your", "our", "its"}
# What a text says a term *is* ("Gringotts, the bank that...", "Horcrux: an object in
# which...", "Voldemort, a dark wizard who..."): the kind noun of the definition, by type.
# The head nouns of names, less the two that name both a place and a group or a person's
# kin ("a house", "a family"), plus the nouns for people and animals.
_KIND_NOUNS = {t: set(HEADS[t]) - {"house", "family"} for t in TYPES if t in HEADS}
_KIND_NOUNS["person"] = set("""person people someone somebody man woman men women boy girl wizard witch wizards
    witches student pupil teacher professor headmaster headmistress friend follower followers godfather father
    mother son daughter brother sister uncle aunt cousin wife husband character villain rival caretaker gamekeeper
    family child orphan hero heroine criminal prisoner servant""".split())
_KIND_NOUNS["creature"] = _KIND_NOUNS.get("creature", set()) | _CUES["creature"]["kind"]
_DEFINITION = re.compile(
    r"(?:'s)?(?P<how>:\s+|,\s+|\s+(?:is|was|are|were)\s+(?:\w+ly\s+)?)"
    r"(?P<det>(?:a|an|the|one of the|[A-Z][\w\-]*'s)\s+)?"
    r"(?P<np>[\w\-]+(?:\s+[\w\-]+){0,2})(?P<end>[,.;:)]|\s+(?:who|whom|whose|that|which|where)\b)?")
_MEMBER_DETS = {"a", "an", "every", "each", "another"}
_CALLED = {"called", "named", "nicknamed"}
_ALL_HEADS = {w for heads in HEADS.values() for w in heads}
_PRONOUNS = {"he": "male", "him": "male", "his": "male", "himself": "male",
             "she": "female", "her": "female", "hers": "female", "herself": "female"}


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


_INDEXES: dict[str, TextIndex] = {}


def _index(text: str, index: TextIndex | None = None) -> TextIndex:
    """The index of ``text`` (the last two texts' are kept: ranking, typing and
    translating one text all look terms up in it)."""
    if index is not None and index.text is text:
        return index
    if text not in _INDEXES:
        while len(_INDEXES) >= 2:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[text] = TextIndex(text)
    return _INDEXES[text]


def _words(text: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, word, possessive) of every word; "Harry's" is "Harry" with possessive=True."""
    out = []
    for m in WORD.finditer(text):
        w, end, poss = m.group(0), m.end(), False
        if w.endswith("'s"):
            w, end, poss = w[:-2], end - 2, True
        out.append((m.start(), end, w.strip("'"), poss))
    return out


def _initial(text: str, start: int) -> bool:
    """Does a sentence (or a line, a quote, a Q/A) start at ``start``?"""
    return start == 0 or _SENTENCE_END.search(text[max(0, start - 3):start]) is not None


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
            elif between == " " and nxt in CONNECTORS and j + 2 < len(words) and (
                    words[j + 2][2][0].isupper() or words[j + 2][2] in CONNECTORS):
                j += 1
            else:
                break
        initial = _initial(text, s)
        span = words[i:last + 1]
        for a in range(len(span)):
            # a sentence-initial common word is no part of the name ("The Sorting Hat", "When Harry")
            if a == 0 and initial and len(span) > 1 and common(span[0][2]):
                continue
            for b in range(a + 1, len(span) + 1):
                sub = span[a:b]
                if sum(w not in CONNECTORS for _, _, w, _ in sub) > max_words:
                    break
                first, end = sub[0][2], sub[-1][2]
                if first in CONNECTORS or end in CONNECTORS or not first[0].isupper():
                    continue
                if a == 0 and b == 1 and initial and (len(span) == 1 or common(first)):
                    continue   # sentence-initial single words are ambiguous ("When", "The"), unless
                    # the first word of a longer name ("Draco" of "Draco Malfoy. ...")
                if len(sub) > 1 and (first in TITLES and first != "Lord" or end in TITLES):
                    continue   # "Professor Snape" is Snape with a title, not a name of its own
                term = "".join(w + ("'s" if p and k < len(sub) - 1 else "") + " "
                               for k, (_, _, w, p) in enumerate(sub)).strip()
                spans.add(term)
        i = last + 1
    # single letters, titles and function words capitalised mid-sentence are no terms
    spans = {t for t in spans if " " in t or (len(t) > 1 and t not in TITLES and not common(t, 5.5))}
    rows = [(t, "proper noun") for t in spans]
    lower = {w for _, _, w, _ in words if w.islower() and len(w) >= 4}
    # wordfreq rates a hyphenated compound about as common as its rarer part, so a
    # compound of ordinary words ("house-elf") looks commoner than it is: one up to
    # zipf 4 is a candidate when the text keeps using it (three times or more)
    compound = {w for w in lower if "-" in w and 3.0 <= zipf_frequency(w, "en") < 4.0}
    rows += [(w, "rare word") for w in lower
             if zipf_frequency(w, "en") < 2.5 or ("-" in w and zipf_frequency(w, "en") < 3.0) or w in compound]
    index = _index(text)
    table = pd.DataFrame([{"term": t, "count": index.count(t), "kind": k} for t, k in rows],
                         columns=["term", "count", "kind"])
    table = table[(table["count"] >= min_count) & ~(table["term"].isin(compound) & (table["count"] < 3))]
    counts = dict(zip(table["term"], table["count"]))

    def coordination(term):   # "Harry and Ron": two names, not one
        x, _, y = term.partition(" and ")
        return bool(y) and min(counts.get(x, 0), counts.get(y, 0)) >= 2 * counts[term]

    table = table.loc[pd.Series([not coordination(t) for t in table["term"]], index=table.index, dtype=bool)]
    table = table.sort_values(["count", "term"], ascending=[False, True]).reset_index(drop=True)
    return table


# ----------------------------------------------------------------- occurrences and their contexts
_LEFT_WORD = re.compile(r"([A-Za-z][\w'\-]*?)(?:'s)? $")
_LEFT_OF = re.compile(r"[A-Z][\w'\-]* of (?:the )?$")
_COORD_LEFT = re.compile(r"([A-Z][\w\-]*)(?:'s)?(?:,| and| or|, and|, or) $")
_COORD_RIGHT = re.compile(r"(?:'s)?(?:,| and| or|, and|, or) ([A-Z][\w\-]*)")
_RIGHT_NAME = re.compile(r" (?:of (?:the )?)?([A-Z][\w\-]*)")


def _occurrence(text: str, s: int, e: int) -> dict:
    """What surrounds one occurrence: sentence-initial?, the words before and after
    (lower case, within the sentence), the word just left/right if it is a
    capitalised name word, a title just before, a possessive "'s" after."""
    left_text = text[max(0, s - 80):s]
    cut = max(left_text.rfind(c) for c in ".!?\n:")
    bag_before = [w.lower() for w in WORD.findall(left_text[cut + 1:])]
    before = bag_before[-3:]
    right_text = text[e + 2 if text.startswith("'s", e) else e:e + 100]
    m = re.search(r"[.!?\n]", right_text)
    after_sentence = right_text[:m.start()] if m else right_text
    bag_after = [w.lower() for w in WORD.findall(after_sentence)]
    after = bag_after[:4]
    initial = _initial(text, s)
    left = _LEFT_WORD.search(left_text) if left_text.endswith(" ") else None
    left_word = left.group(1) if left else ""
    title = left_word if left_word in TITLES else ""
    left_name = bool(left_word and left_word[0].isupper() and not title
                     and not (_initial(text, s - len(left.group(0))) and common(left_word)))
    left_name = left_name or _LEFT_OF.search(left_text) is not None
    coord = [m.group(1) for m in [_COORD_LEFT.search(left_text)] if m]
    coord += [m.group(1) for m in [_COORD_RIGHT.match(text, e)] if m]
    right = _RIGHT_NAME.match(text, e)
    right_name = bool(right and right.group(1) not in TITLES)
    cased = WORD.findall(after_sentence)
    return {"initial": initial, "before": before, "after": after, "title": title,
            "defined": _defined_as(text, e),
            "where": re.match(r"(?:'s)? where\b", text[e:e + 10]) is not None,
            "next_upper": bool(cased and cased[0][0].isupper()), "verb": _verb_after(cased),
            "member": _member_use(left_text, after, text.startswith("'s", e)),
            "kind_after": bool(len(cased) > 1 and cased[0].lower() in _ARTICLES
                               and cased[1].lower() in _CUES["creature"]["kind"]
                               and not (len(cased) > 2 and cased[2][0].isupper())),
            "bag": set(bag_before[-8:] + bag_after[:8]), "coord": coord,
            "left_name": left_name, "right_name": right_name, "possessive": text.startswith("'s", e),
            "the": bool(before and before[-1] == "the"), "exclaim": text.startswith("!", e),
            "pronouns": _pronouns_after(text, e)}


def _defined_as(text: str, e: int) -> str:
    """The type of what the text says the term is, right after it: a definition
    ("Horcrux: an object in which..."), an apposition closed by a comma, a full
    stop or "who"/"that"/"where" ("Gringotts, the bank that...", "Dobby, a
    house-elf, ...", not the list "Harry, the Order and Ron") or "is a/the"
    ("Hogwarts is a castle in..."); "" when none. The kind noun is the first of
    ``_KIND_NOUNS`` within three words; a noun phrase followed by "who" is a person."""
    m = _DEFINITION.match(text, e)
    if not m or m.group("det") is None and not m.group("how").startswith(":"):
        return ""
    words = m.group("np").split()
    end = m.group("end") or ""
    rel = next((i for i, w in enumerate(words) if w in ("who", "whom", "whose", "that", "which", "where")), None)
    if rel is not None:
        words, end = words[:rel], words[rel]
    for i, w in enumerate(words):
        for kind, nouns in _KIND_NOUNS.items():
            if w.lower() in nouns:
                if m.group("how").startswith(",") and i < len(words) - 1:
                    return ""   # the noun phrase goes on past the noun: no apposition
                if m.group("how").startswith(",") and not end:
                    return ""
                return kind
    return "person" if end.strip() in ("who", "whom", "whose") else ""


def _verb_after(cased: list[str]) -> str:
    """The first word after a name that may be its verb, past adverbs ("Wormtail
    finally becomes"), the rest of a full name ("Bellatrix Lestrange spends") and
    a second name joined by "and" ("Fred and George running"); lower case."""
    i = 0
    if i < len(cased) and cased[i][0].isupper() and cased[i].lower() not in _ALL_HEADS:
        i += 1
    if i + 1 < len(cased) and cased[i] in ("and", "or") and cased[i + 1][0].isupper():
        i += 2
    while i < len(cased) and cased[i].endswith("ly") and len(cased[i]) > 4:
        i += 1
    return cased[i].lower() if i < len(cased) else ""


_MEMBER_LEFT = re.compile(r"(?<![\w'])(?:a|an|every|each|another|A|An|Every|Each|Another)(?: [a-z]+)? $")


def _member_use(left_text: str, after: list[str], possessive: bool) -> bool:
    """"is a Slytherin.", "every Slytherin is", "a true Gryffindor": the name of
    one of a kind, with nothing after it that it could modify (not "a Ravenclaw
    Flitwick", "a son, Scorpius")."""
    if possessive or not _MEMBER_LEFT.search(left_text):
        return False
    return not after or after[0] in FUNCTION_WORDS


def _pronouns_after(text: str, e: int) -> list[tuple[str, float]]:
    """The he/she pronouns after an occurrence, with a weight: 1 up to the next
    name (whose they could also be), 0.3 after it."""
    out, weight = [], 1.0
    for m in WORD.finditer(text, e, min(len(text), e + 160)):
        w = m.group(0)
        if w[0].isupper() and w.lower() not in _PRONOUNS and not _initial(text, m.start()):
            weight = 0.3
        if w.lower() in _PRONOUNS:
            out.append((w.lower(), weight))
    return out


def occurrences(term: str, text: str, index: TextIndex | None = None, limit: int = 80,
                longer: tuple | None = None) -> list[dict]:
    """The contexts of up to ``limit`` occurrences of ``term`` (``_occurrence``),
    spread over the text. With ``longer`` (``_longer_spans``), only occurrences
    that are not part of a longer candidate ("Harry" in "the Harry Potter series"
    is the series' context, not Harry's), unless fewer than three are."""
    found = _index(text, index).spans(term)
    if longer is not None:
        own = [(s, e) for s, e in found if not _inside(s, e, *longer)]
        found = own if len(own) >= 3 else found
    step = max(1, len(found) // limit)
    return [_occurrence(text, s, e) for s, e in found[::step][:limit]]


def _coordination(term: str) -> bool:
    """"Fred and George", "Lily and James Potter": two names side by side, not one
    name that holds them ("School of Witchcraft and Wizardry" is one name)."""
    x, _, y = term.partition(" and ")
    return bool(x and y) and " of " not in term and x[:1].isupper() and y[:1].isupper() \
        and len(x.split()) <= 2 and len(y.split()) <= 2


def _longer_spans(table: pd.DataFrame, index: TextIndex) -> tuple[list[int], list[tuple[int, int]]]:
    """Every occurrence of a multi-word candidate, sorted: (starts, spans)."""
    spans = sorted(sp for t in table["term"] if " " in t and not _coordination(t) for sp in index.spans(t))
    return [a for a, _ in spans], spans


def _inside(s: int, e: int, starts: list[int], spans: list[tuple[int, int]]) -> bool:
    """Is the occurrence [s, e) part of a longer candidate's occurrence?"""
    i = bisect.bisect_right(starts, s)
    while i > 0 and starts[i - 1] >= s - 120:
        a, b = spans[i - 1]
        if a <= s and e <= b and b - a > e - s:
            return True
        i -= 1
    return False


def term_features(table: pd.DataFrame, text: str, index: TextIndex | None = None) -> pd.DataFrame:
    """Add what each term's occurrences say: ``initial`` (share at a sentence
    start), ``alone`` (uses not inside a longer candidate, nor a common word at
    a sentence start: "Hangleton" is never used without "Little"), ``inside``
    (uses inside a longer candidate), ``lower`` (share of the same
    word in lower case: "Black"/"black"), ``the`` (share right after "the")."""
    index = _index(text, index)
    out = table.copy()
    starts, spans = _longer_spans(out, index)
    rows = []
    for term in out["term"]:
        found = index.spans(term)
        n = max(1, len(found))
        initial = [_initial(text, s) for s, _ in found]
        inside = [_inside(s, e, starts, spans) for s, e in found]
        # a use of its own: not inside a longer name, and not a sentence-initial common word ("When")
        rare = not common(term.split()[0])
        alone = sum(1 for ini, ins in zip(initial, inside) if not ins and (rare or not ini))
        the = sum(1 for s, _ in found if text[max(0, s - 4):s] in ("the ", "The "))
        lower = 0.0
        if term[0].isupper():
            low = index.count(term[0].lower() + term[1:])
            lower = low / (low + len(found))
        rows.append({"initial": sum(initial) / n, "alone": alone, "inside": sum(inside), "lower": lower,
                     "the": the / n})
    feats = pd.DataFrame(rows, index=out.index, columns=["initial", "alone", "inside", "lower", "the"])
    for c in feats:
        out[c] = feats[c]
    return out


# ----------------------------------------------------------------- entity types
_ARTICLES = {"a", "an", "the"}


def _type_scores(term: str, occ: list[dict], have: set[str]) -> dict[str, float]:
    """Cue weight per ten uses for each type, from the words around the term's
    occurrences, plus the head noun of a multi-word name."""
    scores = dict.fromkeys(TYPES, 0.0)
    n = max(1, len(occ))
    cues = _CUES
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
        far = before[-2] if len(before) > 1 and (prev in _ARTICLES or prev in _DETERMINERS) else ""
        # after a possessive, the next word is what the term owns ("Fleur's wedding"), no cue to its type
        nxt = "" if o["possessive"] else (after[0] if after else "")
        nxt2, nxt3 = ("_".join(after[:2]), "_".join(after[:3])) if nxt else ("", "")
        # "the Gaunt shack", "a Gringotts goblin": the term modifies a noun, whose cues are weaker
        modifier = bool(nxt) and prev in _ARTICLES | _DETERMINERS and nxt not in FUNCTION_WORDS
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
        kind_called = prev in _CALLED and len(before) > 1 and before[-2] in cues["creature"]["kind"]
        add("person", 0.7, not kind_called and (prev in c["prev"] or prev2 in c["prev"]))
        if o["possessive"]:
            add("person", 1.5 if after[:1] and after[0] in c["possessed"] else 0.3, True)
        add("person", 0.3, *(w in c["around"] for w in before + after))
        # "the Burrow is", "the Quibbler.": a thing, not a person ("the Weasleys": a family)
        add("person", -0.8, prev == "the" and not modifier and not term.endswith("s"))
        add("person", -1.5, prev in _DETERMINERS)
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
        for kind, vocab in _BAG.items():
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


_SPORT_PREV = {"play", "plays", "played", "playing"}
_SPORT_NEXT = {"match", "matches", "pitch", "team", "teams", "season", "player", "players", "game", "games",
               "league", "final", "captain", "practice", "tryouts", "trials", "world"}


def _sport_share(occ: list[dict]) -> float:
    """Share of uses that read like a sport ("play X", "the X match")."""
    hits = sum(1 for o in occ if o["before"][-1:] and o["before"][-1] in _SPORT_PREV
               or (not o["possessive"] and o["after"][:1] and o["after"][0] in _SPORT_NEXT))
    return hits / max(1, len(occ))


def _noun_share(occ: list[dict]) -> float:
    """Share of uses after an article, a possessive determiner or a possessive
    ("cast a Patronus", "Harry's Patronus"): a thing named by a noun, not a word
    of command ("shouted Expelliarmus")."""
    nouns = _ARTICLES | _DETERMINERS | {"her"}
    hits = sum(1 for o in occ if o["before"][-1:] and (o["before"][-1] in nouns or o["before"][-1].endswith("'s")))
    return hits / max(1, len(occ))


def _margin(scores: dict[str, float], kind: str) -> float:
    return scores[kind] - max(v for k, v in scores.items() if k != kind)


def _is_name_span(term: str) -> bool:
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
    index = _index(text, index)
    out = table.copy()
    have = set(out["term"])
    longer = _longer_spans(out, index)
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
        if _is_name_span(f):
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
    if " " in term or term in TITLES or term.lower() in _ALL_HEADS or not term[:1].isupper():
        return set()
    out = set()
    for s, _ in index.spans(term):
        m = re.search(r"(?<![\w'])([A-Z][a-z]+) $", text[max(0, s - 30):s])
        if not m:
            continue
        w = m.group(1)
        if w in TITLES or w in CONNECTORS or w.lower() in _ALL_HEADS or w.lower() in FUNCTION_WORDS:
            continue
        if common(w) and _initial(text, s - len(w) - 1):
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
    male = sum(o["title"] in _MALE_TITLES for o in occ) * 3 + sum(w for p, w in first if _PRONOUNS[p] == "male")
    female = sum(o["title"] in _FEMALE_TITLES for o in occ) * 3 + sum(w for p, w in first if _PRONOUNS[p] == "female")
    female += 1.5 if term.split()[0].endswith("a") else 0   # Minerva, Narcissa: a common ending of women's names
    gender = _Votes((male, female))
    ws = term.split()
    if len(ws) > 1:
        return "full name", gender
    first = sum(o["right_name"] for o in occ) + sum(o["title"] in ("Uncle", "Aunt", "Sir") for o in occ)
    last = sum(o["left_name"] for o in occ) + 2 * sum(o["title"] in _SURNAME_TITLES for o in occ)
    if plural_pair(term, have) or index.count(term + "s") >= 2:
        last += 3   # "the Weasleys": a family name
    last += sum(2 for o in occ if o["after"][:1] == ["family"])
    return ("surname" if last > first else "first name"), gender


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
    out["specificity"] = specificity(out, max(1, len(_words(text))))
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
    full_names = [t.split() for t, k in zip(table["term"], table["type"]) if k == "person" and _is_name_span(t)]
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
        if _coordination(term):   # two names: covered by both, wherever they rank
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
    index = _index(text)
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


def review_order(ranked: pd.DataFrame, keys: Iterable[str], min_specificity: float = 1.5,
                 min_margin: float = 1.0, min_boost: float = 0.5) -> pd.DataFrame:
    """The extracted ``keys`` in the order a reviewer should read them: first those
    with a reason to look twice, then the rest by rank. Reasons: the term is not
    much more frequent in the text than in general English (``specificity`` below
    ``min_specificity``: a real place, an ordinary word, "London", "Location")
    and reinforcement did not single it out either (``boost`` below ``min_boost``
    nats, or not measured: a core name like "Harry" has a high boost), or
    its type was a close call (``type_margin`` below ``min_margin``), so its
    translations may be of the wrong kind. Columns: key, count, type, specificity,
    type_margin, flag (the reasons, "" when none)."""
    if not {"term", "type", "specificity"} <= set(ranked.columns):
        raise ValueError("review_order needs the table of extract_candidates (term, type, specificity columns)")
    cols = ["term", "count", "type", "specificity", "boost", "type_margin"]
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
        if row.specificity < min_specificity and not boosted:
            why.append(f"ordinary English? ({10 ** row.specificity:.0f}x its English frequency)")
        if "type_margin" in out and row.type_margin < min_margin:
            why.append(f"type unsure ({row.type}, margin {row.type_margin:.1f})")
        flags.append("; ".join(why))
    out["flag"] = flags
    flagged = out.flag != ""
    out = pd.concat([out[flagged].sort_values(["specificity", "rank"]), out[~flagged].sort_values("rank")])
    return out.drop(columns="rank").reset_index(drop=True)


# ----------------------------------------------------------------- translations, from the text's side
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
    out = set(table.loc[specificity(table, max(1, len(_words(text)))) >= min_specificity, "term"])
    if ranked is not None and "specificity" in ranked:
        out |= set(ranked.loc[ranked["specificity"] >= min_specificity, "term"])
    index = _index(text)
    out = {t for t in out if " " in t or not t[:1].isupper() or index.count(t.lower()) < 2}
    return out | set(extra)


def _boost_in_contexts(pair: ModelPair, tok, contexts: Sequence[str], words: Sequence[str],
                       batch_size: int = 8) -> dict[str, float]:
    """Mean log P_R(" word" | context) - log P_B(...) per token, over ``contexts``."""
    pairs = [(c, " " + w) for w in words for c in contexts]
    if not pairs:
        return {w: 0.0 for w in words}
    with pair.trained() as R:
        lp_r = scoring.continuation_logprobs(R, tok, pairs, batch_size)
    with pair.base() as B:
        lp_b = scoring.continuation_logprobs(B, tok, pairs, batch_size)
    diff = (lp_r - lp_b).tolist()
    out = {}
    for i, w in enumerate(words):
        n_tok = max(1, len(tok(" " + w, add_special_tokens=False)["input_ids"]))
        chunk = diff[i * len(contexts):(i + 1) * len(contexts)]
        out[w] = sum(chunk) / len(chunk) / n_tok
    return out


def _typed_rows(keys: Sequence[str], text: str, ranked: pd.DataFrame | None = None) -> dict[str, dict]:
    """key -> its ``extract_candidates`` row (type, role, gender, features): from
    ``ranked`` when it holds every key and its parts, else inferred from ``text``
    (with the text's other candidates as company)."""
    parts = {w.removesuffix("'s") for k in keys if " " in k for w in k.split()}
    if ranked is not None and "type" in ranked and set(keys) <= set(ranked["term"]):
        rows = ranked.set_index("term")
        return {k: rows.loc[k].to_dict() for k in [*keys, *parts] if k in rows.index}
    table = candidate_terms(text, min_count=1)
    index = _index(text)
    extra = [k for k in keys if k not in set(table["term"])]
    if extra:
        table = pd.concat([table, pd.DataFrame({"term": extra, "count": [index.count(k) for k in extra],
                                                "kind": "proper noun"})], ignore_index=True)
    typed = infer_types(term_features(table, text, index), text, index).set_index("term")
    return {k: typed.loc[k].to_dict() for k in [*keys, *parts] if k in typed.index}


def validate_translations(dictionary: AnchorDict, text: str, targets: Iterable[str] | None = None,
                          types: dict[str, str] | None = None, pair: ModelPair | None = None, tok=None,
                          boost_threshold: float = 0.5, source: str = "") -> tuple[AnchorDict, pd.DataFrame]:
    """``translations.validate`` against ``text``: every translation checked with
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
        types.update({k: row["type"] for k, row in _typed_rows(missing, text).items() if k in missing})
    boosts = {}
    if pair is not None and tok is not None:
        for key in keys:
            contexts = contexts_of(key, text, n=2)
            if contexts:
                boosts[key] = _boost_in_contexts(pair, tok, contexts, dictionary[key].translations)
    return translations.validate(dictionary, targets, types, boosts, boost_threshold, source)


def propose_translations(new: Sequence[str], text: str, pair: ModelPair | None = None, tok=None, seed: int = 0,
                         n: int = 2, avoid: Iterable[str] = (), ranked: pd.DataFrame | None = None,
                         boost_threshold: float = 0.5) -> AnchorDict:
    """Generic translations for extracted terms, offline, generic by construction
    (``translations.translate``).

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
    rows = _typed_rows(new, text, ranked)
    targets = target_terms(text, ranked, extra=[*new, *avoid])
    model = None
    if pair is not None and tok is not None:
        def model(key):
            found = _masked_predictions(pair, tok, key, text, n=2 * n)
            return _boost_in_contexts(pair, tok, contexts_of(key, text, n=2), found) if found else {}
    return translations.translate(new, rows, targets, seed, n, model, boost_threshold)


def _masked_predictions(pair: ModelPair, tok, term: str, text: str, n: int) -> list[str]:
    """B's most likely next words where ``term`` is masked (its contexts end just
    before it), same capitalisation as the term, most probable first."""
    found: dict[str, float] = {}
    for ctx in contexts_of(term, text, n=2):
        with pair.base() as B:
            table = scoring.next_token_topk(B, tok, ctx, k=30)
        for token, p in zip(table["token"], table["prob"]):
            word = token.strip()
            if word.isalpha() and len(word) > 2 and word[0].isupper() == term[0].isupper():
                found[word] = found.get(word, 0.0) + p
    return [w for w, _ in sorted(found.items(), key=lambda kv: -kv[1])][:n]


def llm_propose(client, passages: Sequence[str], text: str | None = None, avoid: Iterable[str] = (),
                pair: ModelPair | None = None, tok=None) -> AnchorDict:
    """Ask an OpenAI-compatible model (``llm_client.LLMClient``) for entries, passage by
    passage, like the paper's GPT-4 step (``translations.llm_entries``). Keys must occur
    verbatim in their passage; each key is typed from ``text`` (default: the passages)
    and every translation then passes the same rules as the offline ones
    (``validate_translations``, against ``text`` and ``avoid``). What was rejected
    is in ``rejections(result)``."""
    out, rejected = translations.llm_entries(client, passages)
    text = text if text is not None else "\n\n".join(passages)
    if len(out):
        types = {k: row["type"] for k, row in _typed_rows(out.keys(), text).items()}
        for key in out.keys():
            out[key].note = types[key]
        targets = target_terms(text, extra=[*out.keys(), *avoid])
        out, bad = validate_translations(out, text, targets=targets, types=types, pair=pair, tok=tok,
                                         source="llm")
        rejected += bad.to_dict("records")
    out = apply_merge_rules(out)
    out.rejected = pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
    return out
