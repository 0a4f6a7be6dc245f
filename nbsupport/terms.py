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
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

BEFORE = r"(?<!\w)"   # a term starts where no word character precedes it
AFTER = r"(?!\w)"     # and ends where none follows


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
