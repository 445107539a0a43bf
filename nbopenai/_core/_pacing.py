"""Pacing to the account's limits: requests and tokens per minute, client-side, before the API says 429.

The API answers every request with ``x-ratelimit-limit-requests``, ``-remaining-requests`` and
``-reset-requests`` (``12ms``, ``1.5s``, ``6m0s``) and the same three for tokens, and it enforces a
minute's allowance spread over short windows: 3,000 requests a minute admit about 50 in any one
second, not 3,000 at once. A client that learns only from 429s keeps bumping into that wall (20 %
of requests rejected, 1.47x the time the limit allows). So a ``Pacer`` holds two token buckets, one
for requests and one for tokens:

- each refills at the limit / 60 a second (a little under it: ``HEADROOM``) and holds at most
  ``BURST_S`` seconds of allowance, so bursts stay inside the API's short windows;
- a request waits until both buckets hold its share, then takes it (one request; its input tokens
  counted offline, plus its ``max_output_tokens``, as the API counts them); the runner lets one
  request at a time wait, so they go in order. When the answer says how many input tokens the
  server counted, the difference is settled and the offline estimate calibrated (``counted``);
- the limits come from ``Settings.rpm``/``tpm`` (``--rpm``/``--tpm``) when given, else from the
  headers of the answers (``learn``); until then nothing is paced;
- a 429 that gets through drains its bucket for the wait it asked for (``rejected``), so the rows
  behind it wait too instead of meeting the same 429.

One pacer per session and endpoint (``Session.pacer``), so what a run learned serves the next.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._retry import parse_duration

__all__ = ["Bucket", "Pacer", "read_limits", "BURST_S", "HEADROOM"]

BURST_S = 0.5  # seconds of allowance a bucket holds: well inside the API's short windows
HEADROOM = 0.98  # pace this far under the limit: clocks differ, and others may share the account
DIMENSIONS = ("requests", "tokens")


def read_limits(headers: Mapping[str, str]) -> dict[str, int]:
    """The per-minute limits ``headers`` announce: ``{"requests": 3000, "tokens": 200000}`` (either may be missing)."""
    limits = {}
    for name in DIMENSIONS:
        value = headers.get(f"x-ratelimit-limit-{name}")
        if value is not None and value.strip().isdigit() and int(value) > 0:
            limits[name] = int(value)
    return limits


def read_remaining(headers: Mapping[str, str], name: str) -> tuple[int, float] | None:
    """``(remaining, seconds until whole again)`` for one limit, if the headers say."""
    remaining = headers.get(f"x-ratelimit-remaining-{name}")
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}"))
    if remaining is None or not remaining.strip().isdigit() or reset is None:
        return None
    return int(remaining), reset


@dataclass
class Bucket:
    """Refills at ``rate`` a second up to ``capacity``; a reservation may take it into debt (below 0)."""

    per_minute: int
    rate: float
    capacity: float
    level: float
    stamp: float

    @classmethod
    def for_limit(cls, per_minute: int, now: float) -> Bucket:
        rate = per_minute / 60.0 * HEADROOM
        capacity = max(1.0, rate * BURST_S)
        return cls(per_minute, rate, capacity, capacity, now)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (more than the bucket holds: until it is full)."""
        self._refill(now)
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float, now: float) -> None:
        """Take ``amount`` (into debt, for a request larger than the bucket)."""
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return ``amount`` (taken and not used; negative: more was used than taken)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def hold(self, seconds: float, now: float) -> None:
        """Nothing more for ``seconds``: the server said so (a 429's "try again in ...")."""
        self._refill(now)
        self.level = min(self.level, -seconds * self.rate)


