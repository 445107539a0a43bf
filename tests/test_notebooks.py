"""The example notebooks in ``notebooks/``, executed top to bottom in a real kernel (nbclient).

As CI, Binder and ``python -m nbopenai.demo`` run them: no ``OPENAI_API_KEY``, so the setup cell
starts the offline demo server. Each executed notebook must hold its answers as static outputs
(Markdown for ``%%ask``, tables for ``%%extract`` and the ledger), no error output, nothing on
stderr, and nothing shaped like an API key. The notebooks are committed without outputs, and the
setup cell is the one place that switches to the real API: run once more with a (fake) key and an
OpenAI-compatible endpoint (the in-process demo server), it must use them and save no key.

What the page looks like in JupyterLab is ``test_browser.py``'s job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _kernels import REPO, kernel_env
from conftest import SECRET_KEY

from nbopenai.datasets import COMPLAINTS, PRODUCTS, product_reviews

pytestmark = pytest.mark.kernel

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = REPO / "notebooks"
NAMES = ["quickstart.ipynb", "extraction.ipynb", "usage.ipynb", "advanced.ipynb"]
KEY_SHAPED = re.compile(r"\b(?:sk|sess)-[A-Za-z0-9_-]{8,}")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 180


def _regenerate_module():
    """``docs/regenerate.py``, which fills the README's output blocks from executed notebooks."""
    spec = importlib.util.spec_from_file_location("nbopenai_docs_regenerate", REPO / "docs" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGENERATE = _regenerate_module()

# What each notebook must show once run against the demo model (its answers are deterministic).
EXPECTED: dict[str, list[str]] = {
    "quickstart.ipynb": [
        "Noted: your name is Ada.",
        "Your name is Ada.",  # the follow-up remembers
        "The capital of Ruritania is Strelsau.",
        "You have not told me your name yet.",  # another thread does not
        "That text has 9 words.",
        "thread default turn 2",  # a usage footer
    ],
    "extraction.ipynb": [
        "Maria Lopez",
        "maria.lopez@example.com",
        "extract 300/300 · 300 ok · 0 failed",
        "'ok': 300",
        "20 of 20 rows from the cache",
        "recommend    100%",
    ],
    "usage.ipynb": [
        "Refused, nothing sent: This call would pass the session's token budget",
        "thread budget turn 1",
        "gpt-4.1-mini",
    ],
    "advanced.ipynb": [
        "Your name is Ada.",  # the follow-up of a background job's turn
        "Your name is Grace.",  # store=False still remembers
        '"store": false',
        "cancelled",
        "ServerError (HTTP 500",
        "dict[...] fields are not supported in strict mode",
        "No OpenAI API key and no base URL are set.",
        "incomplete",
        "Arr, matey!",
        "left as written: {forecast}",  # the notebook as context
        "The mean is 116.0, from import pandas as pd",
        "- sales: DataFrame 3 rows × 2 columns: region",
        "replayed: the stored answer of",
        "(True, 0.0)",
    ],
}


def _execute(name: str, folder: Path, env: dict[str, str]) -> tuple[object, str]:
    """Run ``notebooks/name`` in a fresh kernel (working directory ``folder``); the notebook and its saved text."""
    from nbclient import NotebookClient  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    resources = {"metadata": {"path": str(folder)}}
    # Run as docs/regenerate.py runs them (tables one line per row), so the README can be checked against these runs.
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources=resources,
                            extra_arguments=REGENERATE.KERNEL_OPTIONS)
    client.execute(env=env)
    saved = folder / name
    nbformat.write(notebook, saved)
    return nbformat.read(saved, as_version=4), saved.read_text()


