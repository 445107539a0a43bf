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

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ._errors import UnexpectedResponse

# Re-exported: callers read these where the retry rules are.
from ._waits import ANSWERED, asked_wait, describe_wait, parse_duration, retry_after, unreadable_answer  # noqa: F401

__all__ = [
    "RetryPolicy", "is_retryable", "retry_after", "asked_wait", "fails_every_request", "parse_duration",
    "describe_wait", "too_long_to_wait",
    "reached_server", "retry_policy", "unreadable_answer", "failed_attempt_status", "ANSWERED", "RATE_LIMIT_ATTEMPTS",
    "UNREADABLE_IN_A_ROW",
]

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 429})
# A server asking for a longer pause than this is telling us to stop, not to wait (as the SDK does).
MAX_HONOURED_RETRY_AFTER = 120.0


# The SDK is imported inside the functions: `import nbopenai` stays fast (the SDK's types take
# ~0.4 s to import) and nothing here runs before a request has already loaded it.


def _status(exc: BaseException) -> int | None:
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


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
    import httpx2  # noqa: PLC0415 - the SDK stays out of `import nbopenai`
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

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
    import httpx2  # noqa: PLC0415 - the SDK stays out of `import nbopenai`
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

    # UnexpectedResponse: a web page our response hook refused (``_client``); the SDK raises it as is.
    if isinstance(exc, (openai.APIStatusError, openai.APIResponseValidationError, UnexpectedResponse)):
        return True
    if unreadable_answer(exc):  # (a body that failed to decode is not a transport error)
        return True
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return isinstance(cause, httpx2.TransportError) and not isinstance(
            cause,
            (
                httpx2.ConnectError,
                httpx2.ConnectTimeout,
                httpx2.PoolTimeout,
                httpx2.UnsupportedProtocol,
                httpx2.ProxyError,
            ),
        )
    return False


def fails_every_request(exc: BaseException, *, max_wait: float = MAX_HONOURED_RETRY_AFTER) -> bool:
    """True when no retry and no other request of the same kind can succeed after ``exc``.

    A key refused (401, 403), a model or route not found (404), an account out of quota (429
    ``insufficient_quota``), a parameter every request shares refused (400 naming a ``param`` other
    than the input), a server that refuses connections or is not the API, a wait asked for that is
    longer than ``max_wait``. Extraction stops at the first such answer instead of sending every row.
    """
    import httpx2  # noqa: PLC0415 - the SDK stays out of `import nbopenai`
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

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


def too_long_to_wait(exc: BaseException, cap: float = MAX_HONOURED_RETRY_AFTER) -> float | None:
    """The wait ``exc`` asked for when it is longer than ``cap`` (a retryable answer not waited out), else None."""
    asked = retry_after(exc)
    return asked if asked is not None and asked > cap and is_retryable(exc) else None


# Unreadable answers in a row (each billed: ``unreadable_answer``) that end an extraction, as an answer no row can
# get past does: one is the network's bad moment, a few in a row are a proxy or VPN corrupting every body, and
# every further row would be paid for and lost the same way.
UNREADABLE_IN_A_ROW = 3

FailureHook = Callable[[BaseException, int, bool], None]

# Attempts for 429s that carry retry-after, when retrying is on at all (max_attempts > 1).
RATE_LIMIT_ATTEMPTS = 10


def retry_policy(settings, *, attempts: int | None = None) -> RetryPolicy:
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
                wait = self._after_failure(attempt, exc, on_failure, idempotent)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    def _after_failure(
        self, attempt: int, exc: Exception, on_failure: FailureHook | None, idempotent: bool
    ) -> float | None:
        """The wait before attempt ``attempt + 1`` after ``exc`` (``None``: give up), told to ``on_failure``."""
        wait = self.delay(attempt, exc, idempotent=idempotent)
        if on_failure is not None:
            on_failure(exc, attempt, wait is not None)
        return wait

    async def acall(
        self, fn: Callable[[], Awaitable[T]], *, on_failure: FailureHook | None = None, idempotent: bool = False
    ) -> T:
        """The ``async`` twin of :meth:`call`."""
        import asyncio  # noqa: PLC0415 - loaded with the session's loop, which runs this; not with `import nbopenai`

        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                wait = self._after_failure(attempt, exc, on_failure, idempotent)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1
