"""``AnswerWidget``: the live answer's front-end model, an anywidget (``_answer_view.js``, no build step).

The answer's text never lives in a synced trait while it streams: ``append`` sends only what is
new in a custom message, and the browser appends it. Small traits carry the header, a muted note,
the partial-answer status and the footer; ``text`` is set once, when the widget stays as the final
display (so a re-render after a page reload still shows the whole answer).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anywidget
import traitlets

__all__ = ["AnswerWidget"]

_HERE = Path(__file__).parent


def _source(name: str) -> str:
    """A front-end file's text without its whole-line comments (they would travel with every answer)."""
    lines = (_HERE / name).read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("//"))


class AnswerWidget(anywidget.AnyWidget):
    """One live answer in the browser; ``AnswerView`` drives it."""

    # Sources passed as text, not paths: a path outside site-packages makes anywidget watch the file.
    _esm = _source("_answer_view.js")
    _css = _source("_answer_view.css")

    key = traitlets.Unicode().tag(sync=True)  # finds the text the front-end model gathered
    header = traitlets.Unicode("").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    footer = traitlets.Unicode("").tag(sync=True)
    streaming = traitlets.Bool(False).tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **traits: object) -> None:
        super().__init__(key=uuid.uuid4().hex, **traits)

    def append(self, delta: str) -> None:
        """Send ``delta``; the front-end appends it to the text shown."""
        if delta:
            self.send({"append": delta})

    def restart(self, text: str = "") -> None:
        """Replace the text shown (a new response of the same turn starts streaming: with nothing)."""
        self.send({"reset": text})

    def __repr__(self) -> str:
        # What a front-end without the widget manager shows (text/plain) while the answer streams.
        return "AnswerWidget(an nbopenai answer streams here; the live view needs the Jupyter widgets front-end)"
