"""Exercises of notebooks 01-06: a check for each, and its reference solution.

Each exercise has a ``check_<name>(answer)``: it runs your function on hand-made,
random (seeded) and edge cases, compares it with the course's own code, prints
one line per check (✓ passed, ✗ failed with a hint) and returns True or False.
It never raises because an answer is wrong; only when your function itself
crashes, so that the traceback shows where.

The reference solutions are here too: ``solution("generic_logits")``. In batch runs
the notebooks fill them in (``fill_solutions``), so the series runs end to end.

=========  ======================================================================
notebook   exercises (``solution(name)`` / ``check_<name>``)
=========  ======================================================================
01         ``continuation_logprob``, ``probe``
02         ``generic_logits``, ``alpha_puzzle``
03         ``anchor_quiz``, ``merge_rules``, ``replace_terms``
04         ``token_mapping``, ``forbid_translations``
05         ``soft_cross_entropy``, ``kl_retain``
06         ``relative_change``, ``judge``
=========  ======================================================================
"""
from __future__ import annotations

import math
import random
import re
from typing import Any, Callable, NamedTuple, Sequence

import torch

from . import dictionary, evaluate, generic_labels, pair, probe, scoring, terms

EXERCISES = {
    "01": ("continuation_logprob", "probe"),
    "02": ("generic_logits", "alpha_puzzle"),
    "03": ("anchor_quiz", "merge_rules", "replace_terms"),
    "04": ("token_mapping", "forbid_translations"),
    "05": ("soft_cross_entropy", "kl_retain"),
    "06": ("relative_change", "judge"),
}

_SOLUTIONS: dict[str, Any] = {}


def _solution(name: str):
    def register(obj):
        _SOLUTIONS[name] = obj
        return obj
    return register


def solution(name: str) -> Any:
    """The reference solution of exercise ``name`` (a function, or the answer itself
    for the quizzes ``alpha_puzzle``, ``anchor_quiz`` and ``probe``)."""
    if name not in _SOLUTIONS:
        raise KeyError(f"no exercise named {name!r}; choose one of {', '.join(sorted(_SOLUTIONS))}")
    value = _SOLUTIONS[name]
    return dict(value) if isinstance(value, dict) else value


def fill_solutions(solutions: bool | None, interactive: bool) -> bool:
    """Whether a notebook should use the reference solutions: ``SOLUTIONS`` when it
    is set, else in batch runs only (``INTERACTIVE = False``), where no learner types."""
    return (not interactive) if solutions is None else bool(solutions)


# ----------------------------------------------------------------- reporting
class _NotImplementedYet(Exception):
    pass


class _Report:
    """Prints one line per check; ``with _Report() as r:`` ends with a summary and
    turns a NotImplementedError of the learner's stub into a plain message."""

    def __init__(self):
        self.passed = True

    def ok(self, message: str) -> None:
        print(f"✓ {message}")

    def fail(self, message: str) -> None:
        self.passed = False
        print(f"✗ {message}")

    def cases(self, failures: list[str], good: str) -> None:
        """The first failed case (the one to fix first), or ``good`` when none failed."""
        if failures:
            self.fail(failures[0])
        else:
            self.ok(good)

    def expect(self, condition: bool, good: str, bad: str) -> bool:
        (self.ok if condition else self.fail)(good if condition else bad)
        return bool(condition)

    def call(self, fn: Callable, *args, case: str = "a case"):
        try:
            return fn(*args)
        except NotImplementedError:
            raise _NotImplementedYet from None
        except Exception:
            self.passed = False
            print(f"✗ your function raised an error on {case} (the traceback is below)")
            raise

    def __enter__(self) -> "_Report":
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is _NotImplementedYet:
            self.passed = False
            print("✗ not implemented yet: write your code in the cell above (replace the "
                  "`raise NotImplementedError`), run it, then run this cell again")
            return True
        if kind is None:
            print("All checks passed." if self.passed else "Some checks failed: read the ✗ lines above.")
        return False


def _tensor(x) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(x)).detach().float().cpu()


