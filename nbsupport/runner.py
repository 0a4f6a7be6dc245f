"""Run the notebook series in batch with papermill.

    python -m nbsupport run --profile cpu --run-dir runs/cpu
    python -m nbsupport run --profile smoke --run-dir runs/ci --only 01
    python -m nbsupport run --profile gpu --run-dir runs/gpu -p MODEL my/model
    python -m nbsupport run --profile paper --run-dir runs/paper --processes 4

Executed copies go to RUN_DIR/notebooks/. A failure stops the series and names
the notebook and the cell that failed. With ``processes`` > 1 (or an accelerate
config) the heavy stages run first on several processes (``launch.py``) and
notebooks 02, 04 and 05 reuse their outputs. With the profile's
``lm_eval_benchmarks``, the paper's benchmarks run after notebook 06 (``lmeval.py``).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

import nbformat
import papermill as pm

from . import lmeval
from .config import PROFILES, PROGRESS_ENV, ConfigError, resolve
from .launch import STAGE_NOTEBOOKS, config_overrides, launch_stage
from .report import SERIES_RECORD, series_record
from .runs import Run

# parameters of the series itself rather than of a notebook
RUNNER_PARAMETERS = ("LM_EVAL_BENCHMARKS",)


class NotebookFailed(RuntimeError):
    def __init__(self, notebook: Path, cell: int | None, error: str, executed: Path):
        self.notebook, self.cell, self.error, self.executed = notebook, cell, error, executed
        where = f"cell {cell}" if cell is not None else "a cell"
        super().__init__(f"{notebook.name} failed in {where}: {error}\n"
                         f"  the executed copy with the traceback: {executed}")


@dataclass
class NotebookResult:
    notebook: str
    seconds: float


def find_notebooks(directory: Path, only: Sequence[str] = ()) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order, optionally filtered by
    number or name prefix (``only=["01", "03"]``)."""
    found = sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {directory}; "
                                "pass --notebooks DIR pointing at the course's notebooks/ folder")
    if only:
        picked = [p for p in found if any(p.name.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.name.startswith(o) for p in found)]
        if missing:
            raise FileNotFoundError(f"no notebook matches {missing}; have: {[p.name for p in found]}")
        found = picked
    return found


def default_notebook_dir() -> Path:
    """``./notebooks`` when run from the repo, else the repo of an editable install."""
    here = Path.cwd() / "notebooks"
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "notebooks"


def source_cell_number(notebook: Path, source: str) -> int | None:
    """1-based number of the cell with this source in the committed notebook (the
    executed copy has papermill's injected-parameters cell, which shifts indices)."""
    cells = nbformat.read(notebook, as_version=4).cells
    return next((i + 1 for i, c in enumerate(cells) if c.source == source), None)


def parse_value(text: str) -> Any:
    """Command-line parameter values: JSON when it parses (5, 0.1, true, null), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_series(profile: str, run_dir: str | Path, notebook_dir: str | Path | None = None,
               only: Sequence[str] = (), parameters: dict[str, Any] | None = None,
               kernel_name: str = "python3", log_output: bool = False,
               progress: bool = True, processes: int = 1,
               accelerate_config: str | Path | None = None) -> list[NotebookResult]:
    """Execute the notebooks in order; raise NotebookFailed at the first failing cell.

    With ``progress`` papermill's bar shows the cell being run, of how many, and
    the time elapsed, so a long notebook never sits silent. With ``processes`` > 1
    or an ``accelerate_config``, the stage of notebooks 02, 04 and 05 is launched on
    that many processes just before each (``launch.launch_stage``).
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    notebook_dir = Path(notebook_dir) if notebook_dir else default_notebook_dir()
    given_run_dir, run_dir = str(run_dir), Path(run_dir).expanduser().resolve()
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(notebook_dir, only)
    declared = {nb: set(pm.inspect_notebook(str(nb))) for nb in notebooks}
    parameters = dict(parameters or {})
    series = {k: parameters.pop(k) for k in RUNNER_PARAMETERS if k in parameters}
    benchmarks = resolve(profile, **config_overrides(series)).lm_eval_benchmarks and \
        any(nb.name.startswith("06") for nb in notebooks)
    if benchmarks:   # refused before anything runs, not after an hour of training
        try:
            lmeval.require_lm_eval()
        except lmeval.LmEvalUnavailable as err:
            raise lmeval.LmEvalUnavailable(f"profile {profile!r} runs the paper's benchmarks after notebook 06: "
                                           f"{err}; or pass -p LM_EVAL_BENCHMARKS false to skip them") from None
        if not lmeval.hub_reachable():
            raise lmeval.LmEvalUnavailable(
                f"profile {profile!r} runs the paper's benchmarks with lm-eval after notebook 06, and their data "
                "comes from the Hugging Face hub, which cannot be reached from here: pass "
                "-p LM_EVAL_BENCHMARKS false to skip them")
    unknown = sorted(set(parameters) - set().union(*declared.values()))
    if unknown:  # caught before anything runs, not after an hour of training
        raise ConfigError(f"no notebook declares the parameter(s) {unknown}; "
                          f"known: {sorted(set().union(*declared.values()))}")
    results = []
    command = " ".join(["python -m nbsupport run --profile", profile, "--run-dir", given_run_dir,
                        *(["--only", *only] if only else []),
                        *[f"-p {k} {json.dumps(v)}" for k, v in {**series, **parameters}.items()]])
    record = Run(run_dir).read_json(SERIES_RECORD) if Run(run_dir).exists(SERIES_RECORD) else {}
    seconds = dict(record.get("notebook_seconds", {})) if record.get("profile") == profile else {}
    # the kernels started here inherit it (no frozen bars in the saved notebooks); restored after
    with mock.patch.dict(os.environ, {PROGRESS_ENV: "0"}):
        for nb in notebooks:
            params = {"PROFILE": profile, "RUN_DIR": str(run_dir), "INTERACTIVE": False,
                      **(parameters or {})}
            params = {k: v for k, v in params.items() if k in declared[nb]}
            executed = out_dir / nb.name
            start = time.perf_counter()
            stage = {number: name for name, number in STAGE_NOTEBOOKS.items()}.get(nb.name[:2])
            if stage and (processes > 1 or accelerate_config):
                staged = {k: v for k, v in params.items() if k not in ("PROFILE", "RUN_DIR")}
                launch_stage(stage, profile, run_dir, staged, processes, accelerate_config)
            print(f"==> {nb.name} (profile {profile})", flush=True)
            try:
                pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name=kernel_name,
                                    cwd=str(nb.parent), log_output=log_output, progress_bar=progress)
            except pm.PapermillExecutionError as err:
                raise NotebookFailed(nb, source_cell_number(nb, err.source), f"{err.ename}: {err.evalue}",
                                     executed) from None
            took = time.perf_counter() - start
            print(f"    {nb.name} done in {took:.0f} s -> {executed}", flush=True)
            results.append(NotebookResult(nb.name, took))
            seconds[nb.name] = round(took, 1)
            Run(run_dir).write_json(SERIES_RECORD, series_record(profile, command, seconds))
            if benchmarks and nb.name.startswith("06"):
                print("==> the paper's benchmarks with lm-eval (baseline vs unlearned)", flush=True)
                print(lmeval.table_markdown(lmeval.benchmark_run(Run(run_dir))), flush=True)
    return results
