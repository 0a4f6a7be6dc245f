"""Step 0 of the course: what does the model know? Probe data and probing functions.

Three probe sets ship with the package (all written for this course):

* ``hp_token``: a prompt, Harry-Potter-specific continuations (``target``) and
  plausible generic ones (``generic``): the paper's token-probability test.
* ``hp_completion``: open prompts about the Harry Potter world, with terms a
  knowing model tends to produce (``target_terms``): the completion test.
* ``general_knowledge``: multiple-choice facts with no Harry Potter in them, to
  check the model stays useful.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import package_data

PROBE_FILES = {
    "hp_token": "hp_token_probes.json",
    "hp_completion": "hp_completion_prompts.json",
    "general_knowledge": "general_knowledge.json",
}


class ProbeDataError(ValueError):
    """A probe file is malformed; the message names the probe and the problem."""


@dataclass(frozen=True)
class TokenProbe:
    id: str
    prompt: str
    target: tuple[str, ...]
    generic: tuple[str, ...]
    category: str = ""


@dataclass(frozen=True)
class CompletionPrompt:
    id: str
    prompt: str
    target_terms: tuple[str, ...] = field(default_factory=tuple)
    category: str = ""


@dataclass(frozen=True)
class KnowledgeProbe:
    id: str
    prompt: str
    answer: str
    distractors: tuple[str, ...]
    category: str = ""

    @property
    def choices(self) -> tuple[str, ...]:
        return (self.answer, *self.distractors)


# ----------------------------------------------------------------- loading
def _validate(kind: str, items: list[dict]) -> None:
    def fail(item, msg):
        raise ProbeDataError(f"{kind} probe {item.get('id', '?')!r}: {msg}")

    seen_ids, seen_prompts = set(), set()
    for item in items:
        prompt = item.get("prompt")
        if not item.get("id") or not isinstance(prompt, str) or not prompt.strip():
            fail(item, "needs a non-empty 'id' and 'prompt'")
        if item["id"] in seen_ids:
            fail(item, "duplicate id")
        if prompt in seen_prompts:
            fail(item, "duplicate prompt")
        seen_ids.add(item["id"])
        seen_prompts.add(prompt)
        if kind == "hp_token":
            target, generic = item.get("target") or [], item.get("generic") or []
            if not target or not generic:
                fail(item, "needs non-empty 'target' and 'generic' lists")
            if any(not isinstance(c, str) or not c.strip() for c in [*target, *generic]):
                fail(item, "has an empty continuation")
            if set(target) & set(generic):
                fail(item, f"target and generic overlap: {sorted(set(target) & set(generic))}")
        elif kind == "hp_completion":
            if any(not t.strip() for t in item.get("target_terms", [])):
                fail(item, "has an empty target term")
        elif kind == "general_knowledge":
            answer, distractors = item.get("answer"), item.get("distractors") or []
            if not isinstance(answer, str) or not answer.strip() or not distractors:
                fail(item, "needs a non-empty 'answer' and 'distractors'")
            if any(not d.strip() for d in distractors) or answer in distractors:
                fail(item, "distractors must be non-empty and differ from the answer")


def load_probes(kind: str, path: str | Path | None = None, limit: int | None = None) -> list:
    """Load and validate a probe set: a built-in one by kind, or your own JSON file."""
    if kind not in PROBE_FILES:
        raise ProbeDataError(f"unknown probe kind {kind!r}: choose one of {', '.join(PROBE_FILES)}")
    if path is None:
        text = package_data("probes", PROBE_FILES[kind]).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProbeDataError(f"{path or PROBE_FILES[kind]} is not valid JSON: {err}") from None
    items = doc.get("prompts" if kind == "hp_completion" else "probes")
    if not isinstance(items, list) or not items:
        raise ProbeDataError(f"{path or PROBE_FILES[kind]} holds no probes")
    _validate(kind, items)
    cls = {"hp_token": TokenProbe, "hp_completion": CompletionPrompt,
           "general_knowledge": KnowledgeProbe}[kind]
    names = cls.__dataclass_fields__
    probes = [cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in it.items() if k in names})
              for it in items]
    return probes[:limit] if limit else probes


# ----------------------------------------------------------------- core scoring
def _device(model) -> torch.device:
    return next(model.parameters()).device


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


@torch.no_grad()
def continuation_logprobs(model, tok, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                          progress: bool = False) -> torch.Tensor:
    """log P(continuation | prompt) for each (prompt, continuation) pair.

    Returns a float tensor of shape [len(pairs)] (on the CPU). Sequences are
    right-padded into batches of ``batch_size``; padding never changes a score.
    """
    encoded = [split_joint(tok, p, c) for p, c in pairs]
    out = torch.empty(len(encoded), dtype=torch.float32)
    device = _device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    starts = range(0, len(encoded), batch_size)
    for lo in tqdm(starts, desc="scoring", disable=not progress):
        chunk = encoded[lo:lo + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # [b, width, vocab]
        for row, (ids, start) in enumerate(chunk):
            positions = torch.arange(start, len(ids))
            # logits at position t-1 predict token t
            out[lo + row] = logp[row, positions - 1, torch.tensor(ids[start:])].sum()
    return out


@torch.no_grad()
def next_token_probs(model, tok, prompt: str) -> torch.Tensor:
    """Probability of every vocabulary token after ``prompt``: shape [vocab]."""
    enc = tok(prompt, return_tensors="pt").to(_device(model))
    if enc["input_ids"].shape[1] == 0:
        raise ValueError("the prompt must not be empty")
    logits = model(**enc).logits[0, -1]
    return torch.softmax(logits.float(), dim=-1).cpu()


def top_k_table(probs: torch.Tensor, tok, k: int = 10) -> pd.DataFrame:
    """The ``k`` most likely tokens of a [vocab] probability vector, as a table."""
    values, indices = probs.topk(k)
    return pd.DataFrame({"token": [tok.decode([int(i)]) for i in indices],
                         "token_id": indices.tolist(), "prob": values.tolist()})


def next_token_topk(model, tok, prompt: str, k: int = 10) -> pd.DataFrame:
    """The model's ``k`` most likely next tokens after ``prompt``."""
    return top_k_table(next_token_probs(model, tok, prompt), tok, k)


