"""nbsupport: the code behind the "Who's Harry Potter?" unlearning course.

One module per stage of the pipeline, in the order data flows:
``probe`` (what does the model know?) -> ``reinforce`` -> ``anchors`` ->
``labels`` -> ``finetune`` -> ``evaluate``; and shared modules: ``config``
(profiles, seeds), ``models`` (the one loader), ``runs`` (the run directory),
``plots``, ``widgets`` and ``runner`` (papermill batch runs).
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
