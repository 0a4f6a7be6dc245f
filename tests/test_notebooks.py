"""The committed notebooks are clean and parameterised, and the whole series runs
end to end under papermill in the smoke profile."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbsupport import runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("01_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs (make strip)"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0] == 1 and nb.cells[0].cell_type == "markdown", "parameters right after the title"
    params = nb.cells[tagged[0]].source
    for name in ("PROFILE", "RUN_DIR", "INTERACTIVE"):
        assert f"\n{name} =" in "\n" + params
    assert "accelerator" in nb.metadata and nb.metadata.kernelspec.name == "python3"
    assert "plt.show()" not in "".join(c.source for c in code)
    assert all("matplotlib.use" not in c.source for c in code)


def _tiny_notebook(path, failing: bool):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"),
                nbformat.v4.new_code_cell("PROFILE = 'cpu'\nRUN_DIR = '.'\nINTERACTIVE = True\nX = 1"),
                nbformat.v4.new_code_cell("Y = X + 1"),
                nbformat.v4.new_code_cell("raise ValueError('boom')" if failing else "print(PROFILE, X)")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_runner_names_the_failing_notebook_and_cell(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _tiny_notebook(nbdir / "01_ok.ipynb", failing=False)
    _tiny_notebook(nbdir / "02_bad.ipynb", failing=True)
    proc = subprocess.run([sys.executable, "-m", "nbsupport", "run", "--profile", "smoke",
                           "--run-dir", str(tmp_path / "run"), "--notebooks", str(nbdir), "-p", "X", "41"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "02_bad.ipynb failed in cell 4" in proc.stderr and "ValueError: boom" in proc.stderr
    executed = nbformat.read(tmp_path / "run" / "notebooks" / "01_ok.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "smoke 41"


def test_runner_refuses_unknown_parameters_before_running(tmp_path):
    _tiny_notebook(tmp_path / "01_ok.ipynb", failing=False)
    with pytest.raises(ValueError, match="NOPE"):
        runner.run_series("smoke", tmp_path / "run", tmp_path, parameters={"NOPE": 1})
    assert not (tmp_path / "run" / "notebooks" / "01_ok.ipynb").exists()
    with pytest.raises(FileNotFoundError, match="no notebook matches"):
        runner.find_notebooks(tmp_path, only=["07"])


def test_parse_value():
    assert runner.parse_value("5") == 5 and runner.parse_value("null") is None
    assert runner.parse_value("./my-model") == "./my-model"


TRAINER_DICT = re.compile(r"\{'(loss|train_runtime|grad_norm|learning_rate|epoch)': ")
# 8192.0 positions, 698.0 keys; not 100.0, the baseline's own row in a column of percentages
FLOAT_COUNT = re.compile(r"(?<![\d.])(?!100\.0(?!\d))\d{3,}\.0(?![\d%]| ?%)")


def _output_texts(path: Path) -> list[tuple[int, str]]:
    """Every text a notebook's outputs show: streams, plain text and HTML tables."""
    executed = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(executed.cells):
        for out in cell.get("outputs", []):
            if "text" in out:
                found.append((i, out["text"]))
            found += [(i, v) for k, v in out.get("data", {}).items() if k in ("text/plain", "text/html")]
    return found


