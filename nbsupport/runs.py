"""The run directory: where every notebook reads its inputs and writes its outputs.

Layout (one folder per stage, named after the notebook that writes it)::

    RUN_DIR/
      run.json                 profile and model of the run (fixed at creation)
      config/<stage>.json      the resolved parameters each notebook ran with
      baseline/ ...            notebook 01
      reinforce/ ...           notebook 02
      ...
      notebooks/               executed copies written by the batch runner

Every write is atomic (temporary file, then rename), so an interrupted notebook
never leaves a half-written artifact that a later notebook would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from . import config

# Which notebook writes each folder of a run; used to tell learners what to run first.
PRODUCERS = {**config.STAGES, "corpus": config.STAGES["reinforce"]}
_FIXED = ("model",)  # parameters every notebook of one run must share


def tensor_digest(*tensors) -> str:
    """A short SHA-256 of tensors' shapes, dtypes and contents: the identity of the
    data a stage was made from (blocks, labels), recorded so a later change is seen."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def is_main_process() -> bool:
    """True on one process (and on the first of a torchrun / accelerate launch):
    the one that writes shared records."""
    return int(os.environ.get("RANK", 0)) == 0


class MissingArtifactError(FileNotFoundError):
    """An input an earlier notebook should have written is not in the run directory."""


class RunMismatchError(ValueError):
    """The run directory was created for another model than the one requested."""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; rename it into place on success.

    On an exception the temporary file or folder is removed and ``target`` is
    left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        tmp = Path(name)
    try:
        yield tmp
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


class Run:
    """A run directory. Paths given to its methods are relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def require(self, name: str) -> Path:
        """Path of an earlier notebook's output, or a clear error naming that notebook."""
        p = self.path(name)
        if not p.exists():
            parts = Path(name).parts
            # config/<stage>.json is written by the stage's own notebook
            stage = Path(parts[-1]).stem if parts[0] == "config" else parts[0]
            producer = PRODUCERS.get(stage, f"the notebook that writes {stage}/")
            raise MissingArtifactError(
                f"{p} is missing: run notebooks/{producer} first with RUN_DIR={str(self.root)!r}")
        return p

    # --- writers (all atomic; they return nothing, so a notebook cell ending with one shows no stray path)
    def write_json(self, name: str, obj: Any) -> None:
        write_text_atomic(self.path(name), json.dumps(_jsonable(obj), indent=2, ensure_ascii=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path(name), text)

    def write_table(self, name: str, table) -> None:
        """A pandas DataFrame as CSV (readable in any spreadsheet)."""
        write_text_atomic(self.path(name), table.to_csv(index=False))

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.require(name))

    def save_tensors(self, name: str, tensors: dict) -> Path:
        """A dict of tensors as safetensors (loadable without pickle)."""
        with atomic_path(self.path(name)) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        return self.path(name)

    def load_tensors(self, name: str) -> dict:
        return load_file(str(self.require(name)))

    def save_figure(self, name: str, fig) -> None:
        """Write a matplotlib figure (PNG unless the name says otherwise). Returns
        nothing, so a notebook cell that ends with it shows no stray path."""
        with atomic_path(self.path(name)) as tmp:
            fig.savefig(tmp, format=Path(name).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")

    @contextmanager
    def atomic_dir(self, name: str) -> Iterator[Path]:
        """Write a folder (a saved model, an adapter) that appears all at once."""
        with atomic_path(self.path(name), directory=True) as tmp:
            yield tmp

    # --- readers
    def read_json(self, name: str) -> Any:
        with open(self.require(name), encoding="utf-8") as fh:
            return json.load(fh)

    def record_config(self, stage: str, cfg: dict) -> None:
        self.write_json(f"config/{stage}.json", dict(cfg))


def open_run(run_dir: str | os.PathLike, cfg: dict | None = None, stage: str | None = None) -> Run:
    """Open (or create) a run directory and record the configuration of ``stage``.

    The first notebook fixes the run's model; a later notebook asking for another
    model gets a RunMismatchError instead of silently mixing two models' outputs.
    """
    run = Run(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        meta_path = run.path("run.json")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            for key in _FIXED:
                if key in cfg and meta.get(key) != cfg[key]:
                    raise RunMismatchError(
                        f"{run.root} was created for {key}={meta.get(key)!r}, not {cfg[key]!r}: "
                        "use a new RUN_DIR for another model, or delete this one")
        else:
            run.write_json("run.json", {
                "profile": cfg.get("profile"), **{k: cfg.get(k) for k in _FIXED},
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        if stage:
            run.record_config(stage, cfg)
    return run


def open_stage(run_dir: str | os.PathLike, profile: str, stage: str, **overrides: Any) -> tuple[Run, config.Config]:
    """The run contract of a notebook: ``(run, cfg)`` for ``stage`` of ``run_dir``.

    ``cfg`` is the profile with the notebook's parameters applied (``None`` = the
    profile's value), except that every parameter an earlier stage fixed
    (``config.FIXED_BY``: the model, the block size, the alpha, ...) is inherited
    from that stage's recorded configuration. Asking for another value of an
    inherited parameter raises ``RunMismatchError`` naming the stage that fixed
    it. The resolved configuration is recorded as ``config/<stage>.json``. In a
    batch run's kernel (``NBSUPPORT_PROGRESS=0``) the libraries' own progress bars
    are turned off too.
    """
    config.quiet_library_bars()
    cfg = inherited_config(run_dir, profile, stage, **overrides)
    return open_run(run_dir, cfg, stage=stage), cfg


def inherited_config(run_dir: str | os.PathLike, profile: str, stage: str, **overrides: Any) -> config.Config:
    """``open_stage``'s configuration, without recording it (for scripts that read a run)."""
    if stage not in config.STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(config.STAGES)}")
    cfg = config.resolve(profile, **overrides)
    run = Run(run_dir)
    order = list(config.STAGES)
    for owner in order[:order.index(stage)]:
        if not run.exists(f"config/{owner}.json"):
            continue
        recorded = run.read_json(f"config/{owner}.json")
        for name, fixer in config.FIXED_BY.items():
            if fixer != owner or name not in recorded:
                continue
            asked = overrides.get(name, overrides.get(name.upper()))
            if asked is not None and _jsonable(asked) != recorded[name]:
                raise RunMismatchError(
                    f"{name.upper()}={asked!r} conflicts with {run.root}: notebooks/{PRODUCERS[owner]} "
                    f"ran with {name.upper()}={recorded[name]!r}, and its outputs depend on it. Leave "
                    f"{name.upper()} = None to inherit it, or rerun the series from that notebook in a new RUN_DIR.")
            cfg[name] = recorded[name]
    return cfg
