"""The notebook as context, core side: cell records (inputs, outputs, errors) and how they are picked.

The IPython edge (``ipython/_history.py``) keeps the records; this module says what an error
record holds, how big it may be, and what ``{In[n]}``, ``{Out[-1]}`` and ``{Err[-2]}`` pick from them.
Nothing here imports IPython.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CellError", "MAX_ERRORS", "MAX_ERROR_CHARS", "MAX_CELL_CHARS", "bounded", "explain_prompt", "pick", "strip_ansi",
]

MAX_ERRORS = 20  # error records kept per session (the oldest go first)
MAX_ERROR_CHARS = 6_000  # a traceback's text, head and tail kept
MAX_CELL_CHARS = 4_000  # a cell's source kept with its error

# CSI sequences (colours, cursor moves) and OSC sequences (hyperlinks, titles).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: its head and, mostly, its tail (where an error says what it is)."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head
    return f"{text[:head]}\n[… {len(text) - limit:,} characters cut …]\n{text[-tail:]}"


@dataclass(frozen=True)
class CellError:
    """One cell's exception as IPython showed it: the cell's number and source, and the traceback as text."""

    number: int
    cell: str
    traceback: str
    name: str = "Exception"

    def explained(self) -> str:
        """The prompt part ``--explain`` sends: the failing cell, then its traceback."""
        return (
            f"Cell In[{self.number}] raised {self.name}.\n\nThe cell:\n```python\n{self.cell}\n```\n\n"
            f"The traceback:\n```\n{self.traceback}\n```"
        )


def pick(records: Iterable[tuple[int, Any]], index: int, *, running: int | None = None) -> Any:
    """The record ``index`` names among ``(number, value)`` pairs in execution order.

    A positive ``index`` is the execution number itself (``In[3]``); a negative one counts back from
    the latest record before the ``running`` cell (``In[-1]``: the cell before this one; ``Err[-1]``:
    the last error). ``LookupError`` when there is no such record (``0`` never names one).
    """
    earlier = [(number, value) for number, value in records if running is None or number < running]
    if index > 0:
        for number, value in earlier:
            if number == index:
                return value
    elif index < 0 and -index <= len(earlier):
        return earlier[index][1]
    raise LookupError(index)


_EXPLAIN = (
    "A cell in my Jupyter notebook raised an error. Explain what caused it, in a few sentences, "
    "and how to fix it."
)
_FIX = " Then give the corrected cell as one complete Python code block (only that one code block)."


def explain_prompt(error: CellError, question: str = "", *, fix: bool = False) -> str:
    """What ``--explain`` sends: the request, the failing cell and its traceback, and the user's own words.

    Built after interpolation, so nothing in a traceback is ever read as ``{name}``.
    """
    asked = f"\n\n{question.strip()}" if question.strip() else ""
    return f"{_EXPLAIN}{_FIX if fix else ''}\n\n{error.explained()}{asked}"
