"""``AnswerView``: a streaming answer in the notebook, as one ipywidgets view updated in place.

Displayed once; deltas only change widget *values*, coalesced by a ``Throttle`` (so a 20,000-delta
answer costs a few dozen comm messages, not 20,000). When the answer ends, the exact text and the
footer are sent, and then the view replaces itself, under the same display id, with a static mime
bundle (``render(answer)``). The live notebook therefore shows the answer once, rendered by the
front-end's own Markdown renderer (which highlights code blocks), and a saved notebook holds plain
text/markdown + text/plain that nbviewer, GitHub and VS Code show without widget state.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._throttle import Throttle

if TYPE_CHECKING:
    from .._turns._answer import Answer
    from .._turns._streaming import StreamState

__all__ = ["AnswerView"]

_TEXT_STYLE = "white-space: pre-wrap; word-break: break-word; font-family: var(--jp-content-font-family, sans-serif)"
_MUTED_STYLE = "opacity: 0.7; font-size: 0.9em"
_PARTIAL_STYLE = "color: var(--jp-error-color1, #c62828)"


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _display(obj: Any) -> Any:
    from IPython.display import display

    return display(obj, display_id=True)


class AnswerView:
    """Live view of one answer; an ``AskSink`` (``started``, ``text``, ``finished``).

    Parameters
    ----------
    render
        ``Answer -> mime bundle`` for the static output that replaces the widget when the answer
        ends. ``None`` keeps the widget as the final display.
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
        render: Callable[["Answer"], dict[str, Any]] | None = None,
        rate: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        close_widget: bool = True,
        display: Callable[[Any], Any] = _display,
    ) -> None:
        import ipywidgets as w

        self.header = w.HTML()
        self.body = w.HTML()
        self.footer = w.HTML()
        self.box = w.VBox([self.header, self.body, self.footer])
        self.throttle = Throttle(rate, clock)
        self.answer: Answer | None = None
        self._render = render
        self._close_widget = close_widget
        self._display = display
        self._handle: Any = None
        self._lock = threading.Lock()
        self._tool_lines: list[str] = []

    # ---- the sink protocol ------------------------------------------------------------------

    def started(self, model: str, thread: str, notice: str | None) -> None:
        self.show()
        self._set_header(f"⏳ {model} · thread {thread}", notice)

    def text(self, delta: str, state: "StreamState") -> None:
        if self.throttle.ready():
            self._set_body(state.text, streaming=True)

    def finished(self, answer: "Answer") -> None:
        with self._lock:
            self.answer = answer
            self.show()
            self._set_body(answer.text)  # the last update is exact, whatever was coalesced
            self._set_header(f"{answer.model} · thread {answer.thread}", answer.notice)
            status = answer.status_line()
            partial = f'<div style="{_PARTIAL_STYLE}">{html.escape(status)}</div>' if status else ""
            self.footer.value = f'{partial}<div style="{_MUTED_STYLE}">{html.escape(answer.footer())}</div>'
            if self._render is not None:
                self._handle.update(self._render(answer), raw=True)
                if self._close_widget:
                    self._close()

    def tool_call(self, name: str, arguments: Any, output: Any) -> None:
        """A tool loop ran a function: list it under the text until the answer ends."""
        self._tool_lines.append(f"🔧 {name}({_short(arguments)}) → {_short(output)}")
        self.footer.value = f'<div style="{_MUTED_STYLE}">{"<br>".join(map(html.escape, self._tool_lines))}</div>'

    # ---- other states -----------------------------------------------------------------------

    def queued(self, model: str, thread: str, job_id: str | None = None) -> None:
        """A background job was submitted: say so until ``finished`` fills the view in."""
        with self._lock:
            if self.answer is not None:  # the job ended before we got here
                return
            self.show()
            self._set_header(f"⏳ {model} · thread {thread}", None)
            job = f" as {html.escape(job_id)}; <code>%nbopenai jobs</code> lists it" if job_id else ""
            self.body.value = f'<div style="{_MUTED_STYLE}">queued…{job}</div>'

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
            self._handle = self._display(self.box)

    # ---- context manager: whatever happens, never leave a spinner behind ------------------

    def __enter__(self) -> "AnswerView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    # ---- helpers ----------------------------------------------------------------------------

    def _close(self) -> None:
        # Closing a box closes neither its children nor their layout/style models: close them all,
        # so a kernel that asked a thousand questions holds no thousand dead widgets.
        for widget in (self.box, self.header, self.body, self.footer):
            for part in (getattr(widget, "layout", None), getattr(widget, "style", None), widget):
                if part is not None:
                    part.close()

    def _set_header(self, title: str, notice: str | None) -> None:
        text = html.escape(title) + (f" — {html.escape(notice)}" if notice else "")
        self.header.value = f'<div style="{_MUTED_STYLE}">{text}</div>'

    def _set_body(self, text: str, *, streaming: bool = False) -> None:
        cursor = "▌" if streaming else ""
        self.body.value = f'<div style="{_TEXT_STYLE}">{html.escape(text)}{cursor}</div>'