class Pacer:
    """Client-side buckets for requests and tokens per minute (see the module docstring); thread-safe.

    Parameters
    ----------
    rpm, tpm
        Limits the user knows (``--rpm``/``--tpm``); ``None``: learned from the answers' headers.
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.given = {"requests": rpm, "tokens": tpm}
        now = clock()
        self.buckets: dict[str, Bucket] = {
            name: Bucket.for_limit(limit, now) for name, limit in self.given.items() if limit
        }
        self.token_ratio = 1.0  # tokens the server counted / our offline estimate, smoothed
        self._calibrated = False
        self._unpaced: collections.deque[tuple[float, int]] = collections.deque(maxlen=10_000)  # (when, tokens)
        self.rejections = 0

    def with_limits(self, rpm: int | None, tpm: int | None) -> Pacer:
        """This pacer, or (a run's own ``--rpm``/``--tpm``) a fresh one with those limits and what this one learned."""
        if rpm is None and tpm is None:
            return self
        pacer = Pacer(rpm or self.given["requests"], tpm or self.given["tokens"], clock=self._clock)
        with self._lock:
            for name, bucket in self.buckets.items():
                pacer.buckets.setdefault(name, Bucket.for_limit(bucket.per_minute, self._clock()))
            pacer.token_ratio, pacer._calibrated = self.token_ratio, self._calibrated
        return pacer

    @property
    def active(self) -> bool:
        return bool(self.buckets)

    @property
    def calibrated(self) -> bool:
        return self._calibrated

    def input_tokens_for(self, estimated_input: int) -> int:
        """The input tokens to reserve for a request estimated offline at ``estimated_input`` (calibrated)."""
        return math.ceil(estimated_input * self.token_ratio)

    def wait_for(self, tokens: int) -> float:
        """Seconds until one request of ``tokens`` may be sent (0: now), as the API's buckets would admit it."""
        if not self.buckets:
            return 0.0
        with self._lock:
            now = self._clock()
            return max(bucket.wait_for(1 if name == "requests" else tokens, now)
                       for name, bucket in self.buckets.items())

    def take(self, tokens: int) -> None:
        """Charge one request of ``tokens``, sent now (before any limit is known: remembered, see ``learn``)."""
        with self._lock:
            now = self._clock()
            if not self.buckets:
                self._unpaced.append((now, tokens))
            for name, bucket in self.buckets.items():
                bucket.take(1 if name == "requests" else tokens, now)

    def learn(self, headers: Mapping[str, str] | None) -> None:
        """Take the limits an answer's headers announce (the ones not given by the user)."""
        if headers is None:
            return
        limits = read_limits(headers)
        if not limits:
            return
        with self._lock:
            now = self._clock()
            for name, per_minute in limits.items():
                if self.given[name]:
                    continue
                bucket = self.buckets.get(name)
                if bucket is None or bucket.per_minute != per_minute:
                    fresh = Bucket.for_limit(per_minute, now)
                    if bucket is not None:  # a changed limit keeps the debt it had
                        fresh.level = min(fresh.capacity, bucket.level)
                    else:  # the first we hear of it: what was sent unpaced still counts in the API's window
                        recent = [(when, tokens) for when, tokens in self._unpaced if now - when < 1.0]
                        fresh.level -= sum(1 if name == "requests" else tokens for _, tokens in recent)
                    if (left := read_remaining(headers, name)) is not None:
                        fresh.level = min(fresh.level, float(left[0]))
                    self.buckets[name] = fresh

    def counted(self, estimated_input: int, reserved_input: int, counted_input: int) -> None:
        """The server counted ``counted_input`` input tokens for a request we estimated at ``estimated_input`` and
        reserved ``reserved_input`` for: settle the difference in the bucket, and calibrate the estimate."""
        if estimated_input <= 0 or counted_input <= 0:
            return
        ratio = min(10.0, max(0.1, counted_input / estimated_input))
        with self._lock:
            self.token_ratio = ratio if not self._calibrated else 0.9 * self.token_ratio + 0.1 * ratio
            self._calibrated = True
            if (bucket := self.buckets.get("tokens")) is not None and reserved_input:
                bucket.give_back(reserved_input - counted_input, self._clock())

    def rejected(self, headers: Mapping[str, str] | None, kind: str | None, wait: float | None) -> None:
        """A 429 got through: learn from its headers and hold its bucket (both if unsaid) for the ``wait`` asked."""
        self.learn(headers)
        with self._lock:
            self.rejections += 1
            if wait is None or wait <= 0:
                return
            now = self._clock()
            for name, bucket in self.buckets.items():
                if kind in (None, name):
                    bucket.hold(wait, now)

    def describe(self) -> str | None:
        """``paced to 3,000 requests/min and 200,000 tokens/min`` (None when nothing is paced)."""
        with self._lock:
            parts = [f"{bucket.per_minute:,} {name}/min" for name, bucket in self.buckets.items()]
        return f"paced to {' and '.join(parts)}" if parts else None


def rate_limit_kind(exc: Any) -> str | None:
    """``requests`` or ``tokens``: which limit a 429 is about (its error ``type``), if it says."""
    body = getattr(exc, "body", None)
    detail = body.get("error", body) if isinstance(body, dict) else None
    kind = detail.get("type") if isinstance(detail, dict) else None
    return kind if kind in DIMENSIONS else None
