"""Retry policy: exponential backoff with full jitter, honouring ``Retry-After``.

The SDK's own retries are switched off (``max_retries=0``) so that every attempt is visible to us:
each one that reached the server lands in the usage ledger, extraction can slow its concurrency
down when 429s arrive, and the jitter is "full" (uniform in ``[0, backoff]``), which spreads a
thundering herd of notebook rows better than the SDK's ±25 %.

Retried: connection errors, timeouts, 408, 409, 429 and 5xx. Never retried: 400, 401, 403, 404, 422,
answers that are not the API's (a web page where JSON belongs: see ``_client``), and a 2xx whose
body could not be read (``unreadable_answer``: billed, like a create that timed out).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._errors import UnexpectedResponse

__all__ = [
    "RetryPolicy", "is_retryable", "retry_after", "asked_wait", "fails_every_request", "parse_duration", "describe_wait", "too_long_to_wait",
    "reached_server", "retry_policy", "unreadable_answer", "failed_attempt_status", "ANSWERED", "RATE_LIMIT_ATTEMPTS",
]

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 429})
# A server asking for a longer pause than this is telling us to stop, not to wait (as the SDK does).
MAX_HONOURED_RETRY_AFTER = 120.0


# The SDK is imported inside the functions: `import nbopenai` stays fast (the SDK's types take
# ~0.4 s to import) and nothing here runs before a request has already loaded it.


def _status(exc: BaseException) -> int | None:
    import openai

    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


# Set on each request by the clients' response hook (``_client``): the status its headers carried.
ANSWERED = "nbopenai.answered_status"


def unreadable_answer(exc: BaseException) -> bool:
    """True when the server had answered 2xx but the body could not be read (cut short, badly compressed, too slow).

    Such an answer is billed: like a create that timed out, it is never re-sent automatically.
    """
    import httpx2
    import openai

    # The SDK wraps a body that fails while it reads it; one read later (a stream's body) fails as httpx raised it.
    if not isinstance(exc, (openai.APIConnectionError, httpx2.RequestError)):
        return False
    try:
        status = exc.request.extensions.get(ANSWERED)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an unset request
        return False
    return isinstance(status, int) and 200 <= status < 300


def failed_attempt_status(exc: BaseException) -> str:
    """The ledger status of an attempt that reached the server and failed: ``unreadable`` (billed, its tokens
    estimated), ``rate_limited`` or ``error``."""
    if unreadable_answer(exc):
        return "unreadable"
    return "rate_limited" if getattr(exc, "status_code", None) == 429 else "error"


def is_retryable(exc: BaseException, *, idempotent: bool = False) -> bool:
    """True for connection errors, timeouts, 408, 409, 429 and 5xx.

    A read or write timeout is retried only for ``idempotent`` calls (polling, downloads): a
    create that timed out after it was sent may still finish on the server, and a retry would
    pay for the same answer twice. Connect and pool timeouts never sent anything: always retried.
    """
    import httpx2
    import openai

    if unreadable_answer(exc):
        return idempotent
    if isinstance(exc, openai.APITimeoutError):
        return idempotent or not isinstance(exc.__cause__, (httpx2.ReadTimeout, httpx2.WriteTimeout))
    if isinstance(exc, openai.APIConnectionError):
        return True
    status = _status(exc)
    return status is not None and (status in RETRYABLE_STATUS or status >= 500)


def reached_server(exc: BaseException) -> bool:
    """True when the request got to the server (so the attempt belongs in the ledger).

    That is an HTTP error answer, and also a connection that was cut or timed out *after* the
    request was sent: the server saw it (and may have started work on it). Only failures before
    sending (connect errors and timeouts, an exhausted pool) never reached it.
    """
    import httpx2
    import openai

    # UnexpectedResponse: a web page our response hook refused (``_client``); the SDK raises it as is.
    if isinstance(exc, (openai.APIStatusError, openai.APIResponseValidationError, UnexpectedResponse)):
        return True
    if unreadable_answer(exc):  # (a body that failed to decode is not a transport error)
        return True
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return isinstance(cause, httpx2.TransportError) and not isinstance(
            cause, (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.UnsupportedProtocol, httpx2.ProxyError)
        )
    return False


# Go-style durations, as the API writes them in headers and messages: "12ms", "1.5s", "6m0s", "1m30.5s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|us|µs|ns|h|m|s)", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|us|µs|ns|h|m|s)\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# "Please try again in 120ms." / "try again in 1.5s": a 429 for RPM/TPM often says so only in its message.
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?\s*(?:ms|us|µs|ns|h|m|s)\b\s*)+)", re.IGNORECASE)


def parse_duration(value: str | None) -> float | None:
    """Seconds in ``value``: a number of seconds (``"30"``, ``"1.5"``), a Go-style duration (``"12ms"``,
    ``"30s"``, ``"6m0s"``, ``"1m30.5s"``) or an HTTP date (seconds from now); ``None`` if it is none of these."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    if _DURATION.match(text):
        return sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in _DURATION_PART.findall(text))
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # an HTTP date is GMT; a naive one is read as such
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


