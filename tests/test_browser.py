"""The quickstart in a real browser: JupyterLab on 127.0.0.1, driven by Playwright in headless Chromium.

What a reader of the README (or a Binder visitor) sees: JupyterLab opens ``notebooks/quickstart.ipynb``
(``binder/workspace.json``), Run All, then the streamed answers, their usage footers and the usage
DataFrame are on the page; re-running a cell replaces its turn (JupyterLab sends cell ids; nbclient
does not). nbclient (``test_notebooks.py``) cannot see the page. Nor can a look at the finished page:
with the ipywidgets front-end missing, each live answer shows as ``AnswerWidget(...)`` text while it
streams, and only then is replaced by the same Markdown as usual. So the page is watched while the
cells run (a ``MutationObserver``): a live answer must render as a widget, its body must grow to the
whole answer (deltas appended in the browser), and no output may ever show a widget's raw text. The
saved notebook, reloaded, shows the same static answers. ``test_the_check_fails_without_the_widget_frontend`` runs the
quickstart with ``@jupyter-widgets/jupyterlab-manager`` disabled and expects that check to fail.

Everything runs in a temporary folder: its own HOME, Jupyter config/data/runtime, JupyterLab
settings/workspaces/app settings and IPython folders, a fresh copy of ``notebooks/`` (autosave
writes back), a free port, a random token, no API key. The server and its kernels are one process
group, killed in a ``finally``; every wait has a hard timeout.

Needs Debian's Chromium (``apt-get install chromium``; Playwright's own browser download does not
work here, and is not used: the Python ``playwright`` package drives ``/usr/bin/chromium``) and
``jupyterlab``; without one of them the tests skip and say which. The screenshot goes to
``tests/_artifacts/``; ``NBOPENAI_UPDATE_SCREENSHOT=1`` also refreshes the README's ``docs/screenshot.png``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
BINDER = REPO / "binder"
ARTIFACTS = REPO / "tests" / "_artifacts"
README_SCREENSHOT = REPO / "docs" / "screenshot.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # the network is closed: no update or safe-browsing calls
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager"
NOTEBOOK_ON_SCREEN = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# Hard limits, so a stuck browser or kernel fails the test instead of hanging CI.
SERVER_START_S = 60
PAGE_TIMEOUT_MS = 30_000
RUN_ALL_S = 120
SHUTDOWN_S = 10


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if find_spec(module) is None:
            return f"{package} is not installed (pip install {package})"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.kernel,
    pytest.mark.skipif(
        _missing() is not None, reason=f"browser test needs Chromium, Playwright, JupyterLab: {_missing()}"
    ),
]


# ---- JupyterLab in a sandbox -------------------------------------------------------------------

# A kernel-side startup file, for this test only: it paces the offline demo server (10 ms per word)
# once `%nbopenai local` has started it, so each live answer is on screen long enough to be seen.
_PACE_DEMO_SERVER = """\
def _nbopenai_browser_test_pace(result, ip=get_ipython()):
    magics = ip.magics_manager.registry.get("AskMagics")
    server = getattr(getattr(magics, "session", None), "local_server", None)
    if server is not None:
        server.configure(chunk_delay=0.01)

get_ipython().events.register("post_run_cell", _nbopenai_browser_test_pace)
"""


@dataclass
class Lab:
    url: str
    token: str
    root: Path

    def page(self, path: str = "lab") -> str:
        return f"{self.url}/{path}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sandbox_env(base: Path) -> dict[str, str]:
    """The server's (and its kernels') environment: no key, and every Jupyter folder under ``base``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OPENAI_", "JUPYTER", "JPY_"))}
    env.pop("NBOPENAI_MODEL", None)
    folders = {
        "HOME": "home",
        "JUPYTER_CONFIG_DIR": "jupyter-config",
        "JUPYTER_DATA_DIR": "jupyter-data",
        "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
        "NBOPENAI_HOME": "nbopenai-home",
    }
    for name, folder in folders.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        env[name] = str(base / folder)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _configure(base: Path, env: dict[str, str], *, widgets: bool) -> Path:
    """Settings as Binder has them (``binder/``), plus what the test needs; the app settings folder."""
    # Binder's defaults: no news pop-up, no update check (they would cover the page and call out).
    app_settings = base / "lab-app-settings"
    app_settings.mkdir(exist_ok=True)
    shutil.copyfile(BINDER / "overrides.json", app_settings / "overrides.json")
    # Binder's workspace: /lab opens notebooks/quickstart.ipynb.
    subprocess.run(
        [sys.executable, "-m", "jupyterlab", "workspaces", "import", str(BINDER / "workspace.json")],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    # Every cell in the DOM (Lab 4 virtualises long notebooks), so every output can be found.
    tracker = (
        Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    )
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    startup = Path(env["IPYTHONDIR"]) / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "50-pace-demo-server.py").write_text(_PACE_DEMO_SERVER)
    if not widgets:
        # What `jupyter labextension disable --level=user` writes, written straight into the sandbox's
        # config folder: the command's default level is the environment's own, shared by everyone.
        page_config = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig" / "page_config.json"
        page_config.parent.mkdir(parents=True, exist_ok=True)
        page_config.write_text(json.dumps({"disabledExtensions": {WIDGET_MANAGER: True}}))
    return app_settings


