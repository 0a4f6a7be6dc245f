"""Exercises of notebook 03 (anchored terms): ``anchor_quiz``, ``merge_rules``, ``replace_terms``.

The expected answers are written here; the tests check that the course's own
``dictionary.translate`` and ``dictionary.apply_merge_rules`` give the same."""
from __future__ import annotations

import re
from typing import Callable, Sequence

from .harness import Report, register, solution_of

NAMES = ("anchor_quiz", "merge_rules", "replace_terms")

_QUIZ = {  # in the order shown to the learner
    "Hogwarts": (True, "a place that exists only in the books; 'Mystic Academy' keeps the sentence coherent"),
    "wand": (False, "an ordinary English word that any fairy tale uses: translating it would make the "
                    "text strange and teach nothing; the reinforcement difference handles its HP-typical uses"),
    "Hermione": (True, "a character name: what the model knows about her is what we want gone"),
    "London": (False, "a real place every model should keep knowing: an anchor would make it forget geography"),
    "Dumbledore": (True, "a character name: a stand-in ('Whitmore') keeps the sentence and removes the person"),
    "Quidditch": (True, "a sport invented by the books; 'Skyball' keeps the story readable"),
    "castle": (False, "a generic word; swapping it changes the story without removing anything specific"),
    "Muggle": (True, "looks like an ordinary word, but the books coined it"),
    "Monday": (False, "an ordinary word of every story: translating it would teach the model to forget "
                      "the days of the week, not Harry Potter"),
    "Expelliarmus": (True, "a spell of the books: its very form is target knowledge"),
}
ANCHOR_QUIZ = list(_QUIZ)
register("anchor_quiz", {term: answer for term, (answer, _) in _QUIZ.items()})


def check_anchor_quiz(answers: dict) -> bool:
    """Check ``{term: True/False}`` for every term of ``ANCHOR_QUIZ``: should it be a
    key of the anchored-terms dictionary? Each wrong answer is explained."""
    with Report("anchor_quiz") as r:
        if not isinstance(answers, dict):
            r.fail("answer with a dict {term: True or False}")
            return r.passed
        missing = [t for t in ANCHOR_QUIZ if not isinstance(answers.get(t), bool)]
        if missing:
            r.fail(f"answer True or False for every term; missing or not a bool: {missing}")
            return r.passed
        for term, (right, why) in _QUIZ.items():
            verdict = "an anchor" if right else "not an anchor"
            r.expect(answers[term] == right, f"{term!r}: {verdict}",
                     f"{term!r} is {verdict}: {why}")
        if r.passed:
            print("  The rule of thumb: anchor what is idiosyncratic to the target (names, places, spells, "
                  "coined words) and has a generic stand-in; leave ordinary words and the real world alone.")
    return r.passed


@solution_of("replace_terms")
def solution_replace_terms(text: str, mapping: dict[str, str]) -> str:
    """Replace every key of ``mapping`` in ``text`` by its translation: whole words,
    longest match first, in one pass (a translation is never translated again)."""
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, keys)) + r")(?!\w)")
    return pattern.sub(lambda m: mapping[m.group(0)], text)


# (mapping, text, the expected text, the hint when it comes out otherwise)
REPLACE_CASES = [
    ({"Harry": "Jon", "Harry Potter": "Jon Smith"}, "Harry Potter waved at Harry.", "Jon Smith waved at Jon.",
     "longest match first: 'Harry Potter' must win over 'Harry' (sort the keys by length, longest first)."),
    ({"Ron": "Tom"}, "Ron met Ronald near the iron gate; Ron's owl hooted.",
     "Tom met Ronald near the iron gate; Tom's owl hooted.",
     "whole words only: 'Ron' must not change 'Ronald' or 'iron', but does change \"Ron's\" "
     r"(match with (?<!\w) and (?!\w) around the key, or \b)."),
    ({"Ron": "Tom", "Tom": "Ned"}, "Ron waved to Tom.", "Tom waved to Ned.",
     "replace in ONE pass: a translation ('Tom') must not be translated again."),
    ({"Mr. Weasley": "Mr. Brown"}, "Mrs Weasley and Mr. Weasley arrived.", "Mrs Weasley and Mr. Brown arrived.",
     "escape the keys (re.escape): the '.' in 'Mr.' is a full stop, not 'any character'."),
    ({"Hogwarts": "Mystic Academy", "Quidditch": "Skyball"}, "Hogwarts-bound students played Quidditch.",
     "Mystic Academy-bound students played Skyball.",
     "a hyphen or a full stop ends a word: 'Hogwarts-bound' contains the key 'Hogwarts'."),
    ({"Hogwarts": "Mystic Academy"}, "No anchored term here.", "No anchored term here.",
     "a text without keys stays as it is."),
    ({}, "Harry and Ron.", "Harry and Ron.", "an empty dictionary changes nothing."),
]