def asked_wait(headers: Any, message: str | None = None) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms``, then ``retry-after``, then "try again in 120ms"
    in ``message`` (rate limits on requests or tokens often carry only that)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if 0 <= value < float("inf"):
            return value / 1000.0
    if (seconds := parse_duration(headers.get("retry-after"))) is not None:
        return seconds
    if message and (found := _TRY_AGAIN.search(message)):
        return parse_duration(found.group(1))
    return None


def fails_every_request(exc: BaseException, *, max_wait: float = MAX_HONOURED_RETRY_AFTER) -> bool:
    """True when no retry and no other request of the same kind can succeed after ``exc``.

    A key refused (401, 403), a model or route not found (404), an account out of quota (429
    ``insufficient_quota``), a parameter every request shares refused (400 naming a ``param`` other
    than the input), a server that refuses connections or is not the API, a wait asked for that is
    longer than ``max_wait``. Extraction stops at the first such answer instead of sending every row.
    """
    import httpx2
    import openai

    if isinstance(exc, (UnexpectedResponse, openai.APIResponseValidationError)):
        return True
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
        return isinstance(exc.__cause__, (httpx2.ConnectError, httpx2.UnsupportedProtocol))
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        code, param = detail.get("code") or getattr(exc, "code", None), detail.get("param")
        if exc.status_code in (401, 403, 404) or (exc.status_code == 429 and code == "insufficient_quota"):
            return True
        if exc.status_code == 400 and isinstance(param, str) and param and not param.startswith("input"):
            return True
    return too_long_to_wait(exc, max_wait) is not None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait after ``exc`` (see ``asked_wait``), if any."""
    import openai

    if not isinstance(exc, openai.APIStatusError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    message = detail.get("message") if isinstance(detail.get("message"), str) else exc.message
    return asked_wait(exc.response.headers, message)


def describe_wait(seconds: float) -> str:
    """``0.12 s``, ``45 s``, ``6 min``, ``1 h 30 min``: a wait as a person reads it."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def too_long_to_wait(exc: BaseException, cap: float = MAX_HONOURED_RETRY_AFTER) -> float | None:
    """The wait ``exc`` asked for when it is longer than ``cap`` (a retryable answer we will not wait out), else None."""
    asked = retry_after(exc)
    return asked if asked is not None and asked > cap and is_retryable(exc) else None


FailureHook = Callable[[BaseException, int, bool], None]

# Attempts for 429s that carry retry-after, when retrying is on at all (max_attempts > 1).
RATE_LIMIT_ATTEMPTS = 10


def retry_policy(settings, *, attempts: int | None = None) -> "RetryPolicy":
    """The policy a session's settings describe (``attempts`` overrides ``max_attempts``)."""
    attempts = attempts or settings.max_attempts
    return RetryPolicy(
        attempts=attempts,
        rate_limit_attempts=RATE_LIMIT_ATTEMPTS if attempts > 1 else 1,
        base=settings.backoff_base,
        cap=settings.backoff_max,
        max_wait=settings.max_retry_wait,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Parameters
    ----------
    attempts
        Total attempts per request (1 means no retry).
    rate_limit_attempts
        Attempts allowed when the failures are 429s that said when to come back (``retry-after``):
        waiting as told costs nothing and bills nothing, so a burst of rate limits should not lose
        a row. Never fewer than ``attempts``; ``None`` means the same as ``attempts``.
    base, cap
        Backoff before attempt ``n+1`` is uniform in ``[0, min(cap, base * 2**(n-1))]``.
    max_wait
        The longest wait a server may ask for (``retry-after``) that is waited out; a longer one
        ends the request (``too_long_to_wait``), its error stating the wait asked for.
    rng
        Source of jitter; pass ``random.Random(seed)`` for reproducible runs.
    """

    attempts: int = 4
    rate_limit_attempts: int | None = None
    base: float = 0.5
    cap: float = 20.0
    max_wait: float = MAX_HONOURED_RETRY_AFTER
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, exc: BaseException, *, idempotent: bool = False) -> float | None:
        """Seconds to wait after failed ``attempt`` (1-based), or ``None`` to give up."""
        if not is_retryable(exc, idempotent=idempotent):
            return None
        asked = retry_after(exc)
        allowed = self.attempts
        if asked is not None and _status(exc) == 429:
            allowed = max(allowed, self.rate_limit_attempts or 0)
        if attempt >= allowed:
            return None
        if asked is not None:
            return asked if asked <= self.max_wait else None
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))

    def call(self, fn: Callable[[], T], *, on_failure: FailureHook | None = None, idempotent: bool = False) -> T:
        """Run ``fn`` until it succeeds or the policy gives up (the last error is raised).

        ``on_failure(exc, attempt, will_retry)`` is told of every failed attempt; ``idempotent``
        calls (reads) are also retried after a read timeout.
        """
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as exc:
                wait = self.delay(attempt, exc, idempotent=idempotent)
                if on_failure is not None:
                    on_failure(exc, attempt, wait is not None)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    async def acall(
        self, fn: Callable[[], Awaitable[T]], *, on_failure: FailureHook | None = None, idempotent: bool = False
    ) -> T:
        """The ``async`` twin of :meth:`call`."""
        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                wait = self.delay(attempt, exc, idempotent=idempotent)
                if on_failure is not None:
                    on_failure(exc, attempt, wait is not None)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1
