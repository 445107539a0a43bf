"""The usage ledger: one row per API call, in a SQLite file shared by every kernel of the user.

Several kernels, processes and threads may write at once (WAL mode, ``BEGIN IMMEDIATE``, a busy
timeout), and writing never raises into an answer: if the disk fails, rows are kept in memory and a
warning is shown once; a corrupt file is moved aside and a fresh one started, with a ``notice``.

pandas and matplotlib are imported only inside the methods that need them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._errors import UsageError

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

    from ._prices import PriceTable

__all__ = ["UsageRecord", "Totals", "Ledger"]

_BUSY_TIMEOUT_S = 10.0
_TOKEN_FIELDS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")

# A call stopped on our side may still have been billed for a partial answer the server never
# reported; with no usage and no token counts from the caller its cost is unknown, not zero.
_MAY_BE_BILLED_WITHOUT_USAGE = frozenset({"interrupted", "cancelled"})


@dataclass(frozen=True)
class UsageRecord:
    """One API call as the ledger stores it.

    ``kind`` is one of ``ask``, ``extract``, ``background``, ``batch``, ``tool``, ``compact``;
    ``status`` one of ``completed``, ``incomplete``, ``failed``, ``error``, ``rate_limited``,
    ``cancelled``, ``interrupted``. ``cached_tokens`` is part of ``input_tokens`` and
    ``reasoning_tokens`` part of ``output_tokens``, as the API reports them. ``cost_usd`` is
    ``None`` when the model has no known price: never a guessed number.
    """

    time: float
    session_id: str
    kind: str
    model: str
    status: str
    thread: str | None = None
    cell_id: str | None = None
    response_id: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    latency_s: float | None = None
    ttft_s: float | None = None
    cost_usd: float | None = None
    attempt: int = 1
    error: str | None = None

    @classmethod
    def from_usage(cls, usage: Any, *, prices: "PriceTable", **fields: Any) -> "UsageRecord":
        """A record from an API ``usage`` object, with its cost estimated from ``prices``.

        Parameters
        ----------
        usage
            An openai ``ResponseUsage``, a dict of the same shape, or ``None`` (no usage reported).
            Chat Completions names (``prompt_tokens``, ``completion_tokens``) are read too.
        prices
            The price table for ``cost_usd``, at the call's ``time``.
        **fields
            The other fields (``time``, ``session_id``, ``kind``, ``model``, ``status`` at least);
            any token count or ``cost_usd`` given here wins over what ``usage`` says.
        """
        values = {**_token_counts(usage), **fields}
        values.setdefault("total_tokens", values.get("input_tokens", 0) + values.get("output_tokens", 0))
        if "cost_usd" not in fields:
            unreported = (
                usage is None
                and fields.get("status") in _MAY_BE_BILLED_WITHOUT_USAGE
                and not any(name in fields for name in _TOKEN_FIELDS)
            )
            values["cost_usd"] = None if unreported else prices.cost(
                fields["model"],
                values.get("input_tokens", 0),
                values.get("cached_tokens", 0),
                values.get("output_tokens", 0),
                at=fields.get("time"),
            )
        return cls(**values)


def _token_counts(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    input_tokens = _first(usage, ("input_tokens",), ("prompt_tokens",))
    output_tokens = _first(usage, ("output_tokens",), ("completion_tokens",))
    total_tokens = _first(usage, ("total_tokens",))
    return {
        "input_tokens": input_tokens,
        "cached_tokens": _first(usage, ("input_tokens_details", "cached_tokens"), ("prompt_tokens_details", "cached_tokens")),
        "output_tokens": output_tokens,
        "reasoning_tokens": _first(
            usage, ("output_tokens_details", "reasoning_tokens"), ("completion_tokens_details", "reasoning_tokens")
        ),
        "total_tokens": total_tokens or input_tokens + output_tokens,
    }


def _first(obj: Any, *paths: tuple[str, ...]) -> int:
    """The first of ``paths`` (attribute or key chains) that leads to a number in ``obj``, else 0."""
    for path in paths:
        value = obj
        for name in path:
            value = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
            if value is None:
                break
        if value is not None:
            return int(value)
    return 0


@dataclass(frozen=True)
class Totals:
    """Sums over ledger rows.

    ``cost_usd`` sums the rows whose cost is known; when ``cost_complete`` is ``False`` some row had
    no price, so the true cost is higher than ``cost_usd``.
    """

    calls: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    cost_complete: bool = True

    @classmethod
    def of(cls, records: Iterable[UsageRecord]) -> "Totals":
        records = list(records)
        return cls(
            len(records),
            *(sum(getattr(r, name) for r in records) for name in _TOKEN_FIELDS),
            cost_usd=sum(r.cost_usd for r in records if r.cost_usd is not None),
            cost_complete=all(r.cost_usd is not None for r in records),
        )

    def __add__(self, other: "Totals") -> "Totals":
        if not isinstance(other, Totals):
            return NotImplemented
        return Totals(
            *(a + b for a, b in zip(astuple(self)[:-1], astuple(other)[:-1])),
            cost_complete=self.cost_complete and other.cost_complete,
        )


_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_PANDAS_DTYPES = {"str": "string", "str | None": "string", "int": "Int64", "float | None": "Float64"}

# Each step brings the schema up by one version; add columns with a DEFAULT so that an older
# nbopenai, which names its columns when inserting, can still write to a newer file.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            session_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            thread TEXT,
            cell_id TEXT,
            response_id TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            latency_s REAL,
            ttft_s REAL,
            cost_usd REAL,
            attempt INTEGER NOT NULL DEFAULT 1,
            error TEXT
        )""",
        "CREATE INDEX usage_by_session ON usage (session_id, time)",
        "CREATE INDEX usage_by_time ON usage (time)",
    ),
)


