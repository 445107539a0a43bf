"""The notebook as context, core side: cell records (inputs, outputs, errors) and how they are picked.

The IPython edge (``ipython/_history.py``) keeps the records; this module says what an error
record holds, how big it may be, and what ``{In[n]}``, ``{Out[-1]}`` and ``{Err[-2]}`` pick from them.
Nothing here imports IPython.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core._errors import redact
from .._core._tokens import count_tokens
from ._prompt import short

__all__ = [
    "MAX_CELL_CHARS",
    "MAX_ERRORS",
    "MAX_ERROR_CHARS",
    "VARS_TOKEN_BUDGET",
    "CellError",
    "Variables",
    "bounded",
    "describe",
    "explain_prompt",
    "pick",
    "strip_ansi",
    "variables_summary",
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


# ---- the kernel's variables ----------------------------------------------------------------------

VARS_TOKEN_BUDGET = 1_000
_SAMPLE_VALUES = 3  # values shown per column or collection
_MAX_COLUMNS = 30
_SECRET_NAME = re.compile(r"key|token|secret|passw|credential|(?:^|_)o?auth(?:_|$)", re.IGNORECASE)  # not "author"
_TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_\-.=+/]{24,}")
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit"})


def _kind(value: Any) -> tuple[str, str]:
    cls = type(value)
    return cls.__module__.split(".")[0], cls.__name__


def _looks_secret(name: str, value: Any) -> bool:
    if _SECRET_NAME.search(name) or _kind(value) == ("nbopenai", "Secret"):
        return True
    if isinstance(value, str) and value:
        token = _TOKEN_SHAPED.fullmatch(value) and re.search(r"[0-9]", value) and re.search(r"[A-Za-z]", value)
        return bool(token) or redact(value) != value
    return False


def _shown(name: str, value: Any) -> bool:
    """Whether a variable belongs in the summary: no private or IPython names, modules, callables or secrets."""
    if name.startswith("_") or name in _IPYTHON_NAMES:
        return False
    if isinstance(value, types.ModuleType) or callable(value):
        return False
    return not _looks_secret(name, value)


def _values(values: Iterable[Any], total: int) -> str:
    """The first values, ``…`` if there are more than those (``total``)."""
    shown = [short(v, 30) for v in values]
    return "[" + ", ".join(shown + (["…"] if total > len(shown) else [])) + "]"


def _frame_line(frame: Any) -> str:
    """A DataFrame's shape and each column's dtype and first values, from its head only (never the whole frame)."""
    head = frame.head(_SAMPLE_VALUES)
    dtypes = list(frame.dtypes.items())[:_MAX_COLUMNS]
    columns = [f"{short(c, 40)} {t} {_values(head[c].tolist(), len(frame))}" for c, t in dtypes]
    more = len(frame.columns) - _MAX_COLUMNS
    return f"DataFrame {len(frame):,} rows × {frame.shape[1]} columns: " + "; ".join(columns) + (
        f"; … {more:,} more columns" if more > 0 else ""
    )


def describe(value: Any) -> str:
    """One line saying what ``value`` is: type, shape or length, a few values (rounded); bounded in size."""
    package, name = _kind(value)
    if package == "pandas" and name == "DataFrame":
        return _frame_line(value)
    if package == "pandas" and name == "Series":
        label = f" {short(value.name, 40)!r}" if value.name is not None else ""
        first = _values(value.head(_SAMPLE_VALUES).tolist(), len(value))
        return f"Series{label} {len(value):,} values {value.dtype} {first}"
    if package == "numpy" and name == "ndarray":
        return f"ndarray shape {value.shape} {value.dtype}"
    if isinstance(value, (bool, int, float, complex)) or value is None:
        return f"{name} {short(value)}"
    if isinstance(value, (str, bytes)):
        return f"{name} of {len(value):,} characters: {short(repr(value), 80)}"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        items = list(value)[:_SAMPLE_VALUES] if not isinstance(value, (set, frozenset)) else []
        sample = f" {'keys ' if isinstance(value, dict) else ''}{_values(items, len(value))}" if items else ""
        return f"{name} of {len(value):,} items{sample}"
    return name if package == "builtins" else f"{package}.{name}"  # nothing of an unknown object runs


def variables_summary(namespace: Mapping[str, Any], budget: int = VARS_TOKEN_BUDGET) -> str:
    """The user's variables, one line each (the newest first kept when over ``budget`` tokens)."""
    lines: list[str] = []
    used = 0
    candidates = [(name, value) for name, value in namespace.items() if _shown(name, value)]
    left_out = 0
    for name, value in reversed(candidates):
        line = f"- {name}: {describe(value)}"
        cost = count_tokens(line) + 1
        if used + cost > budget:
            left_out += 1
            continue
        lines.append(line)
        used += cost
    lines.reverse()
    if not lines and not left_out:
        return "(no variables defined yet)"
    return "\n".join(lines) + (f"\n({left_out} more variables not shown)" if left_out else "")


class Variables:
    """``{vars}``: the summary of ``namespace``, made only if the prompt asks for it (when shown)."""

    def __init__(self, namespace: Mapping[str, Any], budget: int = VARS_TOKEN_BUDGET) -> None:
        self._namespace, self._budget = namespace, budget

    def __str__(self) -> str:
        return "The kernel's variables:\n" + variables_summary(self._namespace, self._budget)
