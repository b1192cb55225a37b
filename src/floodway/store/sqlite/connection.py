"""The SQLite store's connection: the URL, one connection per thread, write transactions
under a per-file process lock, and the schema migrations."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from ...errors import ConfigError, StoreError
from ...jobs import (
    Status,
)
from ..sql import SQLStore, T, load_migrations

_SYNCHRONOUS = {"off", "normal", "full", "extra"}


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements so they run inside our own transaction."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


_PROCESS_LOCKS: dict[str, threading.RLock] = {}


_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(path: str) -> threading.RLock:
    """One writer lock per database file and process (shared by every store on the file)."""
    key = os.path.realpath(path)
    with _PROCESS_LOCKS_GUARD:
        lock = _PROCESS_LOCKS.get(key)
        if lock is None:
            lock = _PROCESS_LOCKS[key] = threading.RLock()
        return lock


#: the longest ``?busy_timeout=`` (seconds) a URL may ask for: a day
MAX_BUSY_TIMEOUT = 86400.0


def _refuse_empty_file(path: str, settle: float = 1.0) -> None:
    """A database file of zero bytes is refused rather than initialised as a new database: it
    is far more likely a truncated or wrongly copied database than a wanted empty one. A file
    that does not exist is still created.

    Opening a new database makes the file empty for a moment before its first page is written
    (another process may be doing just that), so an empty file is only refused when it stays
    empty for ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        try:
            if os.path.getsize(path) > 0:
                return
        except OSError:  # missing (or gone): sqlite creates it
            return
        if time.monotonic() >= deadline:
            raise StoreError(
                f"SQLite database {path!r} is an empty file (0 bytes): probably a truncated or "
                "badly copied database; restore it, or delete the file to start a new database"
            )
        time.sleep(0.02)


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Switch to WAL. Two processes opening a new database at once can find it locked while
    the other converts it, and SQLite answers that at once rather than through its busy
    handler: wait for the other one (up to ``patience`` seconds), as any other lock is waited for."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SQLiteConnection(SQLStore):
    """The connection, transaction and schema half every role of the SQLite store builds on."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        # sqlite:/x.db and sqlite:x.db would read as relative paths without the "//" of an empty
        # host: refused, so that sqlite:/abs/path.db is not quietly taken as abs/path.db
        if parts.netloc or not url[len(parts.scheme) + 1 :].startswith("//"):
            raise ConfigError(f"database URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
        if not path:
            raise ConfigError(f"database URL {url!r} names no file")
        self.path = path
        self._where = repr(path)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.synchronous = options.pop("synchronous", "full").lower()
        if self.synchronous not in _SYNCHRONOUS:
            raise ConfigError(f"database URL {url!r}: synchronous must be one of {sorted(_SYNCHRONOUS)}")
        try:
            self.busy_timeout = float(options.pop("busy_timeout", "60"))
        except ValueError:
            raise ConfigError(f"database URL {url!r}: busy_timeout must be a number") from None
        if not 0 <= self.busy_timeout <= MAX_BUSY_TIMEOUT:  # NaN fails this too
            raise ConfigError(
                f"database URL {url!r}: busy_timeout must be seconds between 0 and "
                f"{MAX_BUSY_TIMEOUT:g}, got {self.busy_timeout:g}"
            )
        if options:
            raise ConfigError(f"database URL {url!r}: unknown option(s) {sorted(options)}")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot open SQLite database {path!r}: directory {directory!r} does not exist")
        _refuse_empty_file(path)
        # found once: resolving the path costs more than a whole enqueue's statements
        self._writer_lock = _process_lock(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            if migrate:
                self.migrate()
            else:
                self._check_version()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot use SQLite database {path!r}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("store is closed")
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
                _use_wal(conn, self.busy_timeout)
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; IMMEDIATE takes the write lock up front.

        Threads of one process queue on a Python lock first: SQLite's busy handler waits
        with coarse sleeps, which made writers of the same process wait tens of ms for each
        other. Other processes still meet at SQLite's lock (and its busy timeout).
        """
        with self._writer_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"SQLite database {self.path!r}: {exc}") from exc
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                # SQLite may have rolled back already (SQLITE_FULL mid-statement does)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"SQLite database {self.path!r}: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise StoreError(f"SQLite database {self.path!r}: {exc}") from exc

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, what: str = "query", pipeline: bool = True) -> T:
        with self._write() as conn:
            return fn(conn)

    def _now(self) -> float:
        return time.time()

    def _any(self, column: str, values: list) -> tuple[str, list]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _rowcount(self, cur: sqlite3.Connection, sql: str, params: Any) -> int:
        return cur.execute(sql, params).rowcount

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite database {self.path!r}: {exc}") from exc

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def schema_version(self) -> int:
        rows = self._read("SELECT name FROM sqlite_master WHERE type='table' AND name='floodway_schema'")
        if not rows:
            return 0
        return self._read("SELECT COALESCE(MAX(version), 0) FROM floodway_schema")[0][0]

    def migrate(self) -> list[int]:
        if self._check_version() == max(v for v, _, _ in load_migrations("sqlite")):
            return []
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS floodway_schema "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            # read the version inside the write lock: another process may have just migrated
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM floodway_schema").fetchone()[0]
            applied = self._apply_migrations(
                conn, current, lambda script: [conn.execute(statement) for statement in _split_sql(script)]
            )
        return applied

    @staticmethod
    def _event_rows(
        rows: Iterable[tuple[str, Status | None, Status, int]],
        at: float,
        *,
        worker_id: str | None = None,
        error: dict | None = None,
        reason: str | None = None,
    ) -> list[tuple]:
        err = json.dumps(error) if error else None
        return [
            (job_id, at, src.value if src else None, dst.value, attempt, err, worker_id, reason)
            for job_id, src, dst, attempt in rows
        ]

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, rows: list[tuple]) -> None:
        if rows:
            conn.executemany(
                "INSERT INTO job_events (job_id, at, from_status, to_status, attempt, error, "
                "worker_id, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    @staticmethod
    def _mark_fair_keys(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
        """Make sure each fairness group with a ready job has a row in ``fair_keys``."""
        conn.executemany("INSERT OR IGNORE INTO fair_keys (key) VALUES (?)", [(k,) for k in keys])

    def _locked_keys(self, cur: Any, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, float]]:
        # the transaction holds the database's write lock: every row read is the latest
        found = {}
        for name, key in pairs:
            row = cur.execute(
                "SELECT running, paused_until FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key)
            ).fetchone()
            if row:
                found[(name, key)] = (int(row[0]), float(row[1]))
        return found

    @staticmethod
    def _release_limits(conn: sqlite3.Connection, held: list[list[str]]) -> None:
        """A job left ``running``: give back its slot in each limit it held."""
        if held:
            conn.executemany(
                "UPDATE limit_keys SET running = MAX(running - 1, 0) WHERE limit_name = ? AND key = ?",
                [tuple(pair) for pair in held],
            )
