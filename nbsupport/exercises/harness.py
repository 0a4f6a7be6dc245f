"""What every exercise shares: the report a check prints, the helpers that compare
an answer with the expected one, the registry of reference solutions, and the
batch flag set by ``fill_solutions``.

A check prints one line per test (✓ passed, ✗ failed with a hint) and returns
True or False. In a batch run (``fill_solutions`` returned True: the reference
solutions are filled in, as papermill runs the notebooks with ``INTERACTIVE =
False``) a ✗ can only be a bug of the course, so the check raises
``ExerciseFailed`` instead of returning False, and the run fails.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

_SOLUTIONS: dict[str, Any] = {}
_batch_run = False          # set by fill_solutions: the solutions are filled in, a ✗ raises


class ExerciseFailed(AssertionError):
    """A check found a ✗ in a batch run, where the reference solutions are filled in."""


def register(name: str, value: Any) -> Any:
    """Record ``value`` as the reference solution of exercise ``name``; returns it."""
    _SOLUTIONS[name] = value
    return value


def solution_of(name: str) -> Callable:
    """A decorator: ``@solution_of("generic_logits")`` registers the function below it."""
    return lambda fn: register(name, fn)


def solution(name: str) -> Any:
    """The reference solution of exercise ``name`` (a function, or the answer itself
    for the quizzes ``alpha_puzzle``, ``anchor_quiz`` and ``probe``)."""
    if name not in _SOLUTIONS:
        raise KeyError(f"no exercise named {name!r}; choose one of {', '.join(sorted(_SOLUTIONS))}")
    value = _SOLUTIONS[name]
    return dict(value) if isinstance(value, dict) else value


def fill_solutions(solutions: bool | None, interactive: bool) -> bool:
    """Whether a notebook should use the reference solutions: ``SOLUTIONS`` when it
    is set, else in batch runs only (``INTERACTIVE = False``), where no learner types.

    When it returns True the checks that follow raise ``ExerciseFailed`` on a ✗
    (the solutions must pass, and a batch run must fail when one does not); when it
    returns False they print their report and return False, for the learner."""
    global _batch_run
    _batch_run = (not interactive) if solutions is None else bool(solutions)
    return _batch_run


def batch_run() -> bool:
    """Whether the last ``fill_solutions`` filled in the solutions (a ✗ then raises)."""
    return _batch_run


# ----------------------------------------------------------------- reporting
class NotImplementedYet(Exception):
    """Raised inside a check when the learner's answer is still the stub."""


class Report:
    """Prints one line per check; ``with Report("name") as r:`` ends with a summary,
    turns a NotImplementedError of the learner's stub into a plain message, and in a
    batch run raises ``ExerciseFailed`` naming the exercise and its first ✗."""

    def __init__(self, exercise: str):
        self.exercise = exercise
        self.passed = True
        self.failures: list[str] = []

    def ok(self, message: str) -> None:
        print(f"✓ {message}")

    def fail(self, message: str) -> None:
        self.passed = False
        self.failures.append(message)
        print(f"✗ {message}")

    def cases(self, failures: list[str], good: str) -> None:
        """The first failed case (the one to fix first), or ``good`` when none failed."""
        if failures:
            self.fail(failures[0])
        else:
            self.ok(good)

    def expect(self, condition: bool, good: str, bad: str) -> bool:
        (self.ok if condition else self.fail)(good if condition else bad)
        return bool(condition)

    def call(self, fn: Callable, *args, case: str = "a case"):
        try:
            return fn(*args)
        except NotImplementedError:
            raise NotImplementedYet from None
        except Exception:
            self.passed = False
            print(f"✗ your function raised an error on {case} (the traceback is below)")
            raise

    def __enter__(self) -> "Report":
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is NotImplementedYet:
            self.fail("not implemented yet: write your code in the cell above (replace the "
                      "`raise NotImplementedError`), run it, then run this cell again")
        elif kind is not None:
            return False
        else:
            print("All checks passed." if self.passed else "Some checks failed: read the ✗ lines above.")
        if not self.passed and _batch_run:
            more = len(self.failures) - 1
            raise ExerciseFailed(
                f"exercise {self.exercise!r} failed in a batch run (the reference solutions are filled in): "
                f"{self.failures[0] if self.failures else 'see the report above'}"
                + (f" (and {more} more ✗)" if more > 0 else ""))
        return kind is NotImplementedYet


# ----------------------------------------------------------------- comparing
def as_tensor(x) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(x)).detach().float().cpu()


def same(got, expected, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Whether ``got`` has ``expected``'s shape and values (within the tolerances)."""
    try:
        got, expected = as_tensor(got), as_tensor(expected)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == expected.shape and torch.allclose(got, expected, atol=atol, rtol=rtol)


def diagnose(got, variants: dict[str, Any], same=same) -> str:
    """The hint of the first known wrong answer ``got`` equals, or ''."""
    for hint, value in variants.items():
        try:
            if same(got, value):
                return " Hint: " + hint
        except Exception:  # a variant that does not apply to this case
            continue
    return ""


def short(x, n: int = 6) -> str:
    """A short description of an answer for a ✗ line."""
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        return f"{x.item():.5g}"
    if isinstance(x, torch.Tensor):
        flat = x.detach().float().flatten()
        body = ", ".join(f"{v:.3f}" for v in flat[:n].tolist())
        return f"tensor of shape {tuple(x.shape)} [{body}{', ...' if flat.numel() > n else ''}]"
    return repr(x)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