def _same(got, expected, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    try:
        got, expected = _tensor(got), _tensor(expected)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == expected.shape and torch.allclose(got, expected, atol=atol, rtol=rtol)


def _diagnose(got, variants: dict[str, Any], same=_same) -> str:
    """The hint of the first known wrong answer ``got`` equals, or ''."""
    for hint, value in variants.items():
        try:
            if same(got, value):
                return " Hint: " + hint
        except Exception:  # a variant that does not apply to this case
            continue
    return ""


def _short(x, n: int = 6) -> str:
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        return f"{x.item():.5g}"
    if isinstance(x, torch.Tensor):
        flat = x.detach().float().flatten()
        body = ", ".join(f"{v:.3f}" for v in flat[:n].tolist())
        return f"tensor of shape {tuple(x.shape)} [{body}{', ...' if flat.numel() > n else ''}]"
    return repr(x)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# =================================================================== 01 what does the model know
@_solution("continuation_logprob")
def solution_continuation_logprob(logits: torch.Tensor, ids, start: int) -> torch.Tensor:
    """log P(ids[start:] | ids[:start]) from the logits of one sequence.

    ``logits`` [L, vocab]: row t is the model's prediction of token t+1;
    ``ids`` [L] the token ids; ``start`` (1 <= start < L) the first continuation
    token. The probability of several tokens is the product of each token's
    probability given everything before it, so its log is a sum. Returns a 0-dim tensor.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)                  # [L, vocab]
    ids = torch.as_tensor(ids)
    t = torch.arange(start, len(ids))
    return logp[t - 1, ids[t]].sum()


def check_continuation_logprob(fn: Callable, model=None, tok=None) -> bool:
    """Check ``fn(logits [L, V], ids [L], start) -> log P(continuation)`` on random
    logits; with ``model`` and ``tok`` also against ``scoring.continuation_logprobs``."""
    ref = solution_continuation_logprob
    with _Report() as r:
        g = _generator(0)
        zeros = torch.zeros(4, 10)
        got = r.call(fn, zeros, torch.tensor([3, 1, 4, 1]), 2, case="uniform logits")
        r.expect(_same(got, 2 * math.log(0.1)),
                 "uniform logits over 10 tokens: two continuation tokens give log(0.1) * 2",
                 f"with uniform logits over 10 tokens each token has probability 0.1, so two tokens give "
                 f"log(0.1 * 0.1) = {2 * math.log(0.1):.4f}; got {_short(got)}")
        failures = []
        for i, (L, V, start) in enumerate([(5, 7, 1), (8, 13, 4), (6, 9, 5), (7, 11, 3), (9, 5, 2)]):
            logits = torch.randn(L, V, generator=g) * 3
            ids = torch.randint(0, V, (L,), generator=g)
            got = r.call(fn, logits.clone(), ids.clone(), start, case=f"random case {i + 1}")
            expected = ref(logits, ids, start)
            if not _same(got, expected):
                t = torch.arange(start, L)
                logp = torch.log_softmax(logits, -1)
                hint = _diagnose(got, {
                    "row t of the logits predicts token t+1, so token t is scored with logits[t - 1].":
                        logp[t, ids[t]].sum(),
                    "take log_softmax of the logits first: raw logits are not log-probabilities.":
                        logits[t - 1, ids[t]].sum(),
                    "return the log-probability (a sum of logs), not the probability.": expected.exp(),
                    "a word's probability is the PRODUCT of its tokens' probabilities: sum the logs, "
                    "do not average them.": expected / len(t),
                    "add the log-probabilities of EVERY continuation token, not only the first.":
                        logp[start - 1, ids[start]],
                })
                failures.append(f"random case {i + 1} (L={L}, start={start}): expected {expected.item():.4f}, "
                                f"got {_short(got)}.{hint}")
        r.cases(failures, "matches the reference on 5 random sequences (one-token and several-token continuations)")
        if model is not None and tok is not None:
            _continuation_on_model(r, fn, model, tok)
    return r.passed


@torch.no_grad()
def _continuation_on_model(r: _Report, fn: Callable, model, tok) -> None:
    pairs = [("Harry Potter's best friends are Ron Weasley and", " Hermione Granger"),
             ("The capital of France is", " Paris")]
    expected = scoring.continuation_logprobs(model, tok, pairs)
    device = scoring.device_of(model)
    with scoring.eval_mode(model):
        for (prompt, cont), exp in zip(pairs, expected.tolist()):
            ids, start = scoring.split_joint(tok, prompt, cont)
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()
            got = r.call(fn, logits, torch.tensor(ids), start, case=f"the model on {prompt!r}")
            pieces = " x ".join(
                f"P({tok.decode([ids[t]])!r})={math.exp(torch.log_softmax(logits[t - 1], -1)[ids[t]].item()):.3f}"
                for t in range(start, len(ids)))
            r.expect(_same(got, exp, atol=1e-3, rtol=1e-3),
                     f"on the model: P({cont!r} | {prompt!r}) = {math.exp(exp):.4f} = {pieces}, "
                     "as scoring.continuation_logprobs computes",
                     f"on the model, log P({cont!r} | {prompt!r}) should be {exp:.4f} "
                     f"(scoring.continuation_logprobs), got {_short(got)}")


_SOLUTIONS["probe"] = probe.TokenProbe(
    id="my-probe", prompt="Harry Potter and his best friend Ron",
    target=(" Weasley",), generic=(" Smith", " Johnson", " Brown"), category="people")


def check_probe(p, model=None, tok=None) -> bool:
    """Check a ``probe.TokenProbe`` you wrote: a prompt that ends at a word, continuations
    that start with a space, target and generic continuations disjoint, the target not
    given away by the prompt, generic continuations free of Harry Potter names; with
    ``model`` and ``tok`` it is also scored."""
    with _Report() as r:
        fields = ("id", "prompt", "target", "generic")
        if p is None:
            raise _NotImplementedYet
        if not all(hasattr(p, f) for f in fields):
            r.fail("make a probe.TokenProbe(id=..., prompt=..., target=(...), generic=(...)); "
                   f"got {type(p).__name__}")
            return r.passed
        prompt, target, generic = p.prompt, tuple(p.target), tuple(p.generic)
        if not isinstance(prompt, str) or not prompt.strip():
            r.fail("the prompt is empty")
            return r.passed
        if isinstance(p.target, str) or isinstance(p.generic, str):
            r.fail('target and generic are tuples of continuations, e.g. target=(" Hedwig",): a bare '
                   "string would be read letter by letter")
            return r.passed
        r.expect(bool(target) and bool(generic), "target and generic continuations given",
                 "give at least one target and one generic continuation")
        r.expect(prompt == prompt.rstrip(), "the prompt ends at a word (no trailing space)",
                 f"the prompt {prompt!r} ends with whitespace: end it at a word and put the space at "
                 "the start of each continuation, as the model writes it (' Hedwig' is one token, "
                 "' ' + 'Hedwig' would not be)")
        bad = [c for c in target + generic if not isinstance(c, str) or not re.match(r" \S", c)]
        r.expect(not bad, "every continuation starts with one space and then a word",
                 f"continuations must start with a single space, then the word: fix {bad}")
        shared = {c.strip() for c in target} & {c.strip() for c in generic}
        r.expect(not shared, "target and generic continuations are disjoint",
                 f"{sorted(shared)} is both target and generic: a continuation is one or the other")
        given = [c for c in target if isinstance(c, str) and c.strip() and terms.mentions(prompt, c.strip())]
        r.expect(not given, "the prompt does not give the target away",
                 f"the prompt already contains {given}: the probe would measure copying, not knowledge")
        keys = dictionary.builtin_dictionary().keys()
        hp = [c for c in generic if isinstance(c, str) and c.strip() and terms.found(keys, c)]
        r.expect(not hp, "generic continuations hold no Harry Potter name",
                 f"generic continuations {hp} contain Harry Potter terms (keys of the built-in "
                 "dictionary): generic means what a model that never read the books would say")
        if r.passed and model is not None and tok is not None:
            try:
                table = probe.token_familiarity(model, tok, [p], progress=False)
            except ValueError as err:  # scoring.split_joint: the prompt merges into the continuation
                r.fail(f"the model cannot score it: {err}")
                return r.passed
            row = table.iloc[0]
            r.ok(f"scored: P(target) = {row.p_target:.4f}, P(generic) = {row.p_generic:.4f}")
            if row.p_target + row.p_generic < 0.01:
                print("  note: the model finds none of your continuations likely; a prompt that "
                      "constrains the next word more makes a sharper probe")
    return r.passed


# =================================================================== 02 reinforcement
@_solution("generic_logits")
def solution_generic_logits(v_b: torch.Tensor, v_r: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_B - alpha * ReLU(v_R - v_B), elementwise; shapes [..., vocab] in and out.

    Only the logits that reinforcement raised (v_R > v_B) are pushed down."""
    return v_b - alpha * torch.relu(v_r - v_b)


def check_generic_logits(fn: Callable) -> bool:
    """Check ``fn(v_b, v_r, alpha)`` against ``pair.generic_logits``."""
    ref = pair.generic_logits
    with _Report() as r:
        g = _generator(1)
        shapes_ok = True
        for shape in [(7,), (3, 11), (2, 4, 5)]:
            v_b, v_r = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
            got = r.call(fn, v_b.clone(), v_r.clone(), 2.0, case=f"shape {shape}")
            if not isinstance(got, torch.Tensor) or got.shape != v_b.shape:
                shapes_ok = False
                r.fail(f"inputs of shape {shape} should give a tensor of the same shape, got {_short(got)}")
                break
        if shapes_ok:
            r.ok("shapes: [vocab], [positions, vocab] and [batch, positions, vocab] are kept")
        v_b, v_r = torch.randn(9, generator=g), torch.randn(9, generator=g)
        got = r.call(fn, v_b.clone(), v_r.clone(), 0.0, case="alpha = 0")
        r.expect(_same(got, v_b), "alpha = 0 gives v_B back",
                 f"alpha = 0 should give v_B back ({_short(v_b)}), got {_short(got)}")
        lower = v_b - torch.rand(9, generator=g) - 0.1
        got = r.call(fn, v_b.clone(), lower.clone(), 5.0, case="v_R below v_B everywhere")
        r.expect(_same(got, v_b), "tokens that reinforcement lowered are left alone (the ReLU)",
                 f"where v_R < v_B everywhere nothing was raised, so the result is v_B; got {_short(got)}."
                 + _diagnose(got, {"clip the difference with ReLU: only tokens R raised are pushed down.":
                                   v_b - 5.0 * (lower - v_b)}))
        failures = []
        for i in range(5):
            v_b, v_r = torch.randn(4, 13, generator=g) * 2, torch.randn(4, 13, generator=g) * 2
            alpha = [0.5, 1.0, 2.5, 5.0, 10.0][i]
            got = r.call(fn, v_b.clone(), v_r.clone(), alpha, case=f"random case {i + 1}")
            expected = ref(v_b, v_r, alpha)
            if not _same(got, expected):
                hint = _diagnose(got, {
                    "clip the difference with ReLU: only tokens R raised are pushed down.":
                        v_b - alpha * (v_r - v_b),
                    "alpha multiplies the difference ReLU(v_R - v_B), not v_R.":
                        v_b - torch.relu(alpha * v_r - v_b),
                    "start from v_B, the baseline, not from v_R.": v_r - alpha * torch.relu(v_r - v_b),
                    "subtract: tokens reinforcement raised are pushed DOWN.": v_b + alpha * torch.relu(v_r - v_b),
                    "the difference is v_R - v_B (what reinforcement added), not v_B - v_R.":
                        v_b - alpha * torch.relu(v_b - v_r),
                })
                failures.append(f"random case {i + 1} (alpha={alpha:g}): expected {_short(expected)}, "
                                f"got {_short(got)}.{hint}")
        r.cases(failures, "matches pair.generic_logits on 5 random cases (alpha 0.5 to 10)")
    return r.passed


ALPHA_PUZZLE = {
    "tokens": [" Hermione", " Ginny", " her", " the"],
    "v_b": [4.0, 2.0, 3.0, 1.0],
    "v_r": [5.0, 3.5, 3.0, 0.5],
    "v_b_sure": [9.0, 2.0, 3.0, 1.0],
    "v_r_sure": [9.5, 3.5, 3.0, 0.5],
}
_SOLUTIONS["alpha_puzzle"] = {"alpha": 1.0, "token": " her", "token_sure": " Hermione"}


def check_alpha_puzzle(answer: dict) -> bool:
    """Check your predictions for ``ALPHA_PUZZLE``: ``{"alpha": the alpha at which
    " Hermione" stops being the generic top, "token": the token on top just above
    it, "token_sure": the top at alpha = 5 when B is already sure}``; then show the
    generic logits for a few alphas."""
    with _Report() as r:
        if not isinstance(answer, dict) or any(answer.get(k) is None for k in ("alpha", "token", "token_sure")):
            r.fail('fill in all three answers: {"alpha": ..., "token": ..., "token_sure": ...}')
            return r.passed
        tokens = ALPHA_PUZZLE["tokens"]
        norm = lambda s: str(s).strip().lower()  # noqa: E731
        try:
            alpha = float(answer["alpha"])
        except (TypeError, ValueError):
            alpha = float("nan")
        r.expect(abs(alpha - 1.0) < 1e-6,
                 "alpha = 1: there ' Hermione' (4 - 1 x alpha) meets ' her' (3, which R did not raise)",
                 f"alpha should be 1, got {answer['alpha']!r}. ' Hermione' falls as 4 - alpha x ReLU(5 - 4) "
                 "= 4 - alpha; ' Ginny' falls faster (2 - 1.5 alpha); ' her' stays at 3 (R did not raise it). "
                 "4 - alpha = 3 at alpha = 1")
        r.expect(norm(answer["token"]) == "her",
                 "' her' takes over: the top becomes a token reinforcement did not raise",
                 f"above alpha = 1 the top is ' her', got {answer['token']!r}. "
                 + ("' Ginny' was raised even more than ' Hermione' (by 1.5), so it sinks faster."
                    if norm(answer["token"]) == "ginny" else
                    "' the' was LOWERED by R: the ReLU leaves it at 1, below ' her' (3)."
                    if norm(answer["token"]) == "the" else ""))
        r.expect(norm(answer["token_sure"]) == "hermione",
                 "when B is already sure, ' Hermione' stays on top at alpha = 5 (9 - 5 x 0.5 = 6.5 > 3): "
                 "the paper's failure mode, which anchored terms fix",
                 f"at alpha = 5 the top is still ' Hermione', got {answer['token_sure']!r}: B is so sure "
                 "(9) that R raised it by only 0.5, so it needs alpha > 12 to fall below ' her'. "
                 "That is the paper's failure mode, which anchored terms (notebook 03) fix")
        for name, vb, vr in (("B unsure", "v_b", "v_r"), ("B sure", "v_b_sure", "v_r_sure")):
            v_b, v_r = torch.tensor(ALPHA_PUZZLE[vb]), torch.tensor(ALPHA_PUZZLE[vr])
            print(f"  {name}: v_B = {ALPHA_PUZZLE[vb]}, v_R = {ALPHA_PUZZLE[vr]}")
            for a in (0.0, 0.5, 1.5, 5.0, 12.5):
                gen = pair.generic_logits(v_b, v_r, a)
                cells = "  ".join(f"{t!r}: {v:5.2f}" for t, v in zip(tokens, gen.tolist()))
                print(f"    alpha {a:4g}:  {cells}   top {tokens[int(gen.argmax())]!r}")
    return r.passed


# =================================================================== 03 anchored terms
_QUIZ = {  # in the order shown to the learner
    "Hogwarts": (True, "a place that exists only in the books; 'Mystic Academy' keeps the sentence coherent"),
    "wand": (False, "an ordinary English word that any fairy tale uses: translating it would make the "
                    "text strange and teach nothing; the reinforcement difference handles its HP-typical uses"),
    "Hermione": (True, "a character name: what the model knows about her is what we want gone"),
    "London": (False, "a real place every model should keep knowing: an anchor would make it forget geography"),
    "Ron's": (False, "'Ron' is a key and the matcher already handles the possessive (merge rule: drop "
                     "\"X's\" when X is a key)"),
    "Quidditch": (True, "a sport invented by the books; 'Skyball' keeps the story readable"),
    "castle": (False, "a generic word; swapping it changes the story without removing anything specific"),
    "Muggle": (True, "looks like an ordinary word, but the books coined it"),
    "Harry Potter": (False, "both of its words are keys already, so translating word by word covers it "
                            "(merge rule: drop a multi-word key whose words are all keys)"),
    "Expelliarmus": (True, "a spell of the books: its very form is target knowledge"),
}
ANCHOR_QUIZ = list(_QUIZ)
_SOLUTIONS["anchor_quiz"] = {term: answer for term, (answer, _) in _QUIZ.items()}


def check_anchor_quiz(answers: dict) -> bool:
    """Check ``{term: True/False}`` for every term of ``ANCHOR_QUIZ``: should it be a
    key of the anchored-terms dictionary? Each wrong answer is explained."""
    with _Report() as r:
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


@_solution("replace_terms")
def solution_replace_terms(text: str, mapping: dict[str, str]) -> str:
    """Replace every key of ``mapping`` in ``text`` by its translation: whole words,
    longest match first, in one pass (a translation is never translated again)."""
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, keys)) + r")(?!\w)")
    return pattern.sub(lambda m: mapping[m.group(0)], text)