def _outputs(notebook) -> list[tuple[str, dict]]:
    return [(cell.source, output) for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _text_of(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    data = output.get("data", {})
    return "\n".join(str(data[kind]) for kind in ("text/markdown", "text/plain") if kind in data)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory):
    """``executed(name)``: the notebook run once, offline, shared by the checks below (a failed run
    is not repeated: each check reports the same failure)."""
    runs: dict = {}

    def run(name: str):
        if name not in runs:
            folder = tmp_path_factory.mktemp(name.removesuffix(".ipynb"))
            env = kernel_env(NBOPENAI_HOME=str(folder / "nbopenai-home"))
            try:
                runs[name] = _execute(name, folder, env)
            except Exception as error:  # noqa: BLE001 - kept and re-raised for every check
                runs[name] = error
        if isinstance(runs[name], Exception):
            raise runs[name]
        return runs[name]

    return run


def test_every_notebook_is_listed():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_saved_without_outputs_keys_or_extra_switches(name):
    text = (NOTEBOOKS / name).read_text()
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "commit notebooks without outputs"
    assert not KEY_SHAPED.search(text)
    # One clearly marked setup cell decides between the demo server and the real API.
    switches = [cell for cell in code if "OPENAI_API_KEY" in cell.source]
    assert len(switches) == 1, "only the setup cell may look at OPENAI_API_KEY"
    setup = switches[0]
    assert code[0] is setup and "%load_ext nbopenai" in setup.source and "%nbopenai local" in setup.source
    heading = notebook.cells[notebook.cells.index(setup) - 1]
    assert heading.cell_type == "markdown" and heading.source.startswith("## Setup")


@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom_with_no_key(executed, name):
    notebook, saved = executed(name)
    outputs = _outputs(notebook)
    errors = [output for _, output in outputs if output["output_type"] == "error"]
    assert not errors, f"{errors[0]['ename']}: {errors[0]['evalue']}"
    stderr = [output["text"] for _, output in outputs if output.get("name") == "stderr"]
    assert not stderr, f"something was written to stderr: {stderr[0][:500]}"
    assert "Using the offline demo server" in _text_of(outputs[0][1])
    shown = "\n".join(_text_of(output) for _, output in outputs)
    missing = [text for text in EXPECTED[name] if text not in shown]
    assert not missing, f"not in the outputs: {missing}"
    assert not KEY_SHAPED.search(saved)


@pytest.mark.parametrize("name", NAMES)
def test_answers_are_saved_as_static_markdown(executed, name):
    """A saved notebook shows each answer in GitHub or nbviewer: Markdown with its footer, no widget.

    A ``--background`` ask is the exception: it finishes on another thread, after its cell, so its
    output stays the live widget, which has no state in a saved file. The notebook shows that
    answer again as Markdown from ``job.wait()``.
    """
    notebook, _ = executed(name)
    for source, output in _outputs(notebook):
        if "--background" in source:
            continue
        data = output.get("data", {})
        assert WIDGET_VIEW not in data, f"a widget was left in the output of:\n{source}"
        widget_repr = r"\b(?:(?:VBox|HTML)\((?:children|value)=|AnswerWidget\()"
        assert not re.search(widget_repr, data.get("text/plain", "")), source
        if source.startswith("%%ask") and "--dry-run" not in source:
            assert re.search(
                r"<sub>nbopenai-local · \d+ in .* · thread \S+ turn \d+</sub>", data.get("text/markdown", "")
            )


def test_usage_plot_is_an_image(executed):
    notebook, _ = executed("usage.ipynb")
    plots = [output for source, output in _outputs(notebook) if source.startswith("%nbopenai usage --plot")]
    assert plots and "image/png" in plots[0]["data"]


def test_quickstart_with_a_key_uses_it_and_saves_none(local_server, tmp_path):
    """The setup cell's other branch: with a key (and an endpoint) set, no demo server is started,
    the key is sent, and the saved notebook holds no trace of it."""
    env = kernel_env(
        OPENAI_API_KEY=SECRET_KEY,
        OPENAI_BASE_URL=local_server.base_url,  # any OpenAI-compatible endpoint; here, this test's server
        NBOPENAI_MODEL="nbopenai-local",
        NBOPENAI_HOME=str(tmp_path / "nbopenai-home"),
    )
    notebook, saved = _execute("quickstart.ipynb", tmp_path, env)
    outputs = _outputs(notebook)
    assert not [output for _, output in outputs if output["output_type"] == "error"]
    setup = _text_of(outputs[0][1])
    assert "Using the offline demo server" not in setup
    assert local_server.base_url in setup and "sk-..." in setup  # %nbopenai status, key masked
    asks = [r for r in local_server.requests if r.method == "POST" and r.path == "/v1/responses"]
    assert asks and all(r.headers.get("authorization") == f"Bearer {SECRET_KEY}" for r in asks)
    assert "Your name is Ada." in "\n".join(_text_of(output) for _, output in outputs)
    assert SECRET_KEY not in saved and SECRET_KEY[-12:] not in saved
    assert not KEY_SHAPED.search(saved)
    json.loads(saved)  # still a valid file


def test_the_review_data_set_is_the_same_on_every_machine():
    """``extraction.ipynb`` analyses ``product_reviews()``: generated from a seed, never downloaded."""

    reviews = product_reviews(labels=True)
    assert len(reviews) == 300 and reviews["review_id"].is_unique and reviews["date"].is_monotonic_increasing
    assert list(reviews["product"].cat.categories) == list(PRODUCTS)
    assert set(reviews["complaint"].dropna()) <= set(COMPLAINTS)
    assert set(reviews["rating"]) == {1, 2, 3, 4, 5}
    fingerprint = hashlib.sha256(reviews.to_csv(index=False).encode()).hexdigest()[:16]
    assert fingerprint == "b0d9e40c1f8547e5", "the generated reviews changed: update the notebooks' expectations"
    assert list(product_reviews().columns) == ["review_id", "date", "product", "rating", "text"]


def test_binder_installs_this_checkout_and_opens_the_quickstart_with_no_key():
    """``binder/`` as repo2docker reads it. (``test_browser.py`` uses its workspace and overrides for real.)"""
    binder = REPO / "binder"
    assert re.fullmatch(r"python-3\.\d+\n?", (binder / "runtime.txt").read_text())
    assert "jupyterlab" in (binder / "requirements.txt").read_text()
    post_build, start = binder / "postBuild", binder / "start"
    assert os.access(post_build, os.X_OK) and os.access(start, os.X_OK)
    assert "pip install --no-cache-dir '.[plot]'" in post_build.read_text()
    # start sets nothing secret and hands over to JupyterLab.
    assert "OPENAI_API_KEY=" not in start.read_text() and start.read_text().rstrip().endswith('exec "$@"')
    layout = json.loads((binder / "workspace.json").read_text())["data"]["layout-restorer:data"]
    opened = layout["main"]["current"].removeprefix("notebook:")
    assert opened == "notebooks/quickstart.ipynb" and (REPO / opened).exists()
    # Overrides are keyed by plugin id ("package:plugin") and must name settings that exist.
    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    for plugin_id, values in json.loads((binder / "overrides.json").read_text()).items():
        package, _, plugin = plugin_id.partition(":")
        assert plugin, f"{plugin_id!r} is not a plugin id (package:plugin)"
        schema = schemas / package / f"{plugin}.json"
        if schemas.exists():
            assert set(values) <= set(json.loads(schema.read_text())["properties"]), plugin_id


def test_the_readmes_first_command_leaves_the_data_folder_untouched(tmp_path):
    """`python -m nbopenai.demo` as a new user runs it: a fresh HOME, no NBOPENAI_HOME; the demo's rows stay
    out of it."""

    home = tmp_path / "home"
    home.mkdir()
    env = kernel_env(HOME=str(home))
    for name in ("NBOPENAI_HOME", "XDG_DATA_HOME", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "nbopenai.demo", "--out", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Your name is Ada." in done.stdout and (tmp_path / "out" / "quickstart.ipynb").exists()
    assert not (home / ".local" / "share" / "nbopenai").exists()
    assert "without encryption" not in done.stderr  # the demo's kernel listens on no TCP port


def _pid_notebook(folder: Path) -> Path:
    """A one-cell notebook that prints its kernel's process id."""
    source = folder / "pid.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.getpid())")]), source)
    return source


