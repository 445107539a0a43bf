"""The replay store: answers ``--replay`` may reuse, by key (``_replay.replay_key``), in SQLite beside the ledger.

The session owns it (opens it on first use, reopens it where the ledger moves, closes it with itself),
so it is a module of its own: ``_replay``'s ``Replays`` drives a session, and the core has no import cycles.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._answer import Answer

if TYPE_CHECKING:
    import sqlite3

    from .._core._settings import Settings

__all__ = ["ReplayStore", "replay_path"]


def m001_replays(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS replays (key TEXT PRIMARY KEY, answer TEXT NOT NULL, created REAL NOT NULL)"
    )


def _schema() -> Any:
    """The store's migrations (``_core._store`` and sqlite3 load on first use, not with the magics)."""
    from .._core._store import Migrations  # noqa: PLC0415 - sqlite3 stays out of %load_ext

    schema = Migrations()
    for step in (m001_replays,):
        schema(step)
    return schema


def replay_path(settings: Settings) -> str:
    """The replay store's file: beside the ledger (in memory when the ledger is)."""
    ledger = settings.resolved_ledger_path
    return ":memory:" if ledger == ":memory:" else str(Path(ledger).expanduser().parent / "replay.sqlite3")


def _stored(answer: Answer) -> str:
    u = answer.usage
    return json.dumps({
        "text": answer.text, "model": answer.model, "response_id": answer.response_id, "status": answer.status,
        "usage": [u.input, u.cached, u.output, u.reasoning, u.estimated], "answered_at": answer.answered_at,
    })


class ReplayStore:
    """Stored answers by ``replay_key``; a disk failure costs a fresh ask, never an error."""

    def __init__(self, path: str = ":memory:") -> None:
        from .._core._store import open_database  # noqa: PLC0415 - sqlite3 stays out of %load_ext

        self._db = open_database(path, migrations=_schema(), label="replay store")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer for ``key``, if any."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT answer FROM replays WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        found = self._db.read_or(read, None, "asking again")
        return json.loads(found) if found else None

    def put(self, key: str, answer: Answer) -> None:
        """Keep ``answer`` for ``key`` if it can be replayed: completed, with a response id, no tool calls."""
        if answer.status != "completed" or not answer.response_id or answer.tool_calls or answer.turn is None:
            return
        record = (key, _stored(answer), time.time())

        from .._core._store import transaction  # noqa: PLC0415 - sqlite3 stays out of %load_ext

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("INSERT OR REPLACE INTO replays (key, answer, created) VALUES (?, ?, ?)", record)

        self._db.read_or(write, None, "not keeping this answer for replay")

    def close(self) -> None:
        self._db.close()