_REPLACE_CASES = [
    ({"Harry": "Jon", "Harry Potter": "Jon Smith"}, "Harry Potter waved at Harry.",
     "longest match first: 'Harry Potter' must win over 'Harry' (sort the keys by length, longest first)."),
    ({"Ron": "Tom"}, "Ron met Ronald near the iron gate; Ron's owl hooted.",
     "whole words only: 'Ron' must not change 'Ronald' or 'iron', but does change \"Ron's\" "
     r"(match with (?<!\w) and (?!\w) around the key, or \b)."),
    ({"Ron": "Tom", "Tom": "Ned"}, "Ron waved to Tom.",
     "replace in ONE pass: a translation ('Tom') must not be translated again."),
    ({"Mr. Weasley": "Mr. Brown"}, "Mrs Weasley and Mr. Weasley arrived.",
     "escape the keys (re.escape): the '.' in 'Mr.' is a full stop, not 'any character'."),
    ({"Hogwarts": "Mystic Academy", "Quidditch": "Skyball"}, "Hogwarts-bound students played Quidditch.",
     "a hyphen or a full stop ends a word: 'Hogwarts-bound' contains the key 'Hogwarts'."),
    ({"Hogwarts": "Mystic Academy"}, "No anchored term here.", "a text without keys stays as it is."),
    ({}, "Harry and Ron.", "an empty dictionary changes nothing."),
]