class Ledger:
    """Every API call's tokens, latency and cost, in SQLite.

    Parameters
    ----------
    path
        The SQLite file (parent folders are created, owner-only), or ``":memory:"``.

    Attributes
    ----------
    notice
        Set when a corrupt file was moved aside and a fresh one started; show it to the user.
    """

    def __init__(self, path: str | os.PathLike = ":memory:") -> None:
        self.path = ":memory:" if str(path) == ":memory:" else str(Path(path).expanduser())
        self.notice: str | None = None
        # One connection behind a lock rather than one per thread: ":memory:" is per connection,
        # recovering from corruption must swap every connection at once, and close() must be able
        # to close it from any thread. Writers in one process serialise in SQLite anyway; other
        # processes are kept safe by WAL, BEGIN IMMEDIATE and the busy timeout.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._file_identity: tuple[int, int] | None = None
        self._unsaved: list[UsageRecord] = []
        self._warned = False
        try:
            self._with_connection(lambda conn: None)
        except (sqlite3.Error, OSError) as exc:
            self._warn_once(f"could not open the usage ledger at {self.path} ({exc}); usage is kept in memory")

    def record(self, rec: UsageRecord) -> None:
        """Store one call. Never raises: on failure the row is kept in memory and a warning shown once."""
        self.record_many([rec])

    def record_many(self, recs: Sequence[UsageRecord]) -> None:
        """Store several calls in one transaction (extraction writes its rows this way)."""
        if not recs:
            return
        with self._lock:
            rows = [*self._unsaved, *recs]
            try:
                self._with_connection(lambda conn: _insert(conn, rows))
            except _REFUSED_ROW as exc:
                # A row the schema refuses would fail every later write if kept for a retry:
                # save the others one by one and drop only the refused ones, with a warning.
                self._unsaved = [row for row in rows if not self._insert_or_refuse(row)]
                self._warn_once(f"the usage ledger refused a row ({exc}); it was dropped, the others were kept")
            except Exception as exc:  # an answer must never fail because its bookkeeping did
                self._unsaved.extend(recs)
                self._warn_once(
                    f"could not write to the usage ledger at {self.path} ({exc}); "
                    "keeping usage in memory and retrying with the next call"
                )
            else:
                self._unsaved.clear()
                self._warned = False

    def _insert_or_refuse(self, row: UsageRecord) -> bool:
        """Insert one row; True when it is saved or refused for good, False to keep it for a retry."""
        try:
            self._with_connection(lambda conn: _insert(conn, [row]))
        except _REFUSED_ROW:
            return True
        except Exception:  # disk full, locked, read-only: worth another try with the next call
            return False
        return True

    def records(
        self,
        *,
        session_id: str | None = None,
        model: str | None = None,
        thread: str | None = None,
        since: dt.datetime | dt.date | float | str | None = None,
        kind: str | None = None,
    ) -> list[UsageRecord]:
        """Stored calls, oldest first, matching every filter given.

        Parameters
        ----------
        session_id, model, thread, kind
            Exact values to match.
        since
            Only calls at or after: a ``datetime``/``date`` (naive means local time), epoch seconds,
            an ISO date or datetime string, or a duration back from now such as ``"30m"``, ``"1h"``,
            ``"2d"``, ``"1w"``.
        """
        wanted = _Filter.build(session_id=session_id, model=model, thread=thread, since=since, kind=kind)
        where, params = wanted.sql()
        query = f"SELECT {', '.join(_COLUMNS)} FROM usage {where} ORDER BY time, id"
        with self._lock:
            saved = self._read(lambda conn: [UsageRecord(*row) for row in conn.execute(query, params)], [])
            unsaved = [rec for rec in self._unsaved if wanted.matches(rec)]
        return sorted(saved + unsaved, key=lambda rec: rec.time) if unsaved else saved

    def totals(self, **filters: Any) -> Totals:
        """Sums over the calls matching ``filters`` (those of :meth:`records`, e.g. ``session_id``)."""
        wanted = _Filter.build(**filters)
        where, params = wanted.sql()
        query = (
            "SELECT COUNT(*), "
            + ", ".join(f"COALESCE(SUM({name}), 0)" for name in _TOKEN_FIELDS)
            + f", COALESCE(SUM(cost_usd), 0.0), COUNT(*) - COUNT(cost_usd) FROM usage {where}"
        )

        def aggregate(conn: sqlite3.Connection) -> Totals:
            calls, *tokens, cost, unpriced = conn.execute(query, params).fetchone()
            return Totals(calls, *tokens, cost_usd=cost, cost_complete=unpriced == 0)

        with self._lock:
            saved = self._read(aggregate, Totals())
            return saved + Totals.of(rec for rec in self._unsaved if wanted.matches(rec))

    def to_dataframe(self, **filters: Any) -> "pandas.DataFrame":
        """The calls matching ``filters`` (those of :meth:`records`) as a DataFrame.

        Columns follow :class:`UsageRecord`; ``time`` is a UTC datetime, and the other columns use
        pandas' nullable dtypes (``string``, ``Int64``, ``Float64``) so a missing cost is ``<NA>``.
        """
        import pandas as pd

        records = self.records(**filters)
        columns: dict[str, Any] = {}
        for field in fields(UsageRecord):
            values = [getattr(rec, field.name) for rec in records]
            if field.name == "time":
                columns["time"] = pd.to_datetime(pd.Series(values, dtype="float64"), unit="s", utc=True)
            else:
                columns[field.name] = pd.array(values, dtype=_PANDAS_DTYPES[field.type])
        return pd.DataFrame(columns)

    def summary(self, **filters: Any) -> "pandas.DataFrame":
        """Calls, tokens, cost and mean latencies per model and thread, for the calls matching ``filters``.

        ``cost_usd`` is ``<NA>`` for a group with any unpriced call, and ``cost_complete`` says so.
        """
        frame = self.to_dataframe(**filters)
        grouped = frame.groupby(["model", "thread"], dropna=False, sort=True)
        table = grouped.agg(
            calls=("session_id", "size"),
            **{name: (name, "sum") for name in _TOKEN_FIELDS},
            cost_usd=("cost_usd", "sum"),
            priced_calls=("cost_usd", "count"),
            mean_latency_s=("latency_s", "mean"),
            mean_ttft_s=("ttft_s", "mean"),
        ).reset_index()
        table["cost_complete"] = table["priced_calls"] == table["calls"]
        table["cost_usd"] = table["cost_usd"].astype("Float64").where(table["cost_complete"])
        table["calls"] = table["calls"].astype("Int64")
        columns = ["model", "thread", "calls", *_TOKEN_FIELDS, "cost_usd", "cost_complete", "mean_latency_s", "mean_ttft_s"]
        return table[columns]

    def plot(self, **filters: Any) -> "Figure":
        """A matplotlib Figure of cumulative tokens and cost over time for the calls matching ``filters``.

        Needs matplotlib (``pip install 'nbopenai[plot]'``).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise UsageError("plotting usage needs matplotlib: pip install 'nbopenai[plot]'") from exc
        frame = self.to_dataframe(**filters)
        fig, (tokens_ax, cost_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
        # Closed at once so Jupyter shows the returned figure once, not again at the end of the cell.
        plt.close(fig)
        if frame.empty:
            tokens_ax.text(0.5, 0.5, "no usage recorded yet", ha="center", va="center", transform=tokens_ax.transAxes)
            return fig
        when = frame["time"].dt.tz_convert(None)
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            tokens_ax.step(when, frame[name].astype("int64").cumsum(), where="post", label=name.replace("_", " "))
        tokens_ax.set_ylabel("tokens (cumulative)")
        tokens_ax.legend(loc="upper left")
        unpriced = int(frame["cost_usd"].isna().sum())
        cost_ax.step(when, frame["cost_usd"].fillna(0.0).astype("float64").cumsum(), where="post", color="tab:green")
        label = "cost, USD (cumulative)"
        cost_ax.set_ylabel(label if not unpriced else f"{label}\nexcludes {unpriced} unpriced calls")
        cost_ax.set_xlabel("time (UTC)")
        fig.autofmt_xdate()
        return fig

    def close(self) -> None:
        """Close the database connection; a later call opens it again (a ``":memory:"`` ledger starts empty)."""
        with self._lock:
            self._close_connection()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

    def _with_connection(self, operation):
        """``operation(connection)``; a corrupt file is moved aside and the operation run again on a fresh one."""
        with self._lock:
            try:
                return operation(self._connection())
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) or self.path == ":memory:":
                    raise
                self._move_corrupt_file_aside()
                return operation(self._connection())

    def _read(self, operation, fallback):
        # Reads feed the budget check before every call, so a broken disk must not block asking.
        try:
            return self._with_connection(operation)
        except (sqlite3.Error, OSError) as exc:
            self._warn_once(f"could not read the usage ledger at {self.path} ({exc}); showing unsaved usage only")
            return fallback

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._same_file():
            return self._conn
        # First use, after close(), or the file was replaced (another kernel moved a corrupt one aside).
        self._close_connection()
        if self.path != ":memory:":
            _create_private_file(Path(self.path))
            stat = os.stat(self.path)
            self._file_identity = (stat.st_dev, stat.st_ino)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            _enable_wal(conn)
            # NORMAL in WAL mode survives an application crash; only a power cut can lose the last
            # rows, a fair price for not syncing the disk on every call.
            conn.execute("PRAGMA synchronous=NORMAL")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _same_file(self) -> bool:
        return self.path == ":memory:" or self._same_file_as(self._file_identity)

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _move_corrupt_file_aside(self) -> None:
        corrupt_identity = self._file_identity
        self._close_connection()
        if not self._same_file_as(corrupt_identity):
            return  # another kernel has already moved it aside and started a fresh one
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = f"{self.path}.corrupt-{stamp}"
        n = 1
        while os.path.exists(aside):
            aside = f"{self.path}.corrupt-{stamp}-{n}"
            n += 1
        # The -wal and -shm files travel with it: left behind, SQLite would replay them into the fresh file.
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(self.path + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        self.notice = f"usage ledger at {self.path} was corrupt; moved to {aside}, started a fresh one"
        warnings.warn(self.notice, RuntimeWarning, stacklevel=4)

    def _same_file_as(self, identity: tuple[int, int] | None) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == identity

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=4)


# Errors about the row itself (a NOT NULL column left empty, a value SQLite cannot store), as
# opposed to the disk or the lock: retrying such a row can never succeed.
_REFUSED_ROW = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError)


# Rows per INSERT statement. One multi-row statement is one step of SQLite, so the GIL is released
# and re-taken once per chunk rather than once per row: a flush from the kernel's main thread then
# barely disturbs extraction's event loop running in another thread.
_ROWS_PER_STATEMENT = 400


def _insert(conn: sqlite3.Connection, rows: list[UsageRecord]) -> None:
    row_placeholders = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    conn.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            values = ", ".join([row_placeholders] * len(chunk))
            conn.execute(
                f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES {values}",
                [getattr(row, column) for row in chunk for column in _COLUMNS],
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        # A newer nbopenai's file (version beyond ours) is used as is: its extra columns have defaults.
        for step in _MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        if version < len(_MIGRATIONS):
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(_MIGRATIONS),))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one worth reporting


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a new ledger file to WAL, waiting while another process does the same.

    Changing the journal mode fails at once with "database is locked" when another connection
    holds the file (two kernels opening a fresh ledger together): SQLite does not call the busy
    handler for it. So retry, with the same patience as every other write.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _create_private_file(path: Path) -> None:
    """Create ``path`` (and missing folders) readable by the owner only; leave an existing file alone."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another kernel made it first
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


