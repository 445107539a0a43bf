"""The API key never shows: not in a repr, an error, a log line, the ledger, the output, or a saved notebook.

Two keys are tried: one shaped like OpenAI's (``sk-...``, which ``redact`` also catches by pattern)
and an opaque one (as Azure and other compatible endpoints issue), which only scrubbing the exact
credentials sent can catch. The offline server requires the key, so it is really sent, and a
hostile server echoes it back in its error messages (as a proxy quoting the request headers does).
Every captured output is scanned for the whole key and for its secret middle.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import warnings
from pathlib import Path

import pytest

import nbopenai
from nbopenai import Secret, Session, Settings

from conftest import SECRET_KEY
from _kernels import REPO, local_kernel_env

OPAQUE_KEY = "azure0f3c9b27d4e8a1650b9c2f7e3d4a1b8c"  # no sk- prefix: no pattern can know it
KEYS = [SECRET_KEY, OPAQUE_KEY]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def assert_no_key(text: str, key: str, where: str = "output") -> None:
    """Neither the key nor its secret middle (all but a 4-character prefix and suffix) is in ``text``."""
    assert key not in text, f"the API key appears in the {where}"
    assert key[4:-4] not in text, f"part of the API key appears in the {where}"


def echo(key: str) -> str:
    """What a hostile or careless server says back: the request's headers, verbatim."""
    return f"Invalid header 'Authorization: Bearer {key}' (api-key: {key})"


@pytest.fixture(params=KEYS, ids=["sk-key", "opaque-key"])
def key(request, local_server):
    local_server.configure(require_api_key=request.param)
    return request.param


@pytest.fixture
def keyed(key, local_server):
    with Session(Settings(base_url=local_server.base_url, api_key=key, model="nbopenai-local"),
                 ledger_path=":memory:", backoff_base=0.001, backoff_max=0.01) as session:
        yield session