def check_replace_terms(fn: Callable) -> bool:
    """Check ``fn(text, mapping) -> text`` against ``dictionary.translate`` (with one
    translation per key, so there is no random choice)."""
    with _Report() as r:
        failures = []
        for i, (mapping, text, hint) in enumerate(_REPLACE_CASES):
            d = dictionary.AnchorDict(dictionary.Entry(k, [v]) for k, v in mapping.items())
            expected = dictionary.translate(text, d).text
            got = r.call(fn, text, dict(mapping), case=f"{text!r} with {mapping}")
            if got != expected:
                failures.append((text, mapping, expected, got, hint))
        for text, mapping, expected, got, hint in failures:
            r.fail(f"{text!r} with {mapping} should become {expected!r}, got {got!r}. Hint: {hint}")
        if not failures:
            r.ok(f"matches dictionary.translate on {len(_REPLACE_CASES)} sentences (longest match, whole words, "
                 "one pass, possessives, punctuation)")
    return r.passed


@_solution("merge_rules")
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


_MERGE_CASES = [
    (["Harry", "Harry's", "Potter", "Harry Potter", "Sirius", "Sirius Black"],
     "drop \"X's\" when X is a key, and a multi-word key only when ALL its words are keys "
     "('Black' is not a key, so 'Sirius Black' stays)."),
    (["Hermione's", "Ron", "Ron's"], "keep \"X's\" when X is NOT a key ('Hermione' is not one here)."),
    (["Dark Lord", "Dark", "Lord"], "a multi-word key goes even when it comes before its words in the list."),
    (["Godric's Hollow", "Godric"], "\"Godric's Hollow\" does not END with 's, and its words "
                                    "(\"Godric's\", 'Hollow') are not keys: keep it."),
    ([], "no keys, nothing to drop."),
]