@dataclass(frozen=True)
class _Filter:
    """The filters of :meth:`Ledger.records`, as SQL for stored rows and as a test for unsaved ones."""

    session_id: str | None = None
    model: str | None = None
    thread: str | None = None
    kind: str | None = None
    since: float | None = None

    @classmethod
    def build(cls, *, session_id=None, model=None, thread=None, since=None, kind=None) -> "_Filter":
        return cls(session_id, model, thread, kind, _since_epoch(since))

    def _equalities(self) -> dict[str, str]:
        names = ("session_id", "model", "thread", "kind")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def sql(self) -> tuple[str, list]:
        clauses = [f"{name} = ?" for name in self._equalities()]
        params: list = list(self._equalities().values())
        if self.since is not None:
            clauses.append("time >= ?")
            params.append(self.since)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def matches(self, rec: UsageRecord) -> bool:
        if any(getattr(rec, name) != value for name, value in self._equalities().items()):
            return False
        return self.since is None or rec.time >= self.since


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _since_epoch(since: dt.datetime | dt.date | float | str | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, bool):
        raise UsageError(f"since must be a time, not {since!r}")
    if isinstance(since, (int, float)):
        return float(since)
    if isinstance(since, dt.datetime):
        return since.timestamp()
    if isinstance(since, dt.date):
        return dt.datetime.combine(since, dt.time()).timestamp()
    if isinstance(since, str):
        if match := _DURATION.match(since):
            return time.time() - float(match[1]) * _SECONDS_PER[match[2].lower()]
        try:
            # Python 3.10's fromisoformat does not know the "Z" suffix.
            return dt.datetime.fromisoformat(since.strip().replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise UsageError(
        f"cannot read since={since!r}",
        hint="Use a duration such as '30m', '1h', '2d', an ISO date such as '2025-06-01', a datetime or epoch seconds.",
    )
