"""Extraction on a paid key: fail fast, the circuit breaker, waits asked for, the stop button stopping Run All.

Each fault hits every row (a wrong key, an unknown model, a closed port, not the API, an outage, a
wait of an hour): the run must stop after a handful of requests and raise the error ``%%ask``
raises, with the rows that finished kept on the error (``error.partial``) and bound by ``-o``.
"""

from __future__ import annotations

import _thread
import signal
import socket
import threading
import time
from email.utils import formatdate

import httpx2
import openai
import pytest
from _byte_server import ByteServer, json_reply
from conftest import SECRET_KEY
from pydantic import BaseModel

import nbopenai
from nbopenai._core._breaker import CircuitBreaker
from nbopenai._core._retry import asked_wait, parse_duration
from nbopenai._extract import extract


class Person(BaseModel):
    name: str
    age: int | None


ROWS = [f"Person {i} is {20 + i % 50} years old." for i in range(500)]


def model_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/responses"]


def run(session, texts=ROWS, **options):
    options.setdefault("progress", False)
    options.setdefault("cache", False)
    return extract(session, Person, texts, **options)


def assert_kept(error, rows: int) -> None:
    """The error carries the whole frame: every row accounted for, none of them silently lost."""
    partial = error.partial
    assert len(partial) == rows and partial.index.is_unique
    assert set(partial["_status"]) <= {"ok", "error", "cancelled"}
    assert (partial["_status"] == "cancelled").sum() >= rows - 20
    assert "--retry-failed" in error.message


# ---- waits asked for ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("30", 30.0), ("1.5", 1.5), ("30s", 30.0), ("12ms", 0.012), ("1.5s", 1.5), ("6m0s", 360.0),
    ("1m30.5s", 90.5), ("2h", 7200.0), ("", None), ("soon", None), ("-3", None),
])
def test_durations_in_every_shape_servers_send(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds) if seconds is not None else parse_duration(text) is None


def test_an_http_date_is_seconds_from_now():
    assert 50 < parse_duration(formatdate(time.time() + 60, usegmt=True)) <= 60


def test_retry_after_ms_then_retry_after_then_the_message():
    assert asked_wait({"retry-after-ms": "250", "retry-after": "30"}) == 0.25
    assert asked_wait({"retry-after": "30s"}) == 30.0
    assert asked_wait({}, "Rate limit reached for requests. Please try again in 120ms.") == pytest.approx(0.12)
    assert asked_wait({}, "Limit 90000, Used 89000. Please try again in 1.5s. Visit ...") == 1.5
    assert asked_wait({}, "Please try again later.") is None


@pytest.mark.parametrize("message, seconds", [
    ("Please try again in 1m30s.", 90.0), ("Please try again in 6m0s.", 360.0), ("try again in 2h5m3s", 7503.0),
    ("Please try again in 1m30.5s, or contact us", 90.5),
])
def test_a_message_asks_for_a_wait_in_several_units(message, seconds):
    # A TPM 429 over a long window says "try again in 1m30s": it was read as no wait at all (backoff of seconds)
    assert asked_wait({}, message) == pytest.approx(seconds)


def _response(text: str = '{"name": "Ada", "age": 36}') -> dict:
    return {
        "id": "resp_1", "object": "response", "created_at": 0, "status": "completed", "model": "m",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    }


def _limited_once(headers: dict[str, str], message: str = "Rate limit reached."):
    replies = iter([json_reply(429, {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}},
                               headers=headers)])
    return lambda request: next(replies, None) or json_reply(200, _response())


@pytest.mark.parametrize("headers, message, wait", [
    ({"retry-after": "0.2s"}, "Rate limit reached.", 0.2),  # a gateway's "30s"-style value: was a ValueError
    ({}, "Rate limit reached for requests. Please try again in 150ms.", 0.15),  # only the message says when
])
def test_ask_waits_as_asked_in_any_shape(headers, message, wait):
    with ByteServer(_limited_once(headers, message)) as server, \
            nbopenai.Session(base_url=server.base_url, model="m", ledger_path=":memory:", backoff_base=5.0) as session:
        assert session.ask("hello", stream=False).text == '{"name": "Ada", "age": 36}'
        first, second = server.requests
        assert second.received_at - first.received_at >= wait  # as asked, not the 5 s backoff


