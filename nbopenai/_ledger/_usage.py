"""The usage ledger: one row per API call, in a SQLite file shared by every kernel of the user.

The file is opened by ``_core._store`` (private, WAL, busy timeout, corruption recovery, migrations),
and writing never raises into an answer: if the disk fails, rows are kept in memory and a warning is
shown once; a corrupt file is moved aside and a fresh one started, with a ``notice``.

pandas and matplotlib are imported only inside the methods that need them.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import sqlite3
import time
import typing
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from .._core._errors import UsageError
from .._core._store import Migrations, open_database

if TYPE_CHECKING:
    import numpy
    import pandas
    from matplotlib.figure import Figure

    from ._prices import PriceTable

__all__ = ["UsageRecord", "TokenCounts", "Totals", "Ledger"]

_TOKEN_FIELDS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")

# A call stopped on our side may still have been billed for a partial answer the server never
# reported; with no usage its cost is unknown, not zero.
_MAY_BE_BILLED_WITHOUT_USAGE = frozenset({"interrupted", "cancelled"})


class TokenCounts(Protocol):
    """What ``UsageRecord.build`` reads of a call's usage (``nbopenai.Usage`` has it)."""

    input: int
    cached: int
    output: int
    reasoning: int
    estimated: bool


@dataclass(frozen=True)
class UsageRecord:
    """One API call as the ledger stores it; make one with :meth:`build` (the one factory).

    ``kind`` is one of ``ask``, ``extract``, ``background``, ``batch``, ``tool``, ``compact``;
    ``status`` one of ``completed``, ``incomplete``, ``failed``, ``error``, ``rate_limited``,
    ``cancelled``, ``interrupted``. ``cached_tokens`` is part of ``input_tokens`` and
    ``reasoning_tokens`` part of ``output_tokens``, as the API reports them. ``cost_usd`` is
    ``None`` when the model has no known price, or when a stopped call reported no usage: never a
    guessed number. ``estimated`` is true when the server reported no (or not every) token count and the
    counts are nbopenai's offline estimate (an unreadable answer, a stream cut short, ``"usage": {}``).
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
    estimated: bool = False

    @classmethod
    def build(
        cls,
        *,
        prices: PriceTable,
        session_id: str,
        kind: str,
        model: str,
        status: str,
        usage: TokenCounts | None = None,
        latency_s: float | None = None,
        started: float | None = None,
        price_factor: float = 1.0,
        **fields: Any,
    ) -> UsageRecord:
        """The ledger row of one API call, not yet written: every writer makes its rows here.

        Parameters
        ----------
        prices
            The price table; the cost is priced at the call's time.
        usage
            The call's token counts (a ``Usage``; an estimate is marked so there), or ``None`` when
            the call reported none. Then a call refused before any token (``error``,
            ``rate_limited``) cost 0, and a stopped one (``interrupted``, ``cancelled``) may
            have been billed for tokens nobody reported: its cost is unknown (``None``).
        latency_s, started
            Seconds the call took; when it started (epoch seconds, default now - latency).
        price_factor
            Multiplies the cost (the Batch API bills half).
        **fields
            The other columns (``thread``, ``cell_id``, ``response_id``, ``ttft_s``, ``attempt``,
            ``error``).
        """
        when = started if started is not None else time.time() - (latency_s or 0.0)
        if usage is None:
            tokens = (0, 0, 0, 0)
            unknown = status in _MAY_BE_BILLED_WITHOUT_USAGE
        else:
            tokens = (usage.input, usage.cached, usage.output, usage.reasoning)
            unknown = False
            fields.setdefault("estimated", bool(usage.estimated))
        cost = None if unknown else prices.cost(model, tokens[0], tokens[1], tokens[2], at=when)
        return cls(
            time=when,
            session_id=session_id,
            kind=kind,
            model=model,
            status=status,
            input_tokens=tokens[0],
            cached_tokens=tokens[1],
            output_tokens=tokens[2],
            reasoning_tokens=tokens[3],
            total_tokens=tokens[0] + tokens[2],
            latency_s=latency_s,
            cost_usd=cost * price_factor if cost is not None else None,
            **fields,
        )


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
    def of(cls, records: Iterable[UsageRecord]) -> Totals:
        records = list(records)
        return cls(
            len(records),
            *(sum(getattr(r, name) for r in records) for name in _TOKEN_FIELDS),
            cost_usd=sum(r.cost_usd for r in records if r.cost_usd is not None),
            cost_complete=all(r.cost_usd is not None for r in records),
        )

    def __add__(self, other: Totals) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        return Totals(
            *(a + b for a, b in zip(astuple(self)[:-1], astuple(other)[:-1], strict=False)),
            cost_complete=self.cost_complete and other.cost_complete,
        )


_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_TIME = _COLUMNS.index("time")

_SCHEMA = Migrations()


@_SCHEMA
def m001_usage_table(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS: a ledger made before named migrations already has the table and indexes.
    conn.execute(
        """CREATE TABLE IF NOT EXISTS usage (
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
        )"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS usage_by_session ON usage (session_id, time)")
    conn.execute("CREATE INDEX IF NOT EXISTS usage_by_time ON usage (time)")
    # Older nbopenai (before named migrations) read this table: at version 1 they use the file as is.
    # Add later columns with a DEFAULT, so that they, naming their columns when inserting, still can.
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")


