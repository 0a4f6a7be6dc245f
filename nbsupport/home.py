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