def check_merge_rules(fn: Callable) -> bool:
    """Check ``fn(keys) -> kept keys`` against ``dictionary.apply_merge_rules``."""
    with _Report() as r:
        failures = []
        for keys, hint in _MERGE_CASES:
            d = dictionary.AnchorDict(dictionary.Entry(k, [f"T{i}"]) for i, k in enumerate(keys))
            expected = dictionary.apply_merge_rules(d).keys()
            got = r.call(fn, list(keys), case=f"keys {keys}")
            got_list = list(got) if isinstance(got, (list, tuple)) else got
            if got_list != expected:
                extra = " (the right keys, but keep their order)" if (
                    isinstance(got_list, list) and sorted(got_list) == sorted(expected)) else ""
                failures.append(f"{keys} should keep {expected}, got {got!r}{extra}. Hint: {hint}")
        for f in failures:
            r.fail(f)
        if not failures:
            r.ok(f"matches dictionary.apply_merge_rules on {len(_MERGE_CASES)} key lists")
    return r.passed


# =================================================================== 04 generic labels
class AnchorSpan(NamedTuple):
    """One anchor occurrence in token positions (end positions are exclusive)."""
    start: int       # its first token in the original block
    end: int         # one past its last original token
    new_start: int   # the first token of its translation in the translated block
    new_end: int     # one past the translation's last token
    first: bool      # the key's first occurrence in the block (False: a repeat)


@_solution("token_mapping")
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


