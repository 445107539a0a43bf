"""Rate limits as the API enforces them: requests and tokens per minute, spread over short windows.

Settings (``LocalServer(rpm=..., tpm=...)``, ``server.configure(...)``, ``python -m nbopenai.local
--rpm N --tpm N``); all off by default:

=====================  ==========================================================================
``rpm``                requests per minute (None: no limit)
``tpm``                tokens per minute (None: no limit). A request costs what the API counts
                       before running it: its input tokens (the prompt as sent, counted offline)
                       plus its ``max_output_tokens`` (0 when absent)
``rate_limit_window``  seconds over which a minute's allowance is enforced (default 1): the API
                       spreads a limit over the minute, so 3,000 RPM admits at most 50 requests in
                       any one second, not 3,000 at once
=====================  ==========================================================================

What a client sees, as from the real API:

- every response carries ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
  ``x-ratelimit-reset-requests`` (``12ms``, ``1.5s``, ``6m0s``: the time until the minute's
  allowance is whole again) when ``rpm`` is set, and the same three ``-tokens`` headers when ``tpm``
  is;
- a request over a limit gets a 429 ``rate_limit_exceeded`` (type ``requests`` or ``tokens``) with
  no ``retry-after`` header, only the wait in the message: "Rate limit reached for <model> ... on
  requests per min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 20ms. ...";
- a request whose tokens alone exceed the per-minute limit gets the API's 429 "Request too large".

The limits hold for the routes that run the model (``POST /v1/responses`` and
``/v1/chat/completions``), one pool for every model. A rejected request costs nothing. Each limit is
two token buckets refilled continuously at limit/60 a second: the minute's (capacity: the limit),
which the headers describe, and the window's (capacity: limit x window / 60), which does the
enforcing. A request larger than the window's capacity is admitted once the window is full, and the
bucket goes into debt, so any request that fits the minute eventually passes.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from ._errors import ApiError

__all__ = ["RateLimits", "duration_text"]

_ORGANIZATION = "org-nbopenai-local"
_LEARN_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."
_DIMENSIONS = (("requests", "rpm", "requests per min (RPM)"), ("tokens", "tpm", "tokens per min (TPM)"))


def duration_text(seconds: float) -> str:
    """A wait as the API writes it (Go's duration format): ``0s``, ``12ms``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    millis = math.ceil(max(seconds, 0.0) * 1000 - 1e-6)
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


@dataclass
class _Bucket:
    capacity: float
    rate: float  # refill per second
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (a request larger than the bucket waits for a full one)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)


class _Limit:
    """One per-minute limit: the minute's bucket (what the headers say) and the window's (what enforces)."""

    def __init__(self, per_minute: int, window: float, now: float) -> None:
        rate = per_minute / 60.0
        self.per_minute = per_minute
        self.minute = _Bucket(per_minute, rate, per_minute, now)
        short = max(1.0, per_minute * window / 60.0)
        self.window = _Bucket(short, rate, short, now)

    def wait_for(self, amount: float, now: float) -> float:
        self.minute.refill(now)
        self.window.refill(now)
        return max(self.minute.wait_for(amount), self.window.wait_for(amount))

    def take(self, amount: float) -> None:
        self.minute.level -= amount
        self.window.level -= amount

    def used(self) -> int:
        return self.per_minute - max(0, math.floor(self.minute.level))

    def headers(self, name: str, now: float) -> dict[str, str]:
        self.minute.refill(now)
        missing = self.minute.capacity - self.minute.level
        return {
            f"x-ratelimit-limit-{name}": str(self.per_minute),
            f"x-ratelimit-remaining-{name}": str(max(0, math.floor(self.minute.level))),
            f"x-ratelimit-reset-{name}": duration_text(missing / self.minute.rate),
        }


class RateLimits:
    """The server's limits; ``admit`` charges a request or says why it must wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[tuple[str, int, float], _Limit] = {}

    def _current(self, config: Any, now: float) -> list[tuple[str, str, _Limit]]:
        """The limits the settings ask for (a changed setting starts a fresh bucket)."""
        current = []
        for name, setting, label in _DIMENSIONS:
            per_minute = getattr(config, setting)
            if per_minute:
                key = (name, int(per_minute), float(config.rate_limit_window))
                if key not in self._limits:
                    self._limits = {k: v for k, v in self._limits.items() if k[0] != name}
                    self._limits[key] = _Limit(int(per_minute), float(config.rate_limit_window), now)
                current.append((name, label, self._limits[key]))
        return current

    def admit(self, config: Any, tokens: int, model: str) -> ApiError | None:
        """Charge one request of ``tokens`` tokens, or return the 429 the API would send instead."""
        now = time.monotonic()
        with self._lock:
            limits = self._current(config, now)
            costs = {"requests": 1, "tokens": tokens}
            for name, label, limit in limits:
                if costs[name] > limit.per_minute:
                    return _too_large(model, label, limit.per_minute, costs[name], name)
            for name, label, limit in limits:
                wait = limit.wait_for(costs[name], now)
                if wait > 0:
                    message = (f"Rate limit reached for {model} in organization {_ORGANIZATION} on {label}: "
                               f"Limit {limit.per_minute}, Used {limit.used()}, Requested {costs[name]}. "
                               f"Please try again in {duration_text(wait)}. {_LEARN_MORE}")
                    return ApiError(429, message, type=name, code="rate_limit_exceeded")
            for name, _, limit in limits:
                limit.take(costs[name])
        return None

    def headers(self, config: Any) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for a response sent now (none for a limit that is not set)."""
        if not (config.rpm or config.tpm):
            return {}
        now = time.monotonic()
        with self._lock:
            headers: dict[str, str] = {}
            for name, _, limit in self._current(config, now):
                headers.update(limit.headers(name, now))
            return headers


def _too_large(model: str, label: str, per_minute: int, requested: int, name: str) -> ApiError:
    message = (f"Request too large for {model} in organization {_ORGANIZATION} on {label}: Limit {per_minute}, "
               f"Requested {requested}. The input or output tokens must be reduced in order to run successfully. "
               f"{_LEARN_MORE}")
    return ApiError(429, message, type=name, code="rate_limit_exceeded")
