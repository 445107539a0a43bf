"""Fault injection: make the next requests fail the way the real service (or what stands in front of it) fails.

A fault comes from one of three places, first match wins:

1. the request header ``x-nbopenai-fault: kind;param=value;...`` (SDK users pass ``extra_headers``),
2. the FIFO queue filled by ``server.inject(kind, count=1, path="/v1/responses", **params)``,
3. a random draw when ``fault_rate`` > 0: deterministic for a given ``seed`` and request order.

(The rate limiter's own 429s, see ``_limits``, are recorded as the ``rate_limit`` fault too.)

Each kind is one ``Fault`` subclass: its ``name``, a one-line ``summary``, and the hooks it needs, in the
order a request meets them (the base class does nothing at each):

- ``before_body(request)``: before the route runs: sleep, raise the HTTP error, ``raise Cut()``, or
  return a ``Reply`` sent instead of the route's;
- ``request_body(body)``: the body the route sees;
- ``on_answer(written)``: change what the demo model wrote (cut it short, refuse, break the JSON);
- ``stream_cut_after()`` / ``stream_break(...)``: on a delta: after that many deltas the rest of the
  stream is replaced by what ``stream_break`` yields (``chat_stream_break`` on chat completions);
- ``on_response(response)``: the finished response object, as stored and sent;
- ``on_reply(reply)``: the bytes on the wire (a cut body, broken gzip, a stream held open);
- ``makes_response(streaming, background)``: whether the server made (and would bill) a response.

Adding a kind is one subclass here plus its row in ``tests/test_faults_matrix.py`` (which fails for a
kind without one). ``python -c "from nbopenai.local import FAULT_KINDS; print(FAULT_KINDS)"`` lists them.

Parameters: every HTTP error kind takes ``retry_after`` s (``rate_limit`` defaults to 1; None omits the
header) and ``retry_after_ms``; ``message`` overrides an error's text; stream-breaking kinds take
``after`` (deltas before the break, default 3); ``slow`` takes ``delay`` (default 5 s); ``incomplete``
takes ``tokens`` (kept; default half); ``held_open*`` take ``hold`` (s, default 1) and ``every`` (s
between pings, default 0.1); ``not_json*`` take ``content_type`` and ``body``; ``cut_body`` takes
``keep`` (the fraction of the body sent, default 0.5).
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .._core import _tokens
from ._errors import ApiError
from ._wire import DROP, Comment, Cut, Event, Incoming, Pause, Reply

__all__ = [
    "FAULTS",
    "FAULT_KINDS",
    "Fault",
    "FaultQueue",
    "MODEL_ROUTES",
    "Written",
    "context_length_error",
    "make_fault",
    "parse_fault_header",
    "server_error_message",
    "unauthorized_error",
]

# Random faults only hit the routes that run the model, as real outages mostly do.
MODEL_ROUTES = frozenset({("POST", "/v1/responses"), ("POST", "/v1/chat/completions")})

_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
_REFUSAL = "I'm sorry, I can't help with that. (nbopenai offline demo: injected refusal)"

FAULTS: dict[str, type[Fault]] = {}  # name -> class, filled as the classes below are defined


@dataclass
class Written:
    """What the demo model wrote for one answer, before it becomes an output item (faults may change it)."""

    text: str
    model: str
    incomplete: bool = False
    refusal: bool = False


class Fault:
    """One way a request fails; a fresh instance per request, holding its parameters."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            FAULTS[cls.name] = cls

    def __init__(self, **params: Any) -> None:
        self.params = params

    @property
    def kind(self) -> str:
        return self.name

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def __repr__(self) -> str:
        return f"<fault {self.name} {self.params}>"

    # ---- hooks -----------------------------------------------------------------------------------

    def error(self, *, streaming: bool = False, background: bool = False,
              headers: dict[str, str] | None = None) -> ApiError | None:
        """The HTTP error this fault answers with before any body (also for a batch line), or None."""
        return None

    def before_body(self, request: Incoming) -> Reply | None:
        error = self.error(streaming=request.streaming, background=request.background, headers=request.headers)
        if error is not None:
            raise error
        return None

    def request_body(self, body: Any) -> Any:
        return body

    def on_answer(self, written: Written) -> None:
        pass

    def stream_cut_after(self) -> int | None:
        return None

    def stream_break(self, failed: dict[str, Any], sequence_number: int) -> Iterator[Any]:
        """What replaces the rest of a Responses stream; ``failed`` is the stored failed response."""
        return iter(())

    def chat_stream_break(self) -> Iterator[Any]:
        return iter(())

    def failure(self) -> dict[str, Any]:
        """The ``error`` of a response this fault makes fail."""
        return {"code": "server_error", "message": self.get("message") or _SERVER_ERROR_MESSAGE}

    def on_response(self, response: dict[str, Any]) -> dict[str, Any]:
        return response

    def on_reply(self, reply: Reply) -> Reply:
        return reply

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        """Whether a request with this fault leaves a (billable) response on the server."""
        return True


