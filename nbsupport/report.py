"""The results page, printed by code from runs: never typed by hand.

``python -m nbsupport report --run-dir R`` prints a run's before/after table.
``python -m nbsupport report --run-dir R --markdown docs/RESULTS.md`` also keeps the
run's small record (``docs/results/<name>.json``: the table's rows, the command,
the commit, the machine, the date, the time of each notebook) with its plots, and
writes the whole page from every record in ``docs/results/``;
``python -m nbsupport report --render --markdown docs/RESULTS.md`` writes the page
again from the committed records alone (a test does, and compares).
"""
from __future__ import annotations

import json
import math
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

REPORT_COLUMNS = {  # results.csv column -> Markdown header
    "token_familiarity": "target prob.", "familiarity_drop": "drop %", "familiarity_report_drop": "drop % (report half)",
    "familiarity_in_text_report_drop": "in-text drop % (report half)",
    "familiarity_not_in_text_report_drop": "not-in-text drop % (report half)",
    "indirect_drop": "indirect drop %", "completion_familiarity": "completion fam.",
    "knowledge_accuracy": "GK acc.", "knowledge_points": "GK pts", "perplexity": "ppl generic",
    "perplexity_rise": "ppl rise %", "perplexity_nearby": "ppl nearby", "kl_to_baseline": "KL to B",
}
SEED_COLUMNS = {  # benchmarks/headline_seeds.py's measures -> header
    "familiarity_drop": "drop %", "familiarity_report_drop": "drop % (report half)",
    "familiarity_in_text_report_drop": "in-text drop % (report half)", "indirect_drop": "indirect drop %",
    "perplexity_rise": "ppl rise %", "knowledge_points": "GK pts",
}
FIGURES = {"tradeoff": "evaluate/tradeoff.png", "methods-tradeoff": "methods/tradeoff.png"}
SERIES_RECORD = "series.json"   # written by the runner into the run directory


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    percent = column.endswith(("drop", "rise", "points")) or column.startswith("perplexity")
    return f"{value:.1f}" if percent else f"{value:.4f}"


