"""Inference-time WHP: decode from the generic prediction directly (ALGORITHM.md sections 2, 8).

The paper uses the generic prediction

    v_generic = v_B - alpha * ReLU(v_R - v_B)

to write training labels, then finetunes B on them. MUSE skips the finetuning: at
every decoding step it runs the baseline B and the reinforced model R on the text so
far, combines their next-token logits with the formula, and picks the next token from
the result. No anchored terms, no training: "R with inference-time WHP at alpha"
behaves like a model of its own, only one that needs two forward passes per token.

Done naively (MUSE's code) each new token re-reads the whole prefix through both
models, so a completion of n tokens costs O(n^2) work. Here each model keeps its own
KV cache, exactly as plain generation does, so each step only reads the new token
(``nbsupport.pair_views``: B and R side by side, one stacked forward when they share
their weights).

``decode`` is the loop; ``GenericModel`` wraps a pair as a module whose ``forward``
returns the combined logits, so the scorers in ``nbsupport.scoring`` measure "R with
inference-time WHP" like any model, and ``GenericModel.generate_text`` completes prompts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import nn
from transformers.generation import (LogitsProcessorList, StoppingCriteriaList, StopStringCriteria,
                                     TemperatureLogitsWarper, TopPLogitsWarper)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .progress import bar
from .pair import ModelPair
from .pair_views import PairCache, TwoViews, combine
from .scoring import eval_mode


# ----------------------------------------------------------------- checks
def check_alpha(alpha: float) -> None:
    if not alpha >= 0:  # also catches NaN
        raise ValueError(f"alpha must be >= 0, got {alpha}")


def check_sampling(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def check_left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [batch >= 1, length >= 1], got {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match "
                         f"input_ids {tuple(input_ids.shape)}")
    if not attention_mask.any(dim=1).all():
        raise ValueError("a prompt is empty: every row needs at least one real token to continue from")
    if not attention_mask[:, -1].all():
        # A right-padded row would continue after its pads, not after its text.
        raise ValueError("prompts must be LEFT-padded (tok.padding_side = 'left'): "
                         "the last column must be a real token in every row")


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids [b, L] of a left-padded batch: 0 at each row's first real token.

    Without them a left-padded row would start at position = its number of pads,
    and its predictions would differ from the same prompt unpadded.
    """
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


# ----------------------------------------------------------------- decoding
@dataclass
class Generation:
    """What ``decode`` returns (b prompts, T steps taken)."""
    sequences: torch.Tensor        # [b, L + T]: the left-padded prompts, then the new tokens
    new_tokens: torch.Tensor       # [b, T]; pad after a row has stopped
    logits: torch.Tensor | None    # [b, T, vocab] float32 combined logits of each step, if asked


