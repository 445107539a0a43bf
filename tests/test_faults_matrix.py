"""The fault matrix: every fault the offline server injects, against every way of asking.

Each cell runs one faulted call through the magics in a test shell (what a notebook user runs),
after one good turn, and checks four things against ``EXPECTED``:

- what the user sees: the answer (and its status), the job's or row's status, or the error class;
- the thread's head afterwards: ``moves`` (to the new answer) or ``stays`` (at the good turn);
- the ledger rows the call wrote (their statuses);
- what the server saw and billed: the create requests it got and the responses it produced.

Every cell also checks the accounting rules (``_check_accounting``): each response the server
produced is in the ledger exactly once, each rejected attempt is a row with no tokens, and the
billed responses equal the completed/incomplete/failed rows, so nothing is charged twice by a
retry. The one exception is listed in ``EXPECTED`` itself (``orphans``): a create that timed out
on our side but that the server went on to finish.

``docs/fault-matrix.md`` is generated from ``EXPECTED`` (``python tests/test_faults_matrix.py``
rewrites it) and ``test_the_doc_is_generated_from_this_matrix`` keeps the two in step.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET_KEY
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._core import _errors
from nbopenai.ipython._errors import title_of
from nbopenai.local import FAULT_KINDS
from nbopenai.local._batches import LINE_PATH, controls
from nbopenai.local._faults import FAULTS as FAULT_CLASSES

FAULTS: dict[str, tuple[str, dict[str, Any]]] = {  # kind: (how the doc names it, injection parameters)
    "rate_limit": ("429 with `retry-after`", {"retry_after": 0.05}),
    "server_error": ("500", {}),
    "unavailable": ("503", {}),
    "slow": ("read timeout", {"delay": 0.8}),
    "drop": ("connection dropped (mid-stream when streaming)", {"after": 3}),
    "midstream_error": ("mid-stream `error` event, then `response.failed`", {"after": 3}),
    "midstream_error_flat": ("mid-stream flat `error` event, then `response.failed`", {"after": 3}),
    "incomplete": ("`incomplete` (cut short)", {}),
    "unauthorized": ("401", {}),
    "context_length_exceeded": ("400 `context_length_exceeded`", {}),
    "bad_request": ("400", {}),
    "refusal": ("the model refuses (a `refusal` part)", {}),
    "invalid_json": ("completed, but the text is not valid JSON", {}),
    "not_json": ("200 with a web page instead of JSON (a proxy, a wrong base URL)", {}),
    "not_json_text": ("200 with a `text/plain` body", {}),
    "not_json_binary": ("200 with an `application/octet-stream` body", {}),
    "cut_body": ("200 whose body is cut short (`Content-Length` says more)", {}),
    "corrupt_gzip": ("200 with `Content-Encoding: gzip` and a broken body", {}),
    "stream_ignored": ("asked to stream, the whole JSON response comes back", {}),
    "held_open": ("the stream stays open, silent, after `response.completed` (cut 1 s later)", {"hold": 1.0}),
    "held_open_pings": ("the stream stays open after `response.completed`, sending keep-alive comments (cut 1 s later)",
                        {"hold": 1.0, "every": 0.1}),
    "empty_usage": ('the answer says `"usage": {}`', {}),
    "echo_auth_error": ("a proxy's 400 that quotes the `Authorization` header", {}),
    "echo_auth_failed": ("a failure that quotes the `Authorization` header: flat `error` event and `response.failed` "
                         "(streamed), a 200 with `status: \"failed\"` (otherwise)", {"after": 3}),
}

PATHS: dict[str, str] = {
    "ask": "`%%ask` (streaming)",
    "no-stream": "`%%ask --no-stream`",
    "background": "`%%ask --background`",
    "extract": "`%%extract` (one row)",
    "batch": "`%%extract --batch` (one row)",
}

READ_TIMEOUT = 0.3  # for the `slow` cells only: shorter than the fault's delay


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix.

    ``sees``: ``answer``/``answer incomplete`` (``%%ask``), ``job <status>`` (``--background``),
    ``row <status>`` (``%%extract``), or the class of the error raised; ``+partial`` when the text
    that arrived stays on screen. ``head``: ``moves``, ``stays`` or ``-`` (no thread). ``ledger``:
    the statuses of the rows the call wrote, sorted. ``requests``: create requests the server got
    (``POST /v1/responses``; for a batch, ``POST /v1/batches``). ``billed``: responses the server
    produced. ``orphans``: of those, the ones our side never saw (billed but not in the ledger).
    """

    sees: str
    head: str
    ledger: tuple[str, ...]
    requests: int
    billed: int
    orphans: int = 0
    note: str = ""


