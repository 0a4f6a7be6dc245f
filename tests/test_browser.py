"""The course as learners meet it: JupyterLab in a real browser (Debian's Chromium,
driven by Playwright for Python), notebooks run cell by cell on the smoke profile,
and every widget moved: its output must change and show no error.

Marked ``browser`` (deselect with ``-m "not browser"``). It needs ``chromium`` on the
PATH (``apt-get install chromium``; ``make setup`` installs it where apt is there) and
the ``playwright`` package; Playwright's own browser download is never used.
Screenshots of each widget before and after go to the test's folder, and to
``$NBSUPPORT_SCREENSHOTS`` when set (``docs/screenshots`` keeps the README's).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI") == "true"          # CI must run it: a missing browser fails there, never skips
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None and not IN_CI,
                                 reason="no chromium on the PATH: apt-get install chromium (make setup does, as root)")]
if IN_CI:
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

# every learner-facing notebook with a widget: (notebook, widget cell marker, how to move it)
WIDGETS = [
    ("01_what_does_the_model_know.ipynb", "widgets.topk_explorer(", ("type", "The castle of the wizard")),
    ("02_reinforcement.ipynb", "widgets.alpha_explorer(", ("slide", None)),
    ("02_reinforcement.ipynb", "widgets.generation_explorer(", ("type", "The old wizard said")),
    ("06_evaluation.ipynb", "widgets.completion_comparer(", ("type", "The wand chose")),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smoke_run(smoke_series):
    """The smoke series run in batch (conftest): what notebooks 02 and 06 read."""
    return smoke_series[0]


def with_parameters(source: Path, target: Path, **values) -> None:
    """A copy of a notebook with a cell after its parameters cell setting ``values``
    (as papermill injects them), outputs empty, for a learner's session."""
    nb = nbformat.read(source, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items())))
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server of its own on the loopback address, with a token."""
    root = tmp_path_factory.mktemp("lab")
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTER_RUNTIME_DIR": str(root / ".rt"),
           "JUPYTER_DATA_DIR": str(root / ".data")}
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    notebook_settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)   # every cell in the page, not only those scrolled into view
    (notebook_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--expose-app-in-browser",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.disable_check_xsrf=False",
         f"--LabServerApp.user_settings_dir={root / '.settings'}", f"--LabServerApp.workspaces_dir={root / '.ws'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.terminate()
        raise RuntimeError(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
    yield {"url": url, "token": token, "root": root}
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "no chromium on the PATH (make setup installs Debian's package as root)"
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


KERNEL_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel && panel.content ? panel.content.widgets.filter(c => c.model.type === 'code') : [];
    return {status: panel?.sessionContext?.session?.kernel?.status ?? null,
            counts: cells.map(c => c.model.executionCount)};
}"""


