"""Exercises of notebook 04 (generic labels): ``token_mapping``, ``forbid_translations``."""
from __future__ import annotations

import random
from typing import Callable, NamedTuple, Sequence

import torch

from .. import generic_labels
from ..anchors import dictionary
from .harness import Report, diagnose, generator, same, short, solution_of

NAMES = ("token_mapping", "forbid_translations")


class AnchorSpan(NamedTuple):
    """One anchor occurrence in token positions (end positions are exclusive)."""
    start: int       # its first token in the original block
    end: int         # one past its last original token
    new_start: int   # the first token of its translation in the translated block
    new_end: int     # one past the translation's last token
    first: bool      # the key's first occurrence in the block (False: a repeat)


@solution_of("token_mapping")
def solution_token_mapping(original: Sequence[str], translated: Sequence[str],
                           anchors: Sequence[AnchorSpan]) -> list[int]:
    """``source[p]``: the translated position whose B-logits serve original position p, or -1.

    * outside every anchor: the same token in the translation, i.e. p shifted by the
      number of tokens the anchors before p added (or removed);
    * the LAST token of a first occurrence: the LAST token of its translation;
    * every other anchor token: -1 (not trained);
    * a repeated anchor (``first`` False): all its tokens, and the position just
      before it (which predicts its first token), -1.
    """
    anchors = sorted(anchors)
    source, shift, before = [-1] * len(original), 0, 0
    for p in range(len(original)):
        while before < len(anchors) and anchors[before].end <= p:   # anchors wholly before p
            a = anchors[before]
            shift += (a.new_end - a.new_start) - (a.end - a.start)
            before += 1
        inside = next((a for a in anchors if a.start <= p < a.end), None)
        if inside is None:
            source[p] = p + shift
        elif inside.first and p == inside.end - 1:
            source[p] = inside.new_end - 1
    for a in anchors:
        if not a.first:
            for p in range(max(a.start - 1, 0), a.end):
                source[p] = -1
    return source


# "Harry went to Hogwarts with Ron. Harry smiled." with Harry -> Jon, Hogwarts -> Mystic
# Academy (2 tokens -> 3), Ron -> Tom; the second Harry is a repeat. The expected source,
# by hand: 'Hog' is inside an anchor (-1), 'warts' (its last token) takes ' Academy' (5),
# the tokens after it shift by one, and the repeat and the '.' before it are untrained.
MAPPING_HAND = (
    ["Harry", " went", " to", " Hog", "warts", " with", " Ron", ".", " Harry", " smiled", "."],
    ["Jon", " went", " to", " Myst", "ic", " Academy", " with", " Tom", ".", " Jon", " smiled", "."],
    [AnchorSpan(0, 1, 0, 1, True), AnchorSpan(3, 5, 3, 6, True), AnchorSpan(6, 7, 7, 8, True),
     AnchorSpan(8, 9, 9, 10, False)],
    [0, 1, 2, -1, 5, 6, 7, -1, -1, 10, 11],
)

_MAPPING_RULES = {
    "outside": "outside every anchor a token maps to the same token in the translation: its position "
               "plus the number of tokens the anchors before it added (new length - old length)",
    "last": "the LAST token of an anchor maps to the LAST token of its translation (new_end - 1), so the "
            "model still learns what follows the term",
    "inside": "the other tokens of an anchor are not trained: -1",
    "repeat": "a repeated anchor (first=False) is not trained at all: -1 for every token of it",
    "before": "the position just before a repeated anchor predicts its first token: -1 as well",
}


def _mapping_kind(p: int, anchors: Sequence[AnchorSpan]) -> str:
    for a in anchors:
        if a.start <= p < a.end:
            return "repeat" if not a.first else ("last" if p == a.end - 1 else "inside")
    if any(not a.first and p == a.start - 1 for a in anchors):
        return "before"
    return "outside"