def test_a_wait_longer_than_the_cap_says_how_long_it_was(local_server, make):
    local_server.inject("rate_limit", count=1000, retry_after=3600)
    with pytest.raises(nbopenai.RateLimitError) as caught:
        make().ask("hello")
    assert len(model_requests(local_server)) == 1
    assert "60 min" in caught.value.hint and "a minute" not in caught.value.hint
    with pytest.raises(nbopenai.RateLimitError) as caught:
        run(make())
    assert len(model_requests(local_server)) <= 4
    assert "60 min" in caught.value.message and "longer than the 2 min" in caught.value.message
    assert_kept(caught.value, len(ROWS))


# ---- fail fast ---------------------------------------------------------------------------------------


def test_a_wrong_key_stops_the_run_after_one_request(local_server, make):
    local_server.configure(require_api_key="the-right-key")
    session = make(api_key=SECRET_KEY)
    with pytest.raises(nbopenai.AuthenticationError) as caught:
        run(session)
    assert len(model_requests(local_server)) <= 3
    assert_kept(caught.value, len(ROWS))
    assert SECRET_KEY not in str(caught.value) and SECRET_KEY not in caught.value.partial.to_csv()
    assert len(session.usage()) == len(model_requests(local_server))  # each refusal is in the ledger


def test_an_unknown_model_stops_the_run_after_one_request(local_server, make):
    with pytest.raises(nbopenai.BadRequestError) as caught:  # the offline server answers 404 model_not_found
        run(make(model="gpt-nope"))
    assert len(model_requests(local_server)) <= 3
    assert caught.value.status == 404 and "gpt-nope" in caught.value.message
    assert_kept(caught.value, len(ROWS))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed on leaving: nothing listens there


def test_a_closed_port_stops_the_run_after_one_attempt():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with nbopenai.Session(base_url=url, model="m", ledger_path=":memory:") as session:
        with pytest.raises(nbopenai.ConnectionError) as caught:
            run(session)
    assert caught.value.partial["_attempts"].sum() <= 3  # was 2,000 connection attempts
    assert_kept(caught.value, len(ROWS))


def test_a_web_page_instead_of_the_api_stops_the_run(local_server, make):
    local_server.inject("not_json", count=1000)
    with pytest.raises(nbopenai.UnexpectedResponse) as caught:
        run(make())
    assert len(model_requests(local_server)) <= 3
    assert_kept(caught.value, len(ROWS))


def test_one_bad_row_stays_that_rows_error(local_server, make):
    local_server.inject("bad_request", message="this text is not allowed", param="input")
    frame = run(make(), ROWS[:5], concurrency=1)
    assert list(frame["_status"]) == ["error", "ok", "ok", "ok", "ok"]
    assert len(model_requests(local_server)) == 5


def test_rows_already_finished_are_kept_and_retry_failed_finishes_the_rest(local_server, make):
    session = make()
    run(session, ROWS[:3], cache=True)  # answered (and cached) while the key was good
    local_server.inject("unauthorized", count=1000)
    with pytest.raises(nbopenai.AuthenticationError) as caught:
        run(session, ROWS[:40], cache=True, concurrency=4)
    partial = caught.value.partial
    assert list(partial["_status"][:3]) == ["ok"] * 3 and "3 rows kept" in caught.value.message
    local_server.reset()
    again = run(session, ROWS[:40], cache=True, retry_failed=partial)
    assert (again["_status"] == "ok").all()
    assert len(model_requests(local_server)) == 37


# ---- the circuit breaker -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _server_error():
    request = httpx2.Request("POST", "http://127.0.0.1/v1/responses")
    return openai.InternalServerError("down", response=httpx2.Response(503, request=request), body=None)


def test_the_breaker_opens_probes_once_and_closes_on_success():
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, first_pause=1.0, max_pause=4.0, clock=clock)
    for _ in range(3):
        assert breaker.wait_before_sending() == (0.0, False)
        breaker.settle(_server_error())
    assert breaker.state == "open" and breaker.wait_before_sending() == (1.0, False)
    with pytest.raises(nbopenai.APIUnavailable):
        breaker.check()
    clock.now += 1.0
    assert breaker.wait_before_sending() == (0.0, True)  # the one probe
    assert breaker.wait_before_sending()[0] > 0  # the others wait for it
    breaker.settle(_server_error(), probe=True)
    assert breaker.state == "open" and breaker.wait_before_sending() == (2.0, False)  # a longer pause
    clock.now += 2.0
    assert breaker.wait_before_sending() == (0.0, True)
    breaker.settle(None, probe=True)
    assert breaker.state == "closed" and breaker.wait_before_sending() == (0.0, False) and breaker.outage_s() == 0


