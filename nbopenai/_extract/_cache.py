"""What extraction remembers between runs: answers that validated, and the batch jobs it started.

The cache is content-addressed: a row's key is the SHA-256 of the endpoint (base URL, organisation,
project; Azure's resource, API version and the deployment's model), every request field that shapes the
answer (model, instructions, schema, temperature,
reasoning, output limits, ...: the exact request, less the fields that cannot change an answer) and
the row's input. Re-running a cell pays only for rows whose answer could differ; another endpoint or
another temperature is asked afresh. Only ``ok`` answers are kept (their JSON and response id), written
as they arrive; anything that failed is asked again. Batch records keep enough (batch ids, row keys, the
index) for a restarted kernel to collect
the results.

It lives in SQLite next to the usage ledger (``extract.sqlite3``), or in memory when the ledger is
``":memory:"``, opened like every file the package writes (``_core._store``: private, WAL, corruption
recovery). Like the ledger, a broken disk never breaks an extraction: it warns and carries on without
the cache.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._store import Migrations, open_database, transaction

if TYPE_CHECKING:
    from .._core._settings import Settings
    from ._rows import RowResult

__all__ = ["AnswerWriter", "CacheSize", "ExtractStore", "cache_key", "request_scope", "store_path"]

_CHUNK = 500  # SQLite's host-parameter limit is 999 on old builds
_SCHEMA = Migrations()


@_SCHEMA
def m001_answers_and_batch_jobs(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS: files made before named migrations already have both tables.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS answers "
        "(key TEXT PRIMARY KEY, text TEXT NOT NULL, response_id TEXT, created REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS batch_jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, record TEXT NOT NULL)"
    )


@_SCHEMA
def m002_keys_cover_endpoint_and_options(conn: sqlite3.Connection) -> None:
    # Keys now cover the endpoint and every answer-shaping option: no older key can match again,
    # so those answers are dropped. The model and schema are kept per answer for `%nbopenai cache`.
    conn.execute("DELETE FROM answers")
    conn.execute("ALTER TABLE answers ADD COLUMN model TEXT")
    conn.execute("ALTER TABLE answers ADD COLUMN schema TEXT")


# Request fields that cannot change an answer (where it is stored, how it is delivered, who asked):
# left out of the key so that changing them keeps the cache. Anything else, including fields added
# later, is part of the key: a field wrongly kept costs a re-ask, a field wrongly left out a wrong answer.
_NOT_ANSWER_SHAPING = frozenset(
    {
        "store",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
        "stream",
        "background",
        "input",
    }
)
_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def request_scope(settings: Settings, params: dict[str, Any]) -> str:
    """The hash of what shapes every row's answer but its input: the endpoint and the request ``params``."""
    endpoint = {
        "base_url": (settings.base_url or _DEFAULT_BASE_URL).rstrip("/"),
        "organization": settings.organization,
        "project": settings.project,
        # Azure: the resource and API version; a model name is a deployment there, so the model it runs counts too.
        "azure_endpoint": (settings.azure_endpoint or "").rstrip("/") or None,
        "api_version": settings.api_version,
        "deployment_of": settings.deployments.get(params.get("model")),
    }
    request = {name: value for name, value in params.items() if name not in _NOT_ANSWER_SHAPING}
    return _digest([endpoint, request])


