"""Step 0 of the course: what does the model know? Probe data and probing functions.

Three probe sets ship with the package (all written for this course):

* ``hp_token``: a prompt, Harry-Potter-specific continuations (``target``) and
  plausible generic ones (``generic``): the paper's token-probability test.
* ``hp_indirect``: token probes whose prompts name nothing of the target world
  (no anchored term): they describe instead ("the boy with the lightning-shaped
  scar"), so they test knowledge the anchors never swapped.
* ``hp_completion``: open prompts about the Harry Potter world, with terms a
  knowing model tends to produce (``target_terms``): the completion test.
* ``general_knowledge``: multiple-choice facts with no Harry Potter in them, to
  check the model stays useful.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import package_data, terms
from .scoring import continuation_logprobs

PROBE_FILES = {
    "hp_token": "hp_token_probes.json",
    "hp_indirect": "hp_indirect_probes.json",
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
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProbeDataError(f"{kind} probe number {i} is a {type(item).__name__}, not an object")
        prompt = item.get("prompt")
        if not item.get("id") or not isinstance(prompt, str) or not prompt.strip():
            fail(item, "needs a non-empty 'id' and 'prompt'")
        if item["id"] in seen_ids:
            fail(item, "duplicate id")
        if prompt in seen_prompts:
            fail(item, "duplicate prompt")
        seen_ids.add(item["id"])
        seen_prompts.add(prompt)
        if kind in ("hp_token", "hp_indirect"):
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
    where = str(path) if path is not None else PROBE_FILES[kind]
    source = Path(path) if path is not None else package_data("probes", PROBE_FILES[kind])
    if not source.is_file():
        raise ProbeDataError(f"probe file {source} not found")
    try:
        doc = json.loads(source.read_text("utf-8"))
    except UnicodeDecodeError:
        raise ProbeDataError(f"{where} is not UTF-8: save it as UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise ProbeDataError(f"{where} is not valid JSON: {err}") from None
    field_name = "prompts" if kind == "hp_completion" else "probes"
    if not isinstance(doc, dict) or field_name not in doc:
        raise ProbeDataError(f"{where}: expected an object with a {field_name!r} list, "
                             f'e.g. {{"version": 1, "{field_name}": [...]}}')
    items = doc[field_name]
    if not isinstance(items, list) or not items:
        raise ProbeDataError(f"{where}: {field_name!r} must be a non-empty list")
    _validate(kind, items)
    cls = {"hp_token": TokenProbe, "hp_indirect": TokenProbe, "hp_completion": CompletionPrompt,
           "general_knowledge": KnowledgeProbe}[kind]
    names = cls.__dataclass_fields__
    probes = [cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in it.items() if k in names})
              for it in items]
    return probes[:limit] if limit else probes


def load_lexicon() -> dict[str, list[str]]:
    """The completion judge's target lexicon, written independently of the anchor
    dictionary: ``{"unique": [...], "themes": [...]}``. ``unique`` holds names and
    words that exist only in the target world (a 3 on the paper's scale when a
    completion adds one), ``themes`` words typical of the genre (a 2)."""
    doc = json.loads(package_data("probes", "hp_target_lexicon.json").read_text("utf-8"))
    return {"unique": list(doc["unique"]), "themes": list(doc["themes"])}


def split(probes: Sequence, part: str) -> list:
    """The development half (``"dev"``: recipes and settings are chosen on it) or the
    report half (``"report"``: only ever reported) of a probe set.

    The split is by a hash of each probe's id, so it is fixed whatever the order or
    the number of probes loaded, and a new probe never moves an old one.
    """
    if part not in ("dev", "report"):
        raise ValueError(f"part must be 'dev' or 'report', got {part!r}")
    want = 0 if part == "dev" else 1
    return [p for p in probes if hashlib.sha256(p.id.encode()).digest()[0] % 2 == want]


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
    probs = continuation_logprobs(model, tok, pairs, batch_size, progress=progress,
                                  desc=f"scoring {len(probes)} token probes").exp()
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
    scores = continuation_logprobs(model, tok, pairs, batch_size, progress=progress,
                                   desc=f"scoring {len(probes)} knowledge questions").tolist()
    rows, at = [], 0
    for p in probes:
        s = scores[at:at + len(p.choices)]
        at += len(p.choices)
        best = max(range(len(s)), key=s.__getitem__)
        rows.append({"id": p.id, "category": p.category, "prompt": p.prompt,
                     "answer": p.answer.strip(), "predicted": p.choices[best].strip(),
                     "correct": best == 0})
    return pd.DataFrame(rows)


def mentioned_terms(prompt: str, completion: str, target_terms: Sequence[str]) -> list[str]:
    """Target terms the completion mentions and the prompt does not: knowledge the
    model added rather than repeated (``terms.added``, the judge's rule too)."""
    return terms.added(prompt, completion, target_terms)[0]
