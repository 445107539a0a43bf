"""What extraction remembers between runs: answers that validated, and the batch jobs it started.

The cache is content-addressed: a row's key is the SHA-256 of (model, schema hash, instructions,
input text), so re-running a cell pays only for rows whose text, schema, model or instructions
changed. Only ``ok`` answers are kept (their JSON and response id); anything that failed is asked
again. Batch records keep enough (batch ids, row keys, the index) for a restarted kernel to collect
the results.

It lives in SQLite next to the usage ledger (``extract.sqlite3``), or in memory when the ledger is
``":memory:"``, opened like every file the package writes (``_core._store``: private, WAL, corruption
recovery). Like the ledger, a broken disk never breaks an extraction: it warns and carries on without
the cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._store import Migrations, open_database, transaction

if TYPE_CHECKING:
    from .._session import Session
    from .._core._settings import Settings

__all__ = ["ExtractStore", "cache_key", "store_for", "store_path"]

_CHUNK = 500  # SQLite's host-parameter limit is 999 on old builds
_SCHEMA = Migrations()


@_SCHEMA
def m001_answers_and_batch_jobs(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS: files made before named migrations already have both tables.
    conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, response_id TEXT, created REAL NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS batch_jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, record TEXT NOT NULL)")


def cache_key(model: str, schema_hash: str, instructions: str | None, text: str) -> str:
    """The content address of one row's answer."""
    payload = json.dumps([model, schema_hash, instructions or "", text], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def store_path(settings: "Settings") -> str:
    ledger = settings.resolved_ledger_path
    return ":memory:" if ledger == ":memory:" else str(Path(ledger).expanduser().parent / "extract.sqlite3")


class ExtractStore:
    """The answer cache and the batch records, in one SQLite database (opened by ``_core._store``).

    Parameters
    ----------
    path
        The SQLite file (created on first use) or ``":memory:"``.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._db = open_database(path, migrations=_SCHEMA, label="extraction cache")
        self.path = self._db.path

    @property
    def notice(self) -> str | None:
        """Set when a corrupt file was moved aside and a fresh one started."""
        return self._db.notice

    def _run(self, operation, fallback):
        return self._db.read_or(operation, fallback, "carrying on without it")

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """The cached ``(answer JSON, response id)`` of each key that has one."""

        def read(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None]]:
            found = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, text, response_id in conn.execute(f"SELECT key, text, response_id FROM answers WHERE key IN ({marks})", chunk):
                    found[key] = (text, response_id)
            return found

        return self._run(read, {}) if keys else {}

    def put_many(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Store ``(key, answer JSON, response id)`` rows in one transaction."""
        now = time.time()
        values = [(key, text, response_id, now) for key, text, response_id in rows]
        if not values:
            return

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO answers (key, text, response_id, created) VALUES (?, ?, ?, ?)", values)

        self._run(write, None)

    def clear(self) -> None:
        """Forget every cached answer (batch records stay)."""
        self._run(lambda conn: conn.execute("DELETE FROM answers"), None)

    def __len__(self) -> int:
        return self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0], 0)

    def save_batch(self, job_id: str, record: dict[str, Any]) -> None:
        text = json.dumps(record)
        self._run(lambda conn: conn.execute("INSERT OR REPLACE INTO batch_jobs (id, created, record) VALUES (?, ?, ?)", (job_id, time.time(), text)), None)

    def load_batch(self, job_id: str) -> dict[str, Any] | None:
        row = self._run(lambda conn: conn.execute("SELECT record FROM batch_jobs WHERE id = ?", (job_id,)).fetchone(), None)
        return json.loads(row[0]) if row else None

    def batch_records(self) -> list[dict[str, Any]]:
        """Every saved batch job, newest first."""
        rows = self._run(lambda conn: conn.execute("SELECT record FROM batch_jobs ORDER BY created DESC").fetchall(), [])
        return [json.loads(text) for (text,) in rows]

    def close(self) -> None:
        self._db.close()


def store_for(session: "Session") -> ExtractStore:
    """The session's store (``Session.extract_store``): it must outlive one call, since an
    in-memory cache is useless otherwise, and belongs to the session, not to this module."""
    return session.extract_store
