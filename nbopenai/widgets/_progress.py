"""``ExtractProgressWidget``: an extraction's progress bar in the notebook, updated in place.

Displayed once, on the first update; later updates only change widget *values* (the bar, the
counts line), at most ``rate`` times a second. When the run ends, the exact final counts are sent
and the widget is replaced, under the same display id, by a static line (text/plain and HTML), so
a saved notebook shows the outcome without widget state; then the widgets are closed. (A
background batch poll ends on another thread: there the filled-in widget stays.)
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.display import display

from ._throttle import Throttle

if TYPE_CHECKING:
    from .._extract._snapshot import Snapshot

__all__ = ["ExtractProgressWidget"]

_LINE_STYLE = "font-family: var(--jp-code-font-family, monospace); font-size: 0.9em; margin-left: 0.5em"


def _display(obj: Any) -> Any:
    return display(obj, display_id=True)


class ExtractProgressWidget:
    """A progress view (``update(snapshot)``, ``close(snapshot)``) drawn with ipywidgets.

    Parameters
    ----------
    rate
        Front-end updates per second at most (the final one is always sent).
    clock
        Monotonic seconds; injectable for tests.
    display
        ``obj -> DisplayHandle``; by default ``IPython.display.display(obj, display_id=True)``.
    """

    def __init__(
        self,
        *,
        rate: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        display: Callable[[Any], Any] = _display,
    ) -> None:
        import ipywidgets as w  # noqa: PLC0415 - ipywidgets loads when a view is built

        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info")
        self.label = w.HTML()
        self.box = w.HBox([self.bar, self.label])
        self.throttle = Throttle(rate, clock)
        self._display = display
        self._handle: Any = None
        self._closed = False
        self._lock = threading.Lock()  # a background batch poll updates from the loop thread

    def update(self, snapshot: Snapshot) -> None:
        if self.throttle.ready():
            with self._lock:
                if not self._closed:
                    self._show()
                    self._set(snapshot)

    def show(self) -> None:
        """Display the bar now (a background job calls this from the cell that started it)."""
        with self._lock:
            self._show()

    def close(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self._closed:
                return
            self._show()
            self._set(snapshot)  # exact, whatever the throttle held back
            if threading.current_thread() is not threading.main_thread():
                # A background poll ends on the loop thread, where a display update may not reach
                # the cell that started it; the widget, filled in, stays as the record.
                self._closed = True
                return
            line = snapshot.line()
            self._handle.update(
                {"text/plain": line, "text/html": f'<div style="{_LINE_STYLE}">{html.escape(line)}</div>'}, raw=True
            )
            for widget in (self.bar, self.label, self.box):
                for part in (getattr(widget, "layout", None), getattr(widget, "style", None), widget):
                    if part is not None:
                        part.close()
            self._closed = True

    def _show(self) -> None:
        if self._handle is None:
            self._handle = self._display(self.box)

    def _set(self, snapshot: Snapshot) -> None:
        self.bar.max = max(snapshot.total, 1)
        self.bar.value = snapshot.done
        if snapshot.failed and snapshot.failed == snapshot.done == snapshot.total:
            self.bar.bar_style = "danger"
        elif snapshot.failed:
            self.bar.bar_style = "warning"
        elif snapshot.done == snapshot.total:
            self.bar.bar_style = "success"
        self.label.value = f'<span style="{_LINE_STYLE}">{html.escape(snapshot.line())}</span>'
