"""Every SQLite file the package writes, opened one way: the usage ledger, extraction's cache and batch records.

- **Private.** Missing folders are made 0700 and the file 0600 whatever the umask (SQLite gives its
  ``-wal`` and ``-shm`` files the database's mode); a file an older version left readable by others
  is tightened when opened.
- **Shared.** Several kernels, processes and threads write at once: WAL (switching to it is retried,
  since SQLite does not call the busy handler for it), a busy timeout, writes in ``BEGIN IMMEDIATE``.
- **Self-healing.** A corrupt file is moved aside (its ``-wal`` and ``-shm`` with it) and a fresh one
  started; ``Database.notice`` says so and a ``RuntimeWarning`` is shown once.
- **Versioned.** The schema is a list of migrations, one decorated function per change, each applied
  once and recorded by name in ``_migrations`` (the design of simonw/llm's ``migrations.py``): a
  change is a new function at the end, never an edit of an old one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

__all__ = ["BUSY_TIMEOUT_S", "Database", "Migrations", "open_database", "transaction"]

BUSY_TIMEOUT_S = 10.0
MEMORY = ":memory:"
_PRIVATE_FILE = 0o600
_PRIVATE_FOLDER = 0o700
_COMPANIONS = ("", "-wal", "-shm")  # a database file and the files SQLite keeps beside it

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]


class Migrations:
    """The schema of one database: its changes in order, each a function applied once.

    Decorate each change; its name is its identity (``m001_answers``, ``m002_endpoint_column``), so
    a file knows which changes it has had, and a newer version's file (with changes this version does
    not know) is used as is. Write changes so that an older version can still use the file (add
    columns with a ``DEFAULT``), and the first one with ``IF NOT EXISTS`` so files made before this
    scheme are adopted.

    >>> schema = Migrations()
    >>> @schema
    ... def m001_answers(conn):
    ...     conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY)")
    """

    def __init__(self) -> None:
        self.steps: list[Migration] = []

    def __call__(self, step: Migration) -> Migration:
        if any(known.__name__ == step.__name__ for known in self.steps):
            raise ValueError(f"migration {step.__name__} is defined twice")
        self.steps.append(step)
        return step

    @property
    def names(self) -> list[str]:
        return [step.__name__ for step in self.steps]

    def apply(self, conn: sqlite3.Connection) -> None:
        """Run the changes ``conn``'s file has not had yet, in one transaction."""
        if not self._missing(conn):
            return  # the usual case: no write lock taken just to find nothing to do
        with transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
            for step in self._missing(conn):  # again, under the lock: another process may have just done them
                step(conn)
                conn.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", (step.__name__, time.time()))

    def _missing(self, conn: sqlite3.Connection) -> list[Migration]:
        try:
            done = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            done = set()
        return [step for step in self.steps if step.__name__ not in done]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (the write lock up front, so it waits rather than deadlocks); rolled back
    on any failure."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one worth reporting
        raise


def open_database(path: str | os.PathLike, *, migrations: Migrations, label: str = "database") -> Database:
    """The package's handle on one SQLite file (``":memory:"`` too); it connects on first use.

    ``label`` names the file in messages (``"usage ledger"``, ``"extraction cache"``).
    """
    return Database(path, migrations=migrations, label=label)


