"""The API key never shows: not in a repr, an error, a log line, the ledger, the output, or a saved notebook.

Two keys are tried: one shaped like OpenAI's (``sk-...``, which ``redact`` also catches by pattern)
and an opaque one (as Azure and other compatible endpoints issue), which only scrubbing the exact
credentials sent can catch. The offline server requires the key, so it is really sent, and a
hostile server echoes it back in its error messages (as a proxy quoting the request headers does).
Every captured output is scanned for the whole key and for its secret middle.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import pickle
import re
import sys
import warnings
from pathlib import Path
from urllib.parse import quote, unquote

import openai
import pytest
from _byte_server import ByteServer
from _kernels import REPO, kernel_env, local_kernel_env
from _proxies import ECHOES, authorization, echo_proxy, http, response_json
from conftest import SECRET_KEY
from IPython.core.ultratb import VerboseTB
from IPython.utils.capture import capture_output
from pydantic import BaseModel

import nbopenai
from nbopenai import Secret, Session, Settings
from nbopenai._core._client import _AsyncKey, _credentials, _Key
from nbopenai._core._errors import Scrubber

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
def test_errors_that_echo_the_request_headers_are_scrubbed(
    keyed, key, local_server, everything_logged, capsys, kind, stream
):
    keyed.ask("My name is Ada.", echo=True)
    params = {"message": echo(key)} if kind == "bad_request" else {}
    local_server.inject(kind, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(nbopenai.APIError) as raised:
            keyed.ask("Hello again", stream=stream, echo=True)
    if kind == "bad_request":
        assert "***" in raised.value.message  # the echo was there, and was scrubbed
    assert (
        raised.value.__cause__ is None and raised.value.__suppress_context__
    )  # no SDK error (with its request) attached
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
    with Session(
        Settings(base_url=local_server.base_url, api_key=key, model="nbopenai-local"),
        ledger_path=str(path),
        backoff_base=0.001,
    ) as session:
        local_server.inject("bad_request", message=echo(key))
        with pytest.raises(nbopenai.BadRequestError):
            session.ask("hello")
        session.ask("hello")
    for file in tmp_path.iterdir():  # the database, its WAL and shared memory
        data = file.read_bytes()
        assert key.encode() not in data and key[4:-4].encode() not in data, file.name


# ---- a proxy that echoes the Authorization header into every shape, byte by byte ---------------------


@pytest.fixture
def proxy():
    """A raw server that answers as ``_proxies.echo_proxy`` does (``FAULT:<shape>`` in the prompt)."""
    with ByteServer(echo_proxy) as server:
        yield server


@pytest.fixture
def proxied(key, proxy):
    """A session through the echoing proxy, with its ledger and extraction store in the data folder (real files)."""
    with Session(Settings(base_url=proxy.base_url, api_key=key, model="nbopenai-local"), max_attempts=1) as session:
        yield session


def _data_folder_is_clean(key: str) -> None:
    """No file under the data folder (the ledger, extraction's store, their -wal and -shm) holds the key."""
    home = Path(os.environ["NBOPENAI_HOME"])
    files = [path for path in home.rglob("*") if path.is_file()]
    assert files, "nothing was written: the scan would prove nothing"
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data and key[4:-4].encode() not in data, f"the key is in {path.name}"


def _exception_texts(error: BaseException) -> list[str]:
    return [*_error_texts(error), repr(error.args), *map(str, error.args)]


def _scan_after_fault(session, key: str, *texts: str) -> None:
    _scan_everything(session, key, *texts)
    _data_folder_is_clean(key)


SHAPES = sorted(ECHOES)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("shape", SHAPES)
def test_an_echoed_key_in_any_shape_reaches_no_output_ledger_or_file(
    proxied, key, proxy, shape, stream, everything_logged
):
    with pytest.raises(nbopenai.APIError) as raised:
        proxied.ask(f"Answer me. FAULT:{shape}", stream=stream)
    assert authorization(proxy.requests[-1]) == f"Bearer {key}"  # the key was really sent, and echoed
    error = raised.value
    said = [error.message, *(record.error or "" for record in proxied.ledger.records())]
    assert any("proxy saw Bearer ***" in text for text in said) or shape == "plain_text" or not stream
    _scan_after_fault(proxied, key, *_exception_texts(error), everything_logged.getvalue())


def test_a_failed_response_in_extraction_leaves_no_key_in_the_error_column(proxied, key, proxy):
    class Person(BaseModel):
        name: str

    frame = nbopenai.extract(
        Person, ["Ada. FAULT:failed_body", "Grace. FAULT:failed_body_gzip"], session=proxied, progress=False
    )
    assert frame["_status"].tolist() == ["error", "error"]
    assert frame["_error"].tolist() == ["proxy saw Bearer ***"] * 2
    _scan_after_fault(proxied, key, frame.to_string(), repr(frame.attrs), repr(frame.to_dict()))


def test_a_background_job_that_fails_with_an_echo_keeps_no_key(proxied, key, proxy):
    job = proxied.submit("Work on this. FAULT:job_failed")
    answer = job.wait(timeout=30)
    assert job.status == "failed" and answer.error == "proxy saw Bearer ***"
    _scan_after_fault(proxied, key, repr(job), repr(answer), answer.error)


def test_a_cancel_refused_with_an_echo_is_one_translated_error(proxied, key, proxy):
    job = proxied.submit("Work on this for a while.")
    with pytest.raises(nbopenai.AuthenticationError) as raised:
        job.cancel()
    assert "proxy saw Bearer ***" in raised.value.message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    _scan_after_fault(proxied, key, *_exception_texts(raised.value))


def test_credentials_in_the_base_url_are_never_shown_and_their_echo_is_scrubbed(
    key, proxy, tmp_path, everything_logged
):
    password = "pa55-W0rd-S3cret"
    url = proxy.base_url.replace("http://", f"http://ada:{password}@")
    settings = Settings(base_url=url, api_key=key, model="nbopenai-local")
    with Session(settings, ledger_path=str(tmp_path / "usage.sqlite3"), max_attempts=1) as session:
        with pytest.raises(nbopenai.AuthenticationError) as raised:
            session.ask("FAULT:status_401")
        sent = authorization(proxy.requests[-1])  # httpx sends the URL's user info as Basic auth
        assert sent.startswith("Basic ") and "Basic ***" in raised.value.message
        shown = [repr(settings), str(settings), repr(session), *_exception_texts(raised.value)]
        shown += [repr(record) for record in session.ledger.records()]
    logged = everything_logged.getvalue()
    assert "HTTP Request: POST http://***@127.0.0.1" in logged  # httpx logs each URL, at INFO
    for text in [*shown, logged]:
        assert password not in text and sent.split()[1] not in text
    assert "http://***@127.0.0.1" in repr(session)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_verbose_traceback_through_the_sdk_shows_the_key_masked(key, asynchronous):
    """The key reaches the SDK wrapped: an error inside ``OpenAI.__init__`` (whose frame ``%xmode Verbose``
    prints with its arguments) shows ``Secret('...abcd')``."""

    settings = Settings(api_key=key, base_url="http://127.0.0.1:9/v1")
    build = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    with pytest.raises(TypeError):
        try:
            build(**_credentials(settings, _AsyncKey if asynchronous else _Key), http_client="not a client")
        except TypeError:
            kind, error, trace = sys.exc_info()
            shown = VerboseTB().text(kind, error, trace.tb_next)  # the SDK's frames, not this test's (it has the key)
            raise
    assert "api_key" in shown and f"...{key[-4:]}" in shown
    assert_no_key(shown, key, "verbose traceback")


def test_the_scrubber_catches_a_secret_cut_across_chunks_at_every_place():
    secret = "azure0f3c9b27d4e8a1650b9c2f7e3d4a1b8c"
    scrubber = Scrubber([secret, "short"])  # a short one would rewrite ordinary words: left alone
    body = f"data: proxy saw Bearer {secret} and short words\n\n".encode()
    for cut in range(1, len(body)):
        out, held = b"", b""
        for chunk in (body[:cut], body[cut:]):
            ready, held = scrubber.split(held + chunk)
            out += ready
        out += scrubber.data(held)
        assert out == b"data: proxy saw Bearer *** and short words\n\n", cut
    assert scrubber.split(b"event: x\n\n") == (b"event: x\n\n", b"")  # a whole event is never held back
    assert secret not in repr(scrubber)


BASE64_KEY = "Zx9/Qm+Lk3Vt8Rw2aB7cPq4/Ns1Ye6=="  # a gateway's key in base64: '/', '+' and '=' change when echoed


def _echoed(form: str, header: str) -> str:
    """``header`` as a proxy may quote it: in a JSON string that escapes '/', percent-encoded, or in base64."""
    return {
        "json_slash": header.replace("/", "\\/"),
        "percent": quote(header, safe=""),
        "base64": base64.b64encode(header.encode()).decode(),
        "base64url": base64.urlsafe_b64encode(f"user:{header}".encode()).decode(),
    }[form]


@pytest.mark.parametrize("form", ["json_slash", "percent", "base64", "base64url"])
def test_a_key_echoed_escaped_encoded_or_in_base64_is_scrubbed(form):
    def proxy(request):
        failed = response_json("failed", error={"code": "server_error", "message": "proxy saw " + "@ECHO@"})
        body = json.dumps(failed).replace("@ECHO@", _echoed(form, authorization(request)))
        return http(200, "application/json", body)

    with ByteServer(proxy) as server, \
            Session(Settings(base_url=server.base_url, api_key=BASE64_KEY, model="m"), max_attempts=1,
                    ledger_path=":memory:") as session:
        with pytest.raises(nbopenai.StreamError) as raised:
            session.ask("hello", stream=False)
        said = [*_exception_texts(raised.value), *(record.error or "" for record in session.ledger.records())]
    header = f"Bearer {BASE64_KEY}"
    for text in said:
        decoded = [unquote(text), text.replace("\\/", "/")]
        for word in re.findall(r"[A-Za-z0-9+/_=-]{16,}", text):
            decoded += [base64.b64decode(word + "==", altchars=alt, validate=False).decode("latin-1")
                        for alt in (b"+/", b"-_")]
        for seen in decoded:
            assert_no_key(seen, BASE64_KEY)
        assert _echoed(form, header)[12:-12] not in text
    assert "proxy saw" in raised.value.message


# ---- the magics --------------------------------------------------------------------------------------


def _run(ip, source: str) -> str:
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


@pytest.fixture
def verbose(keyed_ip):
    """``%xmode Verbose``: a traceback, if one is shown, prints every frame's arguments and locals."""
    keyed_ip.run_cell("%xmode Verbose")
    yield keyed_ip
    keyed_ip.run_cell("%xmode Context")


def test_a_refused_cancel_shows_one_message_and_no_key_even_verbose(verbose, key, proxy):
    verbose.run_cell(f"%config AskMagics.base_url = {proxy.base_url!r}")
    shown = _run(verbose, "%%ask --background -o job\nWork on this for a while.")
    shown += _run(verbose, "%nbopenai cancel resp_job_queued")
    assert proxy.requests[-1].path.endswith("/cancel") and authorization(proxy.requests[-1]) == f"Bearer {key}"
    assert "Authentication failed" in shown and "proxy saw Bearer ***" in shown
    assert "Traceback" not in shown
    assert_no_key(shown, key)


@pytest.mark.parametrize("cell", ["%%extract Person\nAda Lovelace.", "%%ask\nHello", "%%ask --background\nHello"])
def test_a_malformed_base_url_is_one_message_and_no_key_even_verbose(verbose, key, cell):
    verbose.run_cell("from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str")
    verbose.run_cell("%config AskMagics.base_url = 'http://127.0.0.1:badport/v1'")
    shown = _run(verbose, cell)
    assert "nbopenai is not configured" in shown and "Invalid port" in shown
    assert "Traceback" not in shown
    assert_no_key(shown, key)


def test_credentials_in_the_base_url_show_nowhere_in_the_magics(ip, key, monkeypatch):
    password = "pa55-W0rd-S3cret"
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://ada:{password}@127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    ip.run_cell("%reload_ext nbopenai")
    shown = [
        _run(ip, cell)
        for cell in (
            "%nbopenai status",
            "%%ask --dry-run\nHello",
            "%config AskMagics",
            "%%ask --dry-run -o request\nHello",
            "request",
            "import nbopenai; nbopenai.current_session()",
        )
    ]
    for text in shown:
        assert password not in text and "ada:" not in text
    assert "http://***@127.0.0.1:9/v1" in shown[0] and "POST http://***@127.0.0.1:9/v1/responses" in shown[1]


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
    from nbclient import NotebookClient  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    if isinstance(path_or_cells, Path):
        nb = nbformat.read(path_or_cells, as_version=4)
        name = path_or_cells.name
    else:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in path_or_cells])
        name = "hostile.ipynb"
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}
    )
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