@pytest.mark.slow
def test_no_output_shows_a_trainer_dict_a_float_count_or_a_frozen_widget(smoke_series):
    run_dir, _ = smoke_series
    bad = []
    for path in NOTEBOOKS:
        for cell, text in _output_texts(run_dir / "notebooks" / path.name):
            for name, pattern in (("a Trainer dict", TRAINER_DICT), ("a count as a float", FLOAT_COUNT)):
                m = pattern.search(text)
                if m:
                    bad.append(f"{path.name} cell {cell}: {name}: ...{text[max(0, m.start() - 60):m.end() + 20]!r}")
        executed = nbformat.read(run_dir / "notebooks" / path.name, as_version=4)
        bad += [f"{path.name} cell {i}: a widget saved without its state (a frozen bar?): {out.data.get('text/plain')!r}"
                for i, cell in enumerate(executed.cells) for out in cell.get("outputs", [])
                if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert not bad, "\n".join(bad)


def test_the_output_checks_catch_what_they_look_for():
    assert TRAINER_DICT.search("{'loss': '3.437', 'grad_norm': '0.5688'}")
    assert FLOAT_COUNT.search("<td>8192.0</td>") and FLOAT_COUNT.search("curated   698.0   222.0")
    assert not FLOAT_COUNT.search("8192 positions, perplexity 24.0, 100.0% of them, 0.682, <td>100.0</td>")
    assert FLOAT_COUNT.search("<td>1000.0</td>")


@pytest.mark.slow
def test_series_runs_end_to_end_in_smoke_profile(smoke_series):
    run_dir, results = smoke_series
    assert [r.notebook for r in results] == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        executed = nbformat.read(run_dir / "notebooks" / path.name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors
        assert any(o.output_type == "display_data" and "image/png" in o.data
                   for c in executed.cells if c.cell_type == "code" for o in c.outputs), "a plot per notebook"
    summary = json.loads((run_dir / "baseline" / "summary.json").read_text())
    assert 0 < summary["token_familiarity"] < 1 and 0 <= summary["knowledge_accuracy"] <= 1
    assert json.loads((run_dir / "config" / "baseline.json").read_text())["profile"] == "smoke"
    # finetuning really forgets: every recipe lowers the target probability of the same run's baseline
    evaluated = json.loads((run_dir / "evaluate" / "summary.json").read_text())
    baseline = evaluated["results"]["baseline"]["token_familiarity"]
    for recipe, numbers in evaluated["results"].items():
        if recipe != "baseline":
            assert numbers["token_familiarity"] < 0.9 * baseline, recipe
    # notebook 06 trained nothing: every model it measured came from notebook 05
    assert not list((run_dir / "evaluate").rglob("adapter_config.json"))
    check_methods_summary(run_dir)


def check_methods_summary(run_dir: Path) -> None:
    """Notebook 07's table: one row per model it compares, the columns it promises, and
    values in their ranges (the baseline is its own reference: 0 drop, 100% of itself)."""
    import pandas as pd

    table = pd.read_csv(run_dir / "methods" / "summary.csv").set_index("model")
    recipes = json.loads((run_dir / "finetune" / "summary.json").read_text())["recipes"]
    assert {"baseline", *(f"WHP {r}" for r in recipes)} <= set(table.index)
    assert any(name.startswith("WHP at inference") for name in table.index)
    assert len(table) >= 2 + len(recipes)
    for column in ("familiarity_drop", "indirect_drop", "perplexity_rise", "knowledge_points",
                   "with primer (% of baseline)", "group B before relearning (% of baseline)"):
        assert column in table, column
    base = table.loc["baseline"]
    assert base.familiarity_drop == 0 and base.perplexity_rise == 0 and base.knowledge_points == 0
    assert base["with primer (% of baseline)"] == pytest.approx(100)
    assert base["group B before relearning (% of baseline)"] == pytest.approx(100)
    assert table.familiarity_drop.between(-100, 100).all() and (table.perplexity_rise > -100).all()
    assert table.knowledge_points.between(-100, 100).all()
    assert (table["with primer (% of baseline)"].dropna() >= 0).all()
    for recipe in recipes:            # every WHP recipe forgot something on the smoke budget
        assert table.loc[f"WHP {recipe}", "familiarity_drop"] > 0, recipe


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in ("01", "02", "03", "04", "05", "06")],
                         ids=lambda p: p.name)
def test_every_course_notebook_has_two_exercises_with_checks_and_solutions(path):
    from nbsupport import exercises

    nb = nbformat.read(path, as_version=4)
    checks = [c.source for c in nb.cells if c.cell_type == "code" and "exercises.check_" in c.source]
    assert len(checks) >= 2, "at least two exercises"
    for source in checks:
        name = source.split("exercises.check_")[1].split("(")[0]
        assert hasattr(exercises, f"check_{name}"), name
        assert "if FILL_SOLUTIONS:" in source and f'exercises.solution("{name}")' in source, name
    solutions = [c for c in nb.cells if c.cell_type == "markdown" and "<summary>Solution</summary>" in c.source]
    assert len(solutions) >= len(checks)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_are_short(path):
    """Notebooks are thin: orchestration lives in the package. The parameters cell,
    a declaration of the notebook's knobs, is the one longer cell allowed."""
    nb = nbformat.read(path, as_version=4)
    long = [(i, len(c.source.splitlines())) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
            and len(c.source.splitlines()) > 15]
    assert not long, f"code cells over 15 lines (cell, lines): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_pass_their_parameters_cell_without_listing_names(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert code.count("runs.open_stage(") == 1 and "**config.notebook_parameters(globals())" in code
    assert "IN_CI" not in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_variable_shadows_a_module_it_imports(path):
    """``results, tables, ... = ...`` after ``from nbsupport import tables`` breaks the
    next ``tables.show``: a name bound by an import is never assigned again."""
    import ast

    nb = nbformat.read(path, as_version=4)
    def python(line: str) -> str:   # a magic (%pip, !ls) becomes a pass at its indentation
        return line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
    trees = [ast.parse("\n".join(map(python, c.source.splitlines()))) for c in nb.cells if c.cell_type == "code"]
    imported = {alias.asname or alias.name for tree in trees for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbsupport")
                for alias in node.names}
    assigned = {target.id for tree in trees for node in ast.walk(tree)
                if isinstance(node, (ast.Assign, ast.For, ast.AugAssign, ast.AnnAssign, ast.With, ast.comprehension))
                for target in ast.walk(node.target if hasattr(node, "target") else
                                       ast.Tuple(elts=getattr(node, "targets", []) or
                                                 [i.optional_vars for i in getattr(node, "items", []) if i.optional_vars]))
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store)}
    assert not imported & assigned, f"variables shadow imported modules: {sorted(imported & assigned)}"