class Database:
    """One SQLite file behind a lock (see the module docstring for what opening it guarantees).

    One connection rather than one per thread: ``":memory:"`` is per connection, recovering from
    corruption must swap every user at once, and ``close()`` must work from any thread. Writers in one
    process serialise in SQLite anyway; other processes are kept safe by WAL, ``BEGIN IMMEDIATE`` and
    the busy timeout.

    Attributes
    ----------
    notice
        Set when a corrupt file was moved aside and a fresh one started; show it to the user.
    """

    def __init__(self, path: str | os.PathLike, *, migrations: Migrations, label: str = "database") -> None:
        self.path = MEMORY if str(path) == MEMORY else str(Path(path).expanduser())
        self.label = label
        self.migrations = migrations
        self.notice: str | None = None
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._warned = False

    def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """``operation(connection)`` under the lock; a corrupt file is moved aside and it runs again on a fresh one.

        Raises ``sqlite3.Error`` or ``OSError`` when the disk or the lock fails.
        """
        with self.lock:
            try:
                return operation(self._connection())
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc) or self.path == MEMORY:
                    raise
                self._move_corrupt_file_aside()
                return operation(self._connection())

    def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """``operation(connection)`` in one ``BEGIN IMMEDIATE`` transaction (see ``run``)."""

        def in_transaction(conn: sqlite3.Connection) -> T:
            with transaction(conn):
                return operation(conn)

        return self.run(in_transaction)

    def read_or(self, operation: Callable[[sqlite3.Connection], T], fallback: T, consequence: str) -> T:
        """``run(operation)``, or ``fallback`` with a warning (once) when the disk fails: bookkeeping never stops
        the work."""
        try:
            return self.run(operation)
        except (sqlite3.Error, OSError) as exc:
            self.warn_once(f"could not use the {self.label} at {self.path} ({exc}); {consequence}")
            return fallback

    def warn_once(self, message: str) -> None:
        """A ``RuntimeWarning``, unless one was shown since the file last worked (``working()``)."""
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def working(self) -> None:
        """The file works again: the next failure warns again."""
        self._warned = False

    def close(self) -> None:
        """Close the connection; a later call opens it again (a ``":memory:"`` database starts empty)."""
        with self.lock:
            self._close_connection()

    def __repr__(self) -> str:
        return f"Database({self.path!r}, label={self.label!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and (self.path == MEMORY or self._same_file_as(self._identity)):
            return self._conn
        # First use, after close(), or the file was replaced (another kernel moved a corrupt one aside).
        self._close_connection()
        if self.path != MEMORY:
            self._identity = _create_private_file(Path(self.path))
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            if self.path != MEMORY:
                _enable_wal(conn)
                # NORMAL in WAL mode survives an application crash; only a power cut can lose the last
                # rows, a fair price for not syncing the disk on every write.
                conn.execute("PRAGMA synchronous=NORMAL")
            self.migrations.apply(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _move_corrupt_file_aside(self) -> None:
        corrupt_identity = self._identity
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
        for suffix in _COMPANIONS:
            try:
                os.replace(self.path + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        self.notice = f"{self.label} at {self.path} was corrupt; moved to {aside}, started a fresh one"
        warnings.warn(self.notice, RuntimeWarning, stacklevel=5)

    def _same_file_as(self, identity: tuple[int, int] | None) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == identity


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    message = str(exc).lower()
    return "not a database" in message or "malformed" in message


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a new file to WAL, waiting while another process does the same.

    Changing the journal mode fails at once with "database is locked" when another connection
    holds the file (two kernels opening a fresh file together): SQLite does not call the busy
    handler for it. So retry, with the same patience as every other write.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        _pause(pause)
        pause = min(pause * 2, 0.1)


def _pause(seconds: float) -> None:
    """Wait before trying the journal mode again (a seam for tests)."""
    time.sleep(seconds)


def _create_private_file(path: Path) -> tuple[int, int]:
    """Create ``path`` (and missing folders) for the owner only, whatever the umask; returns its identity.

    An existing file (and its ``-wal``/``-shm``) readable by others, as older versions left the
    extraction cache, is tightened; existing folders are the user's and left alone.
    """
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=_PRIVATE_FOLDER)
        except FileExistsError:
            continue  # another kernel made it first
        os.chmod(folder, _PRIVATE_FOLDER)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _PRIVATE_FILE)
    except FileExistsError:
        for suffix in _COMPANIONS:
            _tighten(f"{path}{suffix}")
    else:
        try:
            if hasattr(os, "fchmod"):  # not on Windows, where the mode bits mean little anyway
                os.fchmod(fd, _PRIVATE_FILE)  # the umask may have masked the mode given to open
        finally:
            os.close(fd)
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _tighten(name: str) -> None:
    try:
        if os.stat(name).st_mode & 0o077:
            os.chmod(name, _PRIVATE_FILE)
    except OSError:
        pass  # absent, or not ours to change: SQLite reports what matters when it opens it