def _c(sees: str, head: str, ledger: str, requests: int, billed: int, orphans: int = 0, note: str = "") -> Cell:
    return Cell(sees, head, tuple(sorted(ledger.split())) if ledger else (), requests, billed, orphans, note)


RETRIED = "retried once, then answered"
TIMED_OUT = ("not retried: the server may still finish a create that timed out, and a retry would pay twice; "
             "that answer is billed but never seen (see reliability.md)")
CUT_BEFORE = "cut before any byte, retried"
LATE_500 = "no stream to break: the server answers 500, retried"
NOT_RETRIED = "not retried"
LINES_NOT_RETRIED = "batch lines are not retried (re-run with --retry-failed)"
LINE = "the batch line failed; " + LINES_NOT_RETRIED
REFUSED = "the refusal's words are the answer, marked `[refused]`; billed, and kept in the thread"
NOT_IN_A_BATCH = "not injectable into a batch line: no effect"
NOT_A_LINE_FAULT = "a batch line cannot be cut or slowed: the fault hits the batch's creation call"
FAILS_FAST = ("no row can succeed: the run stops at once (nothing more is sent) and raises; the partial frame is "
              "bound by `-o` and kept on the error's `partial`")
WEB_PAGE = "not retried: the message says the server is not the API, and to check the base URL"
NOT_THE_API = "any 200 that is not the API's JSON is one `Not the API` error; " + WEB_PAGE
UNREADABLE = ("a 200 was billed: never re-sent; recorded `unreadable` with estimated tokens, and the message says "
              "the answer could not be read")
BATCH_UNREADABLE = ("the batch's creation got a 200 it could not read: never re-sent; its line's answer is billed "
                    "but never seen")
STREAMS_ONLY = "only a stream can be held open or ignored: no effect"
NOT_A_STREAM = "only non-streamed answers are cut or compressed (a stream cut mid-way is `drop`): no effect"
HELD_OPEN = "the answer is complete at `response.completed`: finished there, not when the connection ends"
USED_ANYWAY = "the whole response is used as the answer, not thrown away"
ESTIMATED = "missing counts are unknown, not zero: the tokens are estimated (a budget still trips)"
ECHO_SCRUBBED = "the proxy's message is shown with the key scrubbed; " + NOT_RETRIED
ECHO_FAILED = "the failure's message is shown, kept and recorded with the key scrubbed"