def pick(logits: torch.Tensor, sequences: torch.Tensor, warpers: LogitsProcessorList | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row [b] from logits [b, vocab]: argmax without warpers,
    else a draw after temperature / top-p."""
    if warpers is None:
        return logits.argmax(-1)
    probs = torch.softmax(warpers(sequences, logits), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def decode(pair: ModelPair, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
           alpha: float = 5.0, max_new_tokens: int = 40, greedy: bool = True,
           temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
           eos_token_id: int | None = None, pad_token_id: int = 0,
           stopping_criteria: StoppingCriteriaList | None = None,
           use_cache: bool = True, stack: bool | None = None, rows: str = "slice",
           return_logits: bool = False) -> Generation:
    """Continue left-padded prompts ``input_ids`` [b, L] from the generic logits.

    Greedy, or seeded sampling with ``temperature`` and nucleus ``top_p``. A row stops
    at ``eos_token_id`` or when ``stopping_criteria`` (e.g. transformers'
    ``StopStringCriteria``) says so; it is then filled with ``pad_token_id`` until every
    row has stopped or ``max_new_tokens`` is reached.

    ``use_cache=False`` recomputes the whole prefix through B and R at every step (MUSE's
    way): same result, O(n^2) cost; kept as the reference. ``stack`` and ``rows``: see
    ``TwoViews``.
    """
    # Why not model.generate: generate drives ONE model with ONE cache and samples each
    # row on its own. Here every step needs two views (two caches, or one stacked batch
    # whose B and R halves must receive the SAME sampled token), and a LogitsProcessor
    # owning R's cache could not share B's forward. So the loop is ours, built from
    # transformers' parts: DynamicCache, the temperature / top-p warpers, stopping criteria.
    check_alpha(alpha)
    check_sampling(max_new_tokens, temperature, top_p)
    device = pair.device
    input_ids = input_ids.to(device)
    mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(device).long()
    check_left_padded(input_ids, mask)
    warpers, generator = None, None
    if not greedy:
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
        generator = torch.Generator(device=device).manual_seed(seed)

    models = [pair.model] + ([] if pair.shares_weights else [pair.separate_base])
    with eval_mode(*models), TwoViews(pair, len(input_ids), use_cache, alpha > 0, stack, rows) as views:
        sequences, pos = input_ids, positions(mask)
        step_ids, step_pos = sequences, pos                      # the first step reads the prompts
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=device)
        new, seen = [], []
        for _ in range(max_new_tokens):
            v_b, v_r = views(step_ids, mask, step_pos, logits_to_keep=1)
            logits = combine(v_b[:, -1], v_r[:, -1] if v_r is not None else None, alpha)  # [b, vocab]
            token = pick(logits, sequences, warpers, generator).masked_fill(done, pad_token_id)
            new.append(token)
            if return_logits:
                seen.append(logits)
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
            if eos_token_id is not None:
                done |= token == eos_token_id
            if stopping_criteria is not None:
                done |= stopping_criteria(sequences, logits).to(device)
            if done.all():
                break
            # with caches only the new token is read; without, the whole text again
            step_ids, step_pos = (token[:, None], pos[:, -1:]) if use_cache else (sequences, pos)
    return Generation(sequences=sequences, new_tokens=torch.stack(new, dim=1),
                      logits=torch.stack(seen, dim=1) if return_logits else None)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to (not including) the first of ``stop_strings`` in it."""
    ends = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return text[:min(ends)] if ends else text



# the field a model output keeps its cache in: transformers 5 renamed past_key_values to cache
_OUTPUT_CACHE = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


# ----------------------------------------------------------------- a pair as one model
class BaseView(nn.Module):
    """B of a pair as a module of its own (the adapter switched off for each call)."""

    def __init__(self, pair: ModelPair):
        super().__init__()
        self.pair = pair
        self.inner = pair.model if pair.shares_weights else pair.separate_base   # reached by .eval(), .to()

    def forward(self, *args, **kwargs):
        with self.pair.base() as B:
            return B(*args, **kwargs)


class GenericModel(nn.Module):
    """"R with inference-time WHP at alpha" as a causal LM.

    ``GenericModel(pair, alpha)(input_ids, attention_mask).logits`` [b, L, vocab] are the
    combined logits at every position, so ``scoring.continuation_logprobs``,
    ``perplexity``, ``next_token_topk`` etc. score it like any model. The raw logits are
    combined, as in the paper (not log-softmaxes). With alpha = 0 it is B exactly.
    """

    supports_prefix_cache = True    # forward takes and returns both models' caches (PairCache)

    def __init__(self, pair: ModelPair, alpha: float = 5.0):
        super().__init__()
        check_alpha(alpha)
        self.pair, self.alpha = pair, float(alpha)
        # registered as submodules so that .parameters(), .eval(), .to() reach them
        self.reinforced = pair.model
        self.baseline = None if pair.shares_weights else pair.separate_base
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.pair.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: PairCache | None = None,
                use_cache: bool = False, **kwargs) -> CausalLMOutputWithPast:
        """input_ids [b, L] (mask [b, L]) -> ``.logits`` [b, L, vocab] float32.

        As for a Hugging Face model, right padding needs nothing more; for left padding
        pass ``position_ids`` (``positions(attention_mask)``). B's and R's logits are held
        at once: about three times one model's logits memory, so keep batches modest.

        With ``use_cache`` the result's ``cache`` (``past_key_values`` before transformers
        5) holds both models' caches (``PairCache``); passed back as ``cache`` (or
        ``past_key_values``), the next call reads only its new tokens, with the mask of
        everything so far ([b, past + L]) and positions that continue from the cache's
        length (right padding: the default).
        """
        legacy = kwargs.pop("past_key_values", None)          # the name before transformers 5
        if legacy is not None and cache is not None:
            raise TypeError("give the caches once: as cache or as past_key_values")
        cache = legacy if cache is None else cache
        unsupported = set(kwargs) - {"return_dict"}
        if unsupported:
            raise TypeError(f"GenericModel.forward does not support {sorted(unsupported)}")
        past = 0 if cache is None else cache.get_seq_length()
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long,
                                        device=input_ids.device)
        if position_ids is None:
            position_ids = past + torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        keep = bool(use_cache) or cache is not None
        with TwoViews(self.pair, len(input_ids), cache=keep, with_r=self.alpha > 0) as views:
            if cache is not None:
                views.resume(cache)
            v_b, v_r = views(input_ids, attention_mask, position_ids)
        return CausalLMOutputWithPast(logits=combine(v_b, v_r, self.alpha),
                                      **{_OUTPUT_CACHE: views.caches() if keep else None})

    def against_base(self) -> ModelPair:
        """B and this model as a ``ModelPair`` (B as the base, this model as the trained
        one), e.g. for ``scoring.kl_divergence``: KL(P_B || P_WHP)."""
        return ModelPair(self, base=BaseView(self.pair))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 40, do_sample: bool = False, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, pad_token_id: int | None = None,
                 eos_token_id: int | None = None, seed: int = 0, **unused) -> torch.Tensor:
        """The subset of ``transformers``' ``generate`` the course's scorers use
        (``scoring.complete``): left-padded prompts [b, L] -> sequences [b, L + T], greedy
        or seeded nucleus sampling (``top_k`` must be None: not supported). Rows that
        stopped at EOS are padded with ``pad_token_id``, as ``generate`` does."""
        if top_k is not None:
            raise ValueError("GenericModel.generate does not support top_k; use top_p")
        unsupported = set(unused) - {"return_dict_in_generate", "use_cache"}
        if unsupported:
            raise TypeError(f"GenericModel.generate does not support {sorted(unsupported)}")
        if eos_token_id is None:
            eos_token_id = getattr(self.reinforced.config, "eos_token_id", None)
            if isinstance(eos_token_id, (list, tuple)):
                eos_token_id = eos_token_id[0] if eos_token_id else None
        out = decode(self.pair, input_ids, attention_mask, self.alpha, max_new_tokens,
                     greedy=not do_sample, temperature=temperature or 1.0, top_p=top_p or 1.0, seed=seed,
                     eos_token_id=eos_token_id, pad_token_id=0 if pad_token_id is None else pad_token_id)
        return out.sequences

    @torch.no_grad()
    def generate_text(self, tok, prompts: Sequence[str], max_new_tokens: int = 40,
                      greedy: bool = True, temperature: float = 0.8, top_p: float = 0.95,
                      seed: int = 0, stop_strings: Sequence[str] | None = None,
                      batch_size: int = 8, progress: bool = False) -> list[str]:
        """Continue each prompt (cached two-view decoding); the text after each prompt.

        Greedy by default, else seeded nucleus sampling, as ``scoring.complete``. A text
        ends before the first of ``stop_strings`` it contains, or at EOS.
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts to complete")
        if any(not p for p in prompts):
            raise ValueError("prompts must not be empty")
        check_sampling(max_new_tokens, temperature, top_p)
        stop_strings = list(stop_strings or [])
        criteria = StoppingCriteriaList([StopStringCriteria(tok, stop_strings)]) if stop_strings else None
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        side, tok.padding_side = tok.padding_side, "left"
        texts: list[str] = []
        try:
            for lo in bar(range(0, len(prompts), batch_size), f"generating {len(prompts)} completions",
                          unit="batches", progress=progress):
                enc = tok(prompts[lo:lo + batch_size], return_tensors="pt", padding=True)
                out = decode(self.pair, enc["input_ids"], enc["attention_mask"], self.alpha,
                             max_new_tokens, greedy, temperature, top_p, seed + lo,
                             eos_token_id=tok.eos_token_id, pad_token_id=pad, stopping_criteria=criteria)
                texts += tok.batch_decode(out.new_tokens, skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return [cut_at_stop(t, stop_strings) for t in texts]
