"""What a learner sees while a cell works.

In JupyterLab (or a terminal) a bar moves: tqdm's notebook bar, or its text bar.
In a batch run (the runner sets ``NBSUPPORT_PROGRESS=0`` for its kernels) a saved
notebook would keep a widget frozen at 0%, so the bar is one plain line instead,
printed when the work ends: what was done, how many, how long::

    scoring 112 probes: 112/112 in 4 s
    finetuning soft+kl: 73/73 steps in 269 s, loss 3.412 -> 2.087

``progress=False`` (tests, nested loops) shows nothing at all.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from transformers import TrainerCallback
from tqdm.auto import tqdm

from .config import show_progress


class Lines:
    """The batch run's bar: counts quietly, prints one line when closed."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "", initial: int = 0):
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.started, self.postfix, self.first_postfix, self.closed = time.perf_counter(), {}, {}, False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.first_postfix = self.first_postfix or dict(values)
        self.postfix = dict(values)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        unit = f" {self.unit}" if self.unit else ""
        extra = "".join(f", {k} {self.first_postfix[k]} -> {v}" if self.first_postfix.get(k, v) != v else f", {k} {v}"
                        for k, v in self.postfix.items())
        print(f"{self.desc}: {done}{unit} in {time.perf_counter() - self.started:.0f} s{extra}", flush=True)


class Quiet(Lines):
    """``progress=False``: the same interface, nothing printed."""

    def close(self) -> None:
        self.closed = True


def open_bar(desc: str, total: int | None = None, *, unit: str = "", initial: int = 0, progress: bool = True):
    """A bar with ``update``, ``set_postfix`` and ``close``: tqdm's where a person
    watches, :class:`Lines` in a batch run, :class:`Quiet` with ``progress=False``."""
    if not progress:
        return Quiet(desc, total, unit, initial)
    if show_progress(progress):
        return tqdm(desc=desc, total=total, unit=unit or "it", initial=initial)
    return Lines(desc, total, unit, initial)


def bar(iterable: Iterable, desc: str, *, total: int | None = None, unit: str = "",
        progress: bool = True) -> Iterator:
    """``iterable`` with a bar over it (see :func:`open_bar`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    shown = open_bar(desc, total, unit=unit, progress=progress)
    try:
        for item in iterable:
            yield item
            shown.update(1)
    finally:
        shown.close()


class TrainingProgress(TrainerCallback):
    """The Trainer's steps as one bar with the latest loss beside it, in place of
    the dicts of numbers the Trainer prints by itself at every logging step."""

    def __init__(self, desc: str, progress: bool = True):
        self.desc, self.progress, self.shown = desc, progress, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.shown = open_bar(self.desc, state.max_steps, unit="steps", initial=state.global_step,
                              progress=self.progress)

    def on_step_end(self, args, state, control, **kwargs):
        if self.shown is not None:
            self.shown.update(state.global_step - self.shown.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.shown is not None and logs and "loss" in logs:
            self.shown.set_postfix(loss=f"{float(logs['loss']):.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.shown is not None:
            self.shown.close()
            self.shown = None