@contextmanager
def jupyterlab(base: Path, *, widgets: bool = True) -> Iterator[Lab]:
    """JupyterLab serving ``base / "root"`` on a free loopback port; killed (with its kernels) on exit.

    The root holds a fresh copy of ``notebooks/`` (JupyterLab autosaves into what it opens).
    """
    root = base / "root"
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = _sandbox_env(base)
    app_settings = _configure(base, env, widgets=widgets)
    port, token = _free_port(), secrets.token_hex(16)
    log = (base / "jupyterlab.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={app_settings}",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root
    server = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(server, f"{url}/api/status?token={token}", base / "jupyterlab.log")
        yield Lab(url=url, token=token, root=root)
    finally:
        _stop(server)
        log.close()


def _wait_for_server(server: subprocess.Popen, status_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(status_url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (kernels included), SIGKILL if it lingers."""
    if server.poll() is None:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(SHUTDOWN_S)
        except ProcessLookupError:
            pass
    try:  # kernels in the group that outlived the server
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- the page ----------------------------------------------------------------------------------

# Watches the page while the cells run. A live answer is a widget (nbopenai's anywidget view) that
# is replaced by static Markdown when the answer ends, so only a watcher sees which way it rendered,
# and what its body showed while the text streamed in (appended, update after update).
_WATCH_OUTPUTS = r"""
() => {
  const RAW_REPR = /\b(?:(?:VBox|HBox|HTML|Label|Output)\((?:children|value)=|AnswerWidget\()/;
  const WIDGET = ".nbopenai-answer, .widget-html, .widget-vbox, .jupyter-widgets";
  const seen = { widgetViews: 0, rawReprs: [], liveAnswers: [] };
  const bodies = new WeakMap();
  const scan = (node) => {
    const element = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
    if (!element) return;
    if (element.matches(WIDGET) || element.querySelector(WIDGET)) seen.widgetViews += 1;
    const inOutput = element.closest(".jp-OutputArea-output") || element.querySelector(".jp-OutputArea-output");
    const text = element.textContent || "";
    if (inOutput && RAW_REPR.test(text)) seen.rawReprs.push(text.slice(0, 200));
    const body = element.closest(".nbopenai-answer-body");
    if (body) {
      if (!bodies.has(body)) { bodies.set(body, { updates: 0, text: "" }); seen.liveAnswers.push(bodies.get(body)); }
      const entry = bodies.get(body);
      entry.updates += 1;
      entry.text = body.textContent;
    }
  };
  new MutationObserver((records) => {
    for (const record of records) {
      record.addedNodes.forEach(scan);
      if (record.type === "characterData") scan(record.target);
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
  window.__nbopenaiSeen = seen;
}
"""

# Every code cell of the notebook on screen ran ("[n]:" prompts), or one failed (Run All stops there).
_RUN_STATE = r"""
() => {
  const notebook = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
  if (!notebook) return null;
  const prompts = [...notebook.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")].map((p) => p.textContent.trim());
  const errors = [...notebook.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map((e) => e.textContent).filter((text) => /Error|Traceback/.test(text));
  const done = prompts.length > 0 && prompts.every((p) => /^\[\d+\]:$/.test(p));
  return (done || errors.length) ? { done, errors } : null;
}
"""  # noqa: E501 - the page script, verbatim


@contextmanager
def chromium() -> Iterator:
    """A page in Debian's headless Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def run_all(page, url: str) -> dict:
    """Open ``url``, wait for the notebook's kernel, Run All, wait until every code cell ran.

    Returns what the output watcher saw while the cells ran.
    """
    from playwright.sync_api import expect  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    page.goto(url)
    # The notebook says "Idle" before any kernel exists; Run All then opens a kernel picker that
    # swallows the click. The status bar's "| Idle" appears only once the kernel is up.
    status = page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle"))
    expect(status).to_be_visible(timeout=SERVER_START_S * 1000)
    page.evaluate(_WATCH_OUTPUTS)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    state = page.wait_for_function(_RUN_STATE, timeout=RUN_ALL_S * 1000, polling=250).json_value()
    assert not state["errors"], f"a cell failed in JupyterLab:\n{state['errors'][0][:2000]}"
    expect(status).to_be_visible(timeout=RUN_ALL_S * 1000)
    return page.evaluate("() => window.__nbopenaiSeen")


def assert_live_answers_rendered_as_widgets(seen: dict) -> None:
    """The live answer views rendered as widgets, never as their raw text repr."""
    assert not seen["rawReprs"], (
        "an output showed a widget's raw text instead of the widget (is the ipywidgets front-end, "
        f"{WIDGET_MANAGER}, installed and enabled?): {seen['rawReprs'][0]!r}"
    )
    assert seen["widgetViews"] > 0, "no live answer view ever rendered as a widget"


def assert_answers_streamed_in_full(seen: dict, final_texts: list[str]) -> None:
    """Each answer's live body grew update by update to exactly its whole text (the final Markdown's)."""
    streamed = [" ".join(entry["text"].split()) for entry in seen["liveAnswers"] if entry["updates"] >= 2]
    for final in final_texts:
        assert " ".join(final.split()) in streamed, f"no live view streamed the whole answer {final[:80]!r}: {streamed}"


# ---- the tests ---------------------------------------------------------------------------------


def test_quickstart_runs_in_jupyterlab(tmp_path):
    """As on Binder: /lab opens the quickstart (binder/workspace.json), Run All, and the page shows
    the streamed answers, their usage footers and the usage DataFrame. Then one cell runs again, as
    a user would re-run it: JupyterLab's cell id makes its turn be replaced, not appended."""
    from playwright.sync_api import expect  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    started = time.monotonic()
    with jupyterlab(tmp_path) as lab, chromium() as page:
        try:
            seen = run_all(page, lab.page("lab"))
            expect(page.locator(".lm-DockPanel-tabBar .lm-mod-current")).to_contain_text("quickstart.ipynb")
            outputs = page.locator(NOTEBOOK_ON_SCREEN).locator(".jp-OutputArea-output")
            # The streamed answers, as the front-end's Markdown once they ended.
            answer = outputs.filter(has_text=re.compile(r"^Your name is Ada\.$", re.M))
            expect(answer).to_have_count(1)
            expect(answer).to_contain_text("(nbopenai offline demo model)")
            expect(
                outputs.filter(has_text=re.compile(r"^The capital of Ruritania is Strelsau\.$", re.M))
            ).to_have_count(1)
            # The usage footer under each answer: model, tokens in/out, latency, cost, thread and turn.
            footer = answer.locator("sub")
            expect(footer).to_have_text(
                re.compile(
                    r"nbopenai-local · \d+ in \(\d+ cached\) / \d+ out \(\d+ reasoning\)"
                    r" · [\d.]+ s \(first token [\d.]+ s\)"
                    r" · \$[\d.]+ · thread default turn 2"
                )
            )
            # The usage DataFrame (`%nbopenai usage`): one row per call, as an HTML table.
            usage = outputs.locator("table.dataframe").filter(has=page.locator("th", has_text="session_id"))
            expect(usage).to_have_count(1)
            expect(usage.locator("tbody tr")).to_have_count(6)
            expect(usage).to_contain_text("nbopenai-local")
            for located in (answer, footer, usage):
                located.scroll_into_view_if_needed()
                expect(located).to_be_in_viewport()
            assert_live_answers_rendered_as_widgets(seen)
            # The live view showed each answer in full while it streamed, the very text of its Markdown.
            assert_answers_streamed_in_full(
                seen,
                [
                    _answer_text(answer),
                    _answer_text(
                        outputs.filter(has_text=re.compile(r"^The capital of Ruritania is Strelsau\.$", re.M))
                    ),
                ],
            )
            expect(page.locator(".Toastify__toast")).to_have_count(0)  # no news prompt (binder/overrides.json)
            _screenshot(page, ARTIFACTS / "jupyterlab-quickstart.png", readme=True)

            cells = page.locator(NOTEBOOK_ON_SCREEN).locator(".jp-CodeCell")
            first_ask = cells.filter(has=page.locator(".jp-InputArea", has_text="My name is Ada."))
            first_ask.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            expect(first_ask.locator(".jp-OutputArea-output")).to_contain_text(
                "thread default: re-ran turn 1 of 2, 1 later turn dropped", timeout=RUN_ALL_S * 1000
            )
            expect(
                page.locator(NOTEBOOK_ON_SCREEN).locator(".jp-InputArea-prompt").filter(has_text="[*]")
            ).to_have_count(0)

            # Saved and reloaded, the page shows the same static answers (no widget state needed).
            page.keyboard.press("Control+s")
            expect(page.locator(".lm-DockPanel-tabBar .lm-mod-current.jp-mod-dirty")).to_have_count(0)
            page.reload()
            outputs = page.locator(NOTEBOOK_ON_SCREEN).locator(".jp-OutputArea-output")
            reloaded = outputs.filter(has_text=re.compile(r"^Your name is Ada\.$", re.M))
            expect(reloaded).to_have_count(1, timeout=SERVER_START_S * 1000)  # the page loads anew
            expect(outputs.filter(has_text=re.compile(r"^Noted: your name is Ada\.$", re.M))).to_have_count(1)
            expect(outputs.locator(".nbopenai-answer")).to_have_count(0)
            expect(outputs.filter(has_text=re.compile(r"Error displaying widget|AnswerWidget\("))).to_have_count(0)
        except BaseException:
            _screenshot(page, ARTIFACTS / "jupyterlab-quickstart-failed.png")
            raise
    assert time.monotonic() - started < SERVER_START_S + RUN_ALL_S + 60


def test_the_check_fails_without_the_widget_frontend(tmp_path):
    """The check above, with the ipywidgets front-end disabled: JupyterLab then shows
    ``AnswerWidget(...; the live view needs the Jupyter widgets front-end)`` while an answer
    streams, and the check must say so. (The page
    looks right once the answer ends, and nbclient passes either way: only the watcher can tell.)
    """
    with jupyterlab(tmp_path, widgets=False) as lab, chromium() as page:
        _keep_through_first_ask(lab.root / "notebooks" / QUICKSTART.name)  # the setup cell and one ask
        seen = run_all(page, lab.page("lab/tree/notebooks/quickstart.ipynb"))  # the Binder badge's urlpath
    with pytest.raises(AssertionError, match=r"raw text .*AnswerWidget\("):
        assert_live_answers_rendered_as_widgets(seen)


def _answer_text(output) -> str:
    """An answer's text as its static Markdown shows it: the output's text without the usage footer."""
    return output.evaluate(
        "(el) => [...el.querySelectorAll('p')].filter((p) => !p.querySelector('sub'))"
        ".map((p) => p.textContent).join(' ')"
    )


def _keep_through_first_ask(path: Path) -> None:
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    first_ask = next(i for i, cell in enumerate(cells) if "".join(cell["source"]).startswith("%%ask"))
    notebook["cells"] = cells[: first_ask + 1]
    path.write_text(json.dumps(notebook))


def _screenshot(page, target: Path, *, readme: bool = False) -> None:
    """The first answers on screen, saved to ``target`` (and to the README's with
    ``NBOPENAI_UPDATE_SCREENSHOT=1``). Best effort: it never hides the test's own failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Hide the file browser (click its open tab) and put the first %%ask cell at the top.
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click(timeout=5000)
        first_ask = page.locator(NOTEBOOK_ON_SCREEN).locator(".jp-CodeCell").filter(has_text="%%ask").first
        first_ask.evaluate("(cell) => cell.previousElementSibling.scrollIntoView({block: 'start'})", timeout=5000)
        page.wait_for_timeout(300)  # let the layout settle after the sidebar closed
        page.screenshot(path=str(target))
    except Exception as error:  # noqa: BLE001 - a missing screenshot must not replace the real failure
        print(f"screenshot failed: {error}")
        return
    if readme and os.environ.get("NBOPENAI_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, README_SCREENSHOT)