# ----------------------------------------------------------------- probe sets
def token_familiarity(model, tok, probes: Sequence[TokenProbe], batch_size: int = 16,
                      progress: bool = True) -> pd.DataFrame:
    """Per probe: probability mass on target and on generic continuations.

    ``p_target`` is the paper's token-probability familiarity for one prompt;
    its mean over the set is the score (see ``familiarity_score``).
    """
    pairs, owners = [], []
    for i, probe in enumerate(probes):
        for kind, conts in (("target", probe.target), ("generic", probe.generic)):
            for c in conts:
                pairs.append((probe.prompt, c))
                owners.append((i, kind))
    probs = continuation_logprobs(model, tok, pairs, batch_size, progress=progress).exp()
    mass = [{"target": 0.0, "generic": 0.0} for _ in probes]
    for (i, kind), p in zip(owners, probs.tolist()):
        mass[i][kind] += p
    return pd.DataFrame({
        "id": [p.id for p in probes], "category": [p.category for p in probes],
        "prompt": [p.prompt for p in probes],
        "target": ["/".join(c.strip() for c in p.target) for p in probes],
        "p_target": [m["target"] for m in mass], "p_generic": [m["generic"] for m in mass],
    })


def familiarity_score(table: pd.DataFrame) -> float:
    """Mean probability mass on target-specific continuations (paper: 0.244 -> 0.006)."""
    return float(table["p_target"].mean())


def knowledge_accuracy(model, tok, probes: Sequence[KnowledgeProbe], batch_size: int = 16,
                       progress: bool = True) -> pd.DataFrame:
    """Multiple choice by likelihood: the model 'answers' with its most likely choice."""
    pairs = [(p.prompt, c) for p in probes for c in p.choices]
    scores = continuation_logprobs(model, tok, pairs, batch_size, progress=progress).tolist()
    rows, at = [], 0
    for p in probes:
        s = scores[at:at + len(p.choices)]
        at += len(p.choices)
        best = max(range(len(s)), key=s.__getitem__)
        rows.append({"id": p.id, "category": p.category, "prompt": p.prompt,
                     "answer": p.answer.strip(), "predicted": p.choices[best].strip(),
                     "correct": best == 0})
    return pd.DataFrame(rows)


def mentioned_terms(prompt: str, completion: str, terms: Sequence[str]) -> list[str]:
    """Target terms that appear in the completion (as whole words, any case) but not
    in the prompt: knowledge the model added rather than repeated."""
    import re

    def has(term, text):
        return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE) is not None

    return [t for t in terms if has(t, completion) and not has(t, prompt)]


@torch.no_grad()
def complete(model, tok, prompts: Sequence[str], max_new_tokens: int = 40, greedy: bool = True,
             temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
             batch_size: int = 8, progress: bool = True) -> list[str]:
    """Continue each prompt; greedy by default, else seeded nucleus sampling.

    Prompts are left-padded into batches so that each continues right after its text.
    """
    if any(not p for p in prompts):
        raise ValueError("prompts must not be empty")
    device = _device(model)
    side = tok.padding_side
    tok.padding_side = "left"
    outputs: list[str] = []
    try:
        if not greedy:
            torch.manual_seed(seed)
        for lo in tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not progress):
            batch = list(prompts[lo:lo + batch_size])
            enc = tok(batch, return_tensors="pt", padding=True).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
                                 temperature=temperature if not greedy else None,
                                 top_p=top_p if not greedy else None, top_k=None,
                                 pad_token_id=tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            outputs += tok.batch_decode(new, skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return outputs