EXPECTED: dict[tuple[str, str], Cell] = {
    # %%ask, streaming
    ("rate_limit", "ask"): _c("answer", "moves", "rate_limited completed", 2, 1, note=RETRIED),
    ("server_error", "ask"): _c("answer", "moves", "error completed", 2, 1, note=RETRIED),
    ("unavailable", "ask"): _c("answer", "moves", "error completed", 2, 1, note=RETRIED),
    ("slow", "ask"): _c("TimeoutError", "stays", "error", 1, 1, 1, note=TIMED_OUT),
    ("drop", "ask"): _c("ConnectionError+partial", "stays", "failed", 1, 1, note="the stream had started: not retried"),
    ("midstream_error", "ask"): _c("StreamError+partial", "stays", "failed", 1, 1, note=NOT_RETRIED),
    ("midstream_error_flat", "ask"): _c("StreamError+partial", "stays", "failed", 1, 1, note=NOT_RETRIED),
    ("incomplete", "ask"): _c(
        "answer incomplete", "moves", "incomplete", 1, 1, note="marked `[incomplete]`; the thread can continue from it"
    ),
    ("unauthorized", "ask"): _c("AuthenticationError", "stays", "error", 1, 0, note=NOT_RETRIED),
    ("context_length_exceeded", "ask"): _c(
        "ContextLengthExceeded", "stays", "error", 1, 0, note="not retried; the hint names `%nbopenai compact`"
    ),
    ("bad_request", "ask"): _c("BadRequestError", "stays", "error", 1, 0, note=NOT_RETRIED),
    ("invalid_json", "ask"): _c("answer", "moves", "completed", 1, 1, note="plain text: nothing to validate"),
    ("refusal", "ask"): _c("answer refused", "moves", "completed", 1, 1, note=REFUSED),
    ("not_json", "ask"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=WEB_PAGE),
    # %%ask --no-stream
    ("rate_limit", "no-stream"): _c("answer", "moves", "rate_limited completed", 2, 1, note=RETRIED),
    ("server_error", "no-stream"): _c("answer", "moves", "error completed", 2, 1, note=RETRIED),
    ("unavailable", "no-stream"): _c("answer", "moves", "error completed", 2, 1, note=RETRIED),
    ("slow", "no-stream"): _c("TimeoutError", "stays", "error", 1, 1, 1, note=TIMED_OUT),
    ("drop", "no-stream"): _c("answer", "moves", "error completed", 2, 1, note=CUT_BEFORE),
    ("midstream_error", "no-stream"): _c("answer", "moves", "error completed", 2, 1, note=LATE_500),
    ("midstream_error_flat", "no-stream"): _c("answer", "moves", "error completed", 2, 1, note=LATE_500),
    ("incomplete", "no-stream"): _c("answer incomplete", "moves", "incomplete", 1, 1, note="marked `[incomplete]`"),
    ("unauthorized", "no-stream"): _c("AuthenticationError", "stays", "error", 1, 0, note=NOT_RETRIED),
    ("context_length_exceeded", "no-stream"): _c("ContextLengthExceeded", "stays", "error", 1, 0, note=NOT_RETRIED),
    ("bad_request", "no-stream"): _c("BadRequestError", "stays", "error", 1, 0, note=NOT_RETRIED),
    ("invalid_json", "no-stream"): _c("answer", "moves", "completed", 1, 1, note="plain text: nothing to validate"),
    ("refusal", "no-stream"): _c("answer refused", "moves", "completed", 1, 1, note=REFUSED),
    ("not_json", "no-stream"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=WEB_PAGE),
    # %%ask --background: the fault hits the creation, or (mid-stream kinds) the job itself
    ("rate_limit", "background"): _c("job completed", "moves", "rate_limited completed", 2, 1, note="creation retried"),
    ("server_error", "background"): _c("job completed", "moves", "error completed", 2, 1, note="creation retried"),
    ("unavailable", "background"): _c("job completed", "moves", "error completed", 2, 1, note="creation retried"),
    ("slow", "background"): _c("TimeoutError", "stays", "error", 1, 1, 1, note=TIMED_OUT),
    ("drop", "background"): _c(
        "job completed", "moves", "error completed", 2, 1, note="creation cut before any byte, retried"
    ),
    ("midstream_error", "background"): _c(
        "job failed", "stays", "failed", 1, 1, note="created, then the job fails on the server"
    ),
    ("midstream_error_flat", "background"): _c(
        "job failed", "stays", "failed", 1, 1, note="created, then the job fails on the server"
    ),
    ("incomplete", "background"): _c("job incomplete", "moves", "incomplete", 1, 1),
    ("unauthorized", "background"): _c("AuthenticationError", "stays", "error", 1, 0, note="raised at submission"),
    ("context_length_exceeded", "background"): _c(
        "ContextLengthExceeded", "stays", "error", 1, 0, note="raised at submission"
    ),
    ("bad_request", "background"): _c("BadRequestError", "stays", "error", 1, 0, note="raised at submission"),
    ("invalid_json", "background"): _c(
        "job completed", "moves", "completed", 1, 1, note="plain text: nothing to validate"
    ),
    ("refusal", "background"): _c("job refused", "moves", "completed", 1, 1, note=REFUSED),
    ("not_json", "background"): _c(
        "UnexpectedResponse", "stays", "error", 1, 0, note="raised at submission; " + WEB_PAGE
    ),
    # %%extract, one row (never streamed)
    ("rate_limit", "extract"): _c("row ok", "-", "rate_limited completed", 2, 1, note=RETRIED),
    ("server_error", "extract"): _c("row ok", "-", "error completed", 2, 1, note=RETRIED),
    ("unavailable", "extract"): _c("row ok", "-", "error completed", 2, 1, note=RETRIED),
    ("slow", "extract"): _c("row error", "-", "error", 1, 1, 1, note=TIMED_OUT),
    ("drop", "extract"): _c("row ok", "-", "error completed", 2, 1, note=CUT_BEFORE),
    ("midstream_error", "extract"): _c("row ok", "-", "error completed", 2, 1, note=LATE_500),
    ("midstream_error_flat", "extract"): _c("row ok", "-", "error completed", 2, 1, note=LATE_500),
    ("incomplete", "extract"): _c(
        "row incomplete", "-", "incomplete", 1, 1, note="the row keeps `_error`; --retry-failed redoes it"
    ),
    ("unauthorized", "extract"): _c("AuthenticationError", "-", "error", 1, 0, note=FAILS_FAST),
    ("context_length_exceeded", "extract"): _c(
        "row error", "-", "error", 1, 0, note="the frame comes back; `_error` says why"
    ),
    ("bad_request", "extract"): _c("row error", "-", "error", 1, 0, note="the frame comes back; `_error` says why"),
    ("invalid_json", "extract"): _c(
        "row ok",
        "-",
        "completed completed",
        2,
        2,
        note="re-asked once with the validation error (`validation_retries`): both answers billed, both in the ledger",
    ),
    ("refusal", "extract"): _c(
        "row refusal", "-", "completed", 1, 1, note="`_error` holds the refusal's words; not re-asked"
    ),
    ("not_json", "extract"): _c("UnexpectedResponse", "-", "error", 1, 0, note=FAILS_FAST + "; " + WEB_PAGE),
    # %%extract --batch, one row: the fault hits the row's line inside the batch
    ("rate_limit", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("server_error", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("unavailable", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("slow", "batch"): _c("TimeoutError", "-", "", 1, 1, 1, note=NOT_A_LINE_FAULT + "; " + TIMED_OUT),
    ("drop", "batch"): _c("row ok", "-", "completed", 2, 1, note=NOT_A_LINE_FAULT + "; cut before any byte, retried"),
    ("midstream_error", "batch"): _c(
        "row error", "-", "error", 1, 0, note="no stream in a batch: the line fails 500; " + LINES_NOT_RETRIED
    ),
    ("midstream_error_flat", "batch"): _c(
        "row error", "-", "error", 1, 0, note="no stream in a batch: the line fails 500; " + LINES_NOT_RETRIED
    ),
    ("incomplete", "batch"): _c(
        "row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH + " (`max_output_tokens` gives `incomplete` rows)"
    ),
    ("unauthorized", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("context_length_exceeded", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("bad_request", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("invalid_json", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    ("refusal", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    ("not_json", "batch"): _c(
        "UnexpectedResponse",
        "-",
        "",
        1,
        0,
        note="a batch line is never a web page: the fault hits the batch's creation call; " + WEB_PAGE,
    ),
    # Other bytes than the API's (issue 14): a 200 that is not JSON, or that cannot be read.
    ("not_json_text", "ask"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=NOT_THE_API),
    ("not_json_text", "no-stream"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=NOT_THE_API),
    ("not_json_text", "background"): _c(
        "UnexpectedResponse", "stays", "error", 1, 0, note="raised at submission; " + NOT_THE_API
    ),
    ("not_json_text", "extract"): _c("UnexpectedResponse", "-", "error", 1, 0, note=FAILS_FAST + "; " + NOT_THE_API),
    ("not_json_text", "batch"): _c(
        "UnexpectedResponse", "-", "", 1, 0, note="the fault hits the batch's creation call; " + NOT_THE_API
    ),
    ("not_json_binary", "ask"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=NOT_THE_API),
    ("not_json_binary", "no-stream"): _c("UnexpectedResponse", "stays", "error", 1, 0, note=NOT_THE_API),
    ("not_json_binary", "background"): _c(
        "UnexpectedResponse", "stays", "error", 1, 0, note="raised at submission; " + NOT_THE_API
    ),
    ("not_json_binary", "extract"): _c("UnexpectedResponse", "-", "error", 1, 0, note=FAILS_FAST + "; " + NOT_THE_API),
    ("not_json_binary", "batch"): _c(
        "UnexpectedResponse", "-", "", 1, 0, note="the fault hits the batch's creation call; " + NOT_THE_API
    ),
    ("cut_body", "ask"): _c("answer", "moves", "completed", 1, 1, note=NOT_A_STREAM),
    ("cut_body", "no-stream"): _c("UnreadableAnswer", "stays", "unreadable", 1, 1, note=UNREADABLE),
    ("cut_body", "background"): _c(
        "UnreadableAnswer", "stays", "unreadable", 1, 1, note="the creation's 200 was cut; " + UNREADABLE
    ),
    ("cut_body", "extract"): _c("row error", "-", "unreadable", 1, 1, note=UNREADABLE),
    ("cut_body", "batch"): _c("UnreadableAnswer", "-", "", 1, 1, 1, note=BATCH_UNREADABLE),
    ("corrupt_gzip", "ask"): _c("answer", "moves", "completed", 1, 1, note=NOT_A_STREAM),
    ("corrupt_gzip", "no-stream"): _c("UnreadableAnswer", "stays", "unreadable", 1, 1, note=UNREADABLE),
    ("corrupt_gzip", "background"): _c(
        "UnreadableAnswer", "stays", "unreadable", 1, 1, note="the creation's 200 was unreadable; " + UNREADABLE
    ),
    ("corrupt_gzip", "extract"): _c("row error", "-", "unreadable", 1, 1, note=UNREADABLE),
    ("corrupt_gzip", "batch"): _c("UnreadableAnswer", "-", "", 1, 1, 1, note=BATCH_UNREADABLE),
    # Streams that do not behave: ignored, or held open after their last event.
    ("stream_ignored", "ask"): _c("answer", "moves", "completed", 1, 1, note=USED_ANYWAY),
    ("stream_ignored", "no-stream"): _c("answer", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("stream_ignored", "background"): _c("job completed", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("stream_ignored", "extract"): _c("row ok", "-", "completed", 1, 1, note=STREAMS_ONLY),
    ("stream_ignored", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    ("held_open", "ask"): _c("answer", "moves", "completed", 1, 1, note=HELD_OPEN),
    ("held_open", "no-stream"): _c("answer", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open", "background"): _c("job completed", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open", "extract"): _c("row ok", "-", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    ("held_open_pings", "ask"): _c("answer", "moves", "completed", 1, 1, note=HELD_OPEN),
    ("held_open_pings", "no-stream"): _c("answer", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open_pings", "background"): _c("job completed", "moves", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open_pings", "extract"): _c("row ok", "-", "completed", 1, 1, note=STREAMS_ONLY),
    ("held_open_pings", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    # Usage that says nothing.
    ("empty_usage", "ask"): _c("answer", "moves", "completed", 1, 1, note=ESTIMATED),
    ("empty_usage", "no-stream"): _c("answer", "moves", "completed", 1, 1, note=ESTIMATED),
    ("empty_usage", "background"): _c("job completed", "moves", "completed", 1, 1, note=ESTIMATED),
    ("empty_usage", "extract"): _c("row ok", "-", "completed", 1, 1, note=ESTIMATED),
    ("empty_usage", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
    # A proxy that quotes the request's Authorization header back (the key must never show: checked in every cell).
    ("echo_auth_error", "ask"): _c("BadRequestError", "stays", "error", 1, 0, note=ECHO_SCRUBBED),
    ("echo_auth_error", "no-stream"): _c("BadRequestError", "stays", "error", 1, 0, note=ECHO_SCRUBBED),
    ("echo_auth_error", "background"): _c(
        "BadRequestError", "stays", "error", 1, 0, note="raised at submission; " + ECHO_SCRUBBED
    ),
    ("echo_auth_error", "extract"): _c("row error", "-", "error", 1, 0, note="`_error` says why, scrubbed"),
    ("echo_auth_error", "batch"): _c("row error", "-", "error", 1, 0, note=LINE),
    ("echo_auth_failed", "ask"): _c("StreamError+partial", "stays", "failed", 1, 1, note=ECHO_FAILED),
    ("echo_auth_failed", "no-stream"): _c(
        "StreamError+partial", "stays", "failed", 1, 1, note="a 200 whose status is `failed`; " + ECHO_FAILED
    ),
    ("echo_auth_failed", "background"): _c("job failed", "stays", "failed", 1, 1, note=ECHO_FAILED),
    ("echo_auth_failed", "extract"): _c(
        "row error", "-", "failed", 1, 1, note="a 200 whose status is `failed`; `_error` is scrubbed"
    ),
    ("echo_auth_failed", "batch"): _c("row ok", "-", "completed", 1, 1, note=NOT_IN_A_BATCH),
}

# Cells whose client fix had not landed when the server learnt the fault (issue 14): strict xfails, so
# the suite stays green and the fix shows by turning them into passes. The fixer deletes the entry.
PENDING: dict[tuple[str, str], str] = {}

# The rest hit the batch line.
BATCH_CREATION_FAULTS = frozenset(
    {"slow", "drop", "not_json", "not_json_text", "not_json_binary", "cut_body", "corrupt_gzip"}
)


# ---- running one cell ------------------------------------------------------------------------------


SETUP = """
from typing import Optional
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: Optional[int]
"""


@dataclass
class Observed:
    cell: Cell
    ledger_rows: list[Any]
    produced: dict[str, str]  # response id -> status, for the responses the server made for the call
    leaks: list[str]  # where the API key showed (it never may)


def _magics(ip):
    return ip.magics_manager.registry["AskMagics"]


def _wait_until(condition, timeout: float = 15.0) -> None:
    """Wait for the server to finish work our side gave up on (a timed-out attempt runs on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the offline server did not settle in time")
        time.sleep(0.02)


def _makes_something(request) -> bool:
    """Whether a create request leaves a response (or batch) on the server, however it ends for us."""

    if request.fault is None:
        return True
    body = request.body if isinstance(request.body, dict) else {}
    return FAULT_CLASSES[request.fault].makes_response(body.get("stream") is True, body.get("background") is True)


def _settled(server, path: str, requests_before: int, responses_before: set[str]) -> bool:
    """Every create of the call has finished on the server, including attempts we gave up on."""

    made = sum(1 for r in _creates(server, path)[requests_before:] if _makes_something(r))
    if path == "batch":
        batches = [batch.resource["status"] for batch in controls(server.state).batches.values()]
        return len(batches) >= made and all(s in ("completed", "failed", "expired", "cancelled") for s in batches)
    produced = _produced_since(server, responses_before)
    return len(produced) >= made and not any(s in ("queued", "in_progress") for s in produced.values())


def _new_rows(after: list[Any], before: list[Any]) -> list[Any]:
    # Rows are ordered by start time (a batch line's is its response's whole second), not by writing.
    seen = Counter(before)
    fresh = []
    for row in after:
        if seen[row]:
            seen[row] -= 1
        else:
            fresh.append(row)
    return fresh


def _creates(server, path: str) -> list[Any]:
    route = "/v1/batches" if path == "batch" else "/v1/responses"
    return [r for r in server.requests if r.method == "POST" and r.path == route]


def _produced_since(server, before: set[str]) -> dict[str, str]:
    with server.state.lock:
        return {rid: stored.response["status"] for rid, stored in server.state.responses.items() if rid not in before}


def _error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), repr(error.args), repr(vars(error))]


def _sees_ask(ip, source: str, shown: list[str]) -> str:
    with capture_output() as captured:
        try:
            ip.run_cell(source)
        except Exception as error:  # the test shell re-raises the cell's error after showing it
            text = captured.stdout + captured.stderr
            shown += [text, *_error_texts(error)]
            # One short message (the title in red, what happened, the hint), after any partial text.
            assert text.count(f"{title_of(error)}\x1b[0m: ") == 1 and "Traceback" not in text, text
            partial = "[failed" in captured.stdout
            return type(error).__name__ + ("+partial" if partial else "")
    shown.append(captured.stdout + captured.stderr)
    reply = ip.user_ns["reply"]
    shown.append(repr(vars(reply)))
    sees = "answer" if reply.status == "completed" else f"answer {reply.status}"
    return sees + (" (empty)" if not reply.text.strip() else "")


def _sees_background(ip, shown: list[str]) -> str:
    try:
        ip.run_cell("%%ask --background -o job\nPlease write me something long enough to stream")
    except Exception as error:
        shown += _error_texts(error)
        return type(error).__name__
    job = ip.user_ns["job"]  # a terminal shows "Submitted job-1"; `%nbopenai jobs` and the view show how it ended
    job.wait(timeout=30)
    status = job.answer.status if job.answer is not None else job.status
    shown += [repr(vars(job)), repr(vars(job.answer)) if job.answer is not None else ""]
    empty = job.answer is not None and status == "completed" and not job.answer.text.strip()
    return f"job {status}" + (" (empty)" if empty else "")


def _sees_extract(ip, batch: bool, shown: list[str]) -> str:
    option = " --batch" if batch else ""
    try:
        frame = ip.run_cell(f"%%extract Person --no-cache{option}\nAda Lovelace is 36 years old.").result
    except Exception as error:  # a batch whose creation failed, or a run that stopped at once: one short message
        shown += _error_texts(error)
        return type(error).__name__
    assert len(frame) == 1
    shown.append(frame.to_csv())
    return f"row {frame['_status'].iloc[0]}"


def observe(ip, server, kind: str, path: str) -> Observed:
    """Run one good turn, inject ``kind``, run ``path`` once; report what happened."""

    magics = _magics(ip)
    session = magics.session
    ip.run_cell(SETUP)
    ip.run_cell("%ask My name is Ada.")
    good_head = session.threads.get().head
    if kind == "slow":
        magics.read_timeout = READ_TIMEOUT
    rows_before = session.ledger.records(session_id=session.session_id)
    requests_before = len(_creates(server, path))
    responses_before = set(server.state.responses)
    _, params = FAULTS[kind]
    if path == "batch":
        if kind in BATCH_CREATION_FAULTS:
            server.inject(kind, path="/v1/batches", **{k: v for k, v in params.items() if k != "after"})
        else:
            server.inject(kind, path=LINE_PATH, **params)
    else:
        server.inject(kind, **params)

    shown: list[str] = []
    if path in ("ask", "no-stream"):
        option = " --no-stream" if path == "no-stream" else ""
        sees = _sees_ask(ip, f"%%ask{option} -o reply\nPlease write me something long enough to stream", shown)
    elif path == "background":
        sees = _sees_background(ip, shown)
    else:
        sees = _sees_extract(ip, batch=path == "batch", shown=shown)

    _wait_until(lambda: _settled(server, path, requests_before, responses_before))
    head = session.threads.get().head
    moved = "-" if path in ("extract", "batch") else ("stays" if head == good_head else "moves")
    if moved == "moves":
        assert session.threads.get().turns[-2].response_id == good_head, "the new turn chains to the good one"
    rows = _new_rows(session.ledger.records(session_id=session.session_id), rows_before)
    produced = _produced_since(server, responses_before)  # a batch's lines are stored responses too
    in_ledger = {row.response_id for row in rows if row.response_id}
    # An `unreadable` row stands for a billed response whose id never arrived: it is not unseen.
    unreadable = sum(1 for row in rows if row.status == "unreadable")
    orphans = max(0, sum(1 for rid in produced if rid not in in_ledger) - unreadable)
    cell = Cell(
        sees=sees,
        head=moved,
        ledger=tuple(sorted(row.status for row in rows)),
        requests=len(_creates(server, path)) - requests_before,
        billed=len(produced),
        orphans=orphans,
    )
    shown += [repr(row) for row in rows]
    leaks = [text for text in shown if SECRET_KEY in text or SECRET_KEY.removeprefix("sk-") in text]
    return Observed(cell, rows, produced, leaks)


def _check_accounting(observed: Observed, expected: Cell) -> None:
    """Nothing is charged twice: every billed response is in the ledger once, rejected attempts cost nothing."""
    rows, produced = observed.ledger_rows, observed.produced
    ids = [row.response_id for row in rows if row.response_id]
    assert len(ids) == len(set(ids)), "a response is in the ledger more than once"
    assert set(ids) <= set(produced), "a ledger row names a response the server never made"
    billed_rows = [row for row in rows if row.status in ("completed", "incomplete", "failed", "unreadable")]
    assert len(billed_rows) == len(produced) - expected.orphans
    for row in rows:
        if row.status in ("error", "rate_limited"):
            assert row.total_tokens == 0 and row.response_id is None and row.error, row
        elif row.status == "unreadable":  # billed, but its body never could be read: tokens estimated
            assert row.total_tokens > 0 and row.error, row
        else:
            assert row.response_id in produced and produced[row.response_id] == row.status, row
        if row.status in ("completed", "incomplete"):
            assert row.total_tokens > 0, f"an answer recorded with no tokens: {row}"


# ---- the tests -------------------------------------------------------------------------------------


def _cells() -> list[Any]:
    return [
        pytest.param(
            kind,
            path,
            id=f"{path}-{kind}",
            marks=[pytest.mark.xfail(strict=True, reason=PENDING[(kind, path)])] if (kind, path) in PENDING else [],
        )
        for path in PATHS
        for kind in FAULTS
    ]


@pytest.mark.parametrize(("kind", "path"), _cells())
def test_fault_matrix(ip, local_server, kind, path):
    expected = EXPECTED[(kind, path)]
    observed = observe(ip, local_server, kind, path)
    got = observed.cell
    assert (got.sees, got.head, got.ledger, got.requests, got.billed, got.orphans) == (
        expected.sees,
        expected.head,
        expected.ledger,
        expected.requests,
        expected.billed,
        expected.orphans,
    ), repr(got)
    _check_accounting(observed, expected)
    assert observed.leaks == [], "the API key showed"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_create_that_timed_out_is_not_billed_twice(local_server, stream):
    with nbopenai.Session(
        base_url=local_server.base_url,
        model="nbopenai-local",
        ledger_path=":memory:",
        backoff_base=0.001,
        timeouts=nbopenai.Timeouts(read=READ_TIMEOUT),
    ) as session:
        local_server.inject("slow", delay=0.8)
        with pytest.raises(nbopenai.TimeoutError) as caught:
            session.ask("hello", stream=stream)
        assert "timeout" in caught.value.hint.lower()
        _wait_until(lambda: _settled(local_server, "ask", 0, set()))
        assert len(_creates(local_server, "ask")) == 1, "a create that timed out after sending was retried"
        assert len(_produced_since(local_server, set())) == 1  # the server's one answer: billed once, not twice


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_refusal_is_shown_not_an_empty_answer(session, local_server, stream):
    local_server.inject("refusal", message="I can't help with that.")
    answer = session.ask("hello", stream=stream)
    assert "can't help" in (answer.text + (answer.error or ""))
    assert answer.status_line() is not None  # marked, not presented as a normal answer


def test_the_matrix_covers_every_fault_kind_and_path():
    missing = set(FAULT_KINDS) - set(FAULTS)
    assert not missing, f"every fault kind needs its row in the matrix (FAULTS and EXPECTED): {sorted(missing)}"
    assert set(FAULTS) == set(FAULT_KINDS)
    assert set(EXPECTED) == {(kind, path) for kind in FAULTS for path in PATHS}
    assert set(PENDING) <= set(EXPECTED)


# ---- the doc -----------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "fault-matrix.md"
BEGIN, END = "<!-- matrix:begin (generated by tests/test_faults_matrix.py) -->", "<!-- matrix:end -->"


def _sees_text(sees: str) -> str:
    """How a cell's ``sees`` reads in the doc: the title the user sees, and the class behind it."""

    name, partial, _ = sees.partition("+partial")
    error = getattr(_errors, name, None)
    if isinstance(error, type) and issubclass(error, _errors.NbOpenAIError):
        text = f"error **{title_of(error('x'))}** (`{name}`)"
        return f"the text so far, marked `[failed]`, then {text}" if partial else text
    return sees.replace("answer incomplete", "answer marked `[incomplete]`")


def render_matrix() -> str:
    """``EXPECTED`` as Markdown: one table per path, a row per fault."""
    head = {"moves": "moves to the answer", "stays": "stays at the last good turn", "-": "(no thread)"}
    sections = []
    for path, title in PATHS.items():
        lines = [
            f"### {title}",
            "",
            "| fault | the user sees | thread head | ledger rows | requests | billed | why |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, (label, _) in FAULTS.items():
            cell = EXPECTED[(kind, path)]
            billed = f"{cell.billed}" + (f" (**{cell.orphans} unseen**)" if cell.orphans else "")
            ledger = ", ".join(f"`{status}`" for status in cell.ledger) or "none"
            lines.append(
                f"| `{kind}`: {label} | {_sees_text(cell.sees)} | {head[cell.head]} | {ledger} | "
                f"{cell.requests} | {billed} | {cell.note} |"
            )
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _doc_with_matrix(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render_matrix()}\n{END}{tail}"


def test_the_doc_is_generated_from_this_matrix():
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert text == _doc_with_matrix(text), (
        "docs/fault-matrix.md is out of date: run `python tests/test_faults_matrix.py`"
    )


if __name__ == "__main__":  # regenerate the table in docs/fault-matrix.md
    DOC.write_text(_doc_with_matrix(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"wrote {DOC}\n")