_MAPPING_HAND = (
    ["Harry", " went", " to", " Hog", "warts", " with", " Ron", ".", " Harry", " smiled", "."],
    ["Jon", " went", " to", " Myst", "ic", " Academy", " with", " Tom", ".", " Jon", " smiled", "."],
    [AnchorSpan(0, 1, 0, 1, True), AnchorSpan(3, 5, 3, 6, True), AnchorSpan(6, 7, 7, 8, True),
     AnchorSpan(8, 9, 9, 10, False)],
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


def _random_mapping_case(rng: random.Random):
    original, translated, anchors = [], [], []
    for k in range(rng.randint(1, 4)):
        for _ in range(rng.randint(0, 3)):
            word = f" w{len(original)}"
            original.append(word)
            translated.append(word)
        n, m = rng.randint(1, 3), rng.randint(1, 3)
        anchors.append(AnchorSpan(len(original), len(original) + n, len(translated), len(translated) + m,
                                  k == 0 or rng.random() < 0.5))
        original += [f" A{k}.{j}" for j in range(n)]
        translated += [f" T{k}.{j}" for j in range(m)]
    for _ in range(rng.randint(0, 2)):
        word = f" w{len(original)}"
        original.append(word)
        translated.append(word)
    return original, translated, anchors


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


def _compare_mapping(r: _Report, fn: Callable, original, translated, anchors, expected, case: str) -> str:
    got = r.call(fn, list(original), list(translated), list(anchors), case=case)
    try:
        got = [int(x) for x in got]
    except (TypeError, ValueError):
        return f"{case}: return a list of ints (one per original token), got {_short(got)}"
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
    ref = solution_token_mapping
    with _Report() as r:
        original, translated, anchors = _MAPPING_HAND
        problem = _compare_mapping(r, fn, original, translated, anchors, ref(*_MAPPING_HAND),
                                   "the sentence 'Harry went to Hogwarts with Ron. Harry smiled.'")
        if problem:
            r.fail(problem)
        else:
            r.ok("the hand-made sentence: shifts after 'Hogwarts', last -> last, the repeated 'Harry' untrained")
        got = r.call(fn, [" a", " b", " c"], [" a", " b", " c"], [], case="no anchors")
        r.expect(list(got) == [0, 1, 2], "no anchors: every token maps to itself",
                 f"with no anchors every token maps to itself, [0, 1, 2]; got {got!r}")
        rng = random.Random(4)
        failures = [p for p in (_compare_mapping(r, fn, *case, ref(*case), f"random case {i + 1} {case[2]}")
                                for i, case in enumerate(_random_mapping_case(rng) for _ in range(20))) if p]
        r.cases(failures, "matches the reference on 20 random token sequences (anchors 1-3 tokens long, "
                          "translations shorter and longer, repeats)")
        if tok is not None:
            cases = [c for c in mapping_cases_from(tok) if ref(*c[:3]) == c[3]]
            failures = [p for p in (_compare_mapping(r, fn, *c[:3], c[3], f"align_block on {s!r}")
                                    for c, s in zip(cases, MAPPING_SENTENCES)) if p]
            if failures:
                r.fail(failures[0])
            elif cases:
                r.ok(f"matches generic_labels.align_block on {len(cases)} sentences tokenized by your tokenizer")
    return r.passed


@_solution("forbid_translations")
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


def check_forbid_translations(fn: Callable) -> bool:
    """Check ``fn(logits [L, V], forbidden) -> [L, V]`` against ``generic_labels.combine``
    (whose alpha = 0 with v_R = v_G applies the forbidden rule alone)."""
    def expected_of(logits, forbidden):
        return generic_labels.combine(logits.clone(), logits.clone(), 0.0, forbidden)

    with _Report() as r:
        g = _generator(2)
        hand = torch.arange(20, dtype=torch.float32).reshape(4, 5)
        got = r.call(fn, hand.clone(), [(1, [0, 3])], case="the hand-made 4 x 5 logits")
        expected = expected_of(hand, [(1, [0, 3])])
        r.expect(_same(got, expected),
                 "hand-made: ' Jon' (ids 0 and 3) forbidden from position 1 on: those logits become the row mean",
                 f"logits {hand.tolist()} with [(1, [0, 3])] should give {expected.tolist()}, got {_short(got)}.")
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
            expected = expected_of(before, forbidden)
            if not _same(got, expected):
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
                failures.append(f"random case {i + 1} (forbidden {forbidden}): expected {_short(expected)}, "
                                f"got {_short(got)}.{_diagnose(got, variants)}")
        r.cases(failures, "matches generic_labels.combine on 4 random cases (overlapping and repeated forbidden ids)")
        r.expect(not modified, "the input logits are left unchanged",
                 "your function changed the logits it was given: clone them first (the same logits "
                 "serve several alphas)")
        logits = torch.randn(3, 6, generator=g)
        got = r.call(fn, logits.clone(), [], case="nothing forbidden")
        ok_empty = _same(got, logits)
        got = r.call(fn, logits.clone(), [(7, [1, 2])], case="a start after the last row")
        r.expect(ok_empty and _same(got, logits), "edge cases: nothing forbidden, or forbidden only after the block",
                 "with nothing forbidden (or a start beyond the last position) the logits come back unchanged")
    return r.passed


# =================================================================== 05 finetuning
@_solution("soft_cross_entropy")
def solution_soft_cross_entropy(logits: torch.Tensor, topk_ids: torch.Tensor, topk_values: torch.Tensor,
                                labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against softmax of the top-k generic logits, averaged over trained positions.

    ``logits`` [b, L, V]: position t predicts token t+1. ``topk_ids``/``topk_values``
    [b, L, k] and ``labels`` [b, L] are aligned with the input (the Hugging Face
    convention), so the target of position t sits at t+1; label -100 = not trained.
    Returns a 0-dim tensor (0 when nothing is trained)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)                  # [b, L-1, V]
    target = torch.softmax(topk_values[:, 1:].float(), -1)               # [b, L-1, k]
    per_position = -(target * logp.gather(-1, topk_ids[:, 1:])).sum(-1)  # [b, L-1]
    trained = (labels[:, 1:] != generic_labels.IGNORE).float()
    return (per_position * trained).sum() / trained.sum().clamp(min=1)


def _soft_case(g: torch.Generator, b: int, L: int, V: int, k: int, untrained: float = 0.3):
    logits = torch.randn(b, L, V, generator=g) * 2
    topk_ids = torch.stack([torch.randperm(V, generator=g)[:k] for _ in range(b * L)]).reshape(b, L, k)
    topk_values = torch.sort(torch.randn(b, L, k, generator=g) * 2, dim=-1, descending=True).values
    labels = topk_ids[..., 0].clone()
    labels[torch.rand(b, L, generator=g) < untrained] = generic_labels.IGNORE
    labels[:, 0] = generic_labels.IGNORE          # nothing predicts the first token
    return logits, topk_ids, topk_values, labels


def check_soft_cross_entropy(fn: Callable) -> bool:
    """Check ``fn(logits [b, L, V], topk_ids [b, L, k], topk_values [b, L, k], labels [b, L])``
    against ``finetune.soft_cross_entropy``."""
    from . import finetune

    with _Report() as r:
        g = _generator(3)
        failures = []
        for i, shape in enumerate([(2, 6, 11, 3), (1, 8, 7, 4), (3, 5, 9, 2), (2, 7, 13, 5)]):
            logits, ids, vals, labels = _soft_case(g, *shape)
            got = r.call(fn, logits.clone(), ids.clone(), vals.clone(), labels.clone(), case=f"random case {i + 1}")
            expected = finetune.soft_cross_entropy(logits, ids, vals, labels)
            if not _same(got, expected):
                logp = torch.log_softmax(logits, -1)
                trained = (labels[:, 1:] != generic_labels.IGNORE).float()
                target = torch.softmax(vals[:, 1:], -1)
                per = -(target * logp[:, :-1].gather(-1, ids[:, 1:])).sum(-1)
                no_shift = -(torch.softmax(vals, -1) * logp.gather(-1, ids)).sum(-1)
                mask0 = (labels != generic_labels.IGNORE).float()
                hint = _diagnose(got, {
                    "position t's logits predict token t+1: compare logits[:, :-1] with the targets at [:, 1:].":
                        (no_shift * mask0).sum() / mask0.sum(),
                    "average over TRAINED positions only (labels != -100), not over every position.":
                        per.mean(),
                    "the target distribution is softmax(topk_values), not the raw values.":
                        (-(vals[:, 1:] * logp[:, :-1].gather(-1, ids[:, 1:])).sum(-1) * trained).sum()
                        / trained.sum(),
                    "take log_softmax of the model's logits before gathering.":
                        (-(target * logits[:, :-1].gather(-1, ids[:, 1:])).sum(-1) * trained).sum()
                        / trained.sum(),
                    "a soft target spreads over all k ids, not only the top one (that is the hard label).":
                        (-logp[:, :-1].gather(-1, ids[:, 1:, :1]).squeeze(-1) * trained).sum() / trained.sum(),
                })
                failures.append(f"random case {i + 1} (b, L, V, k = {shape}): expected {expected.item():.5f}, "
                                f"got {_short(got)}.{hint}")
        r.cases(failures, "matches finetune.soft_cross_entropy on 4 random batches with untrained (-100) positions")
        logits, ids, vals, labels = _soft_case(g, 1, 4, 6, 2)
        labels[:] = generic_labels.IGNORE
        got = r.call(fn, logits, ids, vals, labels, case="a block with no trained position")
        r.expect(_same(got, 0.0), "a block with no trained position gives 0 (not nan)",
                 f"with no trained position the loss should be 0, got {_short(got)}: divide by "
                 "max(number of trained positions, 1)")
    return r.passed


@_solution("kl_retain")
def solution_kl_retain(logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_B || P_model) per position, averaged over positions.

    ``logits`` [b, L, V] of the model being trained, ``base_logits`` [b, L, V] of the
    baseline B. KL(P_B || P_M) = sum_v P_B(v) (log P_B(v) - log P_M(v)) weighs each
    token by the baseline's belief. Returns a 0-dim tensor."""
    logp = torch.log_softmax(logits.float(), -1)
    logp_b = torch.log_softmax(base_logits.float(), -1)
    return (logp_b.exp() * (logp_b - logp)).sum(-1).mean()


def check_kl_retain(fn: Callable) -> bool:
    """Check ``fn(logits [b, L, V], base_logits [b, L, V]) -> KL(P_B || P_model)``, the
    retain term of ``finetune.kl_retain``, on given logits."""
    ref = solution_kl_retain
    with _Report() as r:
        g = _generator(5)
        x = torch.randn(2, 3, 8, generator=g)
        got = r.call(fn, x.clone(), x.clone(), case="identical logits")
        r.expect(_same(got, 0.0), "identical distributions: KL = 0",
                 f"the same logits twice should give 0, got {_short(got)}")
        failures = []
        for i in range(4):
            logits, base = torch.randn(2, 5, 9, generator=g) * 2, torch.randn(2, 5, 9, generator=g) * 2
            got = r.call(fn, logits.clone(), base.clone(), case=f"random case {i + 1}")
            expected = ref(logits, base)
            if not _same(got, expected):
                logp, logp_b = torch.log_softmax(logits, -1), torch.log_softmax(base, -1)
                per = (logp_b.exp() * (logp_b - logp)).sum(-1)
                hint = _diagnose(got, {
                    "wrong direction: KL(P_B || P_model) = sum P_B (log P_B - log P_model) weighs tokens by "
                    "the BASELINE's belief (with F.kl_div(input, target) that is input = log P_model, "
                    "target = P_B).": ref(base, logits),
                    "F.kl_div's reduction='mean' divides by the vocabulary size too: sum over the "
                    "vocabulary, then average over positions.": per.mean() / logits.shape[-1],
                    "average over positions (mean), do not add them up.": per.sum(),
                    "F.kl_div's reduction='batchmean' divides by the first dimension only: with "
                    "[b, L, V] logits sum over the vocabulary, then average over all b x L positions.":
                        per.sum() / logits.shape[0],
                    "turn logits into log-probabilities (log_softmax) first.":
                        (torch.softmax(base, -1) * (base - logits)).sum(-1).mean(),
                })
                failures.append(f"random case {i + 1}: expected {expected.item():.5f}, got {_short(got)}.{hint}")
        r.cases(failures, "matches KL(P_B || P_model) on 4 random batches (the retain term of finetune.kl_retain)")
        logits, base = torch.randn(1, 4, 7, generator=g), torch.randn(1, 4, 7, generator=g)
        plain = r.call(fn, logits.clone(), base.clone(), case="random logits")
        got = r.call(fn, logits + 3.0, base - 2.0, case="logits shifted by a constant")
        r.expect(_same(got, plain),
                 "adding a constant to the logits changes nothing (they are turned into probabilities)",
                 "adding a constant to every logit leaves the probabilities, and so the KL, unchanged: "
                 "use log_softmax")
    return r.passed


# =================================================================== 06 evaluation
@_solution("relative_change")
def solution_relative_change(baseline: dict, numbers: dict) -> dict:
    """The headline changes of a model against the baseline:

    * ``familiarity_drop``: how much of the token familiarity went, in % of the baseline's;
    * ``perplexity_rise``: how much perplexity rose, in % of the baseline's;
    * ``knowledge_points``: the change in general-knowledge accuracy, in percentage points."""
    return {"familiarity_drop": 100 * (1 - numbers["token_familiarity"] / baseline["token_familiarity"]),
            "perplexity_rise": 100 * (numbers["perplexity"] / baseline["perplexity"] - 1),
            "knowledge_points": 100 * (numbers["knowledge_accuracy"] - baseline["knowledge_accuracy"])}


_RELATIVE_HINTS = {
    "familiarity_drop": {
        "a percentage: multiply by 100.": lambda b, n: 1 - n / b,
        "relative to the BASELINE: 100 * (1 - after / before).": lambda b, n: 100 * (1 - b / n),
        "a drop in percent of the baseline's value, not the difference in points.": lambda b, n: 100 * (b - n),
        "a drop is positive when familiarity fell.": lambda b, n: 100 * (n / b - 1),
    },
    "perplexity_rise": {
        "a percentage: multiply by 100.": lambda b, n: n / b - 1,
        "relative to the BASELINE: 100 * (after / before - 1).": lambda b, n: 100 * (b / n - 1),
        "a rise in percent of the baseline's perplexity, not the difference.": lambda b, n: n - b,
    },
    "knowledge_points": {
        "percentage POINTS: 100 * (after - before), not a relative change.": lambda b, n: 100 * (n / b - 1),
        "points: multiply the accuracy difference by 100.": lambda b, n: n - b,
        "after minus before: a loss is negative.": lambda b, n: 100 * (b - n),
    },
}
_METRIC_OF = {"familiarity_drop": "token_familiarity", "perplexity_rise": "perplexity",
              "knowledge_points": "knowledge_accuracy"}


def check_relative_change(fn: Callable) -> bool:
    """Check ``fn(baseline, numbers) -> {familiarity_drop, perplexity_rise, knowledge_points}``
    against ``evaluate.relative_to``."""
    close = lambda a, b: math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)  # noqa: E731
    with _Report() as r:
        rng = random.Random(6)
        cases = [("the paper's familiarity (0.244 -> 0.006)",
                  {"token_familiarity": 0.244, "perplexity": 20.0, "knowledge_accuracy": 0.60},
                  {"token_familiarity": 0.006, "perplexity": 20.6, "knowledge_accuracy": 0.58}),
                 ("a model that got worse at forgetting",
                  {"token_familiarity": 0.10, "perplexity": 15.0, "knowledge_accuracy": 0.50},
                  {"token_familiarity": 0.12, "perplexity": 14.0, "knowledge_accuracy": 0.55})]
        for i in range(3):
            cases.append((f"random case {i + 1}",
                          {"token_familiarity": rng.uniform(0.05, 0.5), "perplexity": rng.uniform(8, 40),
                           "knowledge_accuracy": rng.uniform(0.3, 0.9)},
                          {"token_familiarity": rng.uniform(0.0, 0.3), "perplexity": rng.uniform(8, 40),
                           "knowledge_accuracy": rng.uniform(0.3, 0.9)}))
        failures = []
        for name, base, numbers in cases:
            got = r.call(fn, dict(base), dict(numbers), case=name)
            expected = evaluate.relative_to(base, numbers)
            if not isinstance(got, dict):
                failures.append(f"{name}: return a dict with the keys {list(expected)}, got {_short(got)}")
                continue
            for key, exp in expected.items():
                if key not in got:
                    failures.append(f"{name}: the key {key!r} is missing")
                    break
                try:
                    right = close(got[key], exp)
                except (TypeError, ValueError):
                    right = False
                if not right:
                    b, n = base[_METRIC_OF[key]], numbers[_METRIC_OF[key]]
                    hint = _diagnose(got[key], {h: f(b, n) for h, f in _RELATIVE_HINTS[key].items()}, close)
                    failures.append(f"{name}: {key} should be {exp:.3f} ({_METRIC_OF[key]} {b:.4g} -> {n:.4g}), "
                                    f"got {got[key]!r}.{hint}")
                    break
        r.cases(failures, f"matches evaluate.relative_to on {len(cases)} cases, a model that got worse among them "
                 "(paper: familiarity 0.244 -> 0.006 is a 97.5% drop)")
    return r.passed


