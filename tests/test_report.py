"""The results page is printed by code from runs' records: re-rendered here from the
committed records, it must equal the committed page (no number typed by hand)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nbsupport import report, runs

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_results_page_is_the_render_of_the_committed_records():
    page = ROOT / "docs" / "RESULTS.md"
    assert (ROOT / "docs" / "results").is_dir() and any((ROOT / "docs" / "results").glob("*.json"))
    assert report.render(ROOT / "docs" / "results", page.parent) == page.read_text(encoding="utf-8"), \
        "docs/RESULTS.md differs from its records: python -m nbsupport report --render --markdown docs/RESULTS.md"
    for record in (ROOT / "docs" / "results").glob("*.json"):
        for figure in json.loads(record.read_text()).get("figures", {}).values():
            assert (record.parent / figure).is_file(), figure


def test_the_readme_quotes_no_result_and_links_the_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/RESULTS.md" in readme and len(readme.splitlines()) <= 200
    rows = [r for p in (ROOT / "docs" / "results").glob("*.json") for r in json.loads(p.read_text()).get("results", [])]
    for row in rows:   # no measured drop typed into the README
        for column in ("familiarity_drop", "perplexity_rise"):
            if row.get(column):
                assert f"{row[column]:.1f}%" not in readme and f"| {row[column]:.1f} |" not in readme


def _run(tmp_path) -> runs.Run:
    run = runs.Run(tmp_path / "run")
    run.write_json("run.json", {"profile": "cpu", "model": "embedded", "created": "2026-12-07T00:00:00+00:00"})
    run.write_table("evaluate/results.csv", pd.DataFrame([
        {"model": "baseline", "token_familiarity": 0.0689, "familiarity_drop": 0.0, "perplexity": 24.41},
        {"model": "soft+kl", "token_familiarity": 0.018349, "familiarity_drop": 73.36, "perplexity": 25.04,
         "perplexity_rise": 2.549, "kl_to_baseline": 0.02664}]))
    run.write_json("series.json", {"profile": "cpu", "command": "python -m nbsupport run --profile cpu --run-dir r",
                                   "commit": "abc1234", "machine": "2 CPU cores", "date": "2026-12-07",
                                   "notebook_seconds": {"01_a.ipynb": 50.0, "02_b.ipynb": 70.0}})
    run.path("evaluate").mkdir(exist_ok=True)
    run.path("evaluate/tradeoff.png").write_bytes(b"\x89PNG fake")
    return run


def test_a_runs_table_is_formatted_with_one_decimal_for_percentages_and_four_otherwise(tmp_path):
    text = report.results_markdown(_run(tmp_path))
    assert text.splitlines() == [
        "| model | target prob. | drop % | ppl generic | ppl rise % | KL to B |",
        "|---|---|---|---|---|---|",
        "| baseline | 0.0689 | 0.0 | 24.4 |  |  |",
        "| soft+kl | 0.0183 | 73.4 | 25.0 | 2.5 | 0.0266 |"]


def test_a_kept_record_renders_the_page_with_its_header_table_and_figure(tmp_path):
    run = _run(tmp_path)
    json_dir = tmp_path / "docs" / "results"
    path = report.keep_record(run, json_dir, "cpu")
    record = json.loads(path.read_text())
    assert record["commit"] == "abc1234" and record["figures"] == {"tradeoff": "cpu-tradeoff.png"}
    assert (json_dir / "cpu-tradeoff.png").read_bytes() == b"\x89PNG fake"
    page = report.write_page(json_dir, tmp_path / "docs" / "RESULTS.md")
    assert "## Profile `cpu` (cpu)" in page and "`python -m nbsupport run --profile cpu --run-dir r`" in page
    assert "01 50 s, 02 70 s; 2.0 min in all" in page and "![tradeoff](results/cpu-tradeoff.png)" in page
    assert "| soft+kl | 0.0183 | 73.4 | 25.0 | 2.5 | 0.0266 |" in page
    assert "Not measured with this report yet" in page          # no seeds record
    (json_dir / "seeds-cpu.json").write_text(json.dumps({"profile": "cpu", "seeds": [0, 1, 2], "commit": "x", "rows": {
        "soft+kl": {"familiarity_drop": {"mean": 74.41, "min": 72.0, "max": 76.66}}}}))
    page = report.render(json_dir, tmp_path / "docs")
    assert "| soft+kl | 74.4 (72.0 to 76.7) |" in page and "Not measured" not in page


def test_the_report_command_writes_the_page_and_refuses_unclear_requests(tmp_path):
    run = _run(tmp_path)
    md = tmp_path / "site" / "RESULTS.md"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nbsupport", "report", *args], capture_output=True, text=True)

    done = cli("--run-dir", str(run.root), "--markdown", str(md))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "results" / "cpu.json").is_file() and "| soft+kl |" in md.read_text()
    md.unlink()
    assert cli("--render", "--markdown", str(md)).returncode == 0 and "| soft+kl |" in md.read_text()
    assert "not both" in cli("--render", "--run-dir", str(run.root), "--markdown", str(md)).stderr
    assert "give --markdown" in cli("--render").stderr
    missing = cli("--run-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "06_evaluation.ipynb" in missing.stderr


@pytest.mark.parametrize("value, column, text", [(71.14, "familiarity_drop", "71.1"), (0.01992, "kl_to_baseline",
                                                 "0.0199"), (float("nan"), "perplexity_rise", ""),
                                                 (-1.515, "knowledge_points", "-1.5")])
def test_cells(value, column, text):
    assert report._cell(column, value) == text


def test_the_notebooks_reference_times_are_those_of_the_committed_records():
    from nbsupport import recap
    kept = json.loads((ROOT / "nbsupport" / "data" / "reference_times.json").read_text())
    assert kept == report.reference_times(ROOT / "docs" / "results"), \
        "stale: python -m nbsupport report --render --markdown docs/RESULTS.md"
    cpu = json.loads((ROOT / "docs" / "results" / "cpu.json").read_text())["notebook_seconds"]
    line = recap.expected_time("05_finetune.ipynb")
    assert f"about {cpu['05_finetune.ipynb'] / 60:.0f} min with the `cpu` profile" in line
    assert "on a GPU: not measured yet" in line
    assert "no reference run has timed" in recap.expected_time("99_not_a_notebook.ipynb")
