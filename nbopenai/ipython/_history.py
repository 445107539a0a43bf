"""The kernel's cell records for prompts: ``{In[n]}``, ``{Out[n]}`` and ``{Err[n]}``, and the last error.

Inputs and outputs are IPython's own history (``input_hist_raw``, ``output_hist``). Errors IPython
does not keep as text, so ``CellHistory.post_run_cell`` (an IPython event) records each failed
cell's exception the way IPython shows it: its ``_render_traceback_`` if it has one (nbopenai's
own errors), else IPython's traceback formatter; ANSI colours stripped, bounded in size, and the
session's secrets (and anything key-shaped) scrubbed before it is kept. The records live on the
magics object (one per session), never in module state.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from .._core._errors import redact
from .._turns._context import MAX_CELL_CHARS, MAX_ERROR_CHARS, MAX_ERRORS, CellError, bounded, pick, strip_ansi

__all__ = ["CellHistory"]


def _traceback_lines(shell: Any, error: BaseException, number: int) -> list[str]:
    """What IPython showed for ``error``: its own record (IPython 9 keeps one per cell), else formatted
    with the same choices ``InteractiveShell.showtraceback`` makes."""
    kept = getattr(getattr(shell, "history_manager", None), "exceptions", None) or {}
    if isinstance(record := kept.get(number), dict) and isinstance(record.get("traceback"), list):
        return [str(line) for line in record["traceback"]]
    render = getattr(error, "_render_traceback_", None)
    if callable(render):
        return list(render())
    if isinstance(error, SyntaxError) or type(error).__name__ == "UsageError":
        return traceback.format_exception_only(type(error), error)
    try:
        return list(shell.InteractiveTB.structured_traceback(type(error), error, error.__traceback__))
    except Exception:  # noqa: BLE001 - a formatter failure must not break the user's next cell: the plain form
        return traceback.format_exception(type(error), error, error.__traceback__)


class CellHistory:
    """Cell references resolved from a shell's history, and the errors its cells raised."""

    def __init__(self, shell: Any, secrets: Callable[[], tuple[str | None, ...]], *, keep: int = MAX_ERRORS) -> None:
        self.shell = shell
        self._secrets = secrets
        self.errors: deque[CellError] = deque(maxlen=keep)
        self._running_cell: str | None = None

    def pre_run_cell(self, info: Any) -> None:
        """IPython event: remember the running cell's text, to tell it apart from the cells before it."""
        self._running_cell = getattr(info, "raw_cell", None)

    def _running_number(self) -> int:
        """The running cell's execution number, or the next one if it was not stored (IPython 8 and 9
        number it at different times; the stored input tells)."""
        inputs = self.shell.history_manager.input_hist_raw
        last = len(inputs) - 1
        stored = last > 0 and self._running_cell is not None and inputs[last] == self._running_cell.rstrip("\n")
        return last if stored else last + 1

    def post_run_cell(self, result: Any) -> None:
        """IPython event: keep the error of a cell that failed (scrubbed, bounded)."""
        error = result.error_before_exec or result.error_in_exec
        number = result.execution_count
        if error is None or number is None:
            return
        secrets = self._secrets()
        text = strip_ansi("\n".join(line.rstrip("\n") for line in _traceback_lines(self.shell, error, number)))
        text = text.lstrip("-\n")  # IPython's rule of dashes above the traceback says nothing to a model
        cell = getattr(result.info, "raw_cell", None) or ""
        self.errors.append(
            CellError(
                number=number,
                cell=redact(bounded(cell.strip("\n"), MAX_CELL_CHARS), *secrets),
                traceback=redact(bounded(text.strip("\n"), MAX_ERROR_CHARS), *secrets),
                name=type(error).__name__,
            )
        )

    def last_error(self) -> CellError | None:
        """The latest error recorded, if any."""
        return self.errors[-1] if self.errors else None

    def reference(self, kind: str, index: int) -> Any:
        """The value of ``{kind[index]}`` (``_prompt.References``); ``LookupError`` when there is none."""
        running = self._running_number()
        history = self.shell.history_manager
        if kind == "In":
            secrets = self._secrets()
            records: Any = ((n, redact(text, *secrets)) for n, text in enumerate(history.input_hist_raw) if n > 0)
        elif kind == "Out":
            records = sorted(history.output_hist.items())
        else:
            records = ((e.number, e.traceback) for e in self.errors)
        return pick(records, index, running=running)