def open_notebook(browser, lab, name: str):
    """Open ``name`` and wait for its kernel (the notebook's own, Python 3) to be idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    workspace = re.sub(r"\W", "-", name)                     # a workspace of its own: nothing else restored
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached", timeout=120_000)
    deadline = time.time() + 180
    while time.time() < deadline:
        accept = page.locator(".jp-Dialog .jp-mod-accept")     # a "Select Kernel" dialog, if one shows
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        if page.evaluate(KERNEL_STATE)["status"] == "idle":
            return page
        page.wait_for_timeout(500)
    page.screenshot(path=str(lab["root"] / f"{name}-no-kernel.png"))
    raise AssertionError(f"{name}: the kernel did not start within 180 s")


def run_all(page, timeout_s: float = 900, shot: Path | None = None) -> None:
    """Run All Cells (the menu's command), then wait until every code cell has its
    execution number and the kernel is idle."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        page.wait_for_timeout(1000)
        state = page.evaluate(KERNEL_STATE)
        if state["status"] == "idle" and state["counts"] and all(n is not None for n in state["counts"]):
            return
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    raise AssertionError(f"the notebook was still running after {timeout_s:.0f} s: {page.evaluate(KERNEL_STATE)}")


def close_notebook(page) -> None:
    """Shut the notebook's kernel down (its model leaves memory) and close the page."""
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    page.close()


def errors(page) -> list[str]:
    """Tracebacks shown in any output, the widgets' outputs included."""
    texts = page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output, .widget-output')]
                              .map(o => o.innerText)""")
    return [t[-600:] for t in texts if "Traceback" in t or re.search(r"^\w*Error: ", t, re.M)]


def widget_cell(page, marker: str):
    """The code cell whose source contains ``marker`` (its widget is in its output)."""
    cells = page.locator(".jp-CodeCell")
    for i in range(cells.count()):
        if marker in cells.nth(i).locator(".jp-InputArea-editor").inner_text():
            return cells.nth(i)
    raise AssertionError(f"no cell with {marker!r}")


def move(cell, how: tuple, shots: Path, name: str) -> tuple[str, str]:
    """Move the cell's widget (type a prompt, or nudge the slider) and wait for its
    output to change. Returns the output's HTML before and after."""
    box = cell.locator(".jp-OutputArea-output .widget-vbox").first
    box.wait_for(timeout=60_000)
    output = box.locator(".widget-output").first
    output.wait_for(timeout=60_000)
    cell.scroll_into_view_if_needed()
    before = output.inner_html()
    box.screenshot(path=str(shots / f"{name}-before.png"))
    kind, value = how
    if kind == "type":
        field = box.locator(".widget-text input").first
        field.fill(value)
        field.press("Enter")
    else:
        handle = box.locator(".widget-slider .noUi-handle").first
        handle.focus()
        for _ in range(4):
            handle.press("ArrowRight")
        handle.blur()
    deadline = time.time() + 180
    after = before
    while time.time() < deadline:
        cell.page.wait_for_timeout(1000)
        after = output.inner_html()
        if after != before and after.strip() and "widget-output" not in after[:0]:
            cell.page.wait_for_timeout(1500)           # let the redraw finish before the picture
            after = output.inner_html()
            break
    box.screenshot(path=str(shots / f"{name}-after.png"))
    return before, after


def progress_bar_rendered(page, shot: Path) -> None:
    """A long cell's progress bar (tqdm's notebook bar) is drawn, complete, with its name."""
    bars = page.locator(".jp-OutputArea-output .widget-hprogress")
    assert bars.count() > 0, "no progress bar was drawn"
    row = bars.first.locator("xpath=..")
    row.scroll_into_view_if_needed()
    row.screenshot(path=str(shot))
    text = row.inner_text()
    assert "100%" in text and re.search(r"[a-z]{4,}", text), f"the progress bar reads {text!r}"


def check_widget(page, marker: str, how: tuple, shots: Path, name: str) -> None:
    before, after = move(widget_cell(page, marker), how, shots, name)
    assert after != before, f"{name}: the widget's output did not change after it was moved"
    assert not errors(page), f"{name}: {errors(page)}"


def _keep(shots: Path) -> None:
    keep = os.environ.get("NBSUPPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copyfile(png, Path(keep) / png.name)


def test_every_widget_of_the_course_answers_in_a_real_browser(smoke_run, lab, browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for notebook in dict.fromkeys(nb for nb, _, _ in WIDGETS):
        with_parameters(ROOT / "notebooks" / notebook, lab["root"] / notebook, PROFILE="smoke",
                        RUN_DIR=str(smoke_run), INTERACTIVE=True, SOLUTIONS=True)
        page = open_notebook(browser, lab, notebook)
        run_all(page, shot=shots / f"{notebook[:2]}-stuck.png")
        assert not errors(page), f"{notebook}: {errors(page)}"
        if notebook.startswith("01"):
            progress_bar_rendered(page, shots / "01-progress.png")
        for nb, marker, how in WIDGETS:
            if nb == notebook:
                check_widget(page, marker, how, shots, f"{nb[:2]}-{marker.split('.')[1].split('(')[0]}")
        close_notebook(page)
    _keep(shots)


BROKEN = '''import ipywidgets as w
from IPython.display import display
text, out = w.Text(value="a", continuous_update=False), w.Output()
def show(_=None):
    out.clear_output(wait=True)
    with out:
        print("prompt:", text.value)
        if text.value != "a":
            raise RuntimeError("the callback is broken")
text.observe(show, names="value")
show()
display(w.VBox([text, out]))'''


def test_the_check_fails_when_a_widgets_callback_is_broken(lab, browser, tmp_path):
    """The test of the test: a widget whose callback raises is caught."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(BROKEN)]
    nbformat.write(nb, lab["root"] / "broken.ipynb")
    page = open_notebook(browser, lab, "broken.ipynb")
    run_all(page, timeout_s=120)
    with pytest.raises(AssertionError, match="callback is broken|did not change"):
        check_widget(page, "w.Text(", ("type", "b"), tmp_path, "broken")
    page.close()
