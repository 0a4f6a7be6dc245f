"""Where the course lives: the one address that the Colab badges (README) and every
notebook's install cell use. When the repository gets its public home,

    python -m nbsupport set-repository https://github.com/ORG/REPO

rewrites them all, and this constant, at once (run it from the repository's root).
"""
from __future__ import annotations

import re
from pathlib import Path

REPOSITORY = "https://github.com/YOUR-ORG/whos-harry-potter-course"
_GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def slug(url: str) -> str:
    """``ORG/REPO`` of a GitHub address; a ValueError that says the form otherwise."""
    match = _GITHUB.match(url.strip())
    if not match:
        raise ValueError(f"{url!r} is not a GitHub repository address like https://github.com/ORG/REPO")
    return match.group(1)


def files(root: Path) -> list[Path]:
    """The files that name the address: the README, pyproject.toml, the notebooks, this module."""
    root = Path(root)
    found = [root / "README.md", root / "pyproject.toml", *sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")),
             root / "nbsupport" / "home.py"]
    missing = [p for p in found if not p.is_file()]
    if missing or len(found) < 3:
        raise FileNotFoundError(f"{root} does not look like the course's repository (missing: "
                                f"{', '.join(str(p) for p in missing) or 'notebooks/'}): run this from its root")
    return found


def set_repository(url: str, root: str | Path = ".") -> dict[str, int]:
    """Point every Colab badge, install cell and ``REPOSITORY`` at ``url``; returns the
    number of replacements per file. The old address is whatever ``REPOSITORY`` says."""
    new, old = slug(url), slug(REPOSITORY)
    paths = files(Path(root))
    texts = {p: p.read_text(encoding="utf-8") for p in paths}   # read all before writing any
    pattern = re.compile(r"(github\.com/|colab\.research\.google\.com/github/)" + re.escape(old) + r"\b")
    counts = {}
    for path, text in texts.items():
        changed, n = pattern.subn(lambda m: m.group(1) + new, text)
        if n:
            path.write_text(changed, encoding="utf-8")
        counts[str(path)] = n
    return counts


DEFAULT_RUN_DIR = "../runs/course"     # the notebooks' parameters cell
COLAB_DRIVE = "/content/drive"
COLAB_RUN_DIR = f"{COLAB_DRIVE}/MyDrive/whos-harry-potter-course/run"


def colab_setup(profile: str, run_dir: str, in_colab: bool | None = None, gpu: bool | None = None,
                mount=None) -> tuple[str, str]:
    """``(profile, run directory)`` for where the notebook runs. Elsewhere: unchanged.

    On Colab every notebook gets a runtime of its own, so a run directory on the
    runtime's disk is gone when notebook 02 starts: the default one moves to Google
    Drive (mounted here; Colab asks once for permission), where every notebook of the
    series finds it. With a GPU runtime the default ``cpu`` profile becomes ``colab``
    (sized for a free T4). A profile or run directory set by hand is kept.
    """
    import sys

    in_colab = "google.colab" in sys.modules if in_colab is None else in_colab
    if not in_colab:
        return profile, run_dir
    if gpu is None:
        import torch
        gpu = torch.cuda.is_available()
    if profile == "cpu" and gpu:
        profile = "colab"
    if run_dir == DEFAULT_RUN_DIR:
        if mount is None:
            from google.colab import drive
            mount = drive.mount
        mount(COLAB_DRIVE)
        run_dir = COLAB_RUN_DIR if profile == "colab" else f"{COLAB_RUN_DIR}-{profile}"
    print(f"On Colab: profile {profile!r}, run directory {run_dir} (on your Google Drive)")
    return profile, run_dir
