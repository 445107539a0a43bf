"""Tools that never run twice: the record of each side-effecting call, by ``call_id``.

A tool marked ``@nbopenai.tool(side_effects=True)`` (it sends mail, inserts rows, spends money) runs
at most once per ``call_id``, across retried rounds, re-run cells and kernel restarts. Before it runs,
its call is claimed in ``tool_calls.sqlite3`` in the data folder (next to the usage ledger, in memory
with it; opened by ``_core._store``); after, its output is kept there. The same call asked again gets
the kept output, sent to the model as the first time, and the note ``ALREADY_DONE``, which the answer
view shows. A call that was claimed but never finished (the kernel died while it ran) may have had its
effect: it is not run again either, and the model is told so. If the record cannot be written, the
tool is not run: at most once is the promise.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core._store import Migrations, open_database, transaction

__all__ = ["ALREADY_DONE", "STARTED_BEFORE", "Recorded", "ToolLedger", "side_effects", "tool", "tool_ledger_path"]

ALREADY_DONE = "not run again: already done for this call"
STARTED_BEFORE = "not run again: started before and did not finish; it may have had its effect"
# The attribute ``tool(side_effects=True)`` sets on a function.
_MARK = "__nbopenai_side_effects__"

_SCHEMA = Migrations()


@_SCHEMA
def m001_tool_calls(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tool_calls (call_id TEXT NOT NULL, tool TEXT NOT NULL, arguments TEXT NOT NULL, "
        "output TEXT, error TEXT, started REAL NOT NULL, finished REAL, PRIMARY KEY (call_id, tool))"
    )


def tool(function: Callable[..., Any] | None = None, *, side_effects: bool = False) -> Any:
    """Mark ``function`` as a tool; ``side_effects=True``: run at most once per call (see ``_tool_ledger``).

    The function is returned as it is (still callable by you); pass it in ``tools=[...]`` or ``--tools``.

    >>> @tool(side_effects=True)
    ... def send_mail(to: str, text: str) -> str:
    ...     return "sent"
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _MARK, bool(side_effects))
        return fn

    return mark if function is None else mark(function)


def side_effects(function: Any) -> bool:
    """Whether ``function`` was marked ``tool(side_effects=True)`` (also through ``functools.partial``)."""
    while isinstance(function, functools.partial):
        function = function.func
    return bool(getattr(function, _MARK, False))


def tool_ledger_path(ledger_path: str) -> str:
    """Beside the usage ledger (``":memory:"`` with it, as for the offline demo)."""
    return (
        ":memory:" if ledger_path == ":memory:" else str(Path(ledger_path).expanduser().parent / "tool_calls.sqlite3")
    )


@dataclass(frozen=True)
class Recorded:
    """What an earlier run of a call left: its output (``None`` if it never finished) and error."""

    output: str | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.output is not None


class ToolLedger:
    """The side-effecting calls run so far and what they gave, in one SQLite file."""

    def __init__(self, path: str = ":memory:") -> None:
        self._db = open_database(path, migrations=_SCHEMA, label="record of tool calls")
        self.path = self._db.path

    def claim(self, call_id: str, tool_name: str, arguments: str) -> Recorded | None:
        """Record that the call is about to run (``None``), or return what an earlier run of it left.

        Raises ``sqlite3.Error`` or ``OSError`` when the record cannot be written: then do not run it.
        """

        def claim(conn: sqlite3.Connection) -> Recorded | None:
            with transaction(conn):
                found = conn.execute(
                    "SELECT output, error FROM tool_calls WHERE call_id = ? AND tool = ?", (call_id, tool_name)
                ).fetchone()
                if found is not None:
                    return Recorded(*found)
                conn.execute(
                    "INSERT INTO tool_calls (call_id, tool, arguments, started) VALUES (?, ?, ?, ?)",
                    (call_id, tool_name, arguments, time.time()),
                )
                return None

        return self._db.run(claim)

    def finish(self, call_id: str, tool_name: str, output: str, error: str | None) -> None:
        """Keep the call's output (sent again, instead of running it, if the call comes back)."""
        try:
            self._db.write(
                lambda conn: conn.execute(
                    "UPDATE tool_calls SET output = ?, error = ?, finished = ? WHERE call_id = ? AND tool = ?",
                    (output, error, time.time(), call_id, tool_name),
                )
            )
        except (sqlite3.Error, OSError) as exc:
            self._db.warn_once(
                f"could not keep the output of {tool_name} in {self.path} ({exc}); "
                "the call stays recorded as started, so it is not run again either"
            )

    def release(self, call_id: str, tool_name: str) -> None:
        """Forget a claimed call that did not run (the user declined it): it may be asked and run later."""
        self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM tool_calls WHERE call_id = ? AND tool = ? AND finished IS NULL", (call_id, tool_name)
            )
        )

    def close(self) -> None:
        self._db.close()
