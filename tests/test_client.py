"""The client layer: one pool per session, honoured timeouts, our retry policy, clear config errors.

Real SDK, real HTTP, the package's own server on 127.0.0.1.
"""

import contextlib
import http.server as http_server
import json
import random
import subprocess
import sys
import threading
import time
import types
from functools import partial

import httpx2
import openai
import pytest
from _byte_server import ByteServer
from _proxies import http, response_json
from openai._models import TypeAdapter
from openai._utils._transform import get_type_hints as transform_hints
from pydantic import BaseModel

import nbopenai
from nbopenai import Session, Settings, Timeouts
from nbopenai._core import _tokens as tokens_module
from nbopenai._core._client import _refuse_non_api
from nbopenai._core._retry import RATE_LIMIT_ATTEMPTS, RetryPolicy, is_retryable


def test_import_loads_neither_ipython_widgets_nor_pandas():
    """Nor what only an ask needs (the SDK, the tokenizer, an HTTP-date parser, asyncio): `%load_ext` stays quick."""
    heavy = ("IPython", "ipywidgets", "pandas", "openai", "tiktoken", "email.utils", "asyncio")
    code = f"import sys, nbopenai; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_all_is_complete_and_importable():
    public = {
        name
        for name, value in vars(nbopenai).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # subpackages appear once imported
    }
    assert public - {"annotations", "Any"} == set(nbopenai.__all__) - {"__version__"}
    for name in nbopenai.__all__:
        assert hasattr(nbopenai, name), name


def test_one_client_pair_per_session_reused_across_calls(local_server, make):
    session = make()
    first = session.client
    session.ask("hello")
    session.ask("again")
    assert session.client is first
    assert session.async_client is session.async_client
    assert first.max_retries == 0  # retries are ours, so every attempt is visible


def test_the_warm_up_leaves_what_the_sdk_builds_on_a_first_stream_built(local_server, make):
    """The first streamed ask of a kernel spent ~0.7 s building the SDK's validator of stream events,
    then ~15 ms on the type hints of its request transform, before any text showed; the warm-up
    builds the very ones the ask uses, so the ask builds none (if the SDK changes its caches, this says so)."""
    session = make()
    TypeAdapter.cache_clear()
    transform_hints.cache_clear()
    session.warm_up().run()  # what the extension's warm-up thread runs, here in line
    built = TypeAdapter.cache_info().misses, transform_hints.cache_info().misses
    assert "demo model" in session.ask("Hello").text
    assert (TypeAdapter.cache_info().misses, transform_hints.cache_info().misses) == built
    assert "ledger" in session.__dict__  # an in-memory (or existing) ledger was opened by the warm-up


def test_the_warm_up_builds_the_vocabulary_only_for_a_budget(make):
    """Building it holds the GIL for ~0.25 s in Rust: a first ask arriving meanwhile stalls. Only a
    budget needs it before a first text (an extraction or --dry-run builds it when it runs)."""
    tokens_module._build.cache_clear()
    make().warm_up().run()
    assert tokens_module._build.cache_info().currsize == 0
    make(budget_tokens=1_000_000).warm_up().run()
    assert tokens_module._build.cache_info().currsize == 1


def test_an_ask_counts_no_tokens_on_its_way_to_the_answer(local_server, make, monkeypatch):
    """The warm-up builds the vocabulary (~0.4 s of CPU) beside the user's first ask, under a lock: an
    ask that counted tokens before sending (the estimate, the window check) waited for the whole build.
    With no budget and a prompt far smaller than the window, nothing needs the count, so the asking
    thread must not touch the tokenizer (the in-process demo server counts on its own threads)."""
    session = make()
    counted_here: list[str | None] = []
    original = tokens_module.encoding_for_model

    def watched(model):  # noqa: ANN001, ANN202
        if threading.current_thread() is threading.main_thread():
            counted_here.append(model)
        return original(model)

    monkeypatch.setattr(tokens_module, "encoding_for_model", watched)
    assert "demo model" in session.ask("Hello").text
    assert counted_here == []
    assert session.usage()["input_tokens"].iloc[0] > 0  # the server's count, recorded as ever
    session.configure(budget_tokens=1_000_000)
    session.ask("Hello again")  # a budget needs the estimate: counted, before sending
    assert counted_here