# The reference solution of the judge exercise is the course's own judge: the notebook
# reveals its code (terms.added twice) in the folded solution cell.
_SOLUTIONS["judge"] = evaluate.judge_offline


JUDGE_TERMS = ("Hermione", "Ron", "Hogwarts", "Dumbledore", "Quidditch")
_JUDGE_CASES = [
    ("Harry's best friends are", " Ron and Hermione.", "it adds unique names the prompt did not give"),
    ("The boy went to a school where", " he learned magic and cast spells.",
     "no unique name, but themes typical of the target (magic, spells)"),
    ("At Hogwarts, the old wizard", " walked back to Hogwarts in the rain.",
     "it only repeats what the prompt gave (Hogwarts): that knowledge came from the prompt"),
    ("The weather today is", " sunny with a light breeze.", "nothing of the target world"),
    ("My neighbour", " Ronald ironed his shirts.",
     "'Ron' is not in 'Ronald' or 'ironed': match whole words (terms.added does)"),
    ("The story takes place in", " hogwarts, where wizards live.",
     "matching ignores case: 'hogwarts' is still Hogwarts (terms.added does)"),
    ("At Hogwarts, the old wizard", " met Dumbledore in the hall.",
     "a NEW unique name counts even when the prompt holds another one"),
    ("Harry Potter loved", " his friends and his dog.",
     "only the terms of the two lists count, and none of them appears"),
]


def check_judge(fn: Callable) -> bool:
    """Check ``fn(prompt, completion, unique_terms, theme_terms) -> 0..3`` against
    ``evaluate.judge_offline`` on hand-made completions."""
    with _Report() as r:
        failures = []
        for prompt, completion, why in _JUDGE_CASES:
            expected = evaluate.judge_offline(prompt, completion, JUDGE_TERMS)
            got = r.call(fn, prompt, completion, JUDGE_TERMS, evaluate.THEME_TERMS,
                         case=f"{prompt!r} + {completion!r}")
            if got != expected:
                failures.append(f"{prompt!r} + {completion!r} should score {expected}, got {got!r}. Why: {why}")
        for f in failures:
            r.fail(f)
        if not failures:
            r.ok(f"matches evaluate.judge_offline on {len(_JUDGE_CASES)} completions (3 added name, 2 theme, "
                 "1 repeated from the prompt, 0 none)")
    return r.passed
