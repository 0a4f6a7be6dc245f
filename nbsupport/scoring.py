"""The scoring core: every stage measures models through these functions.

* ``pad_right``: the one batch builder (right padding, attention mask);
* ``continuation_logprobs``: log P(continuation | prompt), joint tokenization;
* ``next_token_probs`` / ``next_token_topk``: the distribution after a prompt;
* ``complete``: greedy or sampled completions (left padding, batched);
* ``perplexity`` and ``kl_divergence`` on plain text, chunked the same way.
* ``drop_pct``, ``rise_pct``, ``share_pct``: the one formula of each change in percent,
  and ``PERPLEXITY_LIMIT_PCT``, the most perplexity may rise (+3%).

A model here is anything callable like a Hugging Face causal LM. To score the
baseline of a ``ModelPair``, call these inside ``with pair.base() as B:``.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from .progress import bar
from .pair import ModelPair, device_of


@contextmanager
def eval_mode(*models) -> Iterator[None]:
    """Score without dropout (e.g. LoRA's), then leave each model as it was."""
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(models, was_training):
            m.train(flag)


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def pad_right(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [b, width], attention_mask [b, width])`` of right-padded sequences.

    Right padding keeps every real token at its unpadded position and the causal
    mask keeps it from seeing the pads, so padding never changes a prediction.
    """
    if not sequences:
        raise ValueError("no sequences to pad")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        mask[row, :len(ids)] = 1
    return input_ids, mask


def _batches(sequences: list, batch_size: int, progress: bool, desc: str) -> Iterator[tuple[int, list]]:
    for lo in bar(range(0, len(sequences), batch_size), desc, unit="batches", progress=progress):
        yield lo, sequences[lo:lo + batch_size]


# ----------------------------------------------------------------- prompts and continuations
def split_joint(tok, prompt: str, continuation: str) -> tuple[list[int], int]:
    """Tokenize ``prompt + continuation`` jointly; return (ids, index of the first
    continuation token).

    The first continuation token is the first whose text ends after the prompt,
    so a token straddling the boundary counts as continuation. Scoring the joint
    tokenization (not prompt and continuation separately) gives the tokens the
    model would really see, e.g. " magic" rather than " " + "magic".
    """
    if not prompt:
        raise ValueError("the prompt must not be empty: the first token has no context to be scored in")
    enc = tok(prompt + continuation, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    boundary = len(prompt)
    start = next((i for i, (s, e) in enumerate(offsets) if e > boundary and e > s), len(ids))
    if start == 0:
        raise ValueError(f"prompt {prompt!r} merges into the continuation's first token; "
                         "end the prompt at a word boundary")
    return ids, start


def cache_kwarg(model) -> str:
    """The name under which ``model.forward`` takes its KV cache: transformers 5 renamed
    ``past_key_values`` to ``cache`` (the old name warns, then goes away)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


@torch.no_grad()
def continuation_logprobs(model, tok, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                          progress: bool = False, desc: str = "scoring continuations") -> torch.Tensor:
    """log P(continuation | prompt) for each (prompt, continuation) pair: [len(pairs)] on the CPU.

    Batched, right-padded forward passes over as few tokens as the pairs allow:
    pairs that share a prompt (a probe's target and generic continuations, a
    question's four choices) share one row, the prompt alone, whose last logits
    score every one-token continuation; a longer continuation gets a row of its own
    (prompt + continuation). When all the prompts start with the same
    ``min_common`` (8) or more tokens (a primer paragraph before every probe),
    those run once and each batch continues from their KV cache (the inference-time
    WHP wrapper too: it passes both models' caches). A model that takes no cache
    (``supports_prefix_cache = False``) runs the common part in every row.
    """
    encoded = [split_joint(tok, p, c) for p, c in pairs]
    out = torch.zeros(len(encoded), dtype=torch.float32)
    with eval_mode(model):
        _score_rows(model, tok, encoded, out, batch_size, progress,
                    use_cache=getattr(model, "supports_prefix_cache", True), desc=desc)
    return out


def _score_rows(model, tok, encoded: list[tuple[list[int], int]], out: torch.Tensor, batch_size: int,
                progress: bool, use_cache: bool, min_common: int = 8, desc: str = "scoring continuations") -> None:
    """Fill ``out``. A row is (token ids, [(pair, first scored position, last)]):
    one row per distinct prompt for its one-token continuations, one per longer
    continuation."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, start) in enumerate(encoded):
        groups.setdefault(tuple(ids[:start]), []).append(i)
    rows: list[tuple[list[int], list[tuple[int, int, int]]]] = []
    for prefix, members in groups.items():
        short = [i for i in members if len(encoded[i][0]) - len(prefix) == 1]
        if short:
            rows.append((list(prefix), [(i, len(prefix), len(prefix) + 1) for i in short]))
        rows += [(encoded[i][0], [(i, len(prefix), len(encoded[i][0]))]) for i in members if i not in short]
    prefixes = list(groups)
    # the common part stops one token before the shortest prompt: each row keeps a token of its own
    n_common = min(len(os.path.commonprefix(prefixes)), min(map(len, prefixes)) - 1) if len(prefixes) > 1 else 0
    device, common = device_of(model), None
    if use_cache and n_common >= min_common:
        first = model(input_ids=torch.tensor([prefixes[0][:n_common]], device=device), use_cache=True)
        common = getattr(first, "cache", None) or first.past_key_values
    else:
        n_common = 0
    key = cache_kwarg(model) if common is not None else None
    keeps = takes_logits_to_keep(model)
    rows.sort(key=lambda r: len(r[0]))                        # similar lengths together: less padding
    for _, batch in _batches(rows, batch_size, progress, desc):
        ids, mask = pad_right([r[n_common:] for r, _ in batch], pad_id(tok))
        extra = {}
        if common is not None:
            cache = copy.deepcopy(common)                     # a copy: this batch grows it
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones(len(batch), n_common, dtype=torch.long), mask], dim=1)
            extra = {key: cache, "use_cache": True}
        # logits at position t - 1 predict token t; the row starts at n_common
        needed = sorted({t - 1 - n_common for _, scored in batch for _, lo, hi in scored for t in range(lo, hi)})
        column = {pos: j for j, pos in enumerate(needed)} if keeps else {pos: pos for pos in needed}
        if keeps:   # the vocabulary projection only where a scored token is predicted (~20% of a small model)
            extra["logits_to_keep"] = torch.tensor(needed, device=device)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()          # [b, width or len(needed), vocab]
        for row, (_, scored) in enumerate(batch):
            for i, lo, hi in scored:
                targets = torch.tensor(encoded[i][0][lo:hi])
                out[i] = logp[row, [column[t - 1 - n_common] for t in range(lo, hi)], targets].sum()


def takes_logits_to_keep(model) -> bool:
    """Whether ``model`` (or the model under its PEFT adapter) computes logits only at the
    positions ``logits_to_keep`` names, as transformers' causal LMs do."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def next_token_logits(model, tok, prompt: str) -> torch.Tensor:
    """The logits after ``prompt``: shape [vocab], float32 on the CPU."""
    enc = tok(prompt, return_tensors="pt").to(device_of(model))
    if enc["input_ids"].shape[1] == 0:
        raise ValueError("the prompt must not be empty")
    with eval_mode(model):
        return model(**enc).logits[0, -1].float().cpu()


def next_token_probs(model, tok, prompt: str) -> torch.Tensor:
    """Probability of every vocabulary token after ``prompt``: shape [vocab]."""
    return torch.softmax(next_token_logits(model, tok, prompt), dim=-1)


def top_k_table(probs: torch.Tensor, tok, k: int = 10) -> pd.DataFrame:
    """The ``k`` most likely tokens of a [vocab] probability vector, as a table."""
    values, indices = probs.topk(k)
    return pd.DataFrame({"token": [tok.decode([int(i)]) for i in indices],
                         "token_id": indices.tolist(), "prob": values.tolist()})


def next_token_topk(model, tok, prompt: str, k: int = 10) -> pd.DataFrame:
    """The model's ``k`` most likely next tokens after ``prompt``."""
    return top_k_table(next_token_probs(model, tok, prompt), tok, k)


@torch.no_grad()
def complete(model, tok, prompts: Sequence[str], max_new_tokens: int = 40, greedy: bool = True,
             temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
             batch_size: int = 8, progress: bool = True) -> list[str]:
    """Continue each prompt; greedy by default, else seeded nucleus sampling.

    Prompts are left-padded into batches so that each continues right after its text.
    """
    if any(not p for p in prompts):
        raise ValueError("prompts must not be empty")
    device = device_of(model)
    side = tok.padding_side
    tok.padding_side = "left"
    outputs: list[str] = []
    try:
        if not greedy:
            torch.manual_seed(seed)
        with eval_mode(model):
            for _, batch in _batches(list(prompts), batch_size, progress, "generating"):
                enc = tok(batch, return_tensors="pt", padding=True).to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
                                     temperature=temperature if not greedy else None,
                                     top_p=top_p if not greedy else None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
                outputs += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return outputs


# ----------------------------------------------------------------- plain text
TEXT_BLOCK = 256   # tokens per chunk when scoring whole texts (perplexity, NLL, KL)


def chunk_texts(tok, texts: Sequence[str], block_size: int) -> list[list[int]]:
    """Token ids of every text cut into consecutive chunks of at most ``block_size``.

    Chunks under 2 tokens are dropped: they have no next token to predict.
    """
    return [ids for _, ids in _owned_chunks(tok, texts, block_size)]


def _owned_chunks(tok, texts: Sequence[str], block_size: int) -> list[tuple[int, list[int]]]:
    """``chunk_texts``, each chunk with the index of its text: ``[(text index, ids), ...]``."""
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    chunks = []
    for owner, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        chunks += [(owner, ids[i:i + block_size]) for i in range(0, len(ids), block_size)]
    chunks = [(owner, ids) for owner, ids in chunks if len(ids) >= 2]
    if not chunks:
        raise ValueError("no text has 2 or more tokens: there is nothing to predict")
    return chunks


def _next_logprobs(model, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, width - 1, vocab] float32 on the CPU: row t is the distribution over token t + 1."""
    device = device_of(model)
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()


def _add_rows(totals: list[list[float]], batch: list[tuple[int, list[int]]], *per_row: list) -> None:
    """Add each row's values (``per_row``: one list per quantity) to its text's totals."""
    for (owner, _), *values in zip(batch, *per_row):
        totals[owner] = [t + v for t, v in zip(totals[owner], values)]


def _sums(totals: list[list[float]]) -> list[float]:
    return [sum(column) for column in zip(*totals)]


@torch.no_grad()
def perplexity(model, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK, batch_size: int = 4,
               progress: bool = False) -> float:
    """exp of the mean negative log-likelihood of every next token in ``texts``.

    Each text is cut into chunks of at most ``block_size`` tokens (no special
    tokens added); every token after a chunk's first is predicted once, and the
    mean weights all those tokens equally, whatever chunk or text they are in.
    """
    nll, n = nll_sum(model, tok, texts, block_size, batch_size, progress)
    return math.exp(nll / n)


@torch.no_grad()
def nll_sum(model, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK, batch_size: int = 4,
            progress: bool = False) -> tuple[float, int]:
    """The summed negative log-likelihood of the tokens ``perplexity`` predicts in ``texts``,
    and their count: sums over disjoint sets of texts add up to the sum over all of them
    (each text is chunked on its own)."""
    nll, n = _sums(nll_by_text(model, tok, texts, block_size, batch_size, progress))
    return nll, int(n)


@torch.no_grad()
def nll_by_text(model, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK, batch_size: int = 4,
                progress: bool = False) -> list[tuple[float, int]]:
    """``nll_sum`` of each text, from one batched pass over all of them:
    ``[(summed NLL, tokens), ...]`` in the order of ``texts`` ((0.0, 0) for a text
    too short to predict anything)."""
    owned = _owned_chunks(tok, texts, block_size)
    totals = [[0.0, 0] for _ in texts]
    with eval_mode(model):
        for _, batch in _batches(owned, batch_size, progress, "perplexity"):
            input_ids, mask = pad_right([ids for _, ids in batch], pad_id(tok))
            _add_rows(totals, batch, *_nll_rows(_next_logprobs(model, input_ids, mask), input_ids, mask))
    return [(nll, int(n)) for nll, n in totals]


def _nll_rows(logp: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[list[float], list[int]]:
    """Per row: the summed NLL of its predicted (unpadded) tokens, and their count."""
    predicted = mask[:, 1:].bool()                                   # [b, width - 1]
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    nll = -torch.where(predicted, token_logp.double(), 0.0).sum(-1)
    return nll.tolist(), predicted.sum(-1).tolist()


class BaseReference:
    """B's next-token distributions on ``texts``, computed once, to read
    KL(P_B || P_M) for many models M at one forward pass each (``kl_divergence`` on a
    pair runs B again for every model). The positions and chunks are those of
    ``kl_divergence``, so both give the same number. Memory: the log-probabilities
    of every predicted position, ~200 KB a token for a 49K vocabulary; keep the texts
    short (one held-out text of ~1,000 tokens: ~200 MB).
    """

    @torch.no_grad()
    def __init__(self, base, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK, batch_size: int = 4):
        if not texts:
            raise ValueError("give at least one text to compare the models on")
        self.tok, self.batch_size, self.block_size, self.texts = tok, batch_size, block_size, list(texts)
        self.chunks = _owned_chunks(tok, texts, block_size)
        with eval_mode(base):
            self.logp_b = [_next_logprobs(base, *pad_right([ids for _, ids in batch], pad_id(tok)))
                           for _, batch in _batches(self.chunks, batch_size, False, "baseline")]

    def kl(self, model) -> float:
        """Mean KL(P_B || P_model) in nats over every predicted position."""
        return self.kl_and_nll(model)[0]

    def kl_and_nll(self, model) -> tuple[float, float, int]:
        """``(mean KL, summed NLL, tokens)``: the KL and, from the same forward passes, the
        model's ``nll_sum`` on the reference texts (a perplexity on them costs nothing more)."""
        kl, nll, n = _sums(self.by_text(model))
        return kl / n, nll, int(n)

    @torch.no_grad()
    def by_text(self, model) -> list[tuple[float, float, int]]:
        """Per reference text: ``(summed KL, summed NLL, tokens)`` of ``model``."""
        totals = [[0.0, 0.0, 0] for _ in self.texts]
        with eval_mode(model):
            for (_, batch), logp_b in zip(_batches(self.chunks, self.batch_size, False, "KL to baseline"), self.logp_b):
                input_ids, mask = pad_right([ids for _, ids in batch], pad_id(self.tok))
                logp_m = _next_logprobs(model, input_ids, mask)
                kl, count = _kl_rows(logp_m, logp_b, mask)
                _add_rows(totals, batch, kl, _nll_rows(logp_m, input_ids, mask)[0], count)
        return [(kl, nll, int(n)) for kl, nll, n in totals]


def _kl_rows(logp_m: torch.Tensor, logp_b: torch.Tensor, mask: torch.Tensor) -> tuple[list[float], list[int]]:
    """Per row: the sum of KL(P_B || P_M) over its predicted (unpadded) positions, and their count."""
    kl = F.kl_div(logp_m, logp_b, log_target=True, reduction="none").sum(-1)  # [b, w-1]
    predicted = mask[:, 1:].bool()
    return torch.where(predicted, kl.double(), 0.0).sum(-1).tolist(), predicted.sum(-1).tolist()


@torch.no_grad()
def kl_divergence(pair: ModelPair, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK,
                  batch_size: int = 4, progress: bool = False) -> float:
    """Mean KL(P_B || P_trained) in nats over every predicted position of ``texts``.

    The positions are those ``perplexity`` scores (same chunking), so the two read
    side by side. KL(P_B || P_M) weighs each token by the baseline's belief: it
    is large where the model dropped what the baseline expected.
    """
    kl, n = _sums(kl_by_text(pair, tok, texts, block_size, batch_size, progress))
    return kl / n


@torch.no_grad()
def kl_by_text(pair: ModelPair, tok, texts: Sequence[str], block_size: int = TEXT_BLOCK,
               batch_size: int = 4, progress: bool = False) -> list[tuple[float, int]]:
    """``kl_divergence``'s sums per text: ``[(summed KL, positions), ...]`` in the order of ``texts``."""
    owned = _owned_chunks(tok, texts, block_size)
    totals = [[0.0, 0] for _ in texts]
    with eval_mode(pair.model):
        for _, batch in _batches(owned, batch_size, progress, "KL to baseline"):
            input_ids, mask = pad_right([ids for _, ids in batch], pad_id(tok))
            with pair.trained() as M:
                logp_m = _next_logprobs(M, input_ids, mask)
            with pair.base() as B:
                logp_b = _next_logprobs(B, input_ids, mask)
            _add_rows(totals, batch, *_kl_rows(logp_m, logp_b, mask))
    return [(kl, int(n)) for kl, n in totals]


# ----------------------------------------------------------------- changes against a baseline
# The course's rule for keeping: an unlearned model may raise perplexity on generic text by at
# most this many percent over the baseline's (methods' early stopping, finetune's recipe choice).
PERPLEXITY_LIMIT_PCT = 3.0


def drop_pct(before, after):
    """How much of ``before`` went, in % of it: 100 * (1 - after / before).
    Numbers or pandas columns (a familiarity drop)."""
    return 100 * (1 - after / before)


def rise_pct(before, after):
    """How much ``after`` rose over ``before``, in % of it: 100 * (after / before - 1).
    Numbers or pandas columns (a perplexity rise)."""
    return 100 * (after / before - 1)


def share_pct(part, whole):
    """``part`` in % of ``whole``: 100 * part / whole. Numbers or pandas columns."""
    return 100 * part / whole
