"""Coalescing for live views: at most ``rate`` front-end updates a second, the last one exact.

Pure logic with an injectable clock, so it is tested without widgets or sleeping. The view asks
``ready()`` on every delta and sends the accumulated text only when it says yes; when the stream
ends the view sends the exact final text regardless, so nothing is ever lost to coalescing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Lets through at most ``rate`` updates per second (leading edge: the first goes at once).

    Parameters
    ----------
    rate
        Updates per second at most (``Settings.update_rate``, 20 by default).
    clock
        Seconds from a monotonic source; tests pass a fake one.

    Examples
    --------
    >>> now = [0.0]
    >>> throttle = Throttle(rate=10, clock=lambda: now[0])
    >>> throttle.ready(), throttle.ready()
    (True, False)
    >>> now[0] = 0.1
    >>> throttle.ready(), throttle.sent, throttle.pending
    (True, 2, False)
    """

    def __init__(self, rate: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._last: float | None = None
        self.sent = 0  # updates let through
        self.pending = False  # something was held back since the last update

    def ready(self) -> bool:
        """True if an update may go out now (and count it as sent); else remember it is pending."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self.pending = True
            return False
        self._last, self.pending = now, False
        self.sent += 1
        return True
