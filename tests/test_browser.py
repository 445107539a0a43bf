"""The quickstart in a real browser: JupyterLab on 127.0.0.1, driven by Playwright in headless Chromium.

What a reader of the README sees: ``notebooks/quickstart.ipynb`` opened in JupyterLab, Run All, and
then the streamed answers, their usage footers and the usage DataFrame on the page. nbclient
(``test_notebooks.py``) cannot see the page: with the widget front-end missing it still passes while
JupyterLab shows ``VBox(children=(HTML(value=...`` where the live answer should be. So the page is
watched while the cells run (a ``MutationObserver``): a live answer view must render as a widget,
and no output may ever show a widget's raw text repr. ``test_the_check_fails_without_widgets``
runs the same check with ``@jupyter-widgets/jupyterlab-manager`` disabled and expects it to fail.

Everything runs in a temporary folder: its own HOME, Jupyter config/data/settings/workspaces and
IPython folders, a fresh copy of the notebook (autosave writes back), a free port, a fixed token,
no API key. The server and its kernels are one process group, killed in a ``finally``.

Needs Debian's Chromium (``apt-get install chromium``: Playwright's own browser download does not
work here), and ``playwright`` and ``jupyterlab`` in the environment; without them the tests skip
and say which is missing. The screenshot goes to ``tests/_artifacts/``; set
``NBOPENAI_UPDATE_SCREENSHOT=1`` to also refresh the README's ``docs/screenshot.png``.
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
    pytest.mark.skipif(_missing() is not None, reason=f"browser test needs Chromium, Playwright, JupyterLab: {_missing()}"),
]


# ---- JupyterLab in a sandbox -------------------------------------------------------------------

# A kernel-side startup file, for this test only: it paces the offline demo server (30 ms per word)
# once `%nbopenai local` has started it, so each live answer is on screen long enough to be seen.
_PACE_DEMO_SERVER = """\
def _nbopenai_browser_test_pace(result, ip=get_ipython()):
    magics = ip.magics_manager.registry.get("AskMagics")
    server = getattr(getattr(magics, "session", None), "local_server", None)
    if server is not None:
        server.configure(chunk_delay=0.03)

get_ipython().events.register("post_run_cell", _nbopenai_browser_test_pace)
"""


@dataclass
class Lab:
    url: str
    token: str
    root: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


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


def _write_settings(env: dict[str, str], *, widgets: bool) -> None:
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    user_settings = {
        # No news pop-up or update check: it would cover the page and calls out to the internet.
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        # Every cell in the DOM (Lab 4 virtualises long notebooks), so every output can be found.
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }
    for plugin, values in user_settings.items():
        package, name = plugin.rsplit("/", 1)
        path = settings / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    startup = Path(env["IPYTHONDIR"]) / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "50-pace-demo-server.py").write_text(_PACE_DEMO_SERVER)
    if not widgets:
        subprocess.run(
            [sys.executable, "-m", "jupyter", "labextension", "disable", WIDGET_MANAGER],
            env=env, check=True, capture_output=True, timeout=60,
        )


@contextmanager
def jupyterlab(base: Path, *, widgets: bool = True) -> Iterator[Lab]:
    """JupyterLab serving ``base / "root"`` on a free loopback port; killed (with its kernels) on exit."""
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = _sandbox_env(base)
    _write_settings(env, widgets=widgets)
    port, token = _free_port(), secrets.token_hex(16)
    log = (base / "jupyterlab.log").open("wb")
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--ServerApp.disable_check_xsrf=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
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

# Watches the page while the cells run. A live answer is an ipywidgets VBox of HTML widgets that is
# replaced by static Markdown when the answer ends, so only a watcher sees which way it rendered.
_WATCH_OUTPUTS = r"""
() => {
  const RAW_REPR = /\b(?:VBox|HBox|HTML|Label|Output)\((?:children|value)=/;
  const WIDGET = ".widget-html, .widget-vbox, .jupyter-widgets";
  const seen = { widgetViews: 0, rawReprs: [] };
  const scan = (node) => {
    const element = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
    if (!element) return;
    if (element.matches(WIDGET) || element.querySelector(WIDGET)) seen.widgetViews += 1;
    const inOutput = element.closest(".jp-OutputArea-output") || element.querySelector(".jp-OutputArea-output");
    const text = element.textContent || "";
    if (inOutput && RAW_REPR.test(text)) seen.rawReprs.push(text.slice(0, 200));
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

_ALL_CELLS_RAN = r"""
() => {
  const prompts = [...document.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")].map((p) => p.textContent.trim());
  return prompts.length > 0 && prompts.every((p) => /^\[\d+\]:$/.test(p));
}
"""


@contextmanager
def chromium(artifacts: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def run_all(page, lab: Lab, name: str) -> dict:
    """Open ``name``, wait for its kernel, Run All, wait until every code cell ran; what the watcher saw."""
    from playwright.sync_api import expect

    page.goto(lab.notebook_url(name))
    # The notebook says "Idle" before any kernel exists; Run All then opens a kernel picker that
    # swallows the click. The status bar's "| Idle" appears only once the kernel is up.
    status = page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle"))
    expect(status).to_be_visible(timeout=SERVER_START_S * 1000)
    page.evaluate(_WATCH_OUTPUTS)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click()  # focus the notebook for the Run menu
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    page.wait_for_function(_ALL_CELLS_RAN, timeout=RUN_ALL_S * 1000, polling=250)
    expect(status).to_be_visible(timeout=RUN_ALL_S * 1000)
    return page.evaluate("() => window.__nbopenaiSeen")
