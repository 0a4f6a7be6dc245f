"""Notebook 04: generic labels (docs/ALGORITHM.md section 4).

The generic prediction ``v_B - alpha * ReLU(v_R - v_B)`` (``pair.generic_logits``)
pushes down only the tokens that reinforcement raised. Label generation applies
it with the anchored terms: B reads the *translated* block (Harry -> Jon,
Hogwarts -> Mystic Academy), R reads the original, and each original position
takes B's logits from its counterpart in the translation:

* a token outside every anchor maps to the translated token with the same text;
* the LAST token of an anchor maps to the LAST token of its translation (so the
  model still learns what follows the term);
* every other token inside an anchor maps to nothing (not trained).

Then ``label = argmax(v_G - alpha * ReLU(v_R - v_G))``, with two consistency
rules: a repeated anchor is not trained (its inner positions and the position
that predicts its first token), and translations already used in the block are
forbidden at later positions (their tokens' logits set to the position's mean).
Labels are stored in the Hugging Face convention (aligned with ``input_ids``,
the model shifts them), -100 where untrained.

``run_stage`` is notebook 04's label generation (the notebook and the multi-process
stage both call it); ``GenericLabels`` holds what it made, by alpha.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch

from . import models
from .anchors.dictionary import AnchorDict, Translator
from .progress import bar
from .pair import ModelPair, generic_logits
from .runs import tensor_digest
from .scoring import pad_right
from .terms import FUNCTION_WORDS
from .training import num_processes, wait_for_everyone

IGNORE = -100


# ----------------------------------------------------------------- alignment
@dataclass
class Alignment:
    """How one original block maps onto its translation.

    ``source[p]`` is the translated position whose B-logits serve original
    position p, or -1 (untrained). ``forbidden`` lists (from_position, token ids):
    a translation's tokens, forbidden from that original position on.
    """
    original_ids: list[int]
    translated_ids: list[int]
    source: list[int]
    forbidden: list[tuple[int, list[int]]] = field(default_factory=list)
    anchors: list = field(default_factory=list)   # dictionary.Anchor occurrences in the block
    original_text: str = ""
    translated_text: str = ""


def _text_and_offsets(tok, ids: Sequence[int]) -> tuple[str, list[tuple[int, int] | None]]:
    """Decode ``ids`` and give each token its character span, or None where the
    text does not tokenize back to the same tokens (a block cut inside a word or
    a multi-byte character): such tokens are never trained."""
    text = tok.decode(list(ids))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    spans: list[tuple[int, int] | None] = [None] * len(ids)
    matcher = difflib.SequenceMatcher(a=list(ids), b=enc["input_ids"], autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        for k in range(n):
            spans[a + k] = tuple(enc["offset_mapping"][b + k])
    return text, spans


def _variant_ids(tok, translation: str) -> set[int]:
    """Token ids of a translation as it appears mid-sentence (after a space)."""
    return set(tok(" " + translation, add_special_tokens=False)["input_ids"])


def align_block(ids: Sequence[int], tok, translator, seed: int = 0) -> Alignment:
    """Translate one block and map every original position to the translation
    (see the module docstring for the rules). Shapes: lists of length len(ids).
    ``translator`` is a ``dictionary.Translator``."""
    text, spans = _text_and_offsets(tok, ids)
    tr = translator.translate(text, seed=seed)
    enc = tok(tr.text, add_special_tokens=False, return_offsets_mapping=True)
    t_ids, t_offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    by_span = {span: j for j, span in enumerate(t_offsets)}
    source = [-1] * len(ids)
    anchor_of = [-1] * len(ids)             # which anchor a token overlaps
    for p, span in enumerate(spans):
        if span is None:
            continue
        for k, a in enumerate(tr.anchors):
            if span[0] < a.end and span[1] > a.start:
                anchor_of[p] = k
                break
    shift, k_next, shifts = 0, 0, []
    for p, span in enumerate(spans):         # shift = length change of anchors before p
        while span is not None and k_next < len(tr.anchors) and tr.anchors[k_next].end <= span[0]:
            a = tr.anchors[k_next]
            shift += (a.new_end - a.new_start) - (a.end - a.start)
            k_next += 1
        shifts.append(shift)
    forbidden, blocked = [], set()
    members_of = [[p for p in range(len(ids)) if anchor_of[p] == k] for k in range(len(tr.anchors))]
    for a, members in zip(tr.anchors, members_of):
        if not members:
            continue
        last = members[-1]
        if a.first:
            t_members = [j for j, (s, e) in enumerate(t_offsets) if s < a.new_end and e > a.new_start]
            if t_members:
                source[last] = t_members[-1]
            forbidden.append((last, sorted(_variant_ids(tok, a.translation)
                                           | {t_ids[j] for j in t_members})))
        else:
            # a repeated anchor is not trained: its inner positions (already -1), its
            # last one, and the position that predicts its first token
            blocked.update({members[0] - 1, last} - {-1})
    for p, span in enumerate(spans):
        if span is None or anchor_of[p] != -1:
            continue
        j = by_span.get((span[0] + shifts[p], span[1] + shifts[p]))
        source[p] = -1 if j is None else j
    for p in blocked:
        source[p] = -1
    return Alignment(list(ids), t_ids, source, forbidden, tr.anchors, text, tr.text)


# ----------------------------------------------------------------- combining
def combine(v_g: torch.Tensor, v_r: torch.Tensor, alpha: float,
            forbidden: Sequence[tuple[int, Sequence[int]]], positions: torch.Tensor | None = None,
            raised: torch.Tensor | None = None) -> torch.Tensor:
    """Generic logits for rows of one block with the forbidden translations applied.

    ``v_g`` [R, vocab] are B's logits already gathered at the mapped positions,
    ``v_r`` [R, vocab] R's on the original; ``positions`` [R] are the rows'
    positions in the block (default 0..R-1), so that a translation forbidden
    from position ``start`` on is forbidden in exactly the rows at or after it.
    ``raised`` is ``ReLU(v_r - v_g)`` when the caller computed it already (several alphas
    of one block share it). Returns [R, vocab].
    """
    out = generic_logits(v_g, v_r, alpha) if raised is None else v_g - alpha * raised
    if not forbidden:
        return out
    if positions is None:
        positions = torch.arange(out.shape[0], device=out.device)
    mean = out.mean(-1)                                                 # [R]
    for start, ids in forbidden:
        rows = torch.nonzero(positions >= start).squeeze(1)
        if len(ids) and len(rows):
            cols = torch.tensor(list(ids), device=out.device)
            out[rows[:, None], cols[None, :]] = mean[rows, None].expand(-1, len(cols))
    return out


def _shift(per_position: torch.Tensor, fill) -> torch.Tensor:
    """Position p's prediction (of token p+1) moved to index p+1, the Hugging Face
    convention: labels aligned with input_ids. Shape kept: [L, ...]."""
    out = torch.full_like(per_position, fill)
    out[1:] = per_position[:-1]
    return out


@torch.no_grad()
def label_batch(pair: ModelPair, alignments: Sequence[Alignment], alphas: Sequence[float], top_k: int = 0,
                pad_id: int = 0) -> "GenericLabels":
    """Labels for a batch of aligned blocks: two forward passes (B on the
    translations, R on the originals), then per block and alpha the argmax.

    Returns ``GenericLabels`` of the batch: hard labels [b, L] int64 for every alpha
    and, with ``top_k``, the top-k ids [b, L, k] int32 and values [b, L, k] float16
    of the combined logits (soft targets). All in the HF convention.
    """
    device = pair.device
    orig = torch.tensor([a.original_ids for a in alignments])                        # [b, L]
    trans, mask = pad_right([a.translated_ids for a in alignments], pad_id)          # [b, Lt]
    # B reads the translation, R the original: v_b_all [b, Lt, V], v_r_all [b, L, V]
    v_b_all, v_r_all = pair.logits(orig, base_input_ids=trans, base_attention_mask=mask)
    b, L = orig.shape
    out = GenericLabels(orig, {a: torch.full((b, L), IGNORE, dtype=torch.long) for a in alphas})
    for a in alphas if top_k else ():
        out.topk_ids[a] = torch.zeros((b, L, top_k), dtype=torch.int32)
        out.topk_values[a] = torch.zeros((b, L, top_k), dtype=torch.float16)
    for i, a in enumerate(alignments):
        src = torch.tensor(a.source, device=device)
        rows = torch.nonzero(src >= 0).squeeze(1)      # only trained positions are combined
        v_g, v_r = v_b_all[i, src[rows]], v_r_all[i, rows]                         # [R, V]
        raised = torch.relu(v_r - v_g)                                             # shared by every alpha
        for alpha in alphas:
            combined = combine(v_g, v_r, alpha, a.forbidden, positions=rows, raised=raised)
            labels = torch.full((L,), IGNORE, dtype=torch.long)
            labels[rows.cpu()] = combined.argmax(-1).cpu()
            out.hard[alpha][i] = _shift(labels, IGNORE)
            if top_k:
                values, ids = combined.topk(top_k, dim=-1)
                full_ids = torch.zeros((L, top_k), dtype=torch.int32)
                full_values = torch.zeros((L, top_k), dtype=torch.float16)
                full_ids[rows.cpu()], full_values[rows.cpu()] = ids.int().cpu(), values.half().cpu()
                out.topk_ids[alpha][i] = _shift(full_ids, 0)
                out.topk_values[alpha][i] = _shift(full_values, 0)
    return out


# ----------------------------------------------------------------- what a label run holds
@dataclass
class GenericLabels:
    """The generic labels of one label run, by alpha.

    ``input_ids`` [n, L] are the original blocks; ``hard[alpha]`` [n, L] int64 the
    argmax labels (``IGNORE`` where untrained); with soft targets ``topk_ids[alpha]``
    [n, L, k] int32 and ``topk_values[alpha]`` [n, L, k] float16 the top-k combined
    logits. All aligned with ``input_ids`` (the HF convention: the model shifts them).
    """
    input_ids: torch.Tensor
    hard: dict[float, torch.Tensor]
    topk_ids: dict[float, torch.Tensor] = field(default_factory=dict)
    topk_values: dict[float, torch.Tensor] = field(default_factory=dict)

    @property
    def alphas(self) -> list[float]:   # in increasing order
        return sorted(self.hard)

    def labels(self, alpha: float) -> torch.Tensor:   # [n, L]; a KeyError names the alphas there are
        if float(alpha) not in self.hard:
            raise KeyError(f"no labels for alpha={alpha:g}; have {', '.join(f'{a:g}' for a in self.alphas)}")
        return self.hard[float(alpha)]

    def soft(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(topk_ids, topk_values)`` of ``alpha``, each [n, L, k]."""
        self.labels(alpha)
        if float(alpha) not in self.topk_ids:
            raise ValueError("soft targets need top-k logits: generate labels with SOFT_TOP_K > 0")
        return self.topk_ids[float(alpha)], self.topk_values[float(alpha)]

    def first(self, n: int) -> "GenericLabels":
        """The labels of the first ``n`` blocks (a shorter text's share of these labels)."""
        if not 1 <= n <= len(self.input_ids):
            raise ValueError(f"give between 1 and {len(self.input_ids)} blocks, got {n}")
        cut = lambda by_alpha: {a: t[:n] for a, t in by_alpha.items()}  # noqa: E731
        return GenericLabels(self.input_ids[:n], cut(self.hard), cut(self.topk_ids), cut(self.topk_values))

    def digest(self, alpha: float, soft: bool = False) -> str:
        """Identity of what a finetune on ``alpha`` reads (blocks, labels, soft targets if used)."""
        parts = [self.input_ids, self.labels(alpha), *(self.soft(alpha) if soft else ())]
        return tensor_digest(*parts)

    # the shard files' keys: written and parsed here only
    _KINDS = ("labels", "topk_ids", "topk_values")

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids}
        for kind, by_alpha in zip(self._KINDS, (self.hard, self.topk_ids, self.topk_values)):
            out.update({f"{kind}@{a:g}": t for a, t in by_alpha.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "GenericLabels":
        parts: dict[str, dict[float, torch.Tensor]] = {kind: {} for kind in cls._KINDS}
        for key, t in tensors.items():
            if "@" in key:
                kind, alpha = key.split("@")
                parts[kind][float(alpha)] = t
        return cls(tensors["input_ids"], parts["labels"], parts["topk_ids"], parts["topk_values"])

    @classmethod
    def cat(cls, pieces: Sequence["GenericLabels"]) -> "GenericLabels":
        """Pieces of consecutive blocks joined along the first dimension."""
        joined = {k: torch.cat([p.to_tensors()[k] for p in pieces]) for k in pieces[0].to_tensors()}
        return cls.from_tensors(joined)


# ----------------------------------------------------------------- the corpus pass
class LabelsError(RuntimeError):
    """Label generation cannot resume as asked; the message says what to change."""


INPUTS = ("blocks_sha256", "dictionary", "reinforced")   # what labels are made from (the rest: settings)


def _dictionary_digest(dictionary) -> str:
    return hashlib.sha256((dictionary.to_json() if dictionary is not None else "").encode()).hexdigest()[:16]


def generate(pair: ModelPair, tok, blocks: torch.Tensor, run, dictionary: AnchorDict | None,
             alphas: Sequence[float], top_k: int = 0, batch_size: int = 4, shard_blocks: int = 16,
             seed: int = 0, out: str = "labels", progress: bool = True,
             process_index: int | None = None, num_processes: int | None = None,
             reinforced: str | None = None) -> dict:
    """Generate labels for every block and write them to ``out/`` in shards.

    ``pair`` is B and R; ``blocks`` [n, L]; ``dictionary`` an ``AnchorDict`` (None: no anchors,
    the "reinforcement only" ablation); alpha 0 gives "anchors only". With
    ``top_k`` the top-k combined logits are kept for every alpha (soft targets). Each shard is written
    atomically as it is finished, so memory stays flat and an interrupted run
    resumes where it stopped. Same inputs, same labels. Returns the meta record.

    Data parallel: with ``num_processes`` > 1 (default: ``WORLD_SIZE`` as set by
    ``torchrun`` / ``accelerate launch``, and ``RANK`` for ``process_index``), each
    process writes the shards whose number is its index modulo the count. A shard's
    content depends only on its blocks and the seed, so the labels are identical
    whatever the number of processes, and a run interrupted on N processes resumes
    on M (each process skips the shards already written). ``load`` after all finish.

    ``reinforced`` is R's identity (``models.directory_digest`` of its saved adapter or
    model), recorded with the digests of the blocks and the dictionary: labels made
    from other inputs are stale and are made again (the folder is replaced), with a
    message that names the input that changed; other settings are refused.
    """
    process_index = int(os.environ.get("RANK", 0)) if process_index is None else process_index
    num_processes = int(os.environ.get("WORLD_SIZE", 1)) if num_processes is None else num_processes
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
    if not alphas or len(set(alphas)) != len(alphas):
        raise ValueError(f"give at least one alpha, each once; got {list(alphas)}")
    translator = Translator(dictionary if dictionary is not None else AnchorDict())
    meta = {"alphas": [float(a) for a in alphas], "top_k": top_k, "n_blocks": int(blocks.shape[0]),
            "block_size": int(blocks.shape[1]), "seed": seed, "shard_blocks": shard_blocks,
            "dictionary": _dictionary_digest(dictionary),
            "blocks_sha256": hashlib.sha256(blocks.numpy().tobytes()).hexdigest()[:16]}
    if reinforced is not None:
        meta["reinforced"] = reinforced
    old = run.read_json(f"{out}/meta.json") if run.exists(f"{out}/meta.json") else None
    wait_for_everyone()            # every process has read it before one replaces it
    if old is not None:
        changed = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if changed and set(changed) <= set(INPUTS):
            if process_index == 0:
                print(f"{out}: the labels there were made from another {' and '.join(changed)}: making them again")
                shutil.rmtree(run.path(out))
            wait_for_everyone()
        elif changed:
            raise LabelsError(f"{run.path(out)} holds labels made with other settings ({', '.join(changed)}): "
                              "delete that folder, or give another output name")
    if not run.exists(f"{out}/meta.json"):     # every process may write it: the same record, atomically
        run.write_json(f"{out}/meta.json", meta)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    starts = range(0, len(blocks), shard_blocks)
    for shard, lo in enumerate(bar(starts, f"generic labels into {out}/", unit="shards", progress=progress)):
        name = f"{out}/shard-{shard:05d}.safetensors"
        if shard % num_processes != process_index or run.exists(name):
            continue  # another process's shard, or finished before an interruption
        pieces = []
        for b in range(lo, min(lo + shard_blocks, len(blocks)), batch_size):
            batch = range(b, min(b + batch_size, lo + shard_blocks, len(blocks)))
            aligned = [align_block(blocks[i].tolist(), tok, translator, seed=seed + i) for i in batch]
            pieces.append(label_batch(pair, aligned, alphas, top_k, pad))
        tensors = GenericLabels.cat(pieces).to_tensors()
        tensors["input_ids"] = blocks[lo:lo + shard_blocks].clone()
        run.save_tensors(name, tensors)
    return meta


def load(run, out: str = "labels") -> GenericLabels:
    """All shards of a finished label run, concatenated, as ``GenericLabels``."""
    meta = run.read_json(f"{out}/meta.json")
    n_shards = -(-meta["n_blocks"] // meta["shard_blocks"])
    missing = [i for i in range(n_shards) if not run.exists(f"{out}/shard-{i:05d}.safetensors")]
    if missing:
        raise LabelsError(f"{run.path(out)} is missing {len(missing)} of {n_shards} shards (first: {missing[0]}): "
                          "label generation was interrupted or another process has not finished; run "
                          "generate again with the same settings to complete it")
    shards = [run.load_tensors(f"{out}/shard-{i:05d}.safetensors") for i in range(n_shards)]
    return GenericLabels.from_tensors({k: torch.cat([s[k] for s in shards]) for k in shards[0]})


# ----------------------------------------------------------------- notebook 04's stage
def label_alphas(alpha: float) -> list[float]:
    """The alphas notebook 04 makes labels for, in its order (one pass gives all):
    the run's alpha, half and twice it (the paper's three), and 0 (anchors only)."""
    return [alpha, alpha / 2, 2 * alpha, 0.0]


ABLATION_OUT = "labels-reinforcement-only"


def run_stage(run, cfg, pair: ModelPair, tok, dictionary: AnchorDict, blocks: torch.Tensor,
              progress: bool = True) -> GenericLabels:
    """Notebook 04's label generation: labels for ``label_alphas(cfg.alpha)`` with the
    anchored terms into ``labels/`` and, with ``cfg.ablations``, the "reinforcement
    only" labels (no anchors, the run's alpha) into ``labels-reinforcement-only/``.
    Each process of a multi-process launch writes its share of the shards. Returns
    the main labels (None on the processes of a multi-process launch)."""
    kw = dict(top_k=cfg.soft_top_k, batch_size=cfg.label_batch_size, seed=cfg.seed, progress=progress,
              reinforced=reinforced_digest(run, cfg.reinforce_method))
    generate(pair, tok, blocks, run, dictionary, label_alphas(cfg.alpha), **kw)
    if cfg.ablations:
        generate(pair, tok, blocks, run, None, [cfg.alpha], out=ABLATION_OUT, **kw)
    wait_for_everyone()
    return load(run) if num_processes() == 1 else None   # a launch's processes: the notebook loads them after


def reinforced_digest(run, method: str) -> str:
    """R's identity: the digest of notebook 02's saved adapter (or full model)."""
    return models.directory_digest(run.require("reinforce/adapter" if method == "lora" else "reinforce/model"))



# ----------------------------------------------------------------- statistics
def label_stats(input_ids: torch.Tensor, labels: torch.Tensor) -> dict:
    """How many positions are trained, and how many labels differ from the text."""
    trained = labels != IGNORE
    differ = trained & (labels != input_ids)
    return {"positions": int(labels.numel()), "trained": int(trained.sum()),
            "trained_fraction": float(trained.float().mean()),
            "differ": int(differ.sum()),
            "differ_fraction_of_trained": float(differ.sum() / trained.sum().clamp(min=1))}


def anchor_token_ids(tok, dictionary: AnchorDict) -> set[int]:
    """The token ids that spell pieces of the dictionary's keys (after a space and at
    a line start): pieces with at least two letters, less those that spell a function
    word on their own (" of", " the"). Punctuation, "'s" and one-letter pieces are
    left out: they are not the names' own."""
    ids = {t for key in dictionary.keys() for variant in (" " + key, key)
           for t in tok(variant, add_special_tokens=False)["input_ids"]}
    pieces = {t: tok.decode([t]).strip() for t in ids}
    return {t for t, p in pieces.items() if sum(ch.isalpha() for ch in p) >= 2 and p.lower() not in FUNCTION_WORDS}


def replacements(tok, input_ids: torch.Tensor, labels: torch.Tensor, k: int = 20,
                 only: set[int] | None = None) -> pd.DataFrame:
    """The most frequent (original token -> generic label) replacements; with
    ``only`` (token ids), only where the original token is one of them, e.g. the
    tokens of the anchored terms, so target words are not drowned by "the -> a"."""
    differ = (labels != IGNORE) & (labels != input_ids)
    if only is not None:
        differ &= torch.isin(input_ids, torch.tensor(sorted(only), dtype=input_ids.dtype))
    pairs = pd.Series(list(zip(input_ids[differ].tolist(), labels[differ].tolist())))
    counts = pairs.value_counts().head(k)
    return pd.DataFrame({"original": [tok.decode([a]) for a, _ in counts.index],
                         "label": [tok.decode([b]) for _, b in counts.index], "count": counts.values})


@torch.no_grad()
def explain_block(pair: ModelPair, tok, ids: Sequence[int], translator: Translator, alpha: float,
                  seed: int = 0, limit: int = 80) -> pd.DataFrame:
    """One block, token by token: the original token, its translated counterpart,
    B's, R's and the generic top choice, and the final label (what the model will
    be taught to predict next)."""
    a = align_block(list(ids), tok, translator, seed)
    v_b, v_r = pair.logits(torch.tensor([a.original_ids]), base_input_ids=torch.tensor([a.translated_ids]))
    v_b, v_r = v_b[0], v_r[0]                                   # [Lt, V], [L, V]
    src = torch.tensor(a.source, device=v_b.device)
    v_g = v_b[src.clamp(min=0)]
    combined = combine(v_g, v_r, alpha, a.forbidden)
    dec = lambda i: tok.decode([int(i)])  # noqa: E731
    rows = []
    for p in range(min(limit, len(ids) - 1)):
        j = a.source[p]
        rows.append({"token": dec(ids[p]), "translated": dec(a.translated_ids[j]) if j >= 0 else "",
                     "next (text)": dec(ids[p + 1]), "B top": dec(v_g[p].argmax()) if j >= 0 else "",
                     "R top": dec(v_r[p].argmax()), "label": dec(combined[p].argmax()) if j >= 0 else "",
                     "trained": j >= 0})
    return pd.DataFrame(rows)
