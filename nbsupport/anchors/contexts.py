"""What surrounds a term's occurrences in the text (notebook 03): per occurrence
the words before and after, titles, names nearby, what the text says the term is,
pronouns (``occurrences``); per term its uses at sentence starts, alone, inside a
longer name, in lower case, after "the" (``term_features``); and the stretches of
text before it (``contexts_of``), where the models are asked about it.
"""
from __future__ import annotations

import bisect
import re

import pandas as pd

from .. import terms
from ..terms import FUNCTION_WORDS
from .candidates import TextIndex, index_of, starts_sentence
from .cues import ALL_HEADS, ARTICLES, CUES, KIND_NOUNS, PRONOUNS
from .vocabulary import TITLES, WORD, common


_DEFINITION = re.compile(
    r"(?:'s)?(?P<how>:\s+|,\s+|\s+(?:is|was|are|were)\s+(?:\w+ly\s+)?)"
    r"(?P<det>(?:a|an|the|one of the|[A-Z][\w\-]*'s)\s+)?"
    r"(?P<np>[\w\-]+(?:\s+[\w\-]+){0,2})(?P<end>[,.;:)]|\s+(?:who|whom|whose|that|which|where)\b)?")


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
    initial = starts_sentence(text, s)
    left = _LEFT_WORD.search(left_text) if left_text.endswith(" ") else None
    left_word = left.group(1) if left else ""
    title = left_word if left_word in TITLES else ""
    left_name = bool(left_word and left_word[0].isupper() and not title
                     and not (starts_sentence(text, s - len(left.group(0))) and common(left_word)))
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
            "kind_after": bool(len(cased) > 1 and cased[0].lower() in ARTICLES
                               and cased[1].lower() in CUES["creature"]["kind"]
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
    ``KIND_NOUNS`` within three words; a noun phrase followed by "who" is a person."""
    m = _DEFINITION.match(text, e)
    if not m or m.group("det") is None and not m.group("how").startswith(":"):
        return ""
    words = m.group("np").split()
    end = m.group("end") or ""
    rel = next((i for i, w in enumerate(words) if w in ("who", "whom", "whose", "that", "which", "where")), None)
    if rel is not None:
        words, end = words[:rel], words[rel]
    for i, w in enumerate(words):
        for kind, nouns in KIND_NOUNS.items():
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
    if i < len(cased) and cased[i][0].isupper() and cased[i].lower() not in ALL_HEADS:
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
        if w[0].isupper() and w.lower() not in PRONOUNS and not starts_sentence(text, m.start()):
            weight = 0.3
        if w.lower() in PRONOUNS:
            out.append((w.lower(), weight))
    return out


def occurrences(term: str, text: str, index: TextIndex | None = None, limit: int = 80,
                longer: tuple | None = None) -> list[dict]:
    """The contexts of up to ``limit`` occurrences of ``term`` (``_occurrence``),
    spread over the text. With ``longer`` (``longer_spans``), only occurrences
    that are not part of a longer candidate ("Harry" in "the Harry Potter series"
    is the series' context, not Harry's), unless fewer than three are."""
    found = index_of(text, index).spans(term)
    if longer is not None:
        own = [(s, e) for s, e in found if not _inside(s, e, *longer)]
        found = own if len(own) >= 3 else found
    step = max(1, len(found) // limit)
    return [_occurrence(text, s, e) for s, e in found[::step][:limit]]


def is_coordination(term: str) -> bool:
    """"Fred and George", "Lily and James Potter": two names side by side, not one
    name that holds them ("School of Witchcraft and Wizardry" is one name)."""
    x, _, y = term.partition(" and ")
    return bool(x and y) and " of " not in term and x[:1].isupper() and y[:1].isupper() \
        and len(x.split()) <= 2 and len(y.split()) <= 2


def longer_spans(table: pd.DataFrame, index: TextIndex) -> tuple[list[int], list[tuple[int, int]]]:
    """Every occurrence of a multi-word candidate, sorted: (starts, spans)."""
    spans = sorted(sp for t in table["term"] if " " in t and not is_coordination(t) for sp in index.spans(t))
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
    index = index_of(text, index)
    out = table.copy()
    starts, spans = longer_spans(out, index)
    rows = []
    for term in out["term"]:
        found = index.spans(term)
        n = max(1, len(found))
        initial = [starts_sentence(text, s) for s, _ in found]
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
