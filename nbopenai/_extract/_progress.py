"""Progress of an extraction: a snapshot value, a text bar, and the choice between views.

The runner only counts; the caller's thread takes a ``Snapshot`` about ten times a second and hands
it to a view, so drawing never slows the requests down. Views: ``TextProgress`` (one ``\\r`` line
on stderr), the ipywidgets bar in ``nbopenai.widgets`` inside a Jupyter kernel, or any callable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = ["Snapshot", "ProgressView", "TextProgress", "CallbackProgress", "NoProgress", "choose_view"]


@dataclass(frozen=True)
class Snapshot:
    """Counts at one moment. ``failed`` rows have ended in any status but ``ok``."""

    total: int
    done: int
    ok: int
    failed: int
    retrying: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    elapsed_s: float
    limit: int
    finished: bool = False
    label: str = "extract"
    pace: str | None = None  # "paced to 3,000 requests/min and 200,000 tokens/min"
    eta_s: float | None = None  # seconds left at the pace so far
    rows_per_s: float | None = None  # this run's pace so far
    notice: str | None = None  # why rows are waiting: "the API is failing: waiting for it (5 s so far)"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        """``extract 120/1,000 · 118 ok · 2 failed · 3 retrying · 40 from cache · 45,210 tokens · $0.0123 ·
        4.2 s · 28.6 rows/s · ETA 31 s · paced to 3,000 requests/min``."""
        parts = [
            f"{self.label} {self.done:,}/{self.total:,}",
            f"{self.ok:,} ok",
            f"{self.failed:,} failed",
        ]
        if self.retrying:
            parts.append(f"{self.retrying:,} retrying")
        if self.cached:
            parts.append(f"{self.cached:,} from cache")
        parts.append(f"{self.input_tokens + self.output_tokens:,} tokens")
        parts.append(f"${self.cost_usd:.4f}")
        parts.append(f"{self.elapsed_s:.1f} s")
        if self.rows_per_s is not None:
            parts.append(f"{self.rows_per_s:.1f} rows/s")
        if self.eta_s is not None and not self.finished:
            parts.append(f"ETA {_duration(self.eta_s)}")
        if self.pace:
            parts.append(self.pace)
        if self.notice and not self.finished:
            parts.append(self.notice)
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressView(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...
    def close(self, snapshot: Snapshot) -> None: ...


class NoProgress:
    def update(self, snapshot: Snapshot) -> None:
        pass

    def close(self, snapshot: Snapshot) -> None:
        pass


class CallbackProgress:
    """Calls ``callback(snapshot)`` on every update and once at the end (``snapshot.finished``)."""

    def __init__(self, callback: Callable[[Snapshot], Any]) -> None:
        self.callback = callback

    def update(self, snapshot: Snapshot) -> None:
        self.callback(snapshot)

    def close(self, snapshot: Snapshot) -> None:
        self.callback(snapshot)


class TextProgress:
    """A one-line bar rewritten in place with ``\\r``; a newline when it closes."""

    def __init__(self, stream: TextIO | None = None, width: int = 20) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._last = ""

    def _draw(self, snapshot: Snapshot) -> str:
        filled = int(self.width * snapshot.fraction)
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {snapshot.line()}"

    def update(self, snapshot: Snapshot) -> None:
        text = self._draw(snapshot)
        if text != self._last:
            pad = " " * max(0, len(self._last) - len(text))
            self.stream.write(f"\r{text}{pad}")
            self.stream.flush()
            self._last = text

    def close(self, snapshot: Snapshot) -> None:
        self.update(snapshot)
        self.stream.write("\n")
        self.stream.flush()


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def choose_view(progress: Any) -> ProgressView:
    """``True``: a widget in a Jupyter kernel (when ipywidgets imports), else text on stderr;
    ``False``/``None``: nothing; a callable: called with each ``Snapshot``; a view: itself."""
    if progress is None or progress is False:
        return NoProgress()
    if progress is True:
        if _in_kernel():
            try:
                from ..widgets._progress import ExtractProgressWidget  # noqa: PLC0415 - the widget layer loads only in a notebook

                return ExtractProgressWidget()
            except ImportError:
                pass
        return TextProgress()
    if hasattr(progress, "update") and hasattr(progress, "close"):
        return progress
    if callable(progress):
        return CallbackProgress(progress)
    raise TypeError(f"progress must be True, False, a callable or a view, not {progress!r}")