@_SCHEMA
def m002_estimated_tokens(conn: sqlite3.Connection) -> None:
    # A DEFAULT keeps older nbopenai (which names its columns when inserting) able to write this file.
    conn.execute("ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0")


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
        self._db = open_database(path, migrations=_SCHEMA, label="usage ledger")
        self.path = self._db.path
        self._unsaved: list[UsageRecord] = []
        # Each session's totals so far, kept up to date by record_many once first asked for, so that
        # the budget check before every call is a lookup, not a sum over the session's rows. A session
        # id belongs to one Session, whose rows all pass through its one Ledger.
        self._running: dict[str, Totals] = {}
        try:
            self._db.run(lambda conn: None)
        except (sqlite3.Error, OSError) as exc:
            self._db.warn_once(f"could not open the usage ledger at {self.path} ({exc}); usage is kept in memory")

    @property
    def notice(self) -> str | None:
        return self._db.notice

    def record(self, rec: UsageRecord) -> None:
        """Store one call. Never raises: on failure the row is kept in memory and a warning shown once."""
        self.record_many([rec])

    def record_many(self, recs: Sequence[UsageRecord]) -> None:
        """Store several calls in one transaction (extraction writes its rows this way)."""
        if not recs:
            return
        with self._db.lock:
            rows = [*self._unsaved, *recs]
            refused: list[UsageRecord] = []
            try:
                self._db.write(lambda conn: _insert(conn, rows))
            except _REFUSED_ROW as exc:
                # A row the schema refuses would fail every later write if kept for a retry:
                # save the others one by one and drop only the refused ones, with a warning.
                self._unsaved = []
                for row in rows:
                    outcome = self._insert_one(row)
                    if outcome is _Outcome.REFUSED:
                        refused.append(row)
                    elif outcome is _Outcome.FAILED:
                        self._unsaved.append(row)
                self._db.warn_once(f"the usage ledger refused a row ({exc}); it was dropped, the others were kept")
            except Exception as exc:  # an answer must never fail because its bookkeeping did
                self._unsaved.extend(recs)
                self._db.warn_once(
                    f"could not write to the usage ledger at {self.path} ({exc}); "
                    "keeping usage in memory and retrying with the next call"
                )
            else:
                self._unsaved.clear()
                self._db.working()
            self._count([rec for rec in recs if not any(rec is row for row in refused)])

    def _insert_one(self, row: UsageRecord) -> _Outcome:
        """Insert one row: saved, refused for good, or failed (worth another try with the next call)."""
        try:
            self._db.write(lambda conn: _insert(conn, [row]))
        except _REFUSED_ROW:
            return _Outcome.REFUSED
        except Exception:  # disk full, locked, read-only
            return _Outcome.FAILED
        return _Outcome.SAVED

    def _count(self, recs: Sequence[UsageRecord]) -> None:
        """Add ``recs`` (stored or kept in memory) to the running totals of their sessions."""
        for session_id in {rec.session_id for rec in recs}.intersection(self._running):
            self._running[session_id] += Totals.of(rec for rec in recs if rec.session_id == session_id)

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
        return [_record_of(row) for row in self._rows(wanted)]

    def _rows(self, wanted: _Filter) -> list[tuple]:
        """The matching calls as tuples in ``_COLUMNS`` order, oldest first, unsaved ones included."""
        where, params = wanted.sql()
        query = f"SELECT {', '.join(_COLUMNS)} FROM usage {where} ORDER BY time, id"
        with self._db.lock:
            saved = self._db.read_or(lambda conn: conn.execute(query, params).fetchall(), [], _SHOWING_UNSAVED)
            unsaved = [astuple(rec) for rec in self._unsaved if wanted.matches(rec)]
        return sorted(saved + unsaved, key=lambda row: row[_TIME]) if unsaved else saved

    def totals(self, **filters: Any) -> Totals:
        """Sums over the calls matching ``filters`` (those of :meth:`records`, e.g. ``session_id``).

        A session's totals alone (``totals(session_id=...)``, what the budget check asks before every
        call) are summed once and then kept up to date as rows are recorded.
        """
        session_id = filters.get("session_id")
        if session_id is None or set(filters) != {"session_id"}:
            return self._sum(_Filter.build(**filters))[0]
        with self._db.lock:
            running = self._running.get(session_id)
            if running is None:
                running, read = self._sum(_Filter.build(session_id=session_id))
                if read:  # a failed read is no base to add to: sum again next time
                    self._running[session_id] = running
            return running

    def _sum(self, wanted: _Filter) -> tuple[Totals, bool]:
        """The totals over ``wanted`` and whether the file could be read."""
        where, params = wanted.sql()
        query = (
            "SELECT COUNT(*), "
            + ", ".join(f"COALESCE(SUM({name}), 0)" for name in _TOKEN_FIELDS)
            + f", COALESCE(SUM(cost_usd), 0.0), COUNT(*) - COUNT(cost_usd) FROM usage {where}"
        )

        def aggregate(conn: sqlite3.Connection) -> Totals:
            calls, *tokens, cost, unpriced = conn.execute(query, params).fetchone()
            return Totals(calls, *tokens, cost_usd=cost, cost_complete=unpriced == 0)

        with self._db.lock:
            saved = self._db.read_or(aggregate, None, _SHOWING_UNSAVED)
            unsaved = Totals.of(rec for rec in self._unsaved if wanted.matches(rec))
        return (unsaved if saved is None else saved + unsaved), saved is not None

    def to_dataframe(self, **filters: Any) -> pandas.DataFrame:
        """The calls matching ``filters`` (those of :meth:`records`) as a DataFrame.

        Columns follow :class:`UsageRecord`; ``time`` is a UTC datetime, and the other columns use
        pandas' nullable dtypes (``string``, ``Int64``, ``Float64``) so a missing cost is ``<NA>``.
        """
        import numpy as np  # noqa: PLC0415 - pandas loads when a frame is made
        import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

        rows = self._rows(_Filter.build(**filters))
        # The rows straight from SQLite into one object array, sliced into columns: no record objects
        # and no per-field attribute lookups, so this costs about what pandas.read_sql does.
        table = np.array(rows, dtype=object).reshape(len(rows), len(_COLUMNS))
        columns = {name: _pandas_column(pd, table[:, i], _COLUMN_TYPES[name]) for i, name in enumerate(_COLUMNS)}
        columns["time"] = pd.to_datetime(table[:, _TIME].astype("float64"), unit="s", utc=True)
        return pd.DataFrame(columns, copy=False)

    def summary(self, **filters: Any) -> pandas.DataFrame:
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
        columns = [
            "model", "thread", "calls", *_TOKEN_FIELDS, "cost_usd", "cost_complete", "mean_latency_s", "mean_ttft_s"
        ]
        return table[columns]

    def plot(self, **filters: Any) -> Figure:
        """A matplotlib Figure of cumulative tokens and cost over time for the calls matching ``filters``.

        Needs matplotlib (``pip install 'nbopenai[plot]'``).
        """
        try:
            import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib is optional (nbopenai[plot])
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
        with self._db.lock:
            self._db.close()
            self._running.clear()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"


