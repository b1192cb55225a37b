"""The embedded SQLite store (stdlib ``sqlite3``, WAL).

Several worker processes may share one database file: every write is one short
``BEGIN IMMEDIATE`` transaction (so two writers queue on the busy timeout instead of
deadlocking on a lock upgrade), reads run outside transactions, and each thread has its own
connection. Completions and claims are written in batches, one transaction per batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from importlib import resources
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, JobIdTaken, JobNotFound, LeaseLost, SchemaTooNewError, StoreError, TransitionError
from ..jobs import (
    CLAIMABLE_STATUSES,
    Event,
    Job,
    NewJob,
    Status,
    can_transition,
    check_transition,
    sources_for,
)
from ..limits import LimitSpec, check_cost, gcra
from ..liveness import LeaseHolder
from ..quota import Learned, Observation, effective_rate, observe
from .base import (
    TIMELINE_SQL,
    ClaimedJobs,
    EnqueueResult,
    LimitInfo,
    Outcome,
    QueueInfo,
    Renewal,
    ScheduleInfo,
    StateSnapshot,
    StepRecord,
    Store,
    TokenInfo,
    WorkerInfo,
    key_info,
    key_pace,
    served_stamps,
    settled_tat,
    stores_run_events,
    timeline_from_rows,
    worker_rescue,
)
from .base import job_from_row as _job_from_row

_TIMELINE = TIMELINE_SQL.format(mark="?")

_JOB_COLUMNS = (
    "id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, tenant, "
    "result, error, worker_id, lease_until, cancel_requested, created_at, updated_at, "
    "started_at, finished_at, limits, fair_key, throttled_seconds, state_key, paused"
)
_SYNCHRONOUS = {"off", "normal", "full", "extra"}
_SPEC_SQL = "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits"


def load_migrations(backend: str) -> list[tuple[int, str, str]]:
    """The numbered SQL migrations shipped for ``backend``: (version, name, sql)."""
    folder = resources.files("floodway.store") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


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


class _Admission:
    """Limit admission inside one claim transaction.

    Reads each (limit, key) state once, decides with the pause, the concurrency cap and GCRA,
    and writes back only what changed. ``wake_at`` is the earliest moment a job held back by
    a rate or a pause could be admitted, so idle workers sleep exactly until then.
    """

    def __init__(self, conn: sqlite3.Connection, now: float):
        self.conn = conn
        self.now = now
        self.specs = {
            row[0]: LimitSpec.from_row(*row)
            for row in conn.execute("SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits")
        }
        self.states: dict[tuple[str, str], list[Any]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.wake_at: float | None = None
        self.blocked_ids: list[str] = []

    def _state(self, name: str, key: str) -> list[Any]:
        pair = (name, key)
        if pair not in self.states:
            row = self.conn.execute(
                "SELECT tat, paused_until, running, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                pair,
            ).fetchone()
            state: list[Any] = list(row) if row else [0.0, 0.0, 0, 0, None]
            state[4] = Learned.loads(state[4])
            self.states[pair] = state
        return self.states[pair]

    def _held(self, job_id: str, until: float | None) -> bool:
        if until is not None:
            self.wake_at = until if self.wake_at is None else min(self.wake_at, until)
        self.blocked_ids.append(job_id)
        return False

    def admit(self, job_id: str, limits: list[list[str]]) -> bool:
        decisions: list[tuple[tuple[str, str], float | None]] = []
        for name, key in limits:
            spec = self.specs.get(name)
            if spec is None:
                continue  # a limit no longer in the store holds nothing back
            state = self._state(name, key)
            if state[1] > self.now:
                return self._held(job_id, state[1])
            if spec.concurrency is not None and state[2] >= spec.concurrency:
                return self._held(job_id, None)  # a finishing job frees the slot
            new_tat = None
            rate, burst = key_pace(spec, state[4], state[3], self.now)
            if rate is not None:
                ok, new_tat, retry_at = gcra(state[0], self.now, rate, burst)
                if not ok:
                    return self._held(job_id, retry_at)
            decisions.append(((name, key), new_tat))
        for pair, new_tat in decisions:
            state = self.states[pair]
            state[2] += 1
            state[3] += 1
            if new_tat is not None:
                state[0] = new_tat
            self.dirty.add(pair)
        return True

    def write_back(self) -> None:
        if not self.dirty:
            return
        self.conn.executemany(
            "INSERT INTO limit_keys (limit_name, key, tat, running, admitted) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, running = excluded.running, "
            "admitted = excluded.admitted",
            [(name, key, *self.states[(name, key)][0:1], *self.states[(name, key)][2:4]) for name, key in self.dirty],
        )


#: the longest ``?busy_timeout=`` (seconds) a URL may ask for: a day
MAX_BUSY_TIMEOUT = 86400.0

#: a tenant's jobs per (queue, status), counted in the index jobs_tenant
_TENANT_COUNTS = "SELECT queue, status, COUNT(*) FROM jobs WHERE tenant = ? GROUP BY queue, status"
#: what moved since an instant (``app.stats()``), per queue and per limit
_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE status = 'waiting' AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE created_at >= ? AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE finished_at >= ? AND limits IS NOT NULL "
                       "GROUP BY limits",
}
#: the same for one tenant, each read through one of the jobs_tenant* indexes
_TENANT_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = ? AND created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = ? AND finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND status = 'waiting' "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND created_at >= ? "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND finished_at >= ? "
                       "AND limits IS NOT NULL GROUP BY limits",
}
#: every query a tenant's views run on the jobs table, by name (its plan must use an index)
TENANT_QUERIES = {"counts": _TENANT_COUNTS, **_TENANT_ACTIVITY}


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


class SQLiteStore(Store):
    """A store in one SQLite file, shared safely by several processes on one machine.

    URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
    ``?synchronous=normal`` (faster commits; a power cut may lose the last ones — the default
    ``full`` makes every returned enqueue durable) and ``?busy_timeout=30`` (seconds).
    """

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ConfigError(f"not a sqlite URL: {url!r}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc:
            raise ConfigError(
                f"database URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
            )
        if not path:
            raise ConfigError(f"database URL {url!r} names no file")
        self.path = path
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.synchronous = options.pop("synchronous", "full").lower()
        if self.synchronous not in _SYNCHRONOUS:
            raise ConfigError(f"database URL {url!r}: synchronous must be one of {sorted(_SYNCHRONOUS)}")
        try:
            self.busy_timeout = float(options.pop("busy_timeout", "60"))
        except ValueError:
            raise ConfigError(f"database URL {url!r}: busy_timeout must be a number") from None
        if not 0 <= self.busy_timeout <= MAX_BUSY_TIMEOUT:  # NaN fails this too
            raise ConfigError(f"database URL {url!r}: busy_timeout must be seconds between 0 and "
                              f"{MAX_BUSY_TIMEOUT:g}, got {self.busy_timeout:g}")
        if options:
            raise ConfigError(f"database URL {url!r}: unknown option(s) {sorted(options)}")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot open SQLite database {path!r}: directory {directory!r} does not exist")
        _refuse_empty_file(path)
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

    # -- connections and transactions -----------------------------------------------------
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
                conn.execute("PRAGMA journal_mode=WAL")
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
        with _process_lock(self.path):
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

    # -- schema ---------------------------------------------------------------------------
    def _check_version(self) -> int:
        latest = max(v for v, _, _ in load_migrations("sqlite"))
        current = self.schema_version()
        if current > latest:
            raise SchemaTooNewError(
                f"database {self.path!r} is at schema version {current}, newer than this "
                f"floodway knows ({latest}); upgrade floodway"
            )
        return current

    def schema_version(self) -> int:
        rows = self._read(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='floodway_schema'"
        )
        if not rows:
            return 0
        return self._read("SELECT COALESCE(MAX(version), 0) FROM floodway_schema")[0][0]

    def migrate(self) -> list[int]:
        if self._check_version() == max(v for v, _, _ in load_migrations("sqlite")):
            return []
        applied = []
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS floodway_schema "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            # read the version inside the write lock: another process may have just migrated
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM floodway_schema").fetchone()[0]
            for version, name, sql in load_migrations("sqlite"):
                if version <= current:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO floodway_schema (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                applied.append(version)
            conn.execute("INSERT OR IGNORE INTO queues (name, max_concurrency) VALUES ('default', NULL)")
        return applied

    # -- helpers --------------------------------------------------------------------------
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

    # -- enqueue --------------------------------------------------------------------------
    def enqueue(
        self, jobs: list[NewJob], queues: dict[str, int | None] | None = None, *, owner: str | None = None
    ) -> list[EnqueueResult]:
        now = time.time()
        results: list[EnqueueResult] = []
        with self._write() as conn:
            if queues:
                conn.executemany(
                    "INSERT OR IGNORE INTO queues (name, max_concurrency) VALUES (?, ?)",
                    list(queues.items()),
                )
            if len(jobs) == 1:
                existing: set[str] = set()
                row = conn.execute("SELECT 1 FROM jobs WHERE id = ?", (jobs[0].id,)).fetchone()
                if row:
                    existing.add(jobs[0].id)
            else:
                existing = self._existing_ids(conn, [j.id for j in jobs])
            if owner is not None and existing:
                # the write lock is held: no job can appear between this look and the insert
                self._check_tenant_owns(conn, sorted(existing), owner)
            fresh = []
            seen: set[str] = set()
            for job in jobs:
                check_transition(None, job.status)
                created = job.id not in existing and job.id not in seen
                results.append(EnqueueResult(job.id, created))
                if created:
                    seen.add(job.id)
                    fresh.append(job)
            conn.executemany(
                "INSERT INTO jobs (id, task, args, queue, status, priority, attempt, max_attempts, "
                "retry, run_at, tenant, created_at, updated_at, limits, fair_key, state_key) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (j.id, j.task, j.args_json, j.queue, j.status.value, j.priority, j.max_attempts,
                     j.retry_json, j.run_at, j.tenant, now, now, j.limits_json, j.fair_key, j.shared_state)
                    for j in fresh
                ],
            )
            segment_rows = [row for j in fresh for row in j.segment_rows()]
            if segment_rows:
                conn.executemany("INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)", segment_rows)
            # no ``enqueued`` event row: the job row is the enqueue (see ``timeline_from_rows``)
            self._mark_fair_keys(conn, {j.fair_key for j in fresh if j.status is Status.WAITING})
        return results

    @staticmethod
    def _check_tenant_owns(conn: sqlite3.Connection, ids: list[str], owner: str) -> None:
        """Raise ``JobIdTaken`` for the first of ``ids`` that is not a job of tenant ``owner``."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            row = conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks}) AND tenant IS NOT ? ORDER BY id LIMIT 1",
                               [*chunk, owner]).fetchone()
            if row is not None:
                raise JobIdTaken(row[0])

    @staticmethod
    def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk))
        return found

    # -- reading --------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        status: Iterable[Status | str] | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            statuses = [Status(s).value for s in status]
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        for column, value in (("queue", queue), ("task", task), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, rowid DESC "
            "LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_job_from_row(r) for r in rows]

    def count_jobs(self, *, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        else:
            rows = self._read("SELECT status, COUNT(*) FROM jobs WHERE queue = ? GROUP BY status", (queue,))
        counts = {s.value: 0 for s in Status}
        counts.update(dict(rows))
        return counts

    def events(self, job_id: str) -> list[Event]:
        return timeline_from_rows(job_id, self._read(_TIMELINE, (job_id, job_id)))

    # -- queues and workers ---------------------------------------------------------------
    def set_queue(self, name: str, max_concurrency: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO queues (name, max_concurrency) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET max_concurrency = excluded.max_concurrency",
                (name, max_concurrency),
            )

    def list_queues(self, *, tenant: str | None = None) -> list[QueueInfo]:
        queues = {
            name: QueueInfo(name, cap, {s.value: 0 for s in Status}, bool(paused))
            for name, cap, paused in self._read("SELECT name, max_concurrency, paused FROM queues ORDER BY name")
        }
        if tenant is None:
            rows = self._read("SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status")
        else:
            rows = self._read(_TENANT_COUNTS, (tenant,))
        for name, status, count in rows:
            info = queues.setdefault(name, QueueInfo(name, None, {s.value: 0 for s in Status}))
            info.counts[status] = count
        return sorted(queues.values(), key=lambda q: q.name)

    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, hostname, pid, queues, concurrency, started_at, "
                "heartbeat_at, stopped_at, host_key, pid_start) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (info.id, info.hostname, info.pid, json.dumps(info.queues), info.concurrency,
                 info.started_at, info.heartbeat_at, info.host_key, info.pid_start),
            )

    def worker_stopped(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE workers SET stopped_at = ? WHERE id = ?", (time.time(), worker_id))

    def list_workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        clause = "" if include_stopped else "WHERE w.stopped_at IS NULL"
        rows = self._read(
            "SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at, "
            "w.stopped_at, (SELECT COUNT(*) FROM jobs j WHERE j.status = 'running' AND j.worker_id = w.id), "
            f"w.host_key, w.pid_start FROM workers w {clause} ORDER BY w.started_at"
        )
        return [
            WorkerInfo(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4], r[5], r[6], r[7], r[8], r[9], r[10])
            for r in rows
        ]

    # -- claiming ---------------------------------------------------------------------------
    @staticmethod
    def _mark_fair_keys(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
        """Make sure each fairness group with a ready job has a row in ``fair_keys``."""
        conn.executemany("INSERT OR IGNORE INTO fair_keys (key) VALUES (?)", [(k,) for k in keys])

    def _promote_due(self, conn: sqlite3.Connection, now: float) -> None:
        """scheduled/retrying -> waiting for every job whose run_at has come."""
        due = conn.execute(
            "SELECT id, attempt, status, fair_key FROM jobs WHERE status = 'scheduled' AND run_at <= ? "
            "UNION ALL SELECT id, attempt, status, fair_key FROM jobs WHERE status = 'retrying' AND run_at <= ? "
            "LIMIT 5000",
            (now, now),
        ).fetchall()
        if not due:
            return
        conn.executemany(
            "UPDATE jobs SET status = 'waiting', updated_at = ? WHERE id = ?",
            [(now, job_id) for job_id, _, _, _ in due],
        )
        self._insert_events(
            conn,
            self._event_rows(((j, Status(st), Status.WAITING, a) for j, a, st, _ in due), now, reason="due"),
        )
        self._mark_fair_keys(conn, {fk for _, _, _, fk in due})

    def claim(
        self, worker_id: str, *, queues: list[str] | None, limit: int, lease: float,
        without_limits: bool = False, ahead: int = 0,
    ) -> ClaimedJobs:
        # ``ahead`` is not used here: a SQLite claim has no network round trip to save, and
        # taking jobs ahead is left to the worker's own prefetch claim
        if limit <= 0:
            return ClaimedJobs()
        now = time.time()
        with self._write() as conn:
            self._promote_due(conn, now)
            admission = _Admission(conn, now)
            room = self._queue_room(conn)
            chosen, served = self._choose(conn, admission, room, queues, limit, now, without_limits)
            if served:
                keys, stamps = served_stamps(served, now)
                conn.executemany("UPDATE fair_keys SET served_at = ? WHERE key = ?", list(zip(stamps, keys)))
            admission.write_back()
            if admission.blocked_ids:
                conn.executemany(
                    "UPDATE jobs SET throttled_since = COALESCE(throttled_since, ?) WHERE id = ?",
                    [(now, job_id) for job_id in admission.blocked_ids],
                )
            if not chosen:
                return ClaimedJobs(wake_at=admission.wake_at)
            lease_until = now + lease
            conn.executemany(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, "
                "lease_until = ?, started_at = ?, updated_at = ?, "
                "throttled_seconds = throttled_seconds + COALESCE(? - throttled_since, 0), "
                "throttled_since = NULL WHERE id = ?",
                [(worker_id, lease_until, now, now, now, row[0]) for row in chosen],
            )
        jobs = ClaimedJobs(wake_at=admission.wake_at)
        for r in chosen:
            job = _job_from_row(r)
            jobs.append(
                Job(**{**job.__dict__, "status": Status.RUNNING, "attempt": job.attempt + 1,
                       "worker_id": worker_id, "lease_until": lease_until, "started_at": now,
                       "updated_at": now})
            )
        return jobs

    @staticmethod
    def _queue_room(conn: sqlite3.Connection) -> dict[str, int]:
        """Free slots of each capped queue, counted from running jobs (cannot drift); a
        paused queue has none."""
        rows = conn.execute(
            "SELECT name, max_concurrency, paused FROM queues WHERE max_concurrency IS NOT NULL OR paused = 1"
        ).fetchall()
        if not rows:
            return {}
        running = dict(conn.execute("SELECT queue, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY queue"))
        return {q: 0 if paused else cap - running.get(q, 0) for q, cap, paused in rows}

    def _choose(
        self,
        conn: sqlite3.Connection,
        admission: "_Admission",
        room: dict[str, int],
        queues: list[str] | None,
        limit: int,
        now: float,
        without_limits: bool = False,
    ) -> tuple[list[tuple], list[str]]:
        """Pick up to ``limit`` ready jobs: round-robin over fairness groups (least recently
        served first), then priority, then age; skipping full queues and jobs whose limits do
        not admit them now."""
        groups = [k for (k,) in conn.execute("SELECT key FROM fair_keys ORDER BY served_at, key")]
        filters, params = "", []
        if queues is not None:
            filters += f" AND queue IN ({','.join('?' * len(queues))})"
            params += queues
        if without_limits:
            filters += " AND limits IS NULL"
        pending: dict[str, list[tuple]] = {}
        offsets: dict[str, tuple[tuple[str, ...], int]] = {}
        seen: set[str] = set()
        exhausted: set[str] = set()
        chosen: list[tuple] = []
        served: list[str] = []
        active = list(groups)
        # at most this many rows are looked at per claim, so a claim stays short however
        # large and blocked the backlog is
        budget = max(200, limit * 20)
        while active and len(chosen) < limit and budget > 0:
            progressed = False
            for group in list(active):
                if len(chosen) >= limit or budget <= 0:
                    break
                heads = pending.get(group)
                if not heads:
                    if group in exhausted:
                        active.remove(group)
                        continue
                    full = tuple(sorted(q for q, left in room.items() if left <= 0))
                    last_full, offset = offsets.get(group, (full, 0))
                    if last_full != full:
                        offset = 0  # the exclusions changed: start over, `seen` drops repeats
                    extra = filters + (f" AND queue NOT IN ({','.join('?' * len(full))})" if full else "")
                    fetch = min(max(limit, 10), 100)
                    rows = conn.execute(
                        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'waiting' AND fair_key = ? AND paused = 0{extra} "
                        "ORDER BY priority DESC, run_at, rowid LIMIT ? OFFSET ?",
                        (group, *params, *full, fetch, offset),
                    ).fetchall()
                    offsets[group] = (full, offset + len(rows))
                    if len(rows) < fetch:
                        exhausted.add(group)
                    heads = [h for h in rows if h[0] not in seen]
                    if not heads:
                        if group in exhausted:
                            active.remove(group)
                            if queues is None and not without_limits and not full and offset == 0 and not rows:
                                conn.execute("DELETE FROM fair_keys WHERE key = ?", (group,))
                        continue
                    pending[group] = heads
                row = heads.pop(0)
                seen.add(row[0])
                budget -= 1
                progressed = True  # a row was looked at; `budget` bounds the walk
                queue = row[3]
                if queue in room and room[queue] <= 0:
                    continue  # its queue filled during this claim; the next fetch skips it
                limits = json.loads(row[20]) if row[20] else []
                if limits and not admission.admit(row[0], limits):
                    # this group's head is held back by a limit: serve other groups
                    active.remove(group)
                    continue
                if queue in room:
                    room[queue] -= 1
                chosen.append(row)
                served.append(group)  # once per job: served_stamps orders groups by their last
            if not progressed:
                break
        return chosen, served

    def next_due(self, queues: list[str] | None) -> float | None:
        # paused jobs and queues are not work to wait for
        extra, params = " AND paused = 0 AND queue NOT IN (SELECT name FROM queues WHERE paused = 1)", []
        if queues is not None:
            extra += f" AND queue IN ({','.join('?' * len(queues))})"
            params = list(queues)
        if self._read(f"SELECT 1 FROM jobs WHERE status = 'waiting'{extra} LIMIT 1", params):
            return 0.0
        row = self._read(
            f"SELECT MIN(run_at) FROM jobs WHERE status IN ('scheduled', 'retrying'){extra}", params
        )
        return row[0][0] if row and row[0][0] is not None else None

    # -- finishing --------------------------------------------------------------------------
    def finish(self, worker_id: str, outcomes: list[Outcome]) -> list[str]:
        if not outcomes:
            return []
        now = time.time()
        written: list[str] = []
        events: list[tuple] = []
        held: list[list[str]] = []
        ready_groups: set[str] = set()
        with self._write() as conn:
            for o in outcomes:
                check_transition(Status.RUNNING, o.status)
                final = o.status.is_final
                row = conn.execute(
                    "UPDATE jobs SET status = ?, result = ?, "
                    "error = CASE WHEN ? = 'complete' THEN NULL ELSE COALESCE(?, error) END, "
                    "run_at = COALESCE(?, run_at), attempt = attempt - ?, "
                    "worker_id = CASE WHEN ? THEN worker_id END, "
                    "lease_until = NULL, cancel_requested = 0, updated_at = ?, "
                    "throttled_seconds = throttled_seconds + ?, "
                    "finished_at = CASE WHEN ? THEN ? ELSE finished_at END "
                    "WHERE id = ? AND status = 'running' AND worker_id = ? AND attempt = ? "
                    "RETURNING limits, fair_key, state_key, started_at",
                    (
                        o.status.value,
                        o.result_json,
                        o.status.value,
                        json.dumps(o.error) if o.error else None,
                        o.run_at,
                        0 if o.spend_attempt else 1,
                        final,
                        now,
                        o.throttled_seconds,
                        final,
                        now,
                        o.job_id,
                        worker_id,
                        o.attempt,
                    ),
                ).fetchone()
                if row is None:
                    continue  # the lease was lost: the job belongs to another run now
                written.append(o.job_id)
                if row[0]:
                    held.extend(json.loads(row[0]))
                if o.status is Status.WAITING:
                    ready_groups.add(row[1])
                if o.status is Status.COMPLETE and o.purge_state:
                    self._purge_state(conn, o.job_id, row[2])
                if not stores_run_events(o.status, o.error, o.reason):
                    continue  # the row holds the whole run (see ``timeline_from_rows``)
                attempt = o.attempt if o.spend_attempt else o.attempt - 1
                events.extend(self._event_rows([(o.job_id, Status.WAITING, Status.RUNNING, o.attempt)],
                                               row[3], worker_id=worker_id))
                events.extend(
                    self._event_rows(
                        [(o.job_id, Status.RUNNING, o.status, attempt)],
                        now,
                        worker_id=worker_id,
                        error=o.error,
                        reason=o.reason,
                    )
                )
            self._insert_events(conn, events)
            self._release_limits(conn, held)
            self._release_slots(conn, written)
            self._mark_fair_keys(conn, ready_groups)
        return written

    @staticmethod
    def _purge_state(conn: sqlite3.Connection, job_id: str, shared_state: str | None) -> None:
        """A completed job's own cursor, ledger and segments go (purged on completion);
        a shared state key lives on for the next run."""
        conn.execute("DELETE FROM segments WHERE job_id = ?", (job_id,))
        if shared_state is None:
            own = f"job:{job_id}"
            conn.execute("DELETE FROM state WHERE key = ?", (own,))
            conn.execute("DELETE FROM ledger WHERE state_key = ?", (own,))

    @staticmethod
    def _release_slots(conn: sqlite3.Connection, job_ids: list[str]) -> None:
        """Step slots still held by jobs that stopped running (a crash mid-step) go back."""
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            held = conn.execute(
                f"SELECT limit_name, key FROM job_slots WHERE job_id IN ({marks})", chunk
            ).fetchall()
            if held:
                SQLiteStore._release_limits(conn, [list(pair) for pair in held])
                conn.execute(f"DELETE FROM job_slots WHERE job_id IN ({marks})", chunk)

    @staticmethod
    def _release_limits(conn: sqlite3.Connection, held: list[list[str]]) -> None:
        """A job left ``running``: give back its slot in each limit it held."""
        if held:
            conn.executemany(
                "UPDATE limit_keys SET running = MAX(running - 1, 0) WHERE limit_name = ? AND key = ?",
                [tuple(pair) for pair in held],
            )

    def heartbeat(self, worker_id: str, job_ids: list[str], lease: float) -> Renewal:
        now = time.time()
        cancelled: set[str] = set()
        renewed: set[str] = set()
        with self._write() as conn:
            conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, worker_id))
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for job_id, cancel in conn.execute(
                    f"UPDATE jobs SET lease_until = ? WHERE worker_id = ? AND status = 'running' "
                    f"AND lease_until >= ? AND id IN ({marks}) RETURNING id, cancel_requested",
                    (now + lease, worker_id, now, *chunk),
                ).fetchall():
                    renewed.add(job_id)
                    if cancel:
                        cancelled.add(job_id)
        return Renewal(cancelled, set(job_ids) - renewed)

    def rescue_expired(self) -> list[str]:
        now = time.time()
        with self._write() as conn:
            expired = conn.execute(
                "SELECT id, attempt, max_attempts, worker_id, cancel_requested, limits, fair_key, started_at "
                "FROM jobs WHERE status = 'running' AND lease_until < ?",
                (now,),
            ).fetchall()
            events = []
            self._release_slots(conn, [row[0] for row in expired])
            for job_id, attempt, max_attempts, owner, cancel_requested, limits, fair_key, started in expired:
                if limits:
                    self._release_limits(conn, json.loads(limits))
                error = {
                    "type": "WorkerLost",
                    "message": f"worker {owner} stopped renewing its lease; the job was rescued",
                    "traceback": None,
                }
                if cancel_requested:
                    target, reason = Status.CANCELLED, "lease expired; cancellation requested"
                elif attempt >= max_attempts:
                    # a job that keeps killing its worker must not loop forever
                    target, reason = Status.FAILED, "lease expired on the last attempt"
                else:
                    target, reason = Status.WAITING, "lease expired; rescued"
                    self._mark_fair_keys(conn, [fair_key])
                conn.execute(
                    "UPDATE jobs SET status = ?, worker_id = CASE WHEN ? THEN worker_id END, lease_until = NULL, "
                    "error = ?, updated_at = ?, finished_at = CASE WHEN ? THEN ? ELSE NULL END "
                    "WHERE id = ? AND status = 'running'",
                    (target.value, target.is_final, json.dumps(error), now, target.is_final, now, job_id),
                )
                # the claim stored no event: the run's start goes in with its end
                events += self._event_rows([(job_id, Status.WAITING, Status.RUNNING, attempt)], started,
                                           worker_id=owner)
                events += self._event_rows(
                    [(job_id, Status.RUNNING, target, attempt)], now, worker_id=owner, error=error, reason=reason
                )
            self._insert_events(conn, events)
        return [row[0] for row in expired]

    def lease_holders(self) -> list[LeaseHolder]:
        rows = self._read(
            "SELECT j.worker_id, COUNT(*), MIN(j.lease_until), w.host_key, w.pid, w.pid_start, w.heartbeat_at, "
            "w.stopped_at FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id "
            "WHERE j.status = 'running' AND j.worker_id IS NOT NULL GROUP BY j.worker_id"
        )
        now = time.time()
        # each row holds the fields before observed_at, in order
        return [LeaseHolder(*r, observed_at=now) for r in rows]  # type: ignore[misc]

    def rescue_worker(self, worker_id: str, *, dead: bool, heartbeat_before: float | None = None) -> list[str]:
        now = time.time()
        with self._write() as conn:
            if heartbeat_before is not None:
                row = conn.execute("SELECT heartbeat_at FROM workers WHERE id = ?", (worker_id,)).fetchone()
                if row is None or row[0] >= heartbeat_before:
                    return []  # it spoke meanwhile: alive after all
            if dead:
                conn.execute("UPDATE workers SET stopped_at = COALESCE(stopped_at, ?) WHERE id = ?", (now, worker_id))
            lost = conn.execute(
                "SELECT id, attempt, max_attempts, cancel_requested, limits, fair_key, started_at, lost_runs "
                "FROM jobs WHERE status = 'running' AND worker_id = ?",
                (worker_id,),
            ).fetchall()
            events = []
            self._release_slots(conn, [row[0] for row in lost])
            for job_id, attempt, max_attempts, cancel_requested, limits, fair_key, started, lost_runs in lost:
                if limits:
                    self._release_limits(conn, json.loads(limits))
                target, reason, error, give_back = worker_rescue(
                    worker_id, attempt, max_attempts, bool(cancel_requested), lost_runs, dead=dead
                )
                if target is Status.WAITING:
                    self._mark_fair_keys(conn, [fair_key])
                conn.execute(
                    "UPDATE jobs SET status = ?, worker_id = CASE WHEN ? THEN worker_id END, lease_until = NULL, "
                    "error = ?, updated_at = ?, finished_at = CASE WHEN ? THEN ? ELSE NULL END, "
                    "attempt = attempt - ?, lost_runs = lost_runs + ? WHERE id = ? AND status = 'running'",
                    (target.value, target.is_final, json.dumps(error), now, target.is_final, now,
                     int(give_back), int(dead), job_id),
                )
                # the claim stored no event: the run's start goes in with its end
                events += self._event_rows([(job_id, Status.WAITING, Status.RUNNING, attempt)], started,
                                           worker_id=worker_id)
                events += self._event_rows([(job_id, Status.RUNNING, target, attempt - int(give_back))], now,
                                           worker_id=worker_id, error=error, reason=reason)
            self._insert_events(conn, events)
        return [row[0] for row in lost]

    def average_duration(self, tasks: list[str], *, sample: int = 200) -> float | None:
        if not tasks:
            return None
        marks = ",".join("?" * len(tasks))
        row = self._read(
            f"SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
            f"WHERE status = 'complete' AND task IN ({marks}) ORDER BY finished_at DESC LIMIT ?)",
            (*tasks, sample),
        )
        return row[0][0] if row and row[0][0] is not None else None

    # -- limits ---------------------------------------------------------------------------
    def declare_limit(self, spec: LimitSpec) -> None:
        declared = json.dumps(spec.to_dict(), sort_keys=True)
        with self._write() as conn:
            row = conn.execute("SELECT declared FROM limits WHERE name = ?", (spec.name,)).fetchone()
            if row is not None and row[0] == declared:
                return  # unchanged in code: keep any change made at run time
            self._write_limit(conn, spec, declared)

    def update_limit(self, spec: LimitSpec) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT declared FROM limits WHERE name = ?", (spec.name,)).fetchone()
            self._write_limit(conn, spec, row[0] if row else None)

    @staticmethod
    def _write_limit(conn: sqlite3.Connection, spec: LimitSpec, declared: str | None) -> None:
        conn.execute(
            "INSERT INTO limits (name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds, declared, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "rate_count = excluded.rate_count, rate_period = excluded.rate_period, burst = excluded.burst, "
            "concurrency = excluded.concurrency, key = excluded.key, adaptive = excluded.adaptive, "
            "bounds = excluded.bounds, declared = excluded.declared, updated_at = excluded.updated_at",
            (spec.name, spec.rate.count if spec.rate else None, spec.rate.period if spec.rate else None,
             spec.burst, spec.concurrency, spec.key, int(spec.adaptive), spec.bounds, declared, time.time()),
        )
        # a rate set in code or by an operator is their word: what was learned before is forgotten
        conn.execute("UPDATE limit_keys SET learned = NULL WHERE limit_name = ?", (spec.name,))

    def list_limits(self, *, tenant_keys: Iterable[str] | None = None) -> list[LimitInfo]:
        now = time.time()
        infos = {
            row[0]: LimitInfo(LimitSpec.from_row(*row))
            for row in self._read(
                "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits ORDER BY name"
            )
        }
        for name, *row in self._read(
            "SELECT limit_name, key, tat, paused_until, pause_reason, running, admitted, rate_limited, learned "
            "FROM limit_keys ORDER BY limit_name, key"
        ):
            info = infos.get(name)
            if info is not None:
                info.keys.append(key_info(info.spec, *row, now))  # type: ignore[call-arg]  # the row is key..learned
        return list(infos.values())

    def acquire(self, name: str, key: str, cost: int = 1) -> tuple[bool, float]:
        now = time.time()
        with self._write() as conn:
            spec = self._spec(conn, name)
            check_cost(cost, spec.burst, f"limit {name!r}")
            state = conn.execute(
                "SELECT tat, paused_until, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                (name, key),
            ).fetchone()
            tat, paused_until, admitted, learned = state if state else (0.0, 0.0, 0, None)
            if paused_until > now:
                return False, paused_until
            rate, burst = key_pace(spec, Learned.loads(learned), admitted, now)
            if rate is None:
                return True, now
            ok, new_tat, retry_at = gcra(tat, now, rate, burst, cost)
            if not ok:
                return False, retry_at
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, admitted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, admitted = admitted + ?",
                (name, key, new_tat, cost, cost),
            )
            return True, now

    def paused_until(self, name: str, key: str) -> float:
        rows = self._read("SELECT paused_until FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key))
        return rows[0][0] if rows else 0.0

    def resume_limit(self, name: str, key: str | None = None) -> int:
        now = time.time()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM limits WHERE name = ?", (name,)).fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = ? AND paused_until > ?", [name, now]
            if key is not None:
                where += " AND key = ?"
                params.append(key)
            # the key's GCRA state restarts now: the budget comes back at the steady rate
            cur = conn.execute(
                f"UPDATE limit_keys SET paused_until = 0, pause_reason = NULL, tat = ? WHERE {where}", (now, *params)
            )
            return cur.rowcount

    @staticmethod
    def _spec(conn: sqlite3.Connection, name: str) -> LimitSpec:
        row = conn.execute(f"{_SPEC_SQL} WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"unknown limit {name!r}")
        return LimitSpec.from_row(*row)

    def pause_limit(self, name: str, key: str, until: float, reason: str) -> float:
        with self._write() as conn:
            spec = self._spec(conn, name)
            state = conn.execute(
                "SELECT tat, paused_until, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                (name, key),
            ).fetchone()
            tat, paused_until, admitted, learned = state if state else (0.0, 0.0, 0, None)
            until = max(until, paused_until)
            rate, burst = key_pace(spec, Learned.loads(learned), admitted, time.time())
            if rate is not None:
                # no burst at the reset: one admission at `until`, then the steady rate
                tat = max(tat, until + rate.interval * (burst - 1))
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, paused_until, pause_reason, rate_limited) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, "
                "paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, "
                "rate_limited = rate_limited + 1",
                (name, key, tat, until, reason),
            )
        return until

    def observe_limit(self, name: str, key: str, obs: Observation) -> tuple[float | None, str | None]:
        with self._write() as conn:
            spec = self._spec(conn, name)
            state = conn.execute(
                "SELECT tat, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key)
            ).fetchone()
            tat, admitted, raw = state if state else (0.0, 0, None)
            learned, changed = observe(spec, Learned.loads(raw), admitted, obs)
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, learned) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, learned = excluded.learned",
                (name, key, settled_tat(spec, tat, learned, admitted, changed, obs.now), learned.dumps()),
            )
            return effective_rate(spec, learned, admitted, obs.now), changed

    def reset_learned(self, name: str, key: str | None = None) -> int:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM limits WHERE name = ?", (name,)).fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = ? AND learned IS NOT NULL", [name]
            if key is not None:
                where += " AND key = ?"
                params.append(key)
            return conn.execute(f"UPDATE limit_keys SET learned = NULL WHERE {where}", params).rowcount

    # -- resumable work ---------------------------------------------------------------------
    def load_state(self, key: str) -> StateSnapshot:
        rows = self._read("SELECT cursor, checkpoints FROM state WHERE key = ?", (key,))
        if not rows:
            return StateSnapshot(key)
        return StateSnapshot(key, json.loads(rows[0][0]) if rows[0][0] is not None else None, rows[0][1])

    def load_ledger(self, key: str) -> dict[str, str | None]:
        return dict(self._read("SELECT entry, result FROM ledger WHERE state_key = ?", (key,)))

    @staticmethod
    def _check_owner(conn: sqlite3.Connection, job_id: str, worker_id: str, attempt: int) -> None:
        row = conn.execute(
            "SELECT 1 FROM jobs WHERE id = ? AND status = 'running' AND worker_id = ? AND attempt = ?",
            (job_id, worker_id, attempt),
        ).fetchone()
        if row is None:
            raise LeaseLost(f"job {job_id}: this run (attempt {attempt}) no longer owns the job")

    def checkpoint(self, job_id: str, worker_id: str, attempt: int, key: str, cursor_json: str) -> int:
        now = time.time()
        with self._write() as conn:
            self._check_owner(conn, job_id, worker_id, attempt)
            row = conn.execute(
                "INSERT INTO state (key, cursor, checkpoints, job_id, updated_at) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, checkpoints = checkpoints + 1, "
                "job_id = excluded.job_id, updated_at = excluded.updated_at RETURNING checkpoints",
                (key, cursor_json, job_id, now),
            ).fetchone()
            conn.execute("DELETE FROM ledger WHERE state_key = ?", (key,))
        return row[0]

    def record_once(
        self, job_id: str, worker_id: str, attempt: int, key: str, entry: str, result_json: str | None
    ) -> None:
        with self._write() as conn:
            self._check_owner(conn, job_id, worker_id, attempt)
            conn.execute(
                "INSERT OR REPLACE INTO ledger (state_key, entry, result, created_at) VALUES (?, ?, ?, ?)",
                (key, entry, result_json, time.time()),
            )

    def load_segment(self, job_id: str, arg: str, index: int) -> str:
        rows = self._read("SELECT data FROM segments WHERE job_id = ? AND arg = ? AND idx = ?", (job_id, arg, index))
        if not rows:
            raise StoreError(f"job {job_id}: segment {index} of {arg!r} is missing")
        return rows[0][0]

    def set_paused(self, *, job_id: str | None = None, queue: str | None = None, paused: bool) -> int:
        if (job_id is None) == (queue is None):
            raise ConfigError("pause: name one job or one queue")
        with self._write() as conn:
            if job_id is not None:
                row = conn.execute("SELECT status, fair_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job with id {job_id!r}")
                if Status(row[0]).is_final:
                    raise TransitionError(f"job {job_id} is {row[0]}; only unfinished jobs can be paused")
                cur = conn.execute("UPDATE jobs SET paused = ?, updated_at = ? WHERE id = ?",
                                   (int(paused), time.time(), job_id))
                if not paused:
                    self._mark_fair_keys(conn, [row[1]])
                return cur.rowcount
            conn.execute("INSERT OR IGNORE INTO queues (name, max_concurrency) VALUES (?, 1)", (queue,))
            cur = conn.execute("UPDATE queues SET paused = ? WHERE name = ?", (int(paused), queue))
            return cur.rowcount

    def paused_among(self, job_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._read(
                    f"SELECT j.id FROM jobs j LEFT JOIN queues q ON q.name = j.queue "
                    f"WHERE j.id IN ({marks}) AND (j.paused = 1 OR q.paused = 1)",
                    chunk,
                )
            )
        return found

    def activity(self, since: float, *, tenant: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        queries = _TENANT_ACTIVITY if tenant is not None else _ACTIVITY
        scope: tuple[Any, ...] = (tenant,) if tenant is not None else ()
        queues: dict[str, dict[str, int]] = {}
        for queue, created in self._read(queries["created"], (*scope, since)):
            queues.setdefault(queue, {"created": 0, "finished": 0})["created"] = created
        for queue, finished in self._read(queries["finished"], (*scope, since)):
            queues.setdefault(queue, {"created": 0, "finished": 0})["finished"] = finished
        limits: dict[str, dict[str, int]] = {}
        # grouped by the job's (limit, key) list: a few distinct lists, however many jobs
        for field, sql, params in (("waiting", queries["limits_waiting"], scope),
                                   ("created", queries["limits_created"], (*scope, since)),
                                   ("finished", queries["limits_finished"], (*scope, since))):
            for held, count in self._read(sql, params):
                for name in {pair[0] for pair in json.loads(held)}:
                    limits.setdefault(name, {"waiting": 0, "created": 0, "finished": 0})[field] += count
        return {"queues": queues, "limits": limits}

    # -- flows --------------------------------------------------------------------------------
    _STEP_COLUMNS = (
        "job_id, step_id, kind, critical, status, result, error, attempts, retries, duration, "
        "total_time, throttle_overhead, throttle, tenant, started_at, finished_at"
    )

    @staticmethod
    def _step_from_row(r: tuple) -> StepRecord:
        return StepRecord(
            r[0], r[1], r[2], bool(r[3]), r[4], r[5], json.loads(r[6]) if r[6] else None, r[7], r[8],
            r[9], r[10], r[11], json.loads(r[12]) if r[12] else None, r[13], r[14], r[15],
        )

    def load_steps(self, job_id: str) -> dict[str, StepRecord]:
        rows = self._read(f"SELECT {self._STEP_COLUMNS} FROM steps WHERE job_id = ? ORDER BY started_at", (job_id,))
        return {r[1]: self._step_from_row(r) for r in rows}

    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        with self._write() as conn:
            self._check_owner(conn, record.job_id, worker_id, attempt)
            conn.execute(
                f"INSERT OR REPLACE INTO steps ({self._STEP_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.job_id, record.step_id, record.kind, int(record.critical), record.status,
                 record.result_json, json.dumps(record.error) if record.error else None, record.attempts,
                 record.retries, record.duration, record.total_time, record.throttle_overhead,
                 json.dumps(record.throttle) if record.throttle else None, record.tenant,
                 record.started_at, record.finished_at),
            )

    def step_records(self, *, kind: str | None = None, since: float | None = None, limit: int = 1000) -> list[StepRecord]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("finished_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {self._STEP_COLUMNS} FROM steps {clause} ORDER BY finished_at DESC LIMIT ?", (*params, limit)
        )
        return [self._step_from_row(r) for r in rows]

    def acquire_slot(self, job_id: str, name: str, key: str, holder: str) -> bool:
        with self._write() as conn:
            spec = conn.execute("SELECT concurrency FROM limits WHERE name = ?", (name,)).fetchone()
            if spec is None:
                raise ConfigError(f"unknown limit {name!r}")
            row = conn.execute(
                "SELECT running FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key)
            ).fetchone()
            running = row[0] if row else 0
            if spec[0] is not None and running >= spec[0]:
                return False
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, running, admitted) VALUES (?, ?, 1, 1) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET running = running + 1, admitted = admitted + 1",
                (name, key),
            )
            conn.execute(
                "INSERT INTO job_slots (job_id, limit_name, key, holder, acquired_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, name, key, holder, time.time()),
            )
            return True

    def release_slot(self, job_id: str, name: str, key: str, holder: str) -> None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT rowid FROM job_slots WHERE job_id = ? AND limit_name = ? AND key = ? AND holder = ? LIMIT 1",
                (job_id, name, key, holder),
            ).fetchone()
            if row is None:
                return  # released already (the job was rescued meanwhile)
            conn.execute("DELETE FROM job_slots WHERE rowid = ?", (row[0],))
            self._release_limits(conn, [[name, key]])

    # -- schedules --------------------------------------------------------------------------
    def save_schedule(self, info: ScheduleInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO schedules (name, task, cron, tz, args, options, missed, last_tick, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET task = excluded.task, "
                "cron = excluded.cron, tz = excluded.tz, args = excluded.args, options = excluded.options, "
                "missed = excluded.missed, updated_at = excluded.updated_at",
                (info.name, info.task, info.cron, info.tz, json.dumps(info.args), json.dumps(info.options),
                 info.missed, info.last_tick, time.time()),
            )

    def list_schedules(self) -> list[ScheduleInfo]:
        rows = self._read("SELECT name, task, cron, tz, args, options, missed, last_tick FROM schedules ORDER BY name")
        return [ScheduleInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5] or "{}"), r[6], r[7])
                for r in rows]

    def advance_schedule(self, name: str, last_tick: float | None, new_tick: float) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE schedules SET last_tick = ?, updated_at = ? WHERE name = ? AND last_tick IS ?",
                (new_tick, time.time(), name, last_tick),
            )
            return cur.rowcount == 1

    # -- tokens -------------------------------------------------------------------------------
    _TOKEN_COLUMNS = "id, tenant, admin, label, created_at, last_used_at, revoked_at"

    def create_token(self, info: TokenInfo, secret_hash: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, secret_hash, tenant, admin, label, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, secret_hash, info.tenant, int(info.admin), info.label, info.created_at),
            )

    def token_for(self, secret_hash: str) -> TokenInfo | None:
        rows = self._read(
            f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL", (secret_hash,)
        )
        if not rows:
            return None
        r = rows[0]
        if r[5] is None or time.time() - r[5] > 60:  # record use, at most once a minute
            with self._write() as conn:
                conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (time.time(), r[0]))
        return TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6])

    def list_tokens(self) -> list[TokenInfo]:
        return [TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6])
                for r in self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), token_id)
            )
            return cur.rowcount == 1

    # -- user actions -----------------------------------------------------------------------
    def cancel(self, job_id: str) -> Status:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status, attempt FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status, attempt = Status(row[0]), row[1]
            if status is Status.RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                return status
            if status is Status.CANCELLED:
                return status
            check_transition(status, Status.CANCELLED)
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', updated_at = ?, finished_at = ? WHERE id = ?",
                (now, now, job_id),
            )
            self._insert_events(
                conn, self._event_rows([(job_id, status, Status.CANCELLED, attempt)], now, reason="cancelled by user")
            )
        return Status.CANCELLED

    def retry_now(self, job_id: str) -> Status:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status, fair_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status = Status(row[0])
            self._mark_fair_keys(conn, [row[1]])
            if not can_transition(status, Status.WAITING) or status in (Status.RUNNING, Status.SCHEDULED):
                raise TransitionError(f"job {job_id} is {status}; only failed, cancelled or retrying jobs can be retried")
            conn.execute(
                "UPDATE jobs SET status = 'waiting', attempt = 0, run_at = ?, cancel_requested = 0, "
                "finished_at = NULL, updated_at = ? WHERE id = ?",
                (now, now, job_id),
            )
            self._insert_events(
                conn, self._event_rows([(job_id, status, Status.WAITING, 0)], now, reason="retried by user")
            )
        return Status.WAITING

    def purge(self, *, older_than: float, statuses: Iterable[Status | str]) -> int:
        wanted = [Status(s) for s in statuses]
        for s in wanted:
            if not s.is_final:
                raise ConfigError(f"purge: only finished jobs can be purged, not {s}")
        if not wanted:
            return 0
        marks = ",".join("?" * len(wanted))
        params = (*[s.value for s in wanted], older_than)
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE status IN ({marks}) "
                "AND finished_at < ?)",
                params,
            )
            doomed = f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished_at < ?"
            conn.execute(f"DELETE FROM segments WHERE job_id IN ({doomed})", params)
            conn.execute(f"DELETE FROM steps WHERE job_id IN ({doomed})", params)
            conn.execute(f"DELETE FROM ledger WHERE state_key IN (SELECT 'job:' || id FROM ({doomed}))", params)
            conn.execute(f"DELETE FROM state WHERE key IN (SELECT 'job:' || id FROM ({doomed}))", params)
            cur = conn.execute(f"DELETE FROM jobs WHERE status IN ({marks}) AND finished_at < ?", params)
            return cur.rowcount


__all__ = ["SQLiteStore", "load_migrations", "CLAIMABLE_STATUSES", "sources_for"]
