"""The one term matcher: does a text mention a term, where, and how often?

Every place of the course that asks this question (probing completions, the
judge, the anchor dictionary, term mining) uses these functions, so notebook 01
and notebook 06 count the same things. The rules:

* whole words only: "Ron" does not match "Ronald" or "iron", but does match
  "Ron's" (a possessive) and "Ron," (punctuation);
* a term of several words matches across any whitespace, a line break included
  ("dark\\nlord");
* a regular English plural counts ("wizards", "witches", "the Weasleys"), with
  "es" only where English adds it, so "scar" does not match "scares";
* case is ignored unless ``ignore_case=False`` (proper-noun counting in term
  mining is case-sensitive: "Potter" the name, not "potter" the craftsman).

``FUNCTION_WORDS`` are the words no term is made of alone: never a candidate
anchored term nor a translation (notebook 03), and never a piece of a name
among the anchor tokens of generic labels (notebook 04).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

BEFORE = r"(?<!\w)"   # a term starts where no word character precedes it
AFTER = r"(?!\w)"     # and ends where none follows

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


@lru_cache(maxsize=8192)
def pattern(term: str, ignore_case: bool = True, plural: bool = True) -> re.Pattern:
    """The compiled matcher for ``term`` (see the module docstring for the rules)."""
    if not isinstance(term, str) or not term.strip():
        raise ValueError(f"a term must be a non-empty string, got {term!r}")
    words = r"\s+".join(re.escape(w) for w in term.split())
    suffix = ""
    if plural and term[-1:].isalpha():
        suffix = "(?:es)?" if re.search(r"(s|x|z|ch|sh)$", term, re.I) else "s?"
    return re.compile(BEFORE + words + suffix + AFTER, re.IGNORECASE if ignore_case else 0)


def mentions(text: str, term: str, ignore_case: bool = True) -> bool:
    return pattern(term, ignore_case).search(text) is not None


def count(term: str, text: str, ignore_case: bool = False, plural: bool = False) -> int:
    """Occurrences of ``term`` in ``text`` (case-sensitive and exact by default,
    as term mining counts proper nouns)."""
    return sum(1 for _ in pattern(term, ignore_case, plural).finditer(text))


def spans(term: str, text: str, ignore_case: bool = False, plural: bool = False) -> list[tuple[int, int]]:
    """(start, end) of every occurrence, left to right."""
    return [m.span() for m in pattern(term, ignore_case, plural).finditer(text)]


def found(terms: Iterable[str], text: str) -> list[str]:
    """The distinct terms that occur in ``text``, in the order given (empty terms skipped)."""
    return [t for t in dict.fromkeys(t for t in terms if t and t.strip()) if mentions(text, t)]


def added(prompt: str, completion: str, terms: Iterable[str]) -> tuple[list[str], list[str]]:
    """(terms the completion adds, terms it only repeats from the prompt)."""
    in_completion = found(terms, completion)
    in_prompt = set(found(in_completion, prompt))
    return ([t for t in in_completion if t not in in_prompt],
            [t for t in in_completion if t in in_prompt])
