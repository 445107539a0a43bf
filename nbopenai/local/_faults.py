"""Fault injection: make the next requests fail the way the real service fails.

A fault comes from one of three places, first match wins:

1. the request header ``x-nbopenai-fault: kind;param=value;...`` (SDK users pass ``extra_headers``),
2. the FIFO queue filled by ``server.inject(kind, count=1, path="/v1/responses", **params)``,
3. a random draw when ``fault_rate`` > 0: deterministic for a given ``seed`` and request order.

Kinds and their parameters (see ``FAULT_KINDS``):

=========================  =====================================================================
``rate_limit``             429 ``rate_limit_exceeded``; ``retry_after`` s (default 1; None omits the
                           ``retry-after`` header), ``retry_after_ms`` (adds ``retry-after-ms``)
``server_error``           500 (any error kind also takes ``retry_after`` / ``retry_after_ms``)
``unavailable``            503
``midstream_error``        stream: ``after`` deltas (default 3), then the nested ``error`` event the
                           real service sends, then ``response.failed``; background: created, then
                           the job ends ``failed``; otherwise: 500
``midstream_error_flat``   same with the flat spec shape ``{"type": "error", "code", ...}``
``drop``                   stream: ``after`` deltas, then the TCP connection is cut; not streaming:
                           cut before any byte of the answer
``context_length_exceeded`` 400 ``context_length_exceeded``, param ``input``
``unauthorized``           401 ``invalid_api_key``
``slow``                   sleep ``delay`` s (default 5) before the headers: a client read timeout
``incomplete``             the answer stops early: status ``incomplete``, ``max_output_tokens``;
                           ``tokens`` output tokens kept (default: half)
``bad_request``            400; ``message``, ``param``
``refusal``                the model refuses: a ``refusal`` content part instead of text
``invalid_json``           status completed, but the text is not valid JSON (structured output)
``not_json``               200 with an HTML page instead of the API's JSON (a proxy, a login
                           portal, or a ``base_url`` that points at a web app)
=========================  =====================================================================
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._errors import ApiError

__all__ = ["FAULT_KINDS", "Fault", "FaultQueue", "http_error_for", "not_json_reply", "parse_fault_header"]

FAULT_KINDS: dict[str, str] = {
    "rate_limit": "429 rate_limit_exceeded with retry-after headers",
    "server_error": "500 server_error",
    "unavailable": "503 service unavailable",
    "midstream_error": "some deltas, then the nested error event and response.failed",
    "midstream_error_flat": "some deltas, then the flat spec error event and response.failed",
    "drop": "the TCP connection is cut mid-stream (or before the body)",
    "context_length_exceeded": "400 context_length_exceeded",
    "unauthorized": "401 invalid_api_key",
    "slow": "sleep `delay` seconds before the headers",
    "incomplete": "status incomplete, reason max_output_tokens",
    "bad_request": "400 invalid_request_error",
    "refusal": "the model refuses: a refusal content part instead of text",
    "invalid_json": "completed, but the text is not valid JSON",
    "not_json": "200 with an HTML page instead of JSON (a proxy, or a base_url that is a web app)",
}

# Random faults only hit the routes that run the model, as real outages mostly do.
MODEL_ROUTES = frozenset({("POST", "/v1/responses"), ("POST", "/v1/chat/completions")})

_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


@dataclass(frozen=True)
class Fault:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


def check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")


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
    """``"rate_limit;retry_after=2"`` -> ``Fault("rate_limit", {"retry_after": 2})``."""
    kind, *pairs = [part.strip() for part in value.split(";") if part.strip()] or [""]
    check_kind(kind)
    params = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        params[name.strip()] = _parse_value(text)
    return Fault(kind, params)


@dataclass
class _Queued:
    fault: Fault
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

    def inject(self, kind: str, count: int = 1, path: str = "/v1/responses", method: str | None = "POST", **params: Any) -> None:
        check_kind(kind)
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queue.append(_Queued(Fault(kind, params), count, method and method.upper(), path))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(entry.remaining for entry in self._queue)

    def take(self, method: str, path: str, *, rate: float = 0.0, kinds: tuple[str, ...] = ()) -> Fault | None:
        """The fault for this request, if any; consumes one use of a queued fault."""
        with self._lock:
            for entry in self._queue:
                if entry.path == path and entry.method in (None, method):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._queue.remove(entry)
                    return entry.fault
            if rate > 0 and kinds and (method, path) in MODEL_ROUTES:
                if self._random.random() < rate:
                    kind = self._random.choice(sorted(kinds))
                    check_kind(kind)
                    return Fault(kind)
        return None


def _retry_headers(fault: Fault, default_seconds: float | None) -> dict[str, str]:
    headers = {}
    seconds = fault.get("retry_after", default_seconds)
    if seconds is not None:
        headers["retry-after"] = f"{float(seconds):g}"
    if fault.get("retry_after_ms") is not None:
        headers["retry-after-ms"] = f"{float(fault.get('retry_after_ms')):g}"
    return headers


def http_error_for(fault: Fault, streaming: bool) -> ApiError | None:
    """The error a fault answers with before any body, or None when it acts later (or not at all).

    Every error kind accepts ``retry_after`` / ``retry_after_ms`` (only ``rate_limit`` sends one by
    default), so tests can make the SDK's retries fast.
    """
    error = _error_for(fault, streaming)
    if error is not None:
        error.headers.update(_retry_headers(fault, 1.0 if fault.kind == "rate_limit" else None))
    return error


def _error_for(fault: Fault, streaming: bool) -> ApiError | None:
    kind = fault.kind
    if kind == "rate_limit":
        wait = f"{float(fault.get('retry_after', 1.0) or 0):g}s"
        return ApiError(
            429,
            f"Rate limit reached for nbopenai-local (offline demo fault). Please try again in {wait}.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"x-ratelimit-remaining-requests": "0"},
        )
    if kind == "server_error" or (kind.startswith("midstream_error") and not streaming):
        return ApiError(500, _SERVER_ERROR_MESSAGE, type="server_error", code="server_error")
    if kind == "unavailable":
        return ApiError(503, "The server is overloaded or not ready yet.", type="server_error", code="service_unavailable")
    if kind == "context_length_exceeded":
        return context_length_error(fault.get("tokens"), fault.get("window"))
    if kind == "unauthorized":
        return unauthorized_error()
    if kind == "bad_request":
        return ApiError(400, fault.get("message", "Bad request (nbopenai offline demo fault)."), param=fault.get("param"))
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


def not_json_reply() -> Any:
    """What a proxy or a web app answers in the API's place: 200, and a page of HTML."""
    from ._routes import Reply

    page = b"<!doctype html><html><head><title>Sign in</title></head><body>Please sign in.</body></html>"
    return Reply(content=page, content_type="text/html; charset=utf-8")