def check_replace_terms(fn: Callable) -> bool:
    """Check ``fn(text, mapping) -> text`` on hand-made sentences whose expected texts are
    those of ``dictionary.translate`` (with one translation per key, so there is no
    random choice)."""
    with Report("replace_terms") as r:
        failures = []
        for mapping, text, expected, hint in REPLACE_CASES:
            got = r.call(fn, text, dict(mapping), case=f"{text!r} with {mapping}")
            if got != expected:
                failures.append(f"{text!r} with {mapping} should become {expected!r}, got {got!r}. Hint: {hint}")
        for f in failures:
            r.fail(f)
        if not failures:
            r.ok(f"replaces as dictionary.translate does on {len(REPLACE_CASES)} sentences (longest match, "
                 "whole words, one pass, possessives, punctuation)")
    return r.passed


@solution_of("merge_rules")
def solution_merge_rules(keys: Sequence[str]) -> list[str]:
    """The paper's merge rules, order kept: drop "X's" when "X" is a key; drop a
    multi-word key all of whose words are keys."""
    present = set(keys)
    out = []
    for key in keys:
        if key.endswith("'s") and key[:-2] in present:
            continue
        if " " in key and all(w in present for w in key.split()):
            continue
        out.append(key)
    return out


# (keys, the keys kept, the hint when it comes out otherwise)
MERGE_CASES = [
    (["Harry", "Harry's", "Potter", "Harry Potter", "Sirius", "Sirius Black"],
     ["Harry", "Potter", "Sirius", "Sirius Black"],
     "drop \"X's\" when X is a key, and a multi-word key only when ALL its words are keys "
     "('Black' is not a key, so 'Sirius Black' stays)."),
    (["Hermione's", "Ron", "Ron's"], ["Hermione's", "Ron"],
     "keep \"X's\" when X is NOT a key ('Hermione' is not one here)."),
    (["Dark Lord", "Dark", "Lord"], ["Dark", "Lord"],
     "a multi-word key goes even when it comes before its words in the list."),
    (["Godric's Hollow", "Godric"], ["Godric's Hollow", "Godric"],
     "\"Godric's Hollow\" does not END with 's, and its words (\"Godric's\", 'Hollow') are not keys: keep it."),
    ([], [], "no keys, nothing to drop."),
]


def check_merge_rules(fn: Callable) -> bool:
    """Check ``fn(keys) -> kept keys`` on hand-made key lists whose expected keys are
    those ``dictionary.apply_merge_rules`` keeps."""
    with Report("merge_rules") as r:
        failures = []
        for keys, expected, hint in MERGE_CASES:
            got = r.call(fn, list(keys), case=f"keys {keys}")
            got_list = list(got) if isinstance(got, (list, tuple)) else got
            if got_list != expected:
                extra = " (the right keys, but keep their order)" if (
                    isinstance(got_list, list) and sorted(got_list) == sorted(expected)) else ""
                failures.append(f"{keys} should keep {expected}, got {got!r}{extra}. Hint: {hint}")
        for f in failures:
            r.fail(f)
        if not failures:
            r.ok(f"keeps the keys dictionary.apply_merge_rules keeps on {len(MERGE_CASES)} key lists")
    return r.passed