_SHOWING_UNSAVED = "showing unsaved usage only"


class _Outcome(enum.Enum):
    SAVED = "saved"
    REFUSED = "refused"
    FAILED = "failed"


# Errors about the row itself (a NOT NULL column left empty, a value SQLite cannot store), as
# opposed to the disk or the lock: retrying such a row can never succeed.
_REFUSED_ROW = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError)


# Rows per INSERT statement. One multi-row statement is one step of SQLite, so the GIL is released
# and re-taken once per chunk rather than once per row: a flush from the kernel's main thread then
# barely disturbs extraction's event loop running in another thread.
_ROWS_PER_STATEMENT = 400


def _insert(conn: sqlite3.Connection, rows: list[UsageRecord]) -> None:
    """Insert ``rows`` (the caller holds the transaction)."""
    row_placeholders = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        values = ", ".join([row_placeholders] * len(chunk))
        conn.execute(
            f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES {values}",
            [getattr(row, column) for row in chunk for column in _COLUMNS],
        )


# Each column's Python type (``int``, ``str | None``, ...), resolved from UsageRecord's annotations,
# picks its pandas dtype: a new column needs no entry anywhere.
_COLUMN_TYPES = typing.get_type_hints(UsageRecord)


def _record_of(row: tuple) -> UsageRecord:
    """A stored row back as a ``UsageRecord`` (SQLite keeps a bool as 0 or 1)."""
    return UsageRecord(*(bool(v) if _COLUMN_TYPES[c] is bool else v for c, v in zip(_COLUMNS, row, strict=True)))


def _pandas_column(pd: Any, values: numpy.ndarray, annotation: Any) -> Any:
    """An object array of one column's values as the nullable pandas array for its type."""
    arguments = typing.get_args(annotation)
    nullable = type(None) in arguments
    base = next(a for a in arguments if a is not type(None)) if nullable else annotation
    if base is float:
        return pd.array(values.astype("float64"), dtype="Float64")  # None becomes NaN, then <NA>
    if base is int:
        # NOT NULL integers convert in one C loop; a nullable one takes pandas' slower, general path.
        return pd.array(values if nullable else values.astype("int64"), dtype="Int64")
    if base is bool:  # SQLite keeps a bool as 0 or 1
        return pd.array(values if nullable else values.astype("bool"), dtype="boolean")
    if base is str:
        return pd.array(values, dtype="string")
    raise TypeError(f"no pandas dtype for a ledger column of type {annotation}")


@dataclass(frozen=True)
class _Filter:
    """The filters of :meth:`Ledger.records`, as SQL for stored rows and as a test for unsaved ones."""

    session_id: str | None = None
    model: str | None = None
    thread: str | None = None
    kind: str | None = None
    since: float | None = None

    @classmethod
    def build(cls, *, session_id=None, model=None, thread=None, since=None, kind=None) -> _Filter:
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