def random_mapping_case(rng: random.Random):
    """(original, translated, anchors, expected source) of random words and anchors; the
    expected source is written down while the case is built, where each token's place in
    the translation is known."""
    original, translated, anchors, source = [], [], [], []

    def same_word():
        word = f" w{len(original)}"
        source.append(len(translated))            # the same token in the translation
        original.append(word)
        translated.append(word)

    for k in range(rng.randint(1, 4)):
        for _ in range(rng.randint(0, 3)):
            same_word()
        n, m = rng.randint(1, 3), rng.randint(1, 3)
        first = k == 0 or rng.random() < 0.5
        anchors.append(AnchorSpan(len(original), len(original) + n, len(translated), len(translated) + m, first))
        if first:                                 # untrained but the last, which takes the translation's last
            source += [-1] * (n - 1) + [len(translated) + m - 1]
        else:                                     # untrained, and so is the token that predicts it
            if source:
                source[-1] = -1
            source += [-1] * n
        original += [f" A{k}.{j}" for j in range(n)]
        translated += [f" T{k}.{j}" for j in range(m)]
    for _ in range(rng.randint(0, 2)):
        same_word()
    return original, translated, anchors, source


def _anchor_spans(tok, alignment: generic_labels.Alignment) -> list[AnchorSpan]:
    """The token spans of ``align_block``'s anchors (tokens that overlap each anchor's text)."""
    def offsets(text):
        return tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    o, t = offsets(alignment.original_text), offsets(alignment.translated_text)
    spans = []
    for a in alignment.anchors:
        om = [i for i, (s, e) in enumerate(o) if s < a.end and e > a.start]
        tm = [j for j, (s, e) in enumerate(t) if s < a.new_end and e > a.new_start]
        spans.append(AnchorSpan(om[0], om[-1] + 1, tm[0], tm[-1] + 1, a.first))
    return spans


MAPPING_SENTENCES = (
    "Harry went to Hogwarts with Ron. Harry smiled at Ron's owl.",
    "At Hogwarts the match of Quidditch began, and Harry flew.",
    "Ron laughed. Hogwarts was quiet, and Ron slept until Quidditch practice.",
)
MAPPING_DICTIONARY = (("Harry", "Jon"), ("Ron", "Tom"), ("Hogwarts", "Mystic Academy"), ("Quidditch", "Skyball"))


def mapping_cases_from(tok) -> list[tuple[list[str], list[str], list[AnchorSpan], list[int]]]:
    """Cases made by ``generic_labels.align_block`` with this tokenizer:
    (original tokens, translated tokens, anchor spans, align_block's source)."""
    translator = dictionary.Translator(dictionary.AnchorDict(
        dictionary.Entry(k, [v]) for k, v in MAPPING_DICTIONARY))
    cases = []
    for sentence in MAPPING_SENTENCES:
        ids = tok(sentence, add_special_tokens=False)["input_ids"]
        a = generic_labels.align_block(ids, tok, translator)
        original = [tok.decode([i]) for i in a.original_ids]
        translated = [tok.decode([i]) for i in a.translated_ids]
        cases.append((original, translated, _anchor_spans(tok, a), list(a.source)))
    return cases


def rules_cover(original, translated, anchors) -> bool:
    """Whether the exercise's rules describe a tokenized case: anchors in order, apart,
    and the tokens between them the same in the original and the translation (a
    tokenizer may instead merge an anchor with its neighbour, e.g. "Tom's" in one token)."""
    end = AnchorSpan(len(original), len(original), len(translated), len(translated), True)
    o = t = 0
    for a in sorted(anchors) + [end]:
        if a.start < o or a.new_start < t or list(original[o:a.start]) != list(translated[t:a.new_start]):
            return False
        o, t = a.end, a.new_end
    return True


def _compare_mapping(r: Report, fn: Callable, original, translated, anchors, expected, case: str) -> str:
    got = r.call(fn, list(original), list(translated), list(anchors), case=case)
    try:
        got = [int(x) for x in got]
    except (TypeError, ValueError):
        return f"{case}: return a list of ints (one per original token), got {short(got)}"
    if len(got) != len(expected):
        return f"{case}: return one position per original token ({len(expected)}), got {len(got)}"
    wrong: dict[str, str] = {}            # the first wrong position of each rule
    for p, (e, g) in enumerate(zip(expected, got)):
        kind = _mapping_kind(p, anchors)
        if e != g and kind not in wrong:
            what = repr(translated[e]) if e >= 0 else "untrained"
            wrong[kind] = (f"position {p} ({original[p]!r}) should be {e} ({what}), got {g}. "
                           f"Rule: {_MAPPING_RULES[kind]}")
    return f"{case}: " + "\n  Also: ".join(wrong.values()) if wrong else ""


