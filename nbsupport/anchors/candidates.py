"""Finding candidate anchored terms in a text (notebook 03, issue 15).

The paper asked GPT-4 for anchored terms passage by passage. Offline, we mine
them from the target text alone: ``candidate_terms`` finds capitalised spans
(proper nouns, with "of"/"the" and possessives inside, e.g. "Order of the
Phoenix", "Dumbledore's Army"), the parts of those spans, and rare lower-case
words. ``TextIndex`` finds a term's occurrences fast (the one term matcher's
matches), ``index_of`` keeps the last texts' indexes.
"""
from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd
from wordfreq import zipf_frequency

from .. import terms
from .vocabulary import CONNECTORS, TITLES, WORD, common


_SENTENCE_END = re.compile(r"[.!?:\n\"]\s*$")


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


def index_of(text: str, index: TextIndex | None = None) -> TextIndex:
    """The index of ``text`` (the last two texts' are kept: ranking, typing and
    translating one text all look terms up in it)."""
    if index is not None and index.text is text:
        return index
    if text not in _INDEXES:
        while len(_INDEXES) >= 2:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[text] = TextIndex(text)
    return _INDEXES[text]


def split_words(text: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, word, possessive) of every word; "Harry's" is "Harry" with possessive=True."""
    out = []
    for m in WORD.finditer(text):
        w, end, poss = m.group(0), m.end(), False
        if w.endswith("'s"):
            w, end, poss = w[:-2], end - 2, True
        out.append((m.start(), end, w.strip("'"), poss))
    return out


def starts_sentence(text: str, start: int) -> bool:
    """Does a sentence (or a line, a quote, a Q/A) start at ``start``?"""
    return start == 0 or _SENTENCE_END.search(text[max(0, start - 3):start]) is not None


def candidate_terms(text: str, min_count: int = 2, max_words: int = 4) -> pd.DataFrame:
    """Candidate anchored terms of ``text``: capitalised spans (proper nouns, with
    "of"/"the" and possessives inside, e.g. "Order of the Phoenix", "Dumbledore's
    Army") and their sub-spans, plus rare lower-case and hyphenated words.

    Returns columns ``term``, ``count`` (``terms.count``: whole-word, case-sensitive),
    ``kind`` ("proper noun" or "rare word"), sorted by count.
    """
    words = split_words(text)
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
        initial = starts_sentence(text, s)
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
    index = index_of(text)
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