def cache_key(scope: str, row_input: Any) -> str:
    """The content address of one row's answer: its ``request_scope`` and its input (text, or content parts)."""
    return _digest([scope, row_input])


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def store_path(settings: Settings) -> str:
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
                for key, text, response_id in conn.execute(
                    f"SELECT key, text, response_id FROM answers WHERE key IN ({marks})", chunk
                ):
                    found[key] = (text, response_id)
            return found

        return self._run(read, {}) if keys else {}

    def put_many(
        self, rows: Iterable[tuple[str, str, str | None]], *, model: str | None = None, schema: str | None = None
    ) -> None:
        """Store ``(key, answer JSON, response id)`` rows in one transaction; ``model`` and ``schema`` label them."""
        now = time.time()
        values = [(key, text, response_id, now, model, schema) for key, text, response_id in rows]
        if not values:
            return

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO answers (key, text, response_id, created, model, schema) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    values,
                )

        self._run(write, None)

    def clear(self, *, schema: str | None = None, model: str | None = None) -> int:
        """Forget the cached answers (those of ``schema`` and/or ``model`` only, if given); returns how many.

        Batch records stay. Emptied completely, the file is compacted too (when no other kernel is using it).
        """
        clauses = [f"{column} = ?" for column, value in (("schema", schema), ("model", model)) if value is not None]
        params = [value for value in (schema, model) if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        removed = self._run(lambda conn: conn.execute(f"DELETE FROM answers{where}", params).rowcount, 0)
        if not clauses:
            self._run(_compact_quietly, None)
        return removed

    def size(self) -> CacheSize:
        """How many answers the cache holds, per schema and model, and the bytes its files take."""
        query = (
            "SELECT schema, model, COUNT(*) FROM answers GROUP BY schema, model ORDER BY COUNT(*) DESC, schema, model"
        )
        groups = self._run(lambda conn: conn.execute(query).fetchall(), [])
        disk = 0
        if self.path != ":memory:":
            for suffix in ("", "-wal"):
                try:
                    disk += os.stat(self.path + suffix).st_size
                except OSError:
                    pass
        return CacheSize(self.path, sum(n for _, _, n in groups), disk, tuple(groups))

    def __len__(self) -> int:
        return self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0], 0)

    def save_batch(self, job_id: str, record: dict[str, Any]) -> None:
        text = json.dumps(record)
        self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO batch_jobs (id, created, record) VALUES (?, ?, ?)", (job_id, time.time(), text)
            ),
            None,
        )

    def load_batch(self, job_id: str) -> dict[str, Any] | None:
        row = self._run(
            lambda conn: conn.execute("SELECT record FROM batch_jobs WHERE id = ?", (job_id,)).fetchone(), None
        )
        return json.loads(row[0]) if row else None

    def batch_records(self) -> list[dict[str, Any]]:
        """Every saved batch job, newest first."""
        rows = self._run(
            lambda conn: conn.execute("SELECT record FROM batch_jobs ORDER BY created DESC").fetchall(), []
        )
        return [json.loads(text) for (text,) in rows]

    def close(self) -> None:
        self._db.close()


@dataclass
class AnswerWriter:
    """Answers written to the cache as they arrive, in small transactions, so a kernel that dies keeps them.

    ``add`` is the runner's ``on_row_done`` (called on the loop as each row ends); ``flush`` runs in the
    caller's thread between progress ticks and writes once ``rows`` answers wait or the oldest has waited
    ``seconds``. It flushes the ledger first: an answer's ledger row is buffered before its row ends, so
    every answer the cache holds after a crash has its billed call in the ledger.

    Parameters
    ----------
    store
        Where the answers go.
    keys
        Each row's cache key, by position.
    model, schema
        The labels ``%nbopenai cache`` shows and clears by.
    rows, seconds
        Write when this many answers wait, or the oldest has waited this long.
    """

    store: ExtractStore
    keys: Sequence[str]
    model: str
    schema: str
    rows: int = 50
    seconds: float = 1.0
    _waiting: collections.deque[tuple[float, tuple[str, str, str | None]]] = field(default_factory=collections.deque)

    def add(self, position: int, result: RowResult) -> None:
        """Keep a row's answer for the next write if it is a new ``ok`` one."""
        if result.status == "ok" and not result.from_cache and result.text is not None:
            self._waiting.append((time.monotonic(), (self.keys[position], result.text, result.response_id)))

    def flush(self, *, ledger_first: Callable[[], None], due_only: bool = False) -> None:
        """Write the waiting answers (``due_only``: only when enough wait, or long enough), after ``ledger_first()``."""
        waiting = len(self._waiting)  # these rows ended, so their ledger rows are buffered already
        ledger_first()
        if not waiting:
            return
        if due_only and waiting < self.rows and time.monotonic() - self._waiting[0][0] < self.seconds:
            return
        answers = [self._waiting.popleft()[1] for _ in range(waiting)]
        self.store.put_many(answers, model=self.model, schema=self.schema)


def _compact_quietly(conn: sqlite3.Connection) -> None:
    """Give an emptied file's pages back to the disk; skipped while another kernel holds it."""
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:
        pass


@dataclass(frozen=True)
class CacheSize:
    """What the extraction cache holds (``ExtractStore.size``): answers per (schema, model), bytes on disk."""

    path: str
    answers: int
    disk_bytes: int
    groups: tuple[tuple[str | None, str | None, int], ...]

    def __str__(self) -> str:
        where = "in memory" if self.path == ":memory:" else f"at {self.path}, {_megabytes(self.disk_bytes)} on disk"
        lines = [f"Extraction cache {where}: {self.answers:,} answer{'s' if self.answers != 1 else ''}."]
        lines += [f"  {schema or '?'} with {model or '?'}: {count:,}" for schema, model, count in self.groups]
        if self.answers:
            lines.append("`%nbopenai cache clear` empties it (--schema NAME, --model NAME: only those answers).")
        return "\n".join(lines)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"
