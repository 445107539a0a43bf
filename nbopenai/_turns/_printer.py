"""Plain-text display: stream to stdout where there is no widget front-end."""

from __future__ import annotations

import sys
from typing import TextIO

from ._answer import Answer
from ._streaming import StreamState

__all__ = ["StdoutSink"]


class StdoutSink:
    """Writes deltas as they arrive, then the status and footer lines."""

    def __init__(self, out: TextIO | None = None, *, footer: bool = True) -> None:
        self._out = out or sys.stdout
        self._footer = footer

    def started(self, model: str, thread: str, notice: str | None) -> None:
        if notice:
            self._out.write(f"({notice})\n")

    def text(self, delta: str, state: StreamState) -> None:
        self._out.write(delta)
        self._out.flush()

    def finished(self, answer: Answer) -> None:
        self._out.write("\n")
        if status := answer.status_line():
            self._out.write(status + "\n")
        if self._footer:
            self._out.write(f"-- {answer.footer()}\n")
        self._out.flush()