def test_granular_timeouts_reach_the_sdk_and_its_http_client(local_server, make):
    session = make(timeouts=Timeouts(connect=1.5, read=7.0, write=3.0, pool=2.0))
    timeout = session.client.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (1.5, 7.0, 3.0, 2.0)
    assert session.async_client.timeout.read == 7.0


def test_read_timeout_fires_at_the_configured_value_against_a_slow_server(local_server, make):
    fast_timeout = make(timeouts=Timeouts(read=0.3), max_attempts=1)
    local_server.inject("slow", delay=1.5)
    began = time.perf_counter()
    with pytest.raises(nbopenai.TimeoutError) as caught:
        fast_timeout.ask("are you there?", stream=False)
    elapsed = time.perf_counter() - began
    assert elapsed >= 0.3  # not before the configured read timeout
    assert "timed out" in caught.value.message
    # The same delay under a longer read timeout succeeds: the value, not a default, decided.
    patient = make(timeouts=Timeouts(read=5.0), max_attempts=1)
    local_server.inject("slow", delay=0.5)
    assert patient.ask("are you there?", stream=False).status == "completed"


def test_429_with_retry_after_is_retried_after_that_delay_not_before(local_server, make):
    session = make()
    local_server.inject("rate_limit", retry_after=0.6)
    answer = session.ask("hello")
    assert answer.status == "completed"
    first, second = [r for r in local_server.requests if r.path == "/v1/responses"]
    assert first.fault == "rate_limit" and second.fault is None
    assert second.received_at - first.received_at >= 0.6
    rows = session.usage()
    assert sorted(rows["status"]) == ["completed", "rate_limited"]


def test_retry_after_ms_wins_over_retry_after(local_server, make):
    session = make()
    local_server.inject("rate_limit", retry_after=30, retry_after_ms=50)
    assert session.ask("hello").status == "completed"


def test_401_is_not_retried(local_server, make):
    session = make()
    local_server.inject("unauthorized", count=3)
    with pytest.raises(nbopenai.AuthenticationError) as caught:
        session.ask("hello")
    assert len(local_server.requests) == 1
    assert "OPENAI_API_KEY" in caught.value.hint


@pytest.mark.parametrize("kind, error", [("bad_request", nbopenai.BadRequestError),
                                         ("context_length_exceeded", nbopenai.ContextLengthExceeded)])
def test_400s_are_not_retried(local_server, kind, error, make):
    session = make()
    local_server.inject(kind, count=3)
    with pytest.raises(error):
        session.ask("hello")
    assert len(local_server.requests) == 1


@pytest.mark.parametrize("kind", ["server_error", "unavailable"])
def test_5xx_is_retried_up_to_the_configured_attempts(local_server, kind, make):
    session = make(max_attempts=3)
    local_server.inject(kind, count=5)
    with pytest.raises(nbopenai.ServerError) as caught:
        session.ask("hello")
    assert len(local_server.requests) == 3
    assert "after 3 attempts" in caught.value.message
    assert len(session.usage()) == 3  # each attempt that reached the server is in the ledger


def test_dropped_connection_is_retried_then_succeeds(local_server, make):
    session = make(max_attempts=2)
    local_server.inject("drop")
    assert session.ask("hello", stream=False).status == "completed"
    assert len(local_server.requests) == 2


@pytest.mark.parametrize("stream", [True, False])
def test_a_web_page_instead_of_the_api_is_one_clear_error_and_not_retried(local_server, make, stream):
    session = make(max_attempts=3)
    local_server.inject("not_json", count=3)  # what a sign-in portal or a base URL without /v1 sends
    with pytest.raises(nbopenai.UnexpectedResponse) as caught:
        session.ask("hello", stream=stream)
    assert "with a web page (HTTP 200, text/html)" in caught.value.message
    assert "/v1" in caught.value.hint and "base URL" in caught.value.hint
    assert len(local_server.requests) == 1
    assert list(session.usage()["status"]) == ["error"]  # it reached a server: in the ledger


def _answer(
    status: int, content_type: str, body: bytes = b"<html>Sign in</html>", *, sent: bytes = b'{"model":"m"}', **kwargs
):
    request = httpx2.Request(
        "POST",
        "https://proxy.example:8443/v1/responses?key=secret",
        content=sent,
        headers={"accept": "application/json"},
    )
    headers = {"content-type": content_type, "content-length": str(len(body))}
    return httpx2.Response(status, headers=headers, content=body, request=request, **kwargs)