def check_token_mapping(fn: Callable, tok=None) -> bool:
    """Check ``fn(original, translated, anchors) -> source`` on a hand-made sentence and
    random token sequences; with ``tok`` also against ``generic_labels.align_block``."""
    with Report("token_mapping") as r:
        original, translated, anchors, expected = MAPPING_HAND
        problem = _compare_mapping(r, fn, original, translated, anchors, expected,
                                   "the sentence 'Harry went to Hogwarts with Ron. Harry smiled.'")
        if problem:
            r.fail(problem)
        else:
            r.ok("the hand-made sentence: shifts after 'Hogwarts', last -> last, the repeated 'Harry' untrained")
        got = r.call(fn, [" a", " b", " c"], [" a", " b", " c"], [], case="no anchors")
        r.expect(list(got) == [0, 1, 2], "no anchors: every token maps to itself",
                 f"with no anchors every token maps to itself, [0, 1, 2]; got {got!r}")
        rng = random.Random(4)
        failures = [p for p in (_compare_mapping(r, fn, *case, f"random case {i + 1} {case[2]}")
                                for i, case in enumerate(random_mapping_case(rng) for _ in range(20))) if p]
        r.cases(failures, "right on 20 random token sequences (anchors 1-3 tokens long, "
                          "translations shorter and longer, repeats)")
        if tok is not None:
            _mapping_on_tokenizer(r, fn, tok)
    return r.passed


def _mapping_on_tokenizer(r: Report, fn: Callable, tok) -> None:
    cases = [(c, s) for c, s in zip(mapping_cases_from(tok), MAPPING_SENTENCES) if rules_cover(*c[:3])]
    failures = [p for p in (_compare_mapping(r, fn, *c, f"align_block on {s!r}") for c, s in cases) if p]
    if failures:
        r.fail(failures[0])
    elif not cases:
        r.fail(f"none of the {len(MAPPING_SENTENCES)} sentences could be checked against "
               "generic_labels.align_block: this tokenizer merges every one's anchors with the tokens "
               "around them, where the rules above do not apply")
    else:
        r.ok(f"matches generic_labels.align_block on {len(cases)} sentences tokenized by your tokenizer")
        if len(cases) < len(MAPPING_SENTENCES):
            print(f"  note: {len(MAPPING_SENTENCES) - len(cases)} sentence(s) skipped: the tokenizer merges "
                  "an anchor with the tokens around it there")