def table_markdown(rows: list[dict], columns: dict[str, str] = REPORT_COLUMNS) -> str:
    """Rows (``{"model": name, column: value, ...}``) as a Markdown table of ``columns``."""
    cols = [c for c in columns if any(c in r for r in rows)]
    lines = ["| model | " + " | ".join(columns[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(_cell(c, row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _rows(table: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict("records")]


def results_markdown(run) -> str:
    """The before/after table of notebook 06 as Markdown (``python -m nbsupport report``)."""
    return table_markdown(_rows(run.read_table("evaluate/results.csv")))


def machine() -> str:
    """This machine in a few words: CPU cores, architecture, GPU if any, torch version."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    import os
    return f"{os.cpu_count()} CPU cores ({platform.machine()}){gpu}, torch {torch.__version__}"


def commit(directory: str | Path | None = None) -> str | None:
    """The git commit of ``directory`` (default: the package's checkout), or None outside git."""
    where = Path(directory) if directory else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def collect(run, name: str) -> dict:
    """A run's record for the results page: its results rows and how it was made
    (from the runner's ``series.json`` where the series ran with the runner)."""
    series = run.read_json(SERIES_RECORD) if run.exists(SERIES_RECORD) else {}
    meta = run.read_json("run.json") if run.exists("run.json") else {}
    return {"name": name, "profile": series.get("profile", meta.get("profile")),
            "command": series.get("command"), "commit": series.get("commit"), "machine": series.get("machine"),
            "date": series.get("date", meta.get("created")), "notebook_seconds": series.get("notebook_seconds", {}),
            "results": _rows(run.read_table("evaluate/results.csv"))}


def keep_record(run, json_dir: str | Path, name: str) -> Path:
    """Write ``collect(run, name)`` to ``json_dir/<name>.json`` and copy the run's
    figures beside it (``<name>-tradeoff.png``, ...). Returns the JSON's path."""
    json_dir = Path(json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    record = collect(run, name)
    record["figures"] = {}
    for figure, source in FIGURES.items():
        if run.exists(source):
            target = f"{name}-{figure}.png"
            shutil.copyfile(run.path(source), json_dir / target)
            record["figures"][figure] = target
    path = json_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _seconds(record: dict) -> str:
    times = record.get("notebook_seconds") or {}
    if not times:
        return "not recorded"
    parts = ", ".join(f"{nb[:2]} {s:.0f} s" for nb, s in times.items())
    return f"{parts}; {sum(times.values()) / 60:.1f} min in all"


def render(json_dir: str | Path, markdown_dir: str | Path) -> str:
    """The results page from every record in ``json_dir`` (figures linked relative to
    ``markdown_dir``, where the page goes)."""
    json_dir = Path(json_dir)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(json_dir.glob("*.json"))]
    runs_ = [r for r in records if "results" in r]
    seeds = [r for r in records if "seeds" in r]
    rel = Path(json_dir.resolve()).relative_to(Path(markdown_dir).resolve()) \
        if Path(json_dir.resolve()).is_relative_to(Path(markdown_dir).resolve()) else json_dir
    lines = ["# Results", "",
             "Written by `python -m nbsupport report` from the records in "
             f"`{rel.as_posix()}/` (one per run, kept with the code). Do not edit by hand: run the series, "
             "then the report command each section names.", ""]
    if not runs_:
        lines += ["No run has been recorded yet.", ""]
    for r in runs_:
        lines += [f"## Profile `{r['profile']}` ({r['name']})", "",
                  f"- command: `{r.get('command') or 'not recorded'}`",
                  f"- commit: `{r.get('commit') or 'not recorded'}`; machine: {r.get('machine') or 'not recorded'}; "
                  f"date: {r.get('date') or 'not recorded'}",
                  f"- time per notebook: {_seconds(r)}",
                  f"- this page: `python -m nbsupport report --run-dir <that run> --name {r['name']} "
                  "--markdown docs/RESULTS.md`", "",
                  table_markdown(r["results"]), ""]
        for figure, file in (r.get("figures") or {}).items():
            lines += [f"![{figure}]({(rel / file).as_posix()})", ""]
    if not any(r.get("machine") and "GPU " in r["machine"] for r in runs_):
        lines += ["## On a GPU", "", "No run on a GPU has been recorded yet: the `colab` profile (a free T4) and "
                  "the `gpu` profile are unmeasured, their times included. Run a series on one and keep its record "
                  "here with the command above.", ""]
    lines += ["## Several seeds", ""]
    if not seeds:
        lines += ["Not measured with this report yet: `python benchmarks/headline_seeds.py --profile cpu "
                  "--seeds 0 1 2 --run-root runs/seeds --json docs/results/seeds-cpu.json`, then "
                  "`python -m nbsupport report --render --markdown docs/RESULTS.md`.", ""]
    for s in seeds:
        lines += [f"Profile `{s['profile']}`, seeds {', '.join(str(x) for x in s['seeds'])} "
                  f"(commit `{s.get('commit') or 'not recorded'}`); mean (min to max):", ""]
        header = "| model | " + " | ".join(SEED_COLUMNS.values()) + " |"
        lines += [header, "|---|" + "---|" * len(SEED_COLUMNS)]
        for model, by in s["rows"].items():
            cells = [f"{by[c]['mean']:.1f} ({by[c]['min']:.1f} to {by[c]['max']:.1f})" if c in by else ""
                     for c in SEED_COLUMNS]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def reference_times(json_dir: str | Path) -> dict:
    """``{profile: {"machine", "commit", "seconds": {notebook: s}}}`` from the kept
    series records (seeds records have no times): what each notebook's first cell
    quotes as its expected time (``recap.expected_time``)."""
    out = {}
    for path in sorted(Path(json_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("notebook_seconds"):
            out[record.get("profile") or record["name"]] = {
                "machine": record.get("machine", ""), "commit": record.get("commit", ""),
                "seconds": {k: round(v) for k, v in record["notebook_seconds"].items()}}
    return out


TIMES_PATH = Path(__file__).resolve().parent / "data" / "reference_times.json"


def course_page(markdown: str | Path) -> bool:
    """Whether ``markdown`` is this repository's own results page (``docs/RESULTS.md``
    beside the package): only its records set the notebooks' reference times."""
    return Path(markdown).resolve() == TIMES_PATH.parents[2] / "docs" / "RESULTS.md"


def write_page(json_dir: str | Path, markdown: str | Path, times: str | Path | None = None) -> str:
    """The results page (and, with ``times``, the notebooks' reference times) from the records."""
    markdown = Path(markdown)
    text = render(json_dir, markdown.parent)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text, encoding="utf-8")
    if times is not None:
        Path(times).write_text(json.dumps(reference_times(json_dir), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return text


def series_record(profile: str, command: str, notebook_seconds: dict[str, float]) -> dict:
    """What the runner records of a series: enough for the results page's header."""
    return {"profile": profile, "command": command, "commit": commit(), "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "notebook_seconds": notebook_seconds}
