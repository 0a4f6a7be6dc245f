"""The course's address is written in one place and rewritten everywhere by one command."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbsupport import home

ROOT = Path(__file__).resolve().parents[1]


def addresses(text: str) -> set[str]:
    """Every GitHub repository a text links to (the README's placeholder ORG/REPO aside)."""
    found = re.findall(r"(?:github\.com/|colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)", text)
    return set(found) - {"ORG/REPO"}


def test_every_badge_and_install_cell_names_the_one_repository():
    want = home.slug(home.REPOSITORY)
    readme = (ROOT / "README.md").read_text()
    assert addresses(readme) == {want}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        install = [c for c in cells if "%pip install" in "".join(c["source"])]
        assert len(install) == 1 and addresses("".join(install[0]["source"])) == {want}, nb.name
        assert f"blob/main/notebooks/{nb.name}" in readme, nb.name      # its Colab badge
    assert f'Repository = "{home.REPOSITORY}"' in (ROOT / "pyproject.toml").read_text()


def test_set_repository_rewrites_badges_install_cells_and_the_constant(tmp_path):
    for name in ("README.md", "pyproject.toml", "notebooks", "nbsupport/home.py"):
        src, dst = ROOT / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    # -P: the copy of nbsupport/home.py in the working folder must not shadow the installed package
    done = subprocess.run([sys.executable, "-P", "-m", "nbsupport", "set-repository", "https://github.com/acme/hp-course"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert addresses((tmp_path / "README.md").read_text()) == {"acme/hp-course"}
    for nb in (tmp_path / "notebooks").glob("*.ipynb"):
        assert addresses(nb.read_text()) == {"acme/hp-course"}, nb.name
        json.loads(nb.read_text())                                      # still a valid notebook
    assert 'REPOSITORY = "https://github.com/acme/hp-course"' in (tmp_path / "nbsupport/home.py").read_text()
    assert "github.com/acme/hp-course" in (tmp_path / "pyproject.toml").read_text()
    badges = len(re.findall(r"colab\.research\.google\.com/github/", (ROOT / "README.md").read_text()))
    assert badges == 7 and f"{badges + 7 + 2} addresses rewritten" in done.stdout   # + 7 install cells, 2 constants
    assert home.slug(home.REPOSITORY) not in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("url", ["github.com/acme/x", "https://gitlab.com/acme/x", "https://github.com/acme"])
def test_set_repository_refuses_what_is_not_a_github_address(url, tmp_path):
    with pytest.raises(ValueError, match="https://github.com/ORG/REPO"):
        home.set_repository(url, tmp_path)


def test_set_repository_outside_the_repository_says_where_to_run_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run this from its root"):
        home.set_repository("https://github.com/acme/x", tmp_path)


def test_on_colab_the_default_run_moves_to_drive_and_a_gpu_gets_the_colab_profile(capsys):
    mounted = []
    profile, run_dir = home.colab_setup("cpu", home.DEFAULT_RUN_DIR, in_colab=True, gpu=True, mount=mounted.append)
    assert (profile, mounted) == ("colab", ["/content/drive"])
    assert run_dir.startswith("/content/drive/MyDrive/")
    assert "colab" in capsys.readouterr().out
    # a CPU runtime keeps the cpu profile, in a run directory of its own on Drive
    profile, cpu_dir = home.colab_setup("cpu", home.DEFAULT_RUN_DIR, in_colab=True, gpu=False, mount=mounted.append)
    assert profile == "cpu" and cpu_dir.startswith("/content/drive/") and cpu_dir != run_dir


def test_choices_made_by_hand_and_every_place_but_colab_are_left_alone():
    def refuse(_):
        raise AssertionError("Drive mounted for a run directory set by hand")
    assert home.colab_setup("smoke", "/content/mine", in_colab=True, gpu=True, mount=refuse) == ("smoke", "/content/mine")
    assert home.colab_setup("cpu", home.DEFAULT_RUN_DIR, in_colab=False, gpu=True, mount=refuse) == \
        ("cpu", home.DEFAULT_RUN_DIR)