def _still_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a kernel that was shut down has been waited for: no such process
    except ProcessLookupError:
        return False
    return True


def test_the_demo_shuts_its_kernel_down_when_the_notebook_ends(tmp_path):
    """``run_notebook`` (docs/regenerate.py runs four in one process) stops the kernel it started, as nbclient
    does for a kernel it made itself: one handed to it is left running, with its sockets' folder removed."""
    from nbopenai.demo import run_notebook  # noqa: PLC0415 - Jupyter machinery loads only in kernel tests

    ran = nbformat.read(run_notebook(_pid_notebook(tmp_path), tmp_path / "out" / "pid.ipynb", timeout=120), 4)
    pid = int(ran.cells[0].outputs[0]["text"])
    assert pid != os.getpid() and not _still_running(pid)


def test_the_demo_runs_where_the_temporary_folder_is_too_deep_for_unix_sockets(tmp_path, monkeypatch):
    """A socket's path has room for about 100 bytes (sockaddr_un); under a deeper TMPDIR (CI runners, macOS)
    the kernel could not listen and the demo failed. It talks over TCP there instead."""
    from nbopenai.demo import run_notebook  # noqa: PLC0415 - Jupyter machinery loads only in kernel tests

    deep = tmp_path / ("t" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    ran = nbformat.read(run_notebook(_pid_notebook(tmp_path), tmp_path / "out" / "pid.ipynb", timeout=120), 4)
    assert int(ran.cells[0].outputs[0]["text"]) != os.getpid()


def test_the_readme_shows_what_the_notebooks_print(executed):
    """Every output in README.md is a notebook's, from the current code (``python docs/regenerate.py``)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    outside = REGENERATE.BLOCK.sub("", readme)
    # Output-looking text outside the generated blocks would be typed by hand, and drift.
    assert not re.search(
        r"<sub>nbopenai-local|offline demo server at http|\(\d+ cached\)|^extract \d+/\d+", outside, re.M
    )
    names = REGENERATE.needed(readme)
    assert names, "README.md has no generated output blocks"
    regenerated = REGENERATE.rewrite(readme, {name: executed(name)[0] for name in names})
    stale = REGENERATE.differences(readme, regenerated)
    assert not stale, (
        f"README.md's outputs differ from the notebooks' ({', '.join(stale)}): run python docs/regenerate.py"
    )
