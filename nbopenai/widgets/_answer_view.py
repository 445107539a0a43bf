"""``AnswerView``: a streaming answer in the notebook, as one live widget updated in place.

Displayed once; deltas are coalesced by a ``Throttle`` (so a 20,000-delta answer costs a few dozen
comm messages, not 20,000), and each update sends only the text that arrived since the last one
(``AnswerWidget.append``): the bytes sent grow with the answer, not with answer length x duration.
When the answer ends, the tail and the footer are sent, and then the view replaces itself, under
the same display id, with a static mime bundle (``render(answer)``). The live notebook therefore
shows the answer once, rendered by the front-end's own Markdown renderer (which highlights code
blocks), and a saved notebook holds plain text/markdown (the whole answer) + text/plain (a preview of a
long one: ``_render.preview``) that nbviewer, GitHub and VS Code show without widget state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.display import display

from ._throttle import Throttle

if TYPE_CHECKING:
    from .._turns._answer import Answer
    from .._turns._streaming import StreamState
    from ._answer_widget import AnswerWidget

__all__ = ["AnswerView"]


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _display(obj: Any) -> Any:
    return display(obj, display_id=True)


class AnswerView:
    """Live view of one answer; an ``AskSink`` (``started``, ``text``, ``finished``).

    Parameters
    ----------
    render
        ``Answer -> mime bundle`` (or ``(bundle, metadata)``, as IPython's ``_repr_mimebundle_``
        may return) for the static output that replaces the widget when the answer ends. ``None`` keeps the widget
        as the final display.
    rate
        Front-end updates per second at most while streaming (the final update is always exact).
    clock
        Monotonic seconds; injectable for tests.
    close_widget
        Close the widget (free its comm) once the static output replaced it. Background jobs
        finish on another thread, where a display update may not reach the cell that asked, so
        they keep the widget, filled in, as a fallback.
    display
        ``obj -> DisplayHandle``; by default ``IPython.display.display(obj, display_id=True)``.

    Examples
    --------
    >>> view = AnswerView(render=lambda answer: answer._repr_mimebundle_())  # doctest: +SKIP
    >>> session.ask("Hello", sink=view)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        render: Callable[[Answer], Any] | None = None,
        rate: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        close_widget: bool = True,
        display: Callable[[Any], Any] = _display,
    ) -> None:
        from ._answer_widget import AnswerWidget  # noqa: PLC0415 - anywidget and ipywidgets load when a view is built

        self.widget: AnswerWidget = AnswerWidget()
        self.throttle = Throttle(rate, clock)
        self.answer: Answer | None = None
        self._render = render
        self._close_widget = close_widget
        self._display = display
        self._handle: Any = None
        self._lock = threading.Lock()
        self._tool_lines: list[str] = []
        self._state: StreamState | None = None  # the stream whose text the front-end shows
        self._sent = 0  # how much of that text it has

    # ---- the sink protocol ------------------------------------------------------------------

    def started(self, model: str, thread: str, notice: str | None) -> None:
        with self.widget.hold_sync():
            self._set_header(model, thread, notice, working=True)
            self.widget.streaming = True
        self.show()

    def text(self, delta: str, state: StreamState) -> None:
        if self.throttle.ready():
            self._send_text(state)

    def finished(self, answer: Answer) -> None:
        with self._lock:
            self.answer = answer
            self.show()
            widget = self.widget
            kept = self._render is None or not self._close_widget
            with widget.hold_sync():
                if kept:  # the one whole copy, in the widget's state: a later re-render still shows it
                    widget.text = answer.text
                else:  # the static output replaces the widget: only the tail the throttle held back
                    self._send_rest(answer.text)
                widget.streaming = False
                self._set_header(answer.model, answer.thread, answer.notice)
                widget.status = answer.status_line() or ""
                widget.footer = answer.footer()
            if self._render is not None:
                rendered = self._render(answer)  # a bundle, or (bundle, metadata) as IPython's _repr_mimebundle_
                data, metadata = rendered if isinstance(rendered, tuple) else (rendered, None)
                self._handle.update(data, raw=True, metadata=metadata)
                if self._close_widget:
                    self._close()

    def tool_call(self, name: str, arguments: Any, output: Any) -> None:
        """A tool loop ran a function: list it under the text until the answer ends."""
        self._tool_lines.append(f"🔧 {name}({_short(arguments)}) → {_short(output)}")
        self.widget.footer = "\n".join(self._tool_lines)

    # ---- other states -----------------------------------------------------------------------

    def queued(self, model: str, thread: str, job_id: str | None = None) -> None:
        """A background job was submitted: say so until ``finished`` fills the view in."""
        with self._lock:
            if self.answer is not None:  # the job ended before we got here
                return
            with self.widget.hold_sync():
                self._set_header(model, thread, None, working=True)
                job = f" as {job_id}; %nbopenai jobs lists it" if job_id else ""
                self.widget.note = f"queued…{job}"
            self.show()

    def discard(self, message: str = "") -> None:
        """Remove the view (no answer arrived: the error shows as the cell's error instead)."""
        with self._lock:
            if self.answer is not None:
                return
            if self._handle is not None:
                self._handle.update({"text/plain": message}, raw=True)
            self._close()

    def show(self) -> None:
        """Display the widget once."""
        if self._handle is None:
            self._handle = self._display(self.widget)

    # ---- context manager: whatever happens, never leave a spinner behind ------------------

    def __enter__(self) -> AnswerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    # ---- helpers ----------------------------------------------------------------------------

    def _send_text(self, state: StreamState) -> None:
        """Send what ``state`` received since the last update (all of it if it is a new stream)."""
        if state is not self._state:  # a tool loop's next response: its text replaces the last one's
            if self._sent:
                self.widget.restart()
            self._state, self._sent = state, 0
        text = state.text
        self.widget.append(text[self._sent :])
        self._sent = len(text)

    def _send_rest(self, final: str) -> None:
        """Make the front-end's text ``final``: its tail if it continues what was sent, else all of it."""
        shown = self._state.text[: self._sent] if self._state is not None else ""
        if final.startswith(shown):
            self.widget.append(final[len(shown) :])
        else:
            self.widget.restart(final)
        self._state, self._sent = None, 0

    def _close(self) -> None:
        # Close the widget and its layout model, so a kernel that asked a thousand questions holds
        # no thousand dead widgets.
        for part in (getattr(self.widget, "layout", None), self.widget):
            if part is not None:
                part.close()

    def _set_header(self, model: str, thread: str, notice: str | None, *, working: bool = False) -> None:
        # The header names the thread already: the notice says only what happened to it. Words, not
        # an hourglass glyph, say it is working (the glyph is an empty box where a font lacks it).
        said = notice.removeprefix(f"thread {thread}: ") if notice else ""
        header = f"{model} · thread {thread}" + (f" — {said}" if said else "")
        self.widget.header = header + (" · answering…" if working else "")