def test_web_page_check_leaves_json_streams_gateway_errors_and_mislabelled_json_alone():
    _refuse_non_api(_answer(502, "text/html"))  # a gateway's bad minute: left to be retried as a 5xx
    _refuse_non_api(_answer(200, "application/json", b'{"id": "resp_1", "status": "completed"}'))
    _refuse_non_api(
        _answer(200, "text/event-stream", b"event: response.created\ndata: {}\n\n", sent=b'{"stream":true}')
    )
    _refuse_non_api(
        _answer(200, "Text/HTML; charset=UTF-8", b'\n {"id": "resp_1"}')
    )  # JSON, mislabelled: the SDK reads it


def test_web_page_check_names_the_server_and_path_but_not_the_query():

    with pytest.raises(nbopenai.UnexpectedResponse) as missing:
        _refuse_non_api(_answer(404, "text/html; charset=utf-8"))
    assert str(missing.value).splitlines()[0] == (
        "https://proxy.example:8443 answered POST /v1/responses with a web page (HTTP 404, text/html), "
        "not the API's JSON."
    )
    first = _answer(302, "text/plain", b"")
    login = httpx2.Request("GET", "https://proxy.example:8443/login")
    page = httpx2.Response(
        200, headers={"content-type": "text/html"}, content=b"<html/>", request=login, history=[first]
    )
    with pytest.raises(nbopenai.UnexpectedResponse) as redirected:
        _refuse_non_api(page)
    assert (
        "answered POST /v1/responses with a web page (HTTP 200 after a redirect to /login, text/html)"
        in redirected.value.message
    )


# ---- servers that are not the API (written byte by byte, or the standard library's own) -------------


@pytest.fixture
def raw_session():
    """``raw_session(handler)``: a session (4 attempts) on a byte server answering with ``handler``; returns both."""
    with contextlib.ExitStack() as opened:

        def build(handler):
            server = opened.enter_context(ByteServer(handler))
            settings = Settings(base_url=server.base_url, api_key="sk-raw-0123456789", model="nbopenai-local")
            session = opened.enter_context(
                Session(settings, ledger_path=":memory:", backoff_base=0.001, backoff_max=0.01, max_attempts=4)
            )
            return server, session

        yield build


def _ask_by(session, path):
    if path == "background":
        return session.submit("hello")
    return session.ask("hello", stream=path == "stream")