# ---- HTTP errors before any body ---------------------------------------------------------------------


class _HttpError(Fault):
    status: ClassVar[int] = 500
    default_retry_after: ClassVar[float | None] = None

    def api_error(self, headers: dict[str, str]) -> ApiError:
        return ApiError(500, self.get("message") or _SERVER_ERROR_MESSAGE, type="server_error", code="server_error")

    def error(self, *, streaming: bool = False, background: bool = False,
              headers: dict[str, str] | None = None) -> ApiError:
        error = self.api_error(headers or {})
        seconds = self.get("retry_after", self.default_retry_after)
        if seconds is not None:
            error.headers["retry-after"] = f"{float(seconds):g}"
        if self.get("retry_after_ms") is not None:
            error.headers["retry-after-ms"] = f"{float(self.get('retry_after_ms')):g}"
        return error

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        return False


class RateLimit(_HttpError):
    name = "rate_limit"
    summary = "429 rate_limit_exceeded with retry-after headers"
    default_retry_after = 1.0

    def api_error(self, headers: dict[str, str]) -> ApiError:
        wait = f"{float(self.get('retry_after', 1.0) or 0):g}s"
        message = f"Rate limit reached for nbopenai-local (offline demo fault). Please try again in {wait}."
        return ApiError(429, self.get("message") or message, type="requests", code="rate_limit_exceeded",
                        headers={"x-ratelimit-remaining-requests": "0"})


class ServerError(_HttpError):
    name = "server_error"
    summary = "500 server_error"


class Unavailable(_HttpError):
    name = "unavailable"
    summary = "503 service unavailable"

    def api_error(self, headers: dict[str, str]) -> ApiError:
        message = self.get("message") or "The server is overloaded or not ready yet."
        return ApiError(503, message, type="server_error", code="service_unavailable")


class ContextLengthExceeded(_HttpError):
    name = "context_length_exceeded"
    summary = "400 context_length_exceeded"

    def api_error(self, headers: dict[str, str]) -> ApiError:
        return context_length_error(self.get("tokens"), self.get("window"))


class Unauthorized(_HttpError):
    name = "unauthorized"
    summary = "401 invalid_api_key"

    def api_error(self, headers: dict[str, str]) -> ApiError:
        return unauthorized_error()


class BadRequest(_HttpError):
    name = "bad_request"
    summary = "400 invalid_request_error"

    def api_error(self, headers: dict[str, str]) -> ApiError:
        return ApiError(400, self.get("message", "Bad request (nbopenai offline demo fault)."), param=self.get("param"))


def _echo(headers: dict[str, str]) -> str:
    return f"proxy saw Authorization: {headers.get('authorization', '(none)')}"