@pytest.fixture
def everything_logged():
    """Every log record of every logger, at DEBUG, formatted as a handler would write it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# ---- values that hold the key ---------------------------------------------------------------------


def test_secret_settings_and_session_show_at_most_the_last_four(key, keyed):
    settings = keyed.settings
    for text in (repr(settings.api_key), str(settings.api_key), f"{settings.api_key}", repr(settings), str(settings),
                 repr(keyed), str(keyed), repr(settings.replace(model="other"))):
        assert_no_key(text, key, "repr")
        assert key[-4:] in text or "***" in text
    assert Secret(SECRET_KEY).masked == f"sk-...{SECRET_KEY[-4:]}"
    assert Secret("short").masked == "***"


def test_the_key_cannot_be_pickled_or_copied_out(key):
    settings = Settings(api_key=key)
    with pytest.raises(TypeError):
        pickle.dumps(settings.api_key)
    with pytest.raises(TypeError):
        pickle.dumps(settings)
    with pytest.raises(TypeError):
        dataclasses.asdict(settings)  # deep-copies the Secret, which refuses


def test_a_key_from_the_environment_is_a_secret_from_the_start(monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    settings = Settings.from_env()
    assert isinstance(settings.api_key, Secret) and settings.api_key.reveal() == key
    assert_no_key(repr(settings), key, "repr")


# ---- errors, the ledger, logs: the core ------------------------------------------------------------


def _scan_everything(session, key, *texts, logged=None, captured=None) -> None:
    for text in texts:
        assert_no_key(text, key)
    for record in session.ledger.records():
        assert_no_key(repr(record), key, "ledger")
    assert_no_key(session.usage().to_string(), key, "usage frame")
    if logged is not None:
        assert_no_key(logged.getvalue(), key, "log")
    if captured is not None:
        out, err = captured.readouterr()
        assert_no_key(out + err, key, "stdout/stderr")


def _error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), repr(vars(error)), getattr(error, "message", ""), getattr(error, "hint", "")]


@pytest.mark.parametrize("kind", ["bad_request", "context_length_exceeded", "unauthorized"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_errors_that_echo_the_request_headers_are_scrubbed(keyed, key, local_server, everything_logged, capsys, kind, stream):
    keyed.ask("My name is Ada.", echo=True)
    params = {"message": echo(key)} if kind == "bad_request" else {}
    local_server.inject(kind, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(nbopenai.APIError) as raised:
            keyed.ask("Hello again", stream=stream, echo=True)
    if kind == "bad_request":
        assert "***" in raised.value.message  # the echo was there, and was scrubbed
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no SDK error (with its request) attached
    texts = _error_texts(raised.value) + [str(w.message) for w in caught]
    _scan_everything(keyed, key, *texts, logged=everything_logged, captured=capsys)
    assert local_server.requests[0].headers["authorization"] == f"Bearer {key}"  # it was really sent


def test_a_mid_stream_error_that_echoes_the_key_is_scrubbed(keyed, key, local_server):
    local_server.inject("midstream_error", after=2, message=echo(key))
    with pytest.raises(nbopenai.StreamError) as raised:
        keyed.ask("Please write me something long enough to stream")
    _scan_everything(keyed, key, *_error_texts(raised.value))


def test_retried_echoes_leave_no_key_in_the_ledger(keyed, key, local_server):
    local_server.inject("rate_limit", retry_after=0)
    local_server.inject("bad_request", message=echo(key))
    with pytest.raises(nbopenai.BadRequestError):
        keyed.ask("hello")
    assert [r.status for r in keyed.ledger.records()] == ["rate_limited", "error"]
    _scan_everything(keyed, key)


def test_background_and_extraction_errors_are_scrubbed(keyed, key, local_server):
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str

    local_server.inject("bad_request", message=echo(key))
    with pytest.raises(nbopenai.BadRequestError) as raised:
        keyed.submit("hello")
    local_server.inject("bad_request", message=echo(key))
    frame = nbopenai.extract(Person, ["Ada Lovelace"], session=keyed, progress=False, cache=False)
    assert frame["_status"].tolist() == ["error"]
    _scan_everything(keyed, key, *_error_texts(raised.value), frame.to_string(), repr(frame.attrs))


def test_debug_logging_of_a_whole_session_never_shows_the_key(keyed, key, local_server, everything_logged):
    keyed.ask("My name is Ada.")
    keyed.ask("What is my name?", stream=False)
    keyed.submit("In the background").wait(timeout=30)
    local_server.inject("server_error")
    keyed.ask("One retry")
    assert "HTTP Request" in everything_logged.getvalue()  # the SDK and httpx did log, at DEBUG
    _scan_everything(keyed, key, logged=everything_logged)


def test_the_ledger_file_never_holds_the_key(key, local_server, tmp_path):
    path = tmp_path / "usage.sqlite3"
    with Session(Settings(base_url=local_server.base_url, api_key=key, model="nbopenai-local"),
                 ledger_path=str(path), backoff_base=0.001) as session:
        local_server.inject("bad_request", message=echo(key))
        with pytest.raises(nbopenai.BadRequestError):
            session.ask("hello")
        session.ask("hello")
    for file in tmp_path.iterdir():  # the database, its WAL and shared memory
        data = file.read_bytes()
        assert key.encode() not in data and key[4:-4].encode() not in data, file.name


# ---- the magics --------------------------------------------------------------------------------------


def _run(ip, source: str) -> str:
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        try:
            ip.run_cell(source)
        except Exception as error:  # a failing cell: what the user saw is in the capture
            shown = [str(error), repr(error)]
        else:
            shown = []
    displayed = [str(value) for output in captured.outputs for value in output.data.values()]
    return "\n".join([captured.stdout, captured.stderr, *displayed, *shown])


@pytest.fixture
def keyed_ip(ip, key, local_server):
    """The test shell with the key in the environment (the only place the magics read it from)."""
    os.environ["OPENAI_API_KEY"] = key  # the autouse fixture removes OPENAI_* again afterwards
    ip.run_cell("%reload_ext nbopenai")
    ip.magics_manager.registry["AskMagics"].session.configure(backoff_base=0.001, backoff_max=0.01)
    return ip


def test_status_shows_only_the_masked_key(keyed_ip, key):
    shown = _run(keyed_ip, "%nbopenai status")
    assert_no_key(shown, key)
    masked = f"sk-...{key[-4:]}" if key.startswith("sk-") else f"...{key[-4:]}"
    assert f"API key     {masked}" in shown


def test_every_output_of_a_working_session_is_clean(keyed_ip, key, local_server):
    shown = []
    shown.append(_run(keyed_ip, "%%ask --dry-run -o request\nWhat is my name?"))
    shown.append(_run(keyed_ip, "print(vars(request))"))
    shown.append(_run(keyed_ip, "%%ask -o reply\nMy name is Ada."))
    shown.append(_run(keyed_ip, "reply"))
    local_server.inject("bad_request", message=echo(key))
    shown.append(_run(keyed_ip, "%%ask\nThis one is refused."))
    local_server.inject("unauthorized")
    shown.append(_run(keyed_ip, "%ask --no-stream This one too."))
    shown.append(_run(keyed_ip, "%%ask --background -o job\nIn the background."))
    keyed_ip.user_ns["job"].wait(timeout=30)
    shown.append(_run(keyed_ip, "job"))
    shown.append(_run(keyed_ip, "%nbopenai jobs"))
    shown.append(_run(keyed_ip, "%nbopenai usage"))
    shown.append(_run(keyed_ip, "%nbopenai threads"))
    shown.append(_run(keyed_ip, "%nbopenai history"))
    shown.append(_run(keyed_ip, "%config AskMagics"))
    shown.append(_run(keyed_ip, "import nbopenai; nbopenai.current_session()"))
    shown.append(_run(keyed_ip, "nbopenai.current_session().settings"))
    shown.append(_run(keyed_ip, "%nbopenai help"))
    for text in shown:
        assert_no_key(text, key)
    assert "Bad request" in shown[4] and "***" in shown[4]
    assert "Authentication failed" in shown[5]


def test_extract_magic_output_is_clean(keyed_ip, key, local_server):
    keyed_ip.run_cell("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str")
    local_server.inject("bad_request", message=echo(key))
    shown = _run(keyed_ip, "%%extract Person --no-cache -o people\nAda Lovelace.")
    shown += _run(keyed_ip, "print(people['_error'].iloc[0])")
    shown += _run(keyed_ip, "%%extract Person --dry-run\nAda Lovelace.")
    assert "***" in shown
    assert_no_key(shown, key)


# ---- notebooks in a real kernel -------------------------------------------------------------------


HOSTILE_CELLS = [
    "import logging\nlogging.basicConfig(level=logging.DEBUG)  # every library logs to the notebook",
    "%load_ext nbopenai",
    "%nbopenai status",
    "%%ask --dry-run -o request\nWhat is my name?",
    "print(vars(request))",
    "%%ask\nThe server echoes this request's headers.",  # the first injected fault
    "from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str",
    "%%extract Person --no-cache\nAda Lovelace.",  # the second
    "%%ask\nMy name is Ada.",
    "%nbopenai usage",
    "import nbopenai\nsession = nbopenai.current_session()\nsession",
    "session.settings",
    "%config AskMagics",
    "import os\nprint(sorted(os.environ))  # names only",
]


def _execute(path_or_cells, env: dict[str, str], tmp_path: Path) -> str:
    """Run a notebook as Run All does (errors allowed), save it, return the saved file's text."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    if isinstance(path_or_cells, Path):
        nb = nbformat.read(path_or_cells, as_version=4)
        name = path_or_cells.name
    else:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in path_or_cells])
        name = "hostile.ipynb"
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    saved = tmp_path / f"executed-{name}"
    nbformat.write(nb, saved)
    return saved.read_text(encoding="utf-8")


@pytest.mark.kernel
def test_a_hostile_notebook_saves_no_key(key, local_server, tmp_path):
    local_server.inject("bad_request", count=2, message=echo(key))
    saved = _execute(HOSTILE_CELLS, local_kernel_env(local_server, key), tmp_path)
    assert_no_key(saved, key, "saved notebook")
    assert "Bad request" in saved and "***" in saved  # the echo happened and was masked
    assert "HTTP Request" in saved  # DEBUG logs did reach the notebook
    authorizations = {r.headers.get("authorization") for r in local_server.requests if r.path.startswith("/v1/")}
    assert authorizations == {f"Bearer {key}"}  # the key was sent with every request


@pytest.mark.kernel
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_shipped_notebooks_save_no_key(local_server, tmp_path, notebook):
    # Run once each, with the key no pattern knows: only exact scrubbing keeps it out.
    local_server.configure(require_api_key=OPAQUE_KEY)
    saved = _execute(notebook, local_kernel_env(local_server, OPAQUE_KEY), tmp_path)
    assert_no_key(saved, OPAQUE_KEY, f"saved {notebook.name}")
    assert any(r.headers.get("authorization") == f"Bearer {OPAQUE_KEY}" for r in local_server.requests)