PROXIED_CELLS = [
    "import logging\nlogging.basicConfig(level=logging.DEBUG)  # the HTTP stack logs raw response headers",
    "%xmode Verbose",
    "%load_ext nbopenai",
    "%nbopenai status",
    "%%ask\nFAULT:stream_error_event",
    "%%ask\nFAULT:stream_response_failed",
    "%%ask\nFAULT:stream_split_echo",
    "%%ask\nFAULT:stream_nested_error",
    "%%ask --no-stream\nFAULT:failed_body",
    "%%ask --no-stream\nFAULT:failed_body_gzip",
    "%%ask --no-stream\nFAULT:status_401",
    "%%ask --no-stream\nFAULT:plain_text",
    "%%ask --background -o failing\nFAULT:job_failed",
    "failing.wait(timeout=60)\nprint(failing.answer.error)",
    "%%ask --background -o queued\nThis one stays queued.",
    "%nbopenai cancel resp_job_queued",
    "from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str",
    "%%extract Person -o people\nAda. FAULT:failed_body",
    "people",
    "print(people['_error'].iloc[0])",
    "%nbopenai usage",
    "%config AskMagics.base_url = 'http://127.0.0.1:badport/v1'",
    "%%extract Person\nAda Lovelace.",
    "%%ask\nHello",
]


@pytest.mark.kernel
@pytest.mark.parametrize("key", KEYS, ids=["sk-key", "opaque-key"])
def test_a_notebook_behind_an_echoing_proxy_saves_no_key_even_verbose(key, proxy, tmp_path):
    saved = _execute(
        PROXIED_CELLS,
        kernel_env(OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY=key, NBOPENAI_MODEL="nbopenai-local"),
        tmp_path,
    )
    assert_no_key(saved, key, "saved notebook")
    assert saved.count("proxy saw Bearer ***") >= 8  # every shape was met, and scrubbed
    assert "Not the API" in saved and "Authentication failed" in saved and "Invalid port" in saved
    assert "receive_response_headers.complete" in saved  # the raw headers' trace (with an echo) reached the notebook
    assert {authorization(request) for request in proxy.requests} == {f"Bearer {key}"}
    _data_folder_is_clean(key)