@pytest.mark.parametrize("path", ["stream", "no-stream", "background"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_a_200_that_is_not_json_is_one_not_the_api_error_on_every_path(raw_session, content_type, path):
    server, session = raw_session(lambda request: http(200, content_type, b"OK, received."))
    with pytest.raises(nbopenai.UnexpectedResponse) as raised:
        _ask_by(session, path)
    kind = content_type or "no content type"
    assert f"answered POST /v1/responses with something that is not JSON (HTTP 200, {kind})" in raised.value.message
    assert len(server.requests) == 1  # not retried
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize("path", ["no-stream", "background"])
def test_an_event_stream_where_json_was_asked_for_is_not_the_api(raw_session, path):
    events = b"event: response.created\ndata: {}\n\n"
    server, session = raw_session(lambda request: http(200, "text/event-stream", events))
    with pytest.raises(nbopenai.UnexpectedResponse, match="with an event stream"):
        _ask_by(session, path)


@pytest.mark.parametrize("path", ["stream", "no-stream", "background"])
def test_a_plain_web_server_refusing_post_is_not_the_api_and_not_retried(make, tmp_path, path):
    refused = []

    class Handler(http_server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the standard library's name
            refused.append(format % args)

    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        session = make(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", max_attempts=4)
        with pytest.raises(nbopenai.UnexpectedResponse) as raised:
            _ask_by(session, path)
    finally:
        server.shutdown()
        server.server_close()
    assert "(HTTP 501, text/html)" in raised.value.message and "/v1" in raised.value.hint
    assert (
        sum(line.startswith('"POST') for line in refused) == 1
    )  # asked once: a 501 says the method is wrong, not "try again"


def test_a_server_that_ignores_stream_true_gets_its_whole_answer_used_and_recorded(raw_session):
    answer = response_json("completed", text="The whole answer, at once.")
    server, session = raw_session(lambda request: http(200, "application/json", json.dumps(answer)))
    reply = session.ask("hello")  # streaming is the default
    assert server.requests[0].body["stream"] is True
    assert (reply.status, reply.text, reply.turn) == ("completed", "The whole answer, at once.", 1)
    assert (reply.usage.input, reply.usage.output, reply.usage.estimated) == (5, 3, False)
    [row] = session.ledger.records()
    assert (row.status, row.input_tokens, row.output_tokens, row.response_id) == ("completed", 5, 3, "resp_raw1")
    assert session.ask("and then?").turn == 2  # the thread moved on from it


def test_json_that_is_not_a_response_where_events_were_asked_for_is_not_the_api(raw_session):
    server, session = raw_session(lambda request: http(200, "application/json", b'{"hello": "world"}'))
    with pytest.raises(nbopenai.UnexpectedResponse):
        session.ask("hello")
    assert len(server.requests) == 1


class Person(BaseModel):
    name: str


@pytest.mark.parametrize("path", ["stream", "no-stream", "background", "extract"])
@pytest.mark.parametrize("body", [b"{}", b'{"error": {"message": "quota gone", "code": "insufficient_quota"}}'])
def test_a_200_of_json_that_is_not_a_response_is_not_the_api_on_every_path(raw_session, path, body):
    # A gateway's error under a 200 (or an empty object): --no-stream answered nothing with status None and the
    # ledger refused its row; extraction re-asked every row as an empty answer, never failing fast.
    server, session = raw_session(lambda request: http(200, "application/json", body))
    with pytest.raises(nbopenai.UnexpectedResponse) as raised:
        if path == "extract":
            nbopenai.extract(Person, [f"Person {i}" for i in range(20)], session=session, progress=False, cache=False)
        else:
            _ask_by(session, path)
    assert "answered POST /v1/responses with JSON that is not a response (HTTP 200" in raised.value.message
    assert len(server.requests) == 1
    # One status on every path (failed_attempt_status): no response began, so it is a request refused, not a
    # response that failed; nothing was reported, so 0 tokens (a stream's was "failed" with estimated tokens).
    [row] = session.ledger.records()
    assert (row.status, row.response_id, row.input_tokens, row.cost_usd) == ("error", None, 0, 0)


def test_full_jitter_stays_within_the_exponential_envelope():
    policy = RetryPolicy(attempts=10, base=0.5, cap=4.0, rng=random.Random(1))
    error = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    for attempt in range(1, 9):
        delays = [policy.delay(attempt, error) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter uses the whole range
    assert policy.delay(10, error) is None
    assert is_retryable(error)


def test_no_key_and_no_base_url_says_how_to_fix_it():
    session = Session(Settings(), ledger_path=":memory:")
    with pytest.raises(nbopenai.ConfigurationError) as caught:
        session.ask("hello")
    text = str(caught.value)
    assert "OPENAI_API_KEY" in text and "%nbopenai local" in text


def test_environment_provides_key_and_base_url_and_the_key_never_shows():
    key = "sk-" + "test-abcdefghijklmnopqrstuvwxyz0123"  # split: no key-shaped literal in the repo
    settings = Settings.from_env({"OPENAI_API_KEY": key, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert settings.base_url == "http://127.0.0.1:9/v1"
    assert settings.api_key.reveal() == key
    assert key not in repr(settings) and key not in repr(Session(settings, ledger_path=":memory:"))
    assert "0123" in repr(settings)


def test_explicit_base_url_wins_over_the_environment():
    settings = Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, base_url="http://127.0.0.1:8/v1")
    assert settings.base_url == "http://127.0.0.1:8/v1"


def test_rate_limits_that_say_when_to_return_get_their_own_larger_budget(local_server, make):
    session = make(max_attempts=2)
    local_server.inject("rate_limit", count=RATE_LIMIT_ATTEMPTS - 1, retry_after=0)
    assert session.ask("hello").status == "completed"  # waiting as told costs nothing
    assert len(local_server.requests) == RATE_LIMIT_ATTEMPTS
    local_server.reset()
    no_retry = make(max_attempts=1)  # "no retries" stays no retries
    local_server.inject("rate_limit", retry_after=0)
    with pytest.raises(nbopenai.RateLimitError):
        no_retry.ask("hello")
    assert len(local_server.requests) == 1
