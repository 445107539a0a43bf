"""What a failed answer tells us: whether the server had answered (and billed) before its body was
lost, and how long it asks us to wait.

Below ``_errors`` and ``_retry``, which both read it (the error's hint, the retry's delay), so
neither imports the other for it. The SDK is imported inside the functions, as in ``_retry``.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

__all__ = ["ANSWERED", "unreadable_answer", "parse_duration", "asked_wait", "retry_after", "describe_wait"]

# Set on each request by the clients' response hook (``_client``): the status its headers carried.
ANSWERED = "nbopenai.answered_status"


def unreadable_answer(exc: BaseException) -> bool:
    """True when the server had answered 2xx but the body could not be read (cut short, badly compressed, too slow).

    Such an answer is billed: like a create that timed out, it is never re-sent automatically.
    """
    import httpx2  # noqa: PLC0415 - the SDK stays out of `import nbopenai`
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

    # The SDK wraps a body that fails while it reads it; one read later (a stream's body) fails as httpx raised it.
    if not isinstance(exc, (openai.APIConnectionError, httpx2.RequestError)):
        return False
    try:
        status = exc.request.extensions.get(ANSWERED)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an unset request
        return False
    return isinstance(status, int) and 200 <= status < 300


# Go-style durations, as the API writes them in headers and messages: "12ms", "1.5s", "6m0s", "1m30.5s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|us|µs|ns|h|m|s)", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|us|µs|ns|h|m|s)\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# "Please try again in 120ms." / "try again in 1.5s": a 429 for RPM/TPM often says so only in its message.
# A unit ends where no letter follows ("1m30s" is two parts; \b would need a non-word character after the "m").
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?\s*(?:ms|us|µs|ns|h|m|s)(?![A-Za-z])\s*)+)", re.IGNORECASE)


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
    import email.utils  # noqa: PLC0415 - only a gateway's HTTP date needs it: not loaded with `import nbopenai`

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


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait after ``exc`` (see ``asked_wait``), if any."""
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

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
