"""B and R of a pair side by side, for inference-time WHP (``generic_decoding``).

Each view keeps its own KV cache, exactly as plain generation does, so each decoding
step only reads the new token:

* two separate models (a full finetune): two forwards per step, two caches;
* B and R sharing weights (R = B + a LoRA adapter): ONE forward per step over a batch
  that holds every prompt twice, rows [0, b) with the adapter off (B) and rows
  [b, 2b) with it on (R). R's LoRA is applied to its half of the rows by slicing
  (``lora_rows``), or by PEFT's mixed-adapter batches (``adapter_names``,
  "__base__" = no adapter) where slicing cannot do it. One cache serves the stacked batch.

``TwoViews`` runs the two views, ``PairCache`` carries their caches from one call to
the next, ``combine`` applies the generic formula to their logits.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import DynamicCache

from .pair import ModelPair, generic_logits
from .scoring import cache_kwarg


# ----------------------------------------------------------------- B and R, side by side
def can_stack(pair: ModelPair) -> bool:
    """True when B and R can run as one forward: a PEFT LoRA model with one active
    adapter, in eval mode (PEFT refuses ``adapter_names`` while training; DoRA and
    other adapter types do not support mixed batches)."""
    from peft import PeftModel

    model = pair.model
    if not pair.shares_weights or not isinstance(model, PeftModel) or model.training:
        return False
    adapters = model.active_adapters
    if len(adapters) != 1:
        return False
    cfg = model.peft_config[adapters[0]]
    return getattr(cfg.peft_type, "value", cfg.peft_type) == "LORA" and not getattr(cfg, "use_dora", False)


class TwoViews:
    """B and R of a pair as one callable, for a batch of ``batch`` rows:
    ``with TwoViews(pair, batch) as views: v_b, v_r = views(ids, mask, pos)``.

    With ``cache=True`` each view keeps a ``DynamicCache`` between calls, so each call
    passes only the tokens the caches have not seen (and the mask of everything so far).
    ``with_r=False`` runs B alone (alpha = 0: B's logits bit for bit, at half the cost).
    ``stack=None`` stacks B and R in one forward whenever the pair allows it.

    A stacked batch applies R's LoRA to its second half. ``rows="slice"`` (default) does
    it by slicing the rows in each LoRA layer (``lora_rows``); ``rows="peft"`` uses
    PEFT's mixed-adapter batch, which gathers and scatters rows by index lists and costs
    ~50 ms more per step on a 135M model on a CPU. Both give the same logits (tested).

    Switching a PEFT adapter off or on walks the whole model (~50 ms for a 135M model
    on a CPU, as much as a decoding step), so it happens once per ``with``, never per step,
    except for a LoRA pair that is not stacked (``stack=False``: kept as a reference).
    """

    def __init__(self, pair: ModelPair, batch: int, cache: bool = True, with_r: bool = True,
                 stack: bool | None = None, rows: str = "slice"):
        if rows not in ("slice", "peft"):
            raise ValueError(f"rows must be 'slice' or 'peft', got {rows!r}")
        self.pair, self.batch, self.with_r, self.rows = pair, batch, with_r, rows
        self.stacked = with_r and (can_stack(pair) if stack is None else stack)
        if self.stacked and not can_stack(pair):
            raise ValueError("stack=True needs a PEFT LoRA model (one active adapter, eval mode) "
                             "that shares its weights with B")
        config = pair.model.config
        self.cache_b = DynamicCache(config=config) if cache else None          # B, or the stacked batch
        self.cache_r = DynamicCache(config=config) if cache and with_r and not self.stacked else None
        self.cache_name = cache_kwarg(pair.model)
        self.contexts = ExitStack()
        self.B = None                       # B's model while it stays switched on for the whole run
        self.names = None                   # adapter names to pass per call, if hooks are not installed

    def __enter__(self) -> "TwoViews":
        if not self.with_r:
            self.B = self.contexts.enter_context(self.pair.base())
        elif self.stacked:
            # rows [0, b) without the adapter (B), rows [b, 2b) with it (R)
            split = lora_rows(self.pair.model, self.batch) if self.rows == "slice" else None  # None: PEFT does it
            if split is not None:
                self.contexts.enter_context(split)
                return self
            names = ["__base__"] * self.batch + [self.pair.model.active_adapters[0]] * self.batch
            # PEFT installs its per-row hooks on every forward(adapter_names=...) call
            # (~15 ms a step); installed once here, they serve every step of the run.
            install = self.peft_hooks()
            if install is None:
                self.names = names
            else:
                self.contexts.enter_context(install(adapter_names=names))
        return self

    def peft_hooks(self):
        """PEFT's own (private) context that installs the per-row adapter hooks, or None:
        then the names go with every call instead."""
        return getattr(self.pair.model, "_enable_peft_forward_hooks", None)

    def __exit__(self, *exc) -> None:
        self.contexts.close()
        self.B = None

    def resume(self, caches: "PairCache") -> None:
        """Continue from the caches of an earlier call (``PairCache``) instead of empty ones."""
        if self.cache_b is None:
            raise ValueError("TwoViews was opened with cache=False: it cannot resume from caches")
        if caches.stacked != self.stacked or (caches.cache_r is None) != (self.cache_r is None):
            raise ValueError("these caches were made by another layout of the pair (stacked or not, "
                             "with or without R): resume with the model and alpha that made them")
        rows = _cache_rows(caches.cache_b)
        rows = rows // (2 if self.stacked else 1) if rows is not None else None
        if rows is not None and rows != self.batch:
            raise ValueError(f"the caches hold {rows} rows, this call has {self.batch}: "
                             "use batch_repeat_interleave to match them")
        self.cache_b, self.cache_r = caches.cache_b, caches.cache_r

    def caches(self) -> "PairCache":
        """The caches as they stand, to pass to a later call."""
        return PairCache(self.cache_b, self.cache_r, self.stacked)

    def _kw(self, cache: DynamicCache | None, logits_to_keep: int) -> dict:
        if cache is None:
            return dict(logits_to_keep=logits_to_keep, use_cache=False)
        return {self.cache_name: cache, "logits_to_keep": logits_to_keep, "use_cache": True}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, logits_to_keep: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, position_ids [b, n]; attention_mask [b, past + n].

        Returns float32 logits ``(v_B, v_R)``, each [b, n, vocab] (n = ``logits_to_keep``
        when it is > 0); v_R is None when ``with_r`` is False.
        """
        if input_ids.shape[0] != self.batch:
            raise ValueError(f"TwoViews was opened for {self.batch} rows, got {input_ids.shape[0]}")
        if self.stacked:
            b = self.batch
            twice = dict(input_ids=input_ids.repeat(2, 1), attention_mask=attention_mask.repeat(2, 1),
                         position_ids=position_ids.repeat(2, 1))
            if self.names is not None:
                twice["adapter_names"] = self.names
            logits = self.pair.model(**twice, **self._kw(self.cache_b, logits_to_keep)).logits.float()
            return logits[:b], logits[b:]                        # [2b, n, vocab] -> B rows, R rows
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if self.B is not None:
            return self.B(**inputs, **self._kw(self.cache_b, logits_to_keep)).logits.float(), None
        with self.pair.base() as B:
            v_b = B(**inputs, **self._kw(self.cache_b, logits_to_keep)).logits.float()
        v_r = self.pair.model(**inputs, **self._kw(self.cache_r, logits_to_keep)).logits.float()
        return v_b, v_r


@contextmanager
def _rows_forward(layers: list, adapter: str, first: int):
    """Each LoRA Linear in ``layers`` adds its adapter to rows [first, ...) only."""
    def forward(layer, x, *args, **kwargs):
        result = layer.base_layer(x, *args, **kwargs)
        lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
        rows = x[first:].to(lora_a.weight.dtype)     # a view: the batch is the first dim
        delta = lora_b(lora_a(layer.lora_dropout[adapter](rows))) * layer.scaling[adapter]
        result[first:] += delta.to(result.dtype)
        return result

    try:
        for layer in layers:
            layer.forward = partial(forward, layer)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def lora_rows(model: nn.Module, first: int):
    """A context in which ``model``'s LoRA applies to batch rows [first, ...) only, or
    None when that cannot be done by slicing (a layer that is not a plain, unmerged LoRA
    Linear of the one active adapter: DoRA and other variants, merged weights, LoRA on
    embeddings...).

    Why not PEFT's ``adapter_names``: for B and R stacked as two halves of one batch,
    PEFT gathers each adapter's rows by a list of indices and scatters the result back;
    two contiguous halves only need a slice (a view, no copy). This replaces the forward
    of each LoRA layer for the duration of the context, reading the layer's own
    ``lora_A``, ``lora_B``, ``lora_dropout`` and ``scaling`` as PEFT's forward does.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Linear

    if not isinstance(model, PeftModel) or len(model.active_adapters) != 1:
        return None
    adapter = model.active_adapters[0]
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        plain = (type(m) is Linear and not m.merged and not m.disable_adapters
                 and adapter in m.lora_A and adapter not in getattr(m, "lora_variant", {}))
        if not plain:
            return None
    return _rows_forward(layers, adapter, first) if layers else None


def combine(v_b: torch.Tensor, v_r: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """The generic logits [..., vocab]; B's own when R was not run (alpha = 0)."""
    return v_b if v_r is None else generic_logits(v_b, v_r, alpha)


# ----------------------------------------------------------------- caches carried between calls
def _cache_rows(cache: DynamicCache) -> int | None:
    """The rows of a filled cache (its first layer's keys), or None when it cannot tell."""
    layers = getattr(cache, "layers", None) or [None]
    keys = getattr(layers[0], "keys", None)
    return int(keys.shape[0]) if isinstance(keys, torch.Tensor) else None


@dataclass
class PairCache:
    """The KV caches of a ``GenericModel`` call, to pass back as ``cache``:
    B's and R's, or one cache of 2b rows (B's rows, then R's) when the two ran stacked.
    ``copy.deepcopy`` and ``batch_repeat_interleave`` work as on a ``DynamicCache``,
    which is all the scorers' shared-prefix path needs (``scoring.continuation_logprobs``:
    a primer paragraph runs once, not in every row). Repeating a stacked cache row by
    row keeps B's rows first."""

    cache_b: DynamicCache
    cache_r: DynamicCache | None
    stacked: bool

    def get_seq_length(self) -> int:
        return self.cache_b.get_seq_length()

    def batch_repeat_interleave(self, repeats: int) -> None:
        for cache in (self.cache_b, self.cache_r):
            if cache is not None:
                cache.batch_repeat_interleave(repeats)