def test_an_outage_costs_a_few_probes_not_every_rows_retries(local_server, make):
    session = make(outage_timeout=2.0)
    local_server.inject("unavailable", count=100_000)
    lines = []
    with pytest.raises(nbopenai.APIUnavailable) as caught:
        run(session, ROWS[:400], progress=lambda snapshot: lines.append(snapshot.line()))
    assert len(model_requests(local_server)) <= 50  # was 1,598
    assert any("the API is failing: rows wait for it" in line for line in lines)
    assert "The API is unavailable" in caught.value.message and "0 rows kept" in caught.value.message
    assert_kept(caught.value, 400)
    assert len(session.usage()) == len(model_requests(local_server))


def test_ask_fails_fast_while_the_breaker_is_open(local_server, make):
    session = make(max_attempts=3)
    local_server.inject("unavailable", count=100)
    with pytest.raises(nbopenai.ServerError):
        session.ask("hello")
    with pytest.raises(nbopenai.APIUnavailable):  # the fifth failure in a row opened it
        session.ask("hello")
    assert len(model_requests(local_server)) == 5
    with pytest.raises(nbopenai.APIUnavailable) as caught:
        session.ask("hello")
    assert len(model_requests(local_server)) == 5  # nothing sent while open
    assert "5 failures in a row" in caught.value.message


# ---- the magic: the partial frame is bound, the cell fails -------------------------------------------


SETUP = '''
from typing import Optional
import pandas as pd
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: Optional[int]

bios = pd.Series([f"Person {i} is {20 + i} years old." for i in range(30)])
'''


def test_the_magic_binds_the_partial_frame_and_raises_the_typed_error(ip, local_server):
    ip.run_cell(SETUP)
    local_server.configure(require_api_key="the-right-key")
    with pytest.raises(nbopenai.AuthenticationError) as caught:
        ip.run_cell("%%extract Person --over bios -o people --no-cache\nExtract the person.")
    people = ip.user_ns["people"]
    assert len(people) == 30 and set(people["_status"]) <= {"error", "cancelled"}
    assert len(model_requests(local_server)) <= 3
    assert SECRET_KEY not in str(caught.value)


def _interrupt_after(server, requests: int) -> threading.Thread:
    """Press the stop button once ``requests`` have arrived, with ``interrupt_main``: it wakes no thread, so the
    wait must look for the press itself (the real signal is tested in a real kernel, tests/test_extract_kernel.py)."""

    def press() -> None:
        # Any create route (an earlier test in the same shell may leave another URL shape in use).
        while sum(r.path.endswith("/responses") for r in server.requests) < requests:
            time.sleep(0.01)
        _thread.interrupt_main(signal.SIGINT)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def test_the_stop_button_binds_the_partial_frame_and_stops_run_all(ip, local_server):
    ip.run_cell(SETUP)
    local_server.configure(latency=0.2)
    presser = _interrupt_after(local_server, 3)
    with pytest.raises(KeyboardInterrupt):  # the cell fails: Run All stops here
        ip.run_cell("%%extract Person --over bios -o people --no-cache --concurrency 1\nExtract the person.")
        print("paths seen:", sorted({r.path for r in local_server.requests}))  # shown only when this fails
    presser.join(5)
    people = ip.user_ns["people"]
    assert people.attrs["interrupted"] is True and len(people) == 30
    assert "cancelled" in set(people["_status"]) and (people["_status"] == "ok").sum() >= 1
    assert ip.magics_manager.registry["ExtractMagics"].last is people  # --retry-failed redoes the rest


def test_a_refusal_for_every_row_leaves_the_first_contact_cautious(local_server, make):
    session = make(model="gpt-nope")
    for _ in range(2):  # the second run of the same mistake costs one request again, not a wave
        local_server.clear_requests()
        with pytest.raises(nbopenai.BadRequestError):
            run(session, ROWS[:100], concurrency=16)
        assert len(model_requests(local_server)) == 1
