"""nbsupport: the code behind the "Who's Harry Potter?" unlearning course.

The modules follow the notebooks, in the order data flows:
``probe`` (01: what does the model know?) -> ``reinforce`` (02) -> ``anchors``
(03: the dictionary of anchored terms) -> ``generic_labels`` (04) -> ``finetune``
(05) -> ``evaluate`` (06) -> ``methods`` and ``attacks`` (07). Shared modules:
``config`` (the parameter table and profiles), ``models`` (the one loader),
``runs`` (the run directory), ``training`` (the one training skeleton),
``corpus`` (the target and held-out texts), ``plots``, ``widgets``, ``exercises``,
``runner`` (papermill batch runs), ``launch`` (the heavy stages on several
processes) and ``report`` (the results page). The method itself, step by step,
is in docs/ALGORITHM.md.
"""
from pathlib import Path

__version__ = "0.1.0"

DATA_DIR = Path(__file__).resolve().parent / "data"


def package_data(*parts: str) -> Path:
    """Path of a file shipped in ``nbsupport/data``."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"package data {path} is missing; reinstall nbsupport")
    return path