class EchoAuthError(_HttpError):
    name = "echo_auth_error"
    summary = "a proxy's 400 whose message quotes the request's Authorization header"

    def api_error(self, headers: dict[str, str]) -> ApiError:
        return ApiError(400, f"Bad request: {_echo(headers)}", param=None, code="proxy_error")


class Slow(Fault):
    name = "slow"
    summary = "sleep `delay` seconds before the headers"

    def before_body(self, request: Incoming) -> Reply | None:
        time.sleep(float(self.get("delay", 5.0)))
        return None


# ---- streams that break ------------------------------------------------------------------------------


class _StreamBreak(Fault):
    """After ``after`` deltas the stream breaks; a background job fails; a plain request gets a 500."""

    def stream_cut_after(self) -> int | None:
        return max(0, int(self.get("after", 3)))

    def error(self, *, streaming: bool = False, background: bool = False,
              headers: dict[str, str] | None = None) -> ApiError | None:
        if streaming or background:
            return None  # it fails later, on the server
        return ServerError(**self.params).error()

    def on_response(self, response: dict[str, Any]) -> dict[str, Any]:
        if response.get("background") and response["status"] in ("completed", "incomplete"):
            error = {"code": "server_error", "message": "The model failed to generate a response."}
            return {**response, "status": "failed", "completed_at": None, "error": error}
        return response

    def chat_stream_break(self) -> Iterator[Any]:
        # Chat streams report failures as a bare error object (the SDK raises APIError).
        error = {"message": _SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": "server_error"}
        yield Event(None, {"error": error})

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        return streaming or background


def _failed_event(failed: dict[str, Any], sequence_number: int) -> Event:
    return Event("response.failed", {"type": "response.failed", "sequence_number": sequence_number, "response": failed})


class MidstreamError(_StreamBreak):
    name = "midstream_error"
    summary = "some deltas, then the nested error event and response.failed"

    def stream_break(self, failed: dict[str, Any], sequence_number: int) -> Iterator[Any]:
        # The shape the real service sends (the SDK raises openai.APIError on it).
        error = {"type": "server_error", "param": None, **self.failure()}
        yield Event("error", {"type": "error", "error": error, "sequence_number": sequence_number})
        yield _failed_event(failed, sequence_number + 1)


class MidstreamErrorFlat(_StreamBreak):
    name = "midstream_error_flat"
    summary = "some deltas, then the flat spec error event and response.failed"

    def stream_break(self, failed: dict[str, Any], sequence_number: int) -> Iterator[Any]:
        yield Event("error", {"type": "error", **self.failure(), "param": None, "sequence_number": sequence_number})
        yield _failed_event(failed, sequence_number + 1)


class Drop(_StreamBreak):
    name = "drop"
    summary = "the TCP connection is cut mid-stream (or before the body)"

    def before_body(self, request: Incoming) -> Reply | None:
        if not request.streaming:
            raise Cut()
        return None

    def error(self, *, streaming: bool = False, background: bool = False,
              headers: dict[str, str] | None = None) -> ApiError | None:
        return None  # a batch line cannot be cut

    def stream_break(self, failed: dict[str, Any], sequence_number: int) -> Iterator[Any]:
        yield DROP

    def chat_stream_break(self) -> Iterator[Any]:
        yield DROP

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        return streaming


class EchoAuthFailed(MidstreamErrorFlat):
    name = "echo_auth_failed"
    summary = ("a proxy quotes the Authorization header in a failure: streamed, a flat error event and "
               "response.failed; otherwise a 200 (or the job) with status failed and that error.message")

    def error(self, *, streaming: bool = False, background: bool = False,
              headers: dict[str, str] | None = None) -> ApiError | None:
        return None  # not an HTTP error: a 200 whose response failed

    def before_body(self, request: Incoming) -> Reply | None:
        self.params.setdefault("message", f"upstream failed; {_echo(request.headers)}")
        return None

    def on_response(self, response: dict[str, Any]) -> dict[str, Any]:
        if response["status"] in ("completed", "incomplete"):
            return {**response, "status": "failed", "completed_at": None, "error": self.failure()}
        return response

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        return True


# ---- answers the model shapes differently --------------------------------------------------------------


class Incomplete(Fault):
    name = "incomplete"
    summary = "status incomplete, reason max_output_tokens"

    def on_answer(self, written: Written) -> None:
        encoding = _tokens.encoding_for_model(written.model)
        tokens = encoding.encode_ordinary(written.text)
        keep = self.get("tokens")
        keep = int(keep) if keep is not None else max(1, len(tokens) // 2)
        written.text, written.incomplete = encoding.decode(tokens[: max(keep, 0)]), True


class Refusal(Fault):
    name = "refusal"
    summary = "the model refuses: a refusal content part instead of text"

    def on_answer(self, written: Written) -> None:
        written.text = self.get("message") or _REFUSAL
        written.refusal = True


class InvalidJson(Fault):
    name = "invalid_json"
    summary = "completed, but the text is not valid JSON"

    def on_answer(self, written: Written) -> None:
        written.text = written.text[: max(1, len(written.text) // 2)] + " (cut: not JSON)"


class EmptyUsage(Fault):
    name = "empty_usage"
    summary = 'the finished response says `"usage": {}`'

    def on_response(self, response: dict[str, Any]) -> dict[str, Any]:
        return {**response, "usage": {}} if "usage" in response else response


# ---- not the API -----------------------------------------------------------------------------------------


class NotJson(Fault):
    name = "not_json"
    summary = "200 with an HTML page instead of JSON (a proxy, or a base_url that is a web app)"
    content_type: ClassVar[str] = "text/html; charset=utf-8"
    body: ClassVar[bytes] = (b"<!doctype html><html><head><title>Sign in</title></head>"
                             b"<body>Please sign in.</body></html>")

    def before_body(self, request: Incoming) -> Reply | None:
        body = self.get("body")
        content = body.encode() if isinstance(body, str) else self.body
        return Reply(content=content, content_type=self.get("content_type") or self.content_type)

    @classmethod
    def makes_response(cls, streaming: bool, background: bool) -> bool:
        return False


class NotJsonText(NotJson):
    name = "not_json_text"
    summary = "200 with a text/plain body (a health check, a proxy's message)"
    content_type = "text/plain; charset=utf-8"
    body = b"OK"


class NotJsonBinary(NotJson):
    name = "not_json_binary"
    summary = "200 with an application/octet-stream body"
    content_type = "application/octet-stream"
    body = bytes(range(256))


class StreamIgnored(Fault):
    name = "stream_ignored"
    summary = "asked to stream, the server answers with the whole JSON response"

    def request_body(self, body: Any) -> Any:
        return {**body, "stream": False} if isinstance(body, dict) and body.get("stream") is True else body


# ---- the bytes on the wire -------------------------------------------------------------------------------


class _BrokenBody(Fault):
    """A non-streamed answer's body arrives broken; the response was made (and billed) all the same."""

    def on_reply(self, reply: Reply) -> Reply:
        if reply.json is None or reply.events is not None:
            return reply
        return self.broken(json.dumps(reply.json, ensure_ascii=False).encode(), reply)

    def broken(self, data: bytes, reply: Reply) -> Reply:
        raise NotImplementedError


class CutBody(_BrokenBody):
    name = "cut_body"
    summary = "200 whose Content-Length says more than arrives (the connection closes early)"

    def broken(self, data: bytes, reply: Reply) -> Reply:
        kept = data[: int(len(data) * float(self.get("keep", 0.5)))]
        return Reply(reply.status, headers=reply.headers, content=kept, content_type="application/json",
                     claimed_length=len(data))


class CorruptGzip(_BrokenBody):
    name = "corrupt_gzip"
    summary = "200 with Content-Encoding: gzip and a body that does not decompress"

    def broken(self, data: bytes, reply: Reply) -> Reply:
        packed = bytearray(gzip.compress(data))
        middle = len(packed) // 2
        packed[middle : middle + 8] = bytes(b ^ 0xFF for b in packed[middle : middle + 8])
        return Reply(reply.status, headers={**reply.headers, "Content-Encoding": "gzip"}, content=bytes(packed),
                     content_type="application/json")


class HeldOpen(Fault):
    name = "held_open"
    summary = "the stream stays open, silent, after its last event; `hold` s later the connection is cut"

    def on_reply(self, reply: Reply) -> Reply:
        if reply.events is None:
            return reply
        return Reply(reply.status, headers=reply.headers, events=self._held(reply.events))

    def _held(self, events: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from events
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        yield from self.waiting(float(self.get("hold", 1.0)))
        yield DROP  # the proxy's idle timeout: a client still reading sees the connection fail

    def waiting(self, hold: float) -> Iterator[Any]:
        yield Pause(hold)


class HeldOpenPings(HeldOpen):
    name = "held_open_pings"
    summary = "the stream stays open after its last event, sending keep-alive comments; then it is cut"

    def waiting(self, hold: float) -> Iterator[Any]:
        every = max(float(self.get("every", 0.1)), 0.001)
        for _ in range(max(1, int(hold / every))):
            yield Pause(every)
            yield Comment("keep-alive")


FAULT_KINDS: dict[str, str] = {name: cls.summary for name, cls in FAULTS.items()}


def make_fault(kind: str, params: dict[str, Any] | None = None) -> Fault:
    """A fault of ``kind`` (its name) with ``params``; ValueError for an unknown kind."""
    try:
        cls = FAULTS[kind]
    except KeyError:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULTS)}") from None
    return cls(**(params or {}))


def check_kind(kind: str) -> None:
    make_fault(kind)


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_fault_header(value: str) -> Fault:
    """``"rate_limit;retry_after=2"`` -> a ``rate_limit`` fault with ``params == {"retry_after": 2}``."""
    kind, *pairs = [part.strip() for part in value.split(";") if part.strip()] or [""]
    params = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        params[name.strip()] = _parse_value(text)
    return make_fault(kind, params)


@dataclass
class _Queued:
    kind: str
    params: dict[str, Any]
    remaining: int
    method: str | None
    path: str


class FaultQueue:
    """Injected faults, matched in FIFO order, plus the seeded random source."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._random = random.Random(seed)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._random = random.Random(seed)

    def inject(self, kind: str, count: int = 1, path: str = "/v1/responses", method: str | None = "POST",
               **params: Any) -> None:
        check_kind(kind)
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queue.append(_Queued(kind, params, count, method and method.upper(), path))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(entry.remaining for entry in self._queue)

    def take(self, method: str, path: str, *, rate: float = 0.0, kinds: tuple[str, ...] = ()) -> Fault | None:
        """The fault for this request, if any (a fresh instance); consumes one use of a queued fault."""
        with self._lock:
            for entry in self._queue:
                if entry.path == path and entry.method in (None, method):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._queue.remove(entry)
                    return make_fault(entry.kind, dict(entry.params))
            if rate > 0 and kinds and (method, path) in MODEL_ROUTES:
                if self._random.random() < rate:
                    return make_fault(self._random.choice(sorted(kinds)))
        return None


def unauthorized_error() -> ApiError:
    return ApiError(
        401,
        "Incorrect API key provided. The nbopenai offline server was started with require_api_key.",
        code="invalid_api_key",
    )


def context_length_error(tokens: int | None = None, window: int | None = None) -> ApiError:
    detail = f" ({tokens} tokens; the window is {window})" if tokens and window else ""
    return ApiError(
        400,
        f"Your input exceeds the context window of this model{detail}. Please adjust your input and try again.",
        param="input",
        code="context_length_exceeded",
    )


def server_error_message() -> str:
    return _SERVER_ERROR_MESSAGE
