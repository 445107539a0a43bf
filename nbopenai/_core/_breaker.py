"""The circuit breaker: one per session (its endpoint), shared by ``%%ask`` and ``%%extract``.

A dead or drowning service answered with every row's retries is the thundering herd the retry
literature warns about: 400 rows cost 1,600 requests against a 503. So the answers of every request
are told to one ``CircuitBreaker``:

- **closed**: requests go. ``threshold`` failures in a row (5xx, timeouts, dropped or refused
  connections) **open** it.
- **open**: nothing is sent for a pause (0.5 s, doubling to 8 s). ``%%ask`` fails at once with
  ``APIUnavailable``; extraction rows wait (their attempts are not spent).
- **half-open**: after the pause one request goes as a probe; its success closes the breaker, its
  failure opens it again for a longer pause.

Anything else the server answers (a 2xx, a 4xx, a 429) shows it is up, and closes the breaker.

It also keeps the first contact cautious: until a model has been answered on this endpoint, an
extraction sends one request for it and holds the rest back, so a wrong key, an unknown model or a
base URL that is not the API costs one request, not one per row (``first_contact``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ._errors import APIUnavailable
from ._retry import describe_wait, fails_every_request, unreadable_answer

__all__ = ["CircuitBreaker", "FAILURE", "SUCCESS", "NEUTRAL", "verdict"]

FAILURE, SUCCESS, NEUTRAL = "failure", "success", "neutral"
T = TypeVar("T")


def verdict(exc: BaseException | None) -> str:
    """What an attempt's outcome says about the service: up (``SUCCESS``), down (``FAILURE``), or nothing."""
    if exc is None:
        return SUCCESS
    import openai  # noqa: PLC0415 - the SDK stays out of `import nbopenai`


    if unreadable_answer(exc):  # it answered; the body was lost on the way
        return SUCCESS

    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return FAILURE
        return NEUTRAL if exc.status_code == 429 else SUCCESS  # a 429 is pacing's business
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return FAILURE
    return NEUTRAL  # not the API's answer, a body we could not read, our own errors


def _fails_every_request(exc: BaseException) -> bool:
    return fails_every_request(exc)


class CircuitBreaker:
    """Closed, open or half-open (see the module docstring); thread-safe (asks run on threads, rows on the loop).

    Parameters
    ----------
    threshold
        Failures in a row that open the breaker.
    first_pause, max_pause
        Seconds it stays open: ``first_pause`` the first time, doubling per failed probe up to ``max_pause``.
    clock
        ``time.monotonic`` (tests may pass their own).
    """

    def __init__(self, *, threshold: int = 5, first_pause: float = 0.5, max_pause: float = 8.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.first_pause = first_pause
        self.max_pause = max_pause
        self._clock = clock
        self._lock = threading.Lock()
        self.state = "closed"
        self.failures = 0  # in a row
        self.last_failure: str | None = None
        self._outage_since: float | None = None  # the first failure of the current run of failures
        self._reopens_at = 0.0
        self._pause = first_pause
        self._probe_out = False
        self._answered: set[str] = set()  # models this endpoint has answered (first contact is over)
        self._trying: set[str] = set()  # models whose first request is out

    # ---- before a request ------------------------------------------------------------------

    def wait_before_sending(self) -> tuple[float, bool]:
        """``(seconds to wait, probe)``: ``(0, False)`` go; ``(0, True)`` go as the half-open probe; ``(s, _)`` wait."""
        with self._lock:
            if self.state == "closed":
                return 0.0, False
            now = self._clock()
            if self.state == "open" and now < self._reopens_at:
                return self._reopens_at - now, False
            if self._probe_out:
                return min(0.05, self.max_pause), False  # the probe decides; look again shortly
            self.state, self._probe_out = "half_open", True
            return 0.0, True

    def check(self) -> bool:
        """For one-off requests (``%%ask``): raise ``APIUnavailable`` while open; returns True for a probe."""
        wait, probe = self.wait_before_sending()
        if wait > 0 and self.state == "open":
            raise self.unavailable(wait)
        return probe

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` (one request) if the breaker lets it go, its outcome told to the breaker.

        ``APIUnavailable`` while the breaker is open (nothing is sent).
        """
        probe = self.check()
        try:
            result = fn()
        except Exception as exc:
            self.settle(exc, probe=probe)
            raise
        except BaseException:  # interrupted: no news about the service
            if probe:
                self.release_probe()
            raise
        self.settle(None, probe=probe)
        return result

    def first_contact(self, model: str) -> bool:
        """True when a request for ``model`` may go now: it has been answered here, or it is the first one out."""
        with self._lock:
            if model in self._answered:
                return True
            if model in self._trying:
                return False
            self._trying.add(model)
            return True

    def contact_over(self, model: str) -> bool:
        with self._lock:
            return model in self._answered

    # ---- after a request -------------------------------------------------------------------

    def settle(self, exc: BaseException | None, *, model: str | None = None, probe: bool = False,
               describe: Callable[[BaseException], str] | None = None) -> str:
        """Take the outcome of one attempt (``exc`` None: an answer); returns its ``verdict``."""
        kind = verdict(exc)
        # The first contact is over once an answer shows requests for the model can succeed (a 429 does too);
        # one lost on the way (unreadable: billed, its body corrupt or cut short) shows nothing of the kind.
        proven = kind != FAILURE and (exc is None or not (_fails_every_request(exc) or unreadable_answer(exc)))
        with self._lock:
            if model is not None:
                self._trying.discard(model)
                if proven:
                    self._answered.add(model)
            if probe:
                self._probe_out = False
            if kind == SUCCESS:
                self.state, self.failures, self._outage_since, self._pause = "closed", 0, None, self.first_pause
                self.last_failure = None
            elif kind == FAILURE:
                now = self._clock()
                self.failures += 1
                if self._outage_since is None:
                    self._outage_since = now
                if exc is not None:
                    self.last_failure = describe(exc) if describe else type(exc).__name__
                if (probe or self.state == "half_open" or self.failures >= self.threshold) and self.state != "open":
                    self.state, self._reopens_at = "open", now + self._pause
                    self._pause = min(self._pause * 2, self.max_pause)
        return kind

    def release_probe(self) -> None:
        """A probe that ended without an answer (cancelled): let another go."""
        with self._lock:
            self._probe_out = False

    def forget_contact(self, model: str) -> None:
        """A first request that ended without an answer (cancelled, or the run stopped): the next one tries."""
        with self._lock:
            self._trying.discard(model)

    # ---- reading -----------------------------------------------------------------------------

    def outage_s(self) -> float:
        """Seconds since the first of the current failures in a row (0 when the last answer was good)."""
        with self._lock:
            return 0.0 if self._outage_since is None else self._clock() - self._outage_since

    def unavailable(self, wait: float | None = None, *, kept: str = "") -> APIUnavailable:
        """The error that says the service is down: for how long, what failed, and what to do."""

        outage = self.outage_s()
        failed = f" ({self.failures} failures in a row, the last: {self.last_failure})" if self.failures else ""
        resumes = f"; nothing is sent for {describe_wait(wait)}" if wait else ""
        return APIUnavailable(f"The API is unavailable: it has been failing for {describe_wait(outage)}"
                              f"{failed}{resumes}{'. ' + kept if kept else '.'}")