@solution_of("forbid_translations")
def solution_forbid_translations(logits: torch.Tensor, forbidden: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
    """Set the logits of forbidden tokens to their row's mean, from a position on.

    ``logits`` [L, vocab] (row = position in the block); ``forbidden`` a list of
    (start, token ids): those ids are forbidden at positions >= start. Every row's
    mean is taken before anything is replaced. Returns a new [L, vocab] tensor."""
    out = logits.clone()
    mean = logits.mean(-1)                                             # [L]
    for start, ids in forbidden:
        for p in range(start, logits.shape[0]):
            for i in ids:
                out[p, i] = mean[p]
    return out


# Hand-made cases (logits, forbidden, expected), worked out from the row means.
FORBID_HAND = [
    # rows 0..4, 5..9, 10..14, 15..19 (means 2, 7, 12, 17); ids 0 and 3 from row 1 on
    ([[float(5 * row + i) for i in range(5)] for row in range(4)], [(1, [0, 3])],
     [[0, 1, 2, 3, 4], [7, 6, 7, 7, 9], [12, 11, 12, 12, 14], [17, 16, 17, 17, 19]]),
    # means 3 and 1, both taken before replacing; id 1 everywhere, ids 0 and 1 from row 1 on
    ([[0.0, 4.0, 8.0, 0.0], [4.0, 0.0, 0.0, 0.0]], [(0, [1]), (1, [0, 1])],
     [[0, 3, 8, 0], [1, 1, 0, 0]]),
]


def _forbid_variants(before: torch.Tensor, forbidden) -> dict[str, torch.Tensor]:
    """Known wrong answers, by hint."""
    variants = {}
    for hint, fill, rows in (
            ("set them to the row's MEAN logit, not -inf: the translation becomes neutral, "
             "not impossible.", lambda row: float("-inf"), "from"),
            ("set them to the row's MEAN logit, not 0.", lambda row: 0.0, "from"),
            ("the rule holds from the position `start` itself on (rows >= start).",
             lambda row: before[row].mean(), "after"),
            ("the rule holds only from `start` on: earlier positions are unchanged.",
             lambda row: before[row].mean(), "all"),
            ("use each row's own mean (mean over the vocabulary, dim=-1), not the mean of the "
             "whole tensor.", lambda row: before.mean(), "from")):
        v = before.clone()
        for start, ids in forbidden:
            lo = {"from": start, "after": start + 1, "all": 0}[rows]
            for p in range(lo, v.shape[0]):
                v[p, list(ids)] = fill(p)
        variants[hint] = v
    seq = before.clone()
    for start, ids in forbidden:
        seq[start:, list(ids)] = seq[start:].mean(-1, keepdim=True)
    variants["take every row's mean once, BEFORE replacing anything."] = seq
    return variants


def check_forbid_translations(fn: Callable) -> bool:
    """Check ``fn(logits [L, V], forbidden) -> [L, V]`` on hand-made logits and against
    ``generic_labels.combine`` (whose alpha = 0 with v_R = v_G applies the forbidden rule
    alone) on random ones."""
    with Report("forbid_translations") as r:
        g = generator(2)
        (hand, hand_forbidden, hand_expected), (two, two_forbidden, two_expected) = FORBID_HAND
        got = r.call(fn, torch.tensor(hand), hand_forbidden, case="the hand-made 4 x 5 logits")
        r.expect(same(got, hand_expected),
                 "hand-made: ' Jon' (ids 0 and 3) forbidden from position 1 on: those logits become the row mean",
                 f"logits {hand} with {hand_forbidden} should give {hand_expected}, got {short(got)}."
                 + diagnose(got, _forbid_variants(torch.tensor(hand), hand_forbidden)))
        got = r.call(fn, torch.tensor(two), two_forbidden, case="the hand-made 2 x 4 logits")
        r.expect(same(got, two_expected),
                 "hand-made: two forbidden translations sharing id 1 both use the row means taken before",
                 f"logits {two} with {two_forbidden} should give {two_expected} (row means 3 and 1), "
                 f"got {short(got)}." + diagnose(got, _forbid_variants(torch.tensor(two), two_forbidden)))
        cases = [
            (torch.randn(6, 10, generator=g), [(2, [3, 5])]),
            (torch.randn(6, 10, generator=g), [(2, [3, 5]), (4, [5, 7])]),
            (torch.randn(5, 8, generator=g), [(0, [1])]),
            (torch.randn(5, 8, generator=g), [(4, [0, 2, 6])]),
        ]
        failures, modified = [], False
        for i, (logits, forbidden) in enumerate(cases):
            before = logits.clone()
            got = r.call(fn, logits, forbidden, case=f"random case {i + 1}")
            modified |= not torch.equal(logits, before)
            expected = generic_labels.combine(before.clone(), before.clone(), 0.0, forbidden)
            if not same(got, expected):
                failures.append(f"random case {i + 1} (forbidden {forbidden}): expected {short(expected)}, "
                                f"got {short(got)}.{diagnose(got, _forbid_variants(before, forbidden))}")
        r.cases(failures, "matches generic_labels.combine on 4 random cases (overlapping and repeated forbidden ids)")
        r.expect(not modified, "the input logits are left unchanged",
                 "your function changed the logits it was given: clone them first (the same logits "
                 "serve several alphas)")
        logits = torch.randn(3, 6, generator=g)
        got = r.call(fn, logits.clone(), [], case="nothing forbidden")
        ok_empty = same(got, logits)
        got = r.call(fn, logits.clone(), [(7, [1, 2])], case="a start after the last row")
        r.expect(ok_empty and same(got, logits), "edge cases: nothing forbidden, or forbidden only after the block",
                 "with nothing forbidden (or a start beyond the last position) the logits come back unchanged")
    return r.passed
