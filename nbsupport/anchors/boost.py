"""What the models say about terms (notebook 03), with B and R (``ModelPair``):
how much reinforcement raised a term in its own contexts (``reinforcement_boost``)
or a word in a key's contexts (``boost_in_contexts``), and B's own predictions
where a term is masked (``masked_predictions``).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import scoring
from ..pair import ModelPair
from .contexts import contexts_of


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


def boost_in_contexts(pair: ModelPair, tok, contexts: Sequence[str], words: Sequence[str],
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


def masked_predictions(pair: ModelPair, tok, term: str, text: str, n: int) -> list[str]:
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
