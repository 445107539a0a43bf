"""Progress of an extraction: the views of a ``Snapshot`` (``_snapshot``), and the choice between them.

The runner only counts; the caller's thread takes a ``Snapshot`` about ten times a second and hands
it to a view, so drawing never slows the requests down. Views: ``TextProgress`` (one ``\\r`` line
on stderr), the ipywidgets bar in ``nbopenai.widgets`` inside a Jupyter kernel, or any callable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from ._snapshot import Snapshot

__all__ = ["Snapshot", "ProgressView", "TextProgress", "CallbackProgress", "NoProgress", "choose_view"]


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
