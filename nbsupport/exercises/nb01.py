"""Exercises of notebook 01 (what does the model know): ``continuation_logprob``, ``probe``."""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F

from .. import probe, scoring, terms
from ..anchors import dictionary
from .harness import NotImplementedYet, Report, diagnose, generator, register, same, short, solution_of

NAMES = ("continuation_logprob", "probe")


@solution_of("continuation_logprob")
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


# A hand-made case: row 0 gives token 2 probability 2/4, row 1 gives token 0 probability
# 3/5, so P(ids[1:] | ids[:1]) = 1/2 x 3/5 = 0.3 (row 2 predicts nothing).
LOGPROB_HAND = {"logits": [[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0], [0.0, 0.0, 0.0]],
                "ids": [0, 2, 0], "start": 1, "expected": math.log(0.3)}


def _logprob_of(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """The sum of the continuation tokens' log-probabilities, as a cross-entropy."""
    return -F.cross_entropy(logits[start - 1:-1].float(), ids[start:], reduction="sum")


def check_continuation_logprob(fn: Callable, model=None, tok=None) -> bool:
    """Check ``fn(logits [L, V], ids [L], start) -> log P(continuation)`` on hand-made
    and random logits; with ``model`` and ``tok`` also against ``scoring.continuation_logprobs``."""
    with Report("continuation_logprob") as r:
        g = generator(0)
        zeros = torch.zeros(4, 10)
        got = r.call(fn, zeros, torch.tensor([3, 1, 4, 1]), 2, case="uniform logits")
        r.expect(same(got, 2 * math.log(0.1)),
                 "uniform logits over 10 tokens: two continuation tokens give log(0.1) * 2",
                 f"with uniform logits over 10 tokens each token has probability 0.1, so two tokens give "
                 f"log(0.1 * 0.1) = {2 * math.log(0.1):.4f}; got {short(got)}")
        hand = torch.tensor(LOGPROB_HAND["logits"])
        got = r.call(fn, hand.clone(), torch.tensor(LOGPROB_HAND["ids"]), LOGPROB_HAND["start"],
                 case="the hand-made 3 x 3 logits")
        r.expect(same(got, LOGPROB_HAND["expected"]),
                 "hand-made: P(token 2 | row 0) = 1/2 times P(token 0 | row 1) = 3/5 gives log(0.3)",
                 f"logits {[[round(v, 3) for v in row] for row in LOGPROB_HAND['logits']]}, ids [0, 2, 0], "
                 f"start 1: row 0 gives token 2 probability 1/2 and row 1 gives token 0 probability 3/5, so "
                 f"the answer is log(0.3) = {math.log(0.3):.4f}; got {short(got)}")
        failures = []
        for i, (L, V, start) in enumerate([(5, 7, 1), (8, 13, 4), (6, 9, 5), (7, 11, 3), (9, 5, 2)]):
            logits = torch.randn(L, V, generator=g) * 3
            ids = torch.randint(0, V, (L,), generator=g)
            got = r.call(fn, logits.clone(), ids.clone(), start, case=f"random case {i + 1}")
            expected = _logprob_of(logits, ids, start)
            if not same(got, expected):
                t = torch.arange(start, L)
                logp = torch.log_softmax(logits, -1)
                hint = diagnose(got, {
                    "row t of the logits predicts token t+1, so token t is scored with logits[t - 1].":
                        logp[t, ids[t]].sum(),
                    "take log_softmax of the logits first: raw logits are not log-probabilities.":
                        logits[t - 1, ids[t]].sum(),
                    "return the log-probability (a sum of logs), not the probability.": expected.exp(),
                    "a word's probability is the PRODUCT of its tokens' probabilities: sum the logs, "
                    "do not average them.": expected / len(t),
                    "add the log-probabilities of EVERY continuation token, not only the first.":
                        logp[start - 1, ids[start]],
                    "log_softmax over the vocabulary (dim=-1): each row is one distribution.":
                        torch.log_softmax(logits, 0)[t - 1, ids[t]].sum(),
                })
                failures.append(f"random case {i + 1} (L={L}, start={start}): expected {expected.item():.4f}, "
                                f"got {short(got)}.{hint}")
        r.cases(failures, "gives the sum of the continuation tokens' log-probabilities on 5 random sequences "
                          "(one-token and several-token continuations)")
        if model is not None and tok is not None:
            _continuation_on_model(r, fn, model, tok)
    return r.passed


@torch.no_grad()
def _continuation_on_model(r: Report, fn: Callable, model, tok) -> None:
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
            r.expect(same(got, exp, atol=1e-3, rtol=1e-3),
                     f"on the model: P({cont!r} | {prompt!r}) = {math.exp(exp):.4f} = {pieces}, "
                     "as scoring.continuation_logprobs computes",
                     f"on the model, log P({cont!r} | {prompt!r}) should be {exp:.4f} "
                     f"(scoring.continuation_logprobs), got {short(got)}")


register("probe", probe.TokenProbe(
    id="my-probe", prompt="Harry Potter and his best friend Ron",
    target=(" Weasley",), generic=(" Smith", " Johnson", " Brown"), category="people"))


def check_probe(p, model=None, tok=None) -> bool:
    """Check a ``probe.TokenProbe`` you wrote: a prompt that ends at a word, continuations
    that start with a space, target and generic continuations disjoint, the target not
    given away by the prompt, generic continuations free of Harry Potter names; with
    ``model`` and ``tok`` it is also scored."""
    with Report("probe") as r:
        fields = ("id", "prompt", "target", "generic")
        if p is None:
            raise NotImplementedYet
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
