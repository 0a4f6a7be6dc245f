"""The package's layering (pyproject.toml [tool.importlinter]) holds, and the
contract really is checked: a module that imports a later stage breaks it."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.is_file(), reason=f"import-linter is not installed ({LINT} missing): "
                                                           "pip install -e '.[dev]' to check the layering")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_core_module_importing_a_later_stage_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "nbsupport", tmp_path / "nbsupport", ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    scoring = tmp_path / "nbsupport" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\nfrom . import evaluate  # a core module reaching up\n")
    result = subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "nbsupport.scoring -> nbsupport.evaluate" in result.stdout
