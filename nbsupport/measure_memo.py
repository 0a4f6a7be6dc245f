"""What ``evaluate.measure`` measured already, kept beside each model (``measures.json``).

A later measure of the same model reads every probe and text it finds there instead of
running the model again (notebook 07's light measure of the models notebook 06 measured
in full). ``run_memo`` finds the memo of one of a run's models, ``model_identity`` says
what the model is, so that a retrained adapter or another dtype is measured afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import models
from .pair import device_of
from .runs import write_text_atomic


class MemoError(ValueError):
    """A measure memo that cannot be read."""


def model_identity(model, spec: str, adapter: str | os.PathLike | None = None) -> dict:
    """What a model is, for a ``MeasureMemo``: its base ``spec`` (``cfg.model``), a
    checksum of the adapter directory's files (None for the base itself), and the
    dtype and device kind it is measured in (a bf16 GPU model scores slightly
    differently from an fp32 CPU one)."""
    digest = None if adapter is None else models.directory_digest(adapter)
    param = next(model.parameters())
    return {"model": str(spec), "adapter_sha256": digest, "dtype": str(param.dtype),
            "device": device_of(model).type}


def run_memo(run, spec: str, model, adapter: str | os.PathLike | None = None) -> "MeasureMemo":
    """The ``MeasureMemo`` of one of ``run``'s models: ``measures.json`` beside its
    adapter directory (``finetune/paper/measures.json``), the baseline's in
    ``baseline/measures.json``. ``spec``: the base model (``cfg.model``)."""
    path = Path(adapter).parent / "measures.json" if adapter is not None else run.path("baseline/measures.json")
    return MeasureMemo(path, model_identity(model, spec, adapter))


class MeasureMemo:
    """What ``measure`` measured on one model, kept in a JSON file: the rows of
    every probe (token, indirect, knowledge) and the per-text NLL and KL sums.

    A later ``measure`` of the same model (same ``identity``, ``model_identity``)
    reads every probe and text it finds there instead of running the model again:
    notebook 06 measures B and the WHP models on all the probes and texts, and
    notebook 07's light measure of those models (a subset of both) then runs only
    its completions. A probe is found by its whole content (id, prompt,
    continuations, choices), a text by its SHA-256 and chunk size, so an edited
    probe or text is measured afresh. A file written for another identity (the
    adapter was retrained, another dtype or device) is ignored and replaced.
    The numbers read back are those computed then: the same model and inputs in
    other batches, equal to ~1e-6.
    """

    def __init__(self, path: str | os.PathLike | None, identity: dict):
        self.path, self.identity = (None if path is None else Path(path)), dict(identity)
        self.data = {"identity": self.identity, "probes": {}, "texts": {}, "kl": {}}
        if self.path is not None and self.path.exists():
            try:
                doc = json.loads(self.path.read_text("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise MemoError(f"{self.path} is not a readable measure memo ({err}): delete it, and the "
                                "next measure of this model writes it again") from None
            if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in self.data):
                raise MemoError(f"{self.path} is not a measure memo (expected the keys {sorted(self.data)}): "
                                "delete it, and the next measure of this model writes it again")
            if doc["identity"] == self.identity:
                self.data = doc
        self.reads = 0        # probes and texts found here, measured before this memo was opened
        self._added = set()   # (section, key) measured since: reading them back is not a read

    def save(self) -> None:
        """Write the file (atomically); a memo without a path (in memory only) writes nothing."""
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self.data, indent=1, ensure_ascii=False) + "\n")

    def rows(self, section: str, probes: Sequence, compute) -> pd.DataFrame:
        """The table ``compute(probes)`` would give, computing only the probes not
        found in ``section``."""
        if not probes:
            return compute([])   # the empty table, with its columns
        stored = self.data["probes"].setdefault(section, {})
        keys = [_probe_key(p) for p in probes]
        todo = {}   # key -> probe, each probe not stored once
        for key, p in zip(keys, probes):
            if key not in stored:
                todo.setdefault(key, p)
        self.reads += sum(k in stored and (section, k) not in self._added for k in keys)
        if todo:
            fresh = compute(list(todo.values()))
            for key, row in zip(todo, fresh.to_dict("records")):
                stored[key] = {c: _plain(v) for c, v in row.items()}
                self._added.add((section, key))
        return pd.DataFrame([stored[k] for k in keys])

    def text_sums(self, section: str, texts: Sequence[str], block_size: int, compute) -> list[tuple]:
        """Per text: the sums ``compute(texts)`` gives (one tuple per text), computing
        only the texts not found in ``section`` ("texts": NLL, "kl": KL)."""
        stored = self.data[section]
        keys = [_text_key(t, block_size) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in stored}
        self.reads += sum(k in stored and (section, k) not in self._added for k in keys)
        if missing:
            for key, sums in zip(missing, compute(list(missing.values()))):
                stored[key] = list(sums)
                self._added.add((section, key))
        return [tuple(stored[k]) for k in keys]


def _probe_key(p) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(p), sort_keys=True).encode()).hexdigest()[:24]


def _text_key(text: str, block_size: int) -> str:
    return f"{hashlib.sha256(text.encode()).hexdigest()[:24]}:{block_size}"


def _plain(value):
    """numpy scalars as plain Python, for JSON."""
    return value.item() if hasattr(value, "item") else value
