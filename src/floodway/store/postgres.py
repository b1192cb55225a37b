"""The PostgreSQL store: many worker processes on many machines against one database.

psycopg 3 with a ``psycopg_pool.ConnectionPool``. The ``Store`` interface stays synchronous —
the worker calls it from a small thread pool — and every method is one short transaction:

- **claims** take ready rows with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers never wait
  for each other's jobs), round-robin over fairness groups, in batches;
- **limits** are admitted once per claim batch: the ``limit_keys`` rows the batch's
  candidates hold are locked with ``SELECT ... FOR UPDATE`` in key order (no deadlocks), the
  GCRA / concurrency / pause decisions are made for the whole batch, written back, and the
  rows are released at commit — a hot limit costs one row lock per *batch*, not per job;
- **queue caps** hold across processes: a claim takes a per-queue advisory transaction lock
  before it counts the running jobs of a capped queue;
- **enqueue** is one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (over arrays,
  so 10,000 jobs are one statement), and sends ``NOTIFY floodway_jobs`` so idle workers wake
  at once (``wait_for_jobs``); polling stays only as a safety net;
- **completions** are written in batches, one statement per batch;
- **time** (leases, run_at, GCRA) is the database server's clock, so workers on machines
  whose clocks disagree still share one limit exactly.

A connection that breaks (the server restarted, a failover) is replaced and the transaction
retried with backoff when it cannot have committed; a transaction whose COMMIT was lost in
flight raises ``StoreError`` (the caller retries; every write is idempotent or guarded).

URL: ``postgresql://user:pass@host:5432/dbname?pool_max=10`` with floodway's options
``pool_min`` (1), ``pool_max`` (10), ``pool_timeout`` (30 s: how long a caller waits for a free
connection before a clear ``StoreError``), ``reconnect_timeout`` (60 s: how long a call keeps
retrying while the server is unreachable) and ``prepare_threshold`` (5; ``0`` for PgBouncer in
transaction mode). Every other query parameter goes to libpq (``sslmode``, ``connect_timeout``…).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import operator
import random
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, JobIdTaken, JobNotFound, LeaseLost, SchemaTooNewError, StoreError, TransitionError
from ..jobs import Event, Job, NewJob, Status, can_transition, check_transition
from ..limits import LimitSpec, gcra
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
from .sqlite import load_migrations

_TIMELINE = TIMELINE_SQL.format(mark="%s")
#: a tenant's jobs per (queue, status), counted in the index jobs_tenant
_TENANT_COUNTS = "SELECT queue, status, COUNT(*) FROM jobs WHERE tenant = %s GROUP BY queue, status"
#: what moved since an instant (``app.stats()``), per queue and per limit
_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE created_at >= %s GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE finished_at >= %s GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE status = 'waiting' AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE created_at >= %s AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE finished_at >= %s AND limits IS NOT NULL "
                       "GROUP BY limits",
}
#: the same for one tenant, each read through one of the jobs_tenant* indexes
_TENANT_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = %s AND created_at >= %s GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = %s AND finished_at >= %s GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND status = 'waiting' "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND created_at >= %s "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND finished_at >= %s "
                       "AND limits IS NOT NULL GROUP BY limits",
}
#: every query a tenant's views run on the jobs table, by name (its plan must use an index)
TENANT_QUERIES = {"counts": _TENANT_COUNTS, **_TENANT_ACTIVITY}

log = logging.getLogger("floodway.store.postgres")

T = TypeVar("T")

_JOB_COLUMNS = (
    "id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, tenant, "
    "result, error, worker_id, lease_until, cancel_requested, created_at, updated_at, "
    "started_at, finished_at, limits, fair_key, throttled_seconds, state_key, paused"
)
_J = {name.strip(): i for i, name in enumerate(_JOB_COLUMNS.split(","))}

#: how often a listening worker looks for frozen floodway transactions to end (seconds)
_REAP_EVERY = 2.0

#: how long the store goes straight to the full claim after the plain-group claim found other
#: fairness groups (tenants, limits) in play
_FAST_CLAIM_RECHECK = 1.0

#: the channel enqueue (and anything that makes a job ready) notifies; the payload is the queue
CHANNEL = "floodway_jobs"

# advisory lock namespaces (the first int4 of the two-key form); the second is hashtext(name)
_NS_MIGRATE = 0x466C0001
_NS_QUEUE = 0x466C0002
_NS_FAIR = 0x466C0003

#: the fairness groups of a text[] parameter, each under a shared advisory lock held until
#: commit, taken in key order (see ``PostgresStore._mark_fair_keys``); params: _NS_FAIR, keys
_LOCKED_FAIR_KEYS = (
    "SELECT k, pg_advisory_xact_lock_shared(%s, hashtext(k)) FROM "
    "(SELECT k FROM unnest(%t::text[]) AS k ORDER BY k) s"
)

#: what an enqueue writes to ``jobs``: (column, PostgreSQL type, the NewJob attribute)
_ENQUEUE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "text", "id"),
    ("task", "text", "task"),
    ("args", "text", "args_json"),
    ("queue", "text", "queue"),
    ("status", "text", "status.value"),
    ("priority", "int", "priority"),
    ("max_attempts", "int", "max_attempts"),
    ("retry", "text", "retry_json"),
    ("run_at", "float8", "run_at"),
    ("tenant", "text", "tenant"),
    ("limits", "text", "limits_json"),
    ("fair_key", "text", "fair_key"),
    ("state_key", "text", "shared_state"),
)
#: a NewJob's row in that order, read in one call per job
_ENQUEUE_ROW = operator.attrgetter(*(attr for _, _, attr in _ENQUEUE_COLUMNS))

#: from this many jobs with new ids up, an enqueue streams them with COPY (``enqueue_new``):
#: below it, the one-statement insert's single round trip wins. They go in chunks of
#: ``_COPY_CHUNK``, each sent as soon as it is made.
_COPY_MIN_JOBS = 100
_COPY_CHUNK = 100

_OPTIONS = {"pool_min", "pool_max", "pool_timeout", "reconnect_timeout", "prepare_threshold"}

#: SQLSTATEs worth a retry of the whole transaction (nothing was committed)
_RETRY_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown (server restarting)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (server starting up)
    "08000", "08003", "08006", "08001", "08004",  # connection exceptions
}


#: what COPY's text format needs escaped in a value (its delimiter, row end and escape)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    """A value in COPY's text format (``\\N`` is NULL)."""
    if value is None:
        return "\\N"
    if type(value) is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if type(value) is float:
        return repr(value)  # the shortest text that reads back as the same double
    return str(int(value))


def _enqueue_columns(jobs: list[NewJob]) -> Iterator[tuple[str, str, tuple, bool]]:
    """Each column an enqueue writes to ``jobs``: (name, PostgreSQL type, the jobs' values, whether
    they are all the same). A column with one value for every job (the task, queue, retry
    policy... of one ``enqueue_many`` call) is then sent or formatted once."""
    for (name, kind, _), column in zip(_ENQUEUE_COLUMNS, zip(*map(_ENQUEUE_ROW, jobs))):
        if kind == "float8":
            column = tuple(map(float, column))  # an int instant would make an int array
        yield name, kind, column, column.count(column[0]) == len(column)


def _copy_text(jobs: list[NewJob], now: float) -> str:
    """The rows of ``jobs`` for ``COPY jobs (<_ENQUEUE_COLUMNS>, created_at, updated_at)``.

    Columns with one value for every job are formatted once; psycopg's ``write_row`` would
    format every field of every row, three times the client time of a 1,000-job enqueue.
    """
    columns: list[Iterable[str]] = []
    for _, _, column, same in _enqueue_columns(jobs):
        columns.append(itertools.repeat(_copy_value(column[0]), len(column)) if same else map(_copy_value, column))
    stamp = _copy_value(float(now))
    columns += [itertools.repeat(stamp, len(jobs)), itertools.repeat(stamp, len(jobs))]
    return "\n".join(map("\t".join, zip(*columns))) + "\n"


class _Deferred:
    """A result ``_run`` reads only after the pipeline is done: BEGIN, the statements and the
    COMMIT then go out in one round trip. An error in a statement aborts the transaction (the
    server skips the COMMIT) and is raised when the pipeline ends."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn


class _Admission:
    """Limit admission for one claim batch (the same decisions as the SQLite store's).

    ``lock`` loads and row-locks the state of every (limit, key) pair the batch may admit
    against, in key order; ``admit`` decides job by job in memory; ``write_back`` stores what
    changed. Pairs first seen after the batch's main lock are taken with SKIP LOCKED instead
    (a second round of blocking locks could deadlock against another claimer), and a job
    whose pair another claimer holds right now waits for the next claim.
    """

    def __init__(self, specs: dict[str, LimitSpec], now: float):
        self.specs = specs
        self.now = now
        self.states: dict[tuple[str, str], list[Any]] = {}
        self.unavailable: set[tuple[str, str]] = set()
        self.dirty: set[tuple[str, str]] = set()
        self.wake_at: float | None = None
        self.blocked_ids: list[str] = []
        self._locked_once = False

    def lock(self, cur: psycopg.Cursor, rows: Iterable[tuple]) -> None:
        wanted: set[tuple[str, str]] = set()
        for row in rows:
            raw = row[_J["limits"]]
            if raw:
                for name, key in json.loads(raw):
                    pair = (name, key)
                    if name in self.specs and pair not in self.states and pair not in self.unavailable:
                        wanted.add(pair)
        if not wanted:
            return
        ordered = sorted(wanted)
        names = [p[0] for p in ordered]
        keys = [p[1] for p in ordered]
        cur.execute(
            "INSERT INTO limit_keys (limit_name, key) SELECT n, k FROM unnest(%t::text[], %t::text[]) AS p(n, k) "
            "ORDER BY n, k ON CONFLICT DO NOTHING",
            (names, keys),
        )
        skip = " SKIP LOCKED" if self._locked_once else ""
        cur.execute(
            "SELECT limit_name, key, tat, paused_until, running, admitted, learned FROM limit_keys "
            "WHERE (limit_name, key) IN (SELECT n, k FROM unnest(%t::text[], %t::text[]) AS p(n, k)) "
            f"ORDER BY limit_name, key FOR UPDATE{skip}",
            (names, keys),
        )
        for name, key, tat, paused_until, running, admitted, learned in cur.fetchall():
            self.states[(name, key)] = [tat, paused_until, running, admitted, Learned.loads(learned)]
        self.unavailable.update(p for p in zip(names, keys) if p not in self.states)
        self._locked_once = True

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
            pair = (name, key)
            state = self.states.get(pair)
            if state is None:
                # another claimer is admitting against this key right now: try again shortly
                return self._held(job_id, self.now + 0.005)
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
            decisions.append((pair, new_tat))
        for pair, new_tat in decisions:
            state = self.states[pair]
            state[2] += 1
            state[3] += 1
            if new_tat is not None:
                state[0] = new_tat
            self.dirty.add(pair)
        return True

    def write_back(self, cur: psycopg.Cursor) -> None:
        if not self.dirty:
            return
        ordered = sorted(self.dirty)
        cur.execute(
            "UPDATE limit_keys l SET tat = v.tat, running = v.running, admitted = v.admitted "
            "FROM unnest(%t::text[], %t::text[], %t::float8[], %t::int[], %t::int8[]) AS v(n, k, tat, running, admitted) "
            "WHERE l.limit_name = v.n AND l.key = v.k",
            (
                [p[0] for p in ordered],
                [p[1] for p in ordered],
                [self.states[p][0] for p in ordered],
                [self.states[p][2] for p in ordered],
                [self.states[p][3] for p in ordered],
            ),
        )


def _scalar(cur: Any) -> Any:
    """The one value of a statement that always returns one row."""
    row = cur.fetchone()
    assert row is not None, "the statement returns one row"
    return row[0]


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split floodway's own options off a postgres URL; return (libpq URL, options)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"not a PostgreSQL URL: {url!r}")
    if not parts.netloc and not parts.path.strip("/") and not parts.query:
        raise ConfigError(f"database URL {url!r} names no server or database; use postgresql://user@host:5432/dbname")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OPTIONS]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)), options


def _number(url: str, options: dict[str, str], name: str, default: float, *, minimum: float, integer: bool = False) -> Any:
    raw = options.get(name)
    if raw is None:
        return int(default) if integer else default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"database URL {url!r}: {name} must be a{'n integer' if integer else ' number'}, got {raw!r}") from None
    if value < minimum or (not integer and not math.isfinite(value)):
        raise ConfigError(f"database URL {url!r}: {name} must be >= {minimum}, got {raw!r}")
    return value


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


#: a session frozen inside a transaction (a paused VM, SIGSTOP, a debugger) would hold its row
#: locks and stall every other worker; PostgreSQL ends such a transaction after this long (ms)
IDLE_IN_TRANSACTION_MS = 10_000


def _escape_array_text(text: str) -> str:
    """Backslashes and double quotes escaped, for inside a double-quoted array element."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):  # str enums (Status) included: their text is their value
        return '"' + _escape_array_text(value) + '"'
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same double; inf and nan too
    if isinstance(value, int):
        return str(int(value))
    raise TypeError(f"cannot send a {type(value).__name__} in a PostgreSQL array")


_NUMBER_KINDS = ({int}, {float}, {int, float}, {bool})


def _array_literal(values: list) -> str:
    """``values`` as a PostgreSQL array literal (one dimension): strings double-quoted with
    their backslashes and quotes escaped, ``None`` as NULL.

    Lists of one kind (every batch floodway sends is mostly that) take a path that works on
    the whole list at once: strings are joined with NUL, which no PostgreSQL text can hold, then
    escaped and split in three C-level passes. Anything else goes element by element."""
    kinds = set(map(type, values))
    if kinds == {str}:
        raw = "\0".join(values)
        if raw.count("\0") == len(values) - 1:  # else a string holds a NUL: the server refuses it
            return '{"' + _escape_array_text(raw).replace("\0", '","') + '"}'
    elif kinds == {type(None)}:
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    elif kinds in _NUMBER_KINDS:
        return "{" + ",".join(map(repr, values)) + "}"
    return "{" + ",".join(map(_array_element, values)) + "}"


class _ArrayLiteralDumper(Dumper):
    """Sends a Python list as an array literal, for ``%t`` placeholders that the SQL casts
    (``%t::text[]``). psycopg's own list dumpers choose a dumper for every element in Python:
    ~470 µs for the 11 lists of a batch of 23 completions, against ~30–60 µs here."""

    format = Format.TEXT

    def dump(self, obj: list) -> bytes:
        return _array_literal(obj).encode()


# the adapters every floodway connection uses: psycopg's, with lists sent as literals
_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_dumper(list, _ArrayLiteralDumper)


@contextlib.contextmanager
def _pipelined(conn: psycopg.Connection) -> Iterator[None]:
    """Send the statements of the block together.

    Inside ``_run``'s pipeline (every transaction but migrations) this adds nothing: the
    statements are pipelined already, and their results are read with a Sync when a cursor
    needs them (``_SyncingCursor``). Leaving a *nested* psycopg pipeline would send a Sync and
    then a Flush, and the server disarms its idle-in-transaction timer on the Flush without
    arming it again — a worker frozen after such a block would keep its row locks for as long
    as it stays frozen.
    """
    if conn.pgconn.pipeline_status:
        yield
        return
    with conn.pipeline():
        yield


class _SyncingCursor(psycopg.Cursor):
    """A cursor that, in pipeline mode, asks for its results with a Sync, not a Flush.

    psycopg reads a pipelined result by sending a Flush request. After a Flush the server
    waits for the client's next statement *without* reporting "idle in transaction", so
    ``idle_in_transaction_session_timeout`` is not armed: a worker frozen right after reading a
    row it locked (SIGSTOP, a paused VM, swap) would keep that lock, and stall every other
    worker's claim, for as long as it stays frozen. A Sync inside the explicit transaction
    costs the same round trip, does not commit, and does arm the timeout, so the server ends the
    frozen transaction after ``IDLE_IN_TRANSACTION_MS`` and the others go on.
    """

    def _results_by_sync(self) -> None:
        # Pipeline.sync(), not leaving a nested pipeline block: that also sends a Flush after
        # the Sync, and the server disarms the idle timer on any message it reads
        pipeline = getattr(self.connection, "_pipeline", None)
        if self.pgresult is None and pipeline is not None:
            pipeline.sync()

    def fetchone(self):
        self._results_by_sync()
        return super().fetchone()

    def fetchmany(self, size: int = 0):
        self._results_by_sync()
        return super().fetchmany(size)

    def fetchall(self):
        self._results_by_sync()
        return super().fetchall()

    def __iter__(self):
        self._results_by_sync()
        return super().__iter__()

    @property
    def rowcount(self) -> int:
        self._results_by_sync()
        return super().rowcount


def _configure_session(conn: psycopg.Connection) -> None:
    conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
    conn.commit()


class PostgresStore(Store):
    """A store in one PostgreSQL database, shared by any number of worker processes."""

    notifies = True

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self._conninfo, options = _parse_url(url)
        self._where = _redact(self._conninfo)
        # floodway's sessions are recognisable, so frozen ones can be told apart (see
        # _end_frozen_transactions); a name given in the URL is kept
        self._app_name = dict(parse_qsl(urlsplit(self._conninfo).query)).get("application_name") or "floodway"
        self._reap_at = 0.0
        self._may_reap = True
        self.pool_min = _number(url, options, "pool_min", 1, minimum=0, integer=True)
        self.pool_max = _number(url, options, "pool_max", 10, minimum=1, integer=True)
        if self.pool_max < max(self.pool_min, 1):
            raise ConfigError(f"database URL {url!r}: pool_max must be >= pool_min")
        self.pool_timeout = _number(url, options, "pool_timeout", 30.0, minimum=0.01)
        self.reconnect_timeout = _number(url, options, "reconnect_timeout", 60.0, minimum=0)
        self.prepare_threshold = _number(url, options, "prepare_threshold", 5, minimum=0, integer=True)
        self._closed = False
        self._fast_claim_after = 0.0  # see claim(): when to try the plain-group claim again
        self._offset = 0.0
        self._listener: psycopg.Connection | None = None
        self._listener_lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        # a direct first connection: a clear error for a bad URL, the server clock's offset,
        # and the schema check, before any pool thread starts
        try:
            with self._connect(autocommit=True) as conn:
                self._measure_clock(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {str(exc).strip()}") from exc
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True, "prepare_threshold": self.prepare_threshold or None,
                    "cursor_factory": _SyncingCursor, "application_name": self._app_name,
                    "context": _ADAPTERS},
            configure=_configure_session,
            open=True,
            name="floodway",
            reconnect_timeout=max(self.reconnect_timeout, 1.0),
        )
        try:
            if migrate:
                self.migrate()
            else:
                self._check_version()
        except BaseException:
            self.close()
            raise

    # -- connections and transactions -----------------------------------------------------
    def _connect(self, *, autocommit: bool) -> psycopg.Connection:
        return psycopg.connect(self._conninfo, autocommit=autocommit, application_name=self._app_name,
                               prepare_threshold=self.prepare_threshold or None, context=_ADAPTERS)

    def _measure_clock(self, conn: psycopg.Connection) -> None:
        """Use the server's clock: time.time() + offset (measured at the midpoint of a round trip)."""
        best = None
        for _ in range(3):
            t0 = time.time()
            server = _scalar(conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8"))
            t1 = time.time()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, server - (t0 + t1) / 2)
        self._offset = best[1] if best and abs(best[1]) > 0.0005 else 0.0

    def _now(self) -> float:
        return time.time() + self._offset

    def _run(self, fn: Callable[[psycopg.Cursor], T], *, what: str = "query", pipeline: bool = True) -> T:
        """Run ``fn(cursor)`` in one transaction and commit it.

        A transaction that failed before COMMIT (a dropped connection, a server restart, a
        deadlock or serialization failure) committed nothing, so it is retried with backoff
        for up to ``reconnect_timeout``. Errors of floodway itself (TransitionError...) pass
        through untouched after a rollback.

        The transaction runs in psycopg's pipeline mode: BEGIN, the statements ``fn`` sends
        and COMMIT go out together, so a transaction costs one network round trip plus one per
        result ``fn`` must read before it can go on (the pool's connections are in autocommit
        mode and the transaction is explicit, so BEGIN is not a round trip of its own).
        """
        if self._closed or self._pool is None:
            raise StoreError("store is closed")
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.05
        while True:
            try:
                conn = self._pool.getconn()
            except PoolTimeout as exc:
                raise StoreError(
                    f"PostgreSQL at {self._where}: no connection free within {self.pool_timeout:g}s "
                    f"(pool_max={self.pool_max}): every connection is busy, or the server is "
                    f"unreachable; raise ?pool_max= or pool_timeout=, or lower the concurrency ({exc})"
                ) from exc
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL at {self._where}: {exc}") from exc
            committing = False
            try:
                with conn.cursor() as cur:
                    if pipeline:
                        with conn.pipeline():
                            # BEGIN on a cursor of its own: its result, read in when the pipeline
                            # next talks to the server, must not land on ``cur`` after fn's
                            # statement and be taken for that statement's rows
                            conn.cursor().execute("BEGIN")
                            result = fn(cur)
                            committing = True
                            conn.cursor().execute("COMMIT")
                        # leaving the pipeline sends everything queued with one Sync and reads
                        # every result: a deferred read costs no round trip of its own
                        if isinstance(result, _Deferred):
                            result = result.fn()
                    else:
                        cur.execute("BEGIN")
                        result = fn(cur)
                        committing = True
                        cur.execute("COMMIT")
                return result
            except psycopg.Error as exc:
                self._rollback_quietly(conn)
                state = getattr(exc, "sqlstate", None)
                broken = conn.closed or conn.broken
                if committing and broken:
                    raise StoreError(
                        f"PostgreSQL at {self._where}: the connection broke while committing a {what}; "
                        f"it may or may not have been written ({str(exc).strip()})"
                    ) from exc
                retryable = broken or state in _RETRY_STATES or isinstance(exc, psycopg.OperationalError) and state is None
                if not retryable or time.monotonic() + pause > deadline:
                    raise StoreError(f"PostgreSQL at {self._where}: {what} failed: {str(exc).strip()}") from exc
                if broken:
                    log.warning("PostgreSQL connection lost (%s); reconnecting", str(exc).strip().splitlines()[0])
                    # the other idle connections died with this one: test them all now
                    self._pool.putconn(conn)
                    conn = None  # type: ignore[assignment]
                    try:
                        self._pool.check()
                    except Exception:  # pragma: no cover - best effort
                        pass
                time.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(pause * 2, 2.0)
            except BaseException:
                self._rollback_quietly(conn)
                raise
            finally:
                if conn is not None:
                    self._pool.putconn(conn)

    @staticmethod
    def _rollback_quietly(conn: psycopg.Connection | None) -> None:
        if conn is not None and not conn.closed:
            try:
                conn.rollback()
            except Exception:
                pass

    def _read(self, sql: str, params: Any = None) -> list[tuple]:
        def go(cur: psycopg.Cursor) -> list[tuple]:
            cur.execute(sql, params)
            return cur.fetchall()

        return self._run(go, what="read")

    def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                pool.close(timeout=5)
            except Exception:
                pass
        if self._listener_lock.acquire(timeout=0.01):
            try:
                self._close_listener()
            finally:
                self._listener_lock.release()
        # else: a thread is inside wait_for_jobs; it closes the listener when it returns

    # -- schema ---------------------------------------------------------------------------
    def _check_version(self) -> int:
        latest = max(v for v, _, _ in load_migrations("postgres"))
        current = self.schema_version()
        if current > latest:
            raise SchemaTooNewError(
                f"database {self._where} is at schema version {current}, newer than this "
                f"floodway knows ({latest}); upgrade floodway"
            )
        return current

    def schema_version(self) -> int:
        def go(cur: psycopg.Cursor) -> int:
            cur.execute("SELECT to_regclass('floodway_schema') IS NOT NULL")
            if not _scalar(cur):
                return 0
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM floodway_schema")
            return _scalar(cur)

        return self._run(go, what="read")

    def migrate(self) -> list[int]:
        migrations = load_migrations("postgres")
        if self._check_version() == max(v for v, _, _ in migrations):
            return []

        def go(cur: psycopg.Cursor) -> list[int]:
            # one migrator at a time across every process; the others wait, then find it done
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_NS_MIGRATE,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS floodway_schema "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM floodway_schema")
            current = _scalar(cur)
            latest = max(v for v, _, _ in migrations)
            if current > latest:
                raise SchemaTooNewError(
                    f"database {self._where} is at schema version {current}, newer than this "
                    f"floodway knows ({latest}); upgrade floodway"
                )
            applied = []
            for version, name, sql in migrations:
                if version <= current:
                    continue
                cur.execute(sql.encode())  # a whole script: simple query protocol, no parameters
                cur.execute(
                    "INSERT INTO floodway_schema (version, name, applied_at) VALUES (%s, %s, %s)",
                    (version, name, time.time()),
                )
                applied.append(version)
            cur.execute("INSERT INTO queues (name, max_concurrency) VALUES ('default', NULL) ON CONFLICT DO NOTHING")
            return applied

        return self._run(go, what="migration", pipeline=False)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _insert_events(cur: psycopg.Cursor, rows: list[tuple]) -> None:
        """rows: (job_id, at, from_status, to_status, attempt, error_json, worker_id, reason)."""
        if not rows:
            return
        cols = list(zip(*rows))
        cur.execute(
            "INSERT INTO job_events (job_id, at, from_status, to_status, attempt, error, worker_id, reason) "
            "SELECT * FROM unnest(%t::text[], %t::float8[], %t::text[], %t::text[], %t::int[], %t::text[], "
            "%t::text[], %t::text[])",
            [list(c) for c in cols],
        )

    @staticmethod
    def _event(job_id: str, at: float, src: Status | None, dst: Status, attempt: int, *,
               error: dict | None = None, worker_id: str | None = None, reason: str | None = None) -> tuple:
        return (job_id, at, src.value if src else None, dst.value, attempt,
                json.dumps(error) if error else None, worker_id, reason)

    @staticmethod
    def _mark_fair_keys(cur: psycopg.Cursor, keys: Iterable[str]) -> None:
        """Make sure each fairness group with a ready job has a row in ``fair_keys``.

        Holds a shared advisory lock on each group until commit: a claim deletes an empty
        group's row only under the exclusive lock, so it can never delete the row of a group
        that a transaction in flight is making ready.
        """
        keys = sorted(set(keys))
        if not keys:
            return
        cur.execute(
            f"WITH l AS ({_LOCKED_FAIR_KEYS}) INSERT INTO fair_keys (key) SELECT k FROM l ON CONFLICT DO NOTHING",
            (_NS_FAIR, keys),
        )

    @staticmethod
    def _notify(cur: psycopg.Cursor, queues: Iterable[str]) -> None:
        queues = sorted(set(queues))
        if queues:
            cur.execute("SELECT pg_notify(%s, q) FROM unnest(%t::text[]) AS q", (CHANNEL, queues))

    # -- enqueue --------------------------------------------------------------------------
    def enqueue_new(
        self, jobs: Iterable[NewJob], queues: dict[str, int | None] | None = None
    ) -> list[EnqueueResult]:
        """Stream the jobs into the ``jobs`` table with COPY while they are being made.

        Making a job (checking and encoding its args) costs the client about as much as
        writing it costs the server, and the two overlap: the server inserts one chunk while
        the next is made. COPY also writes a page of rows per heap WAL record where ``INSERT
        ... SELECT`` writes one per row, and skips the conflict check. Together they take about
        two fifths off a 1,000-job enqueue. Fewer than ``_COPY_MIN_JOBS`` jobs take the
        one-round-trip insert instead. A clash (nothing was written) falls back to that
        insert too, which skips the existing id.
        """
        source = iter(jobs)
        made = list(itertools.islice(source, _COPY_MIN_JOBS))
        if len(made) < _COPY_MIN_JOBS:
            return self.enqueue(made, queues)
        queues = queues or {}
        columns = ", ".join(name for name, _, _ in _ENQUEUE_COLUMNS)

        def go(cur: psycopg.Cursor) -> None:
            now = self._now()
            with cur.copy(f"COPY jobs ({columns}, created_at, updated_at) FROM STDIN") as copy:
                # a retried transaction first sends again what the failed one had made
                for start in range(0, len(made), _COPY_CHUNK):
                    copy.write(self._copy_chunk(made[start:start + _COPY_CHUNK], now))
                while chunk := list(itertools.islice(source, _COPY_CHUNK)):
                    made.extend(chunk)
                    copy.write(self._copy_chunk(chunk, now))
            cur.execute(*self._after_copy_statement(made, queues))

        try:
            self._run(go, what="enqueue", pipeline=False)
        except StoreError as exc:
            if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise
            return self.enqueue(made + list(source), queues)
        return [EnqueueResult(job.id, True) for job in made]

    @staticmethod
    def _copy_chunk(jobs: list[NewJob], now: float) -> str:
        for status in {job.status for job in jobs}:
            check_transition(None, status)  # raised inside the COPY: nothing is written
        return _copy_text(jobs, now)

    def enqueue(
        self, jobs: list[NewJob], queues: dict[str, int | None] | None = None, *, owner: str | None = None
    ) -> list[EnqueueResult]:
        for status in {job.status for job in jobs}:
            check_transition(None, status)  # all or nothing: refuse before writing
        if not jobs:
            return []
        first: dict[str, NewJob] = {}
        for job in jobs:
            first.setdefault(job.id, job)
        fresh = list(first.values())

        def go(cur: psycopg.Cursor) -> set[str]:
            cur.execute(*self._enqueue_statement(fresh, queues or {}, self._now()))
            # the ids are read with the COMMIT's round trip
            return _Deferred(lambda: set(_scalar(cur)))  # type: ignore[return-value]

        def go_owned(cur: psycopg.Cursor) -> set[str]:
            cur.execute(*self._enqueue_statement(fresh, queues or {}, self._now()))
            made = set(_scalar(cur))
            others = sorted(job.id for job in fresh if job.id not in made)
            if others:
                # after the insert: ON CONFLICT waited for any concurrent insert of these ids to
                # commit, and this statement's snapshot sees it; raising rolls the insert back
                cur.execute("SELECT min(id) FROM jobs WHERE id = ANY(%s) AND tenant IS DISTINCT FROM %s",
                            (others, owner))
                taken = _scalar(cur)
                if taken is not None:
                    raise JobIdTaken(taken)
            return made

        if owner is not None:
            created = self._run(go_owned, what="enqueue", pipeline=False)
        else:
            created = self._run(go, what="enqueue", pipeline=True)
        if len(created) == len(jobs):
            return [EnqueueResult(job.id, True) for job in jobs]
        results, seen = [], set()
        for job in jobs:
            ok = job.id in created and job.id not in seen
            seen.add(job.id)
            results.append(EnqueueResult(job.id, ok))
        return results

    @staticmethod
    def _enqueue_prelude(fresh: list[NewJob], queues: dict[str, int | None]) -> tuple[list[str], list[Any]]:
        """The CTEs (and their parameters) every enqueue statement starts with: the queue rows,
        and the fairness groups its waiting jobs make ready, under their shared locks. Spare
        queue or group rows (for a job that existed already) are harmless: a claim drops an
        empty group's row."""
        ctes: list[str] = []
        params: list[Any] = []
        if queues:
            names = sorted(queues)
            ctes.append(
                "q AS (INSERT INTO queues (name, max_concurrency) "
                "SELECT * FROM unnest(%t::text[], %t::int[]) ON CONFLICT DO NOTHING)"
            )
            params += [names, [queues[n] for n in names]]
        ready_groups = sorted({j.fair_key for j in fresh if j.status is Status.WAITING})
        if ready_groups:
            ctes.append(
                f"fl AS ({_LOCKED_FAIR_KEYS}), "
                "fk AS (INSERT INTO fair_keys (key) SELECT k FROM fl ON CONFLICT DO NOTHING)"
            )
            params += [_NS_FAIR, ready_groups]
        return ctes, params

    @staticmethod
    def _enqueue_epilogue(fresh: list[NewJob], ctes: list[str], params: list[Any], *, created_only: bool) -> str:
        """Add the CTE that writes the jobs' segments (``created_only``: those of the jobs the
        ``ins`` CTE created) and the parameters of the returned select expression, which
        notifies the jobs' queues."""
        segments = [row for j in fresh if j.segments for row in j.segment_rows()]
        if segments:
            join = " JOIN ins ON ins.id = s.j" if created_only else ""
            ctes.append(
                "seg AS (INSERT INTO segments (job_id, arg, idx, data) SELECT s.j, s.a, s.i, s.d "
                f"FROM unnest(%t::text[], %t::text[], %t::int[], %t::text[]) AS s(j, a, i, d){join})"
            )
            params += [list(c) for c in zip(*segments)]
        params += [CHANNEL, sorted({j.queue for j in fresh})]
        return "(SELECT count(pg_notify(%s, q)) FROM unnest(%t::text[]) AS q)"

    @classmethod
    def _enqueue_statement(
        cls, fresh: list[NewJob], queues: dict[str, int | None], now: float
    ) -> tuple[str, list[Any]]:
        """One statement that writes a whole enqueue: the prelude (``_enqueue_prelude``), the
        jobs and their segments, and notifies the jobs' queues. No event row: the job row is
        the enqueue (see ``timeline_from_rows``).

        Its one row holds the array of the ids it created (``ON CONFLICT (id) DO NOTHING``
        skips the others, and with them their segments). A column with one value for every
        job is sent once rather than as an array of copies; the rest are unnested from arrays.
        """
        ctes, params = cls._enqueue_prelude(fresh, queues)
        select: list[str] = []
        unnested: list[str] = []
        arrays: list[list[Any]] = []
        for name, kind, column, same in _enqueue_columns(fresh):
            if same:
                select.append(f"%s::{kind}")
                params.append(column[0])
            else:
                select.append(f"u.{name}")
                unnested.append(name)
                arrays.append(list(column))
        select.append("%s::float8, %s::float8")  # created_at, updated_at
        params += [now, now]
        source = ""
        if unnested:
            types = ", ".join(f"%t::{kind}[]" for name, kind, _ in _ENQUEUE_COLUMNS if name in unnested)
            source = f" FROM unnest({types}) AS u({', '.join(unnested)})"
            params += arrays
        columns = ", ".join(name for name, _, _ in _ENQUEUE_COLUMNS)
        ctes.append(
            f"ins AS (INSERT INTO jobs ({columns}, created_at, updated_at) SELECT {', '.join(select)}{source} "
            "ON CONFLICT (id) DO NOTHING RETURNING id)"
        )
        notify = cls._enqueue_epilogue(fresh, ctes, params, created_only=True)
        # the select list of a row without FROM is evaluated once, whatever ``ins`` holds: the
        # notifications go out at commit. A spare one (the queue of a job that existed already)
        # wakes a worker once, harmlessly.
        return f"WITH {', '.join(ctes)} SELECT ARRAY(SELECT id FROM ins), {notify}", params

    @classmethod
    def _after_copy_statement(cls, fresh: list[NewJob], queues: dict[str, int | None]) -> tuple[str, list[Any]]:
        """What an enqueue writes besides jobs that COPY wrote already (``enqueue_new``, every
        one of them new): the prelude, their segments, and the notifications."""
        ctes, params = cls._enqueue_prelude(fresh, queues)
        notify = cls._enqueue_epilogue(fresh, ctes, params, created_only=False)
        return f"{'WITH ' if ctes else ''}{', '.join(ctes)} SELECT {notify}", params

    # -- reading --------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
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
            where.append("status = ANY(%t::text[])")
            params.append([Status(s).value for s in status])
        for column, value in (("queue", queue), ("task", task), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )
        return [_job_from_row(r) for r in rows]

    def count_jobs(self, *, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        else:
            rows = self._read("SELECT status, COUNT(*) FROM jobs WHERE queue = %s GROUP BY status", (queue,))
        counts = {s.value: 0 for s in Status}
        counts.update({k: int(v) for k, v in rows})
        return counts

    def events(self, job_id: str) -> list[Event]:
        return timeline_from_rows(job_id, self._read(_TIMELINE, (job_id, job_id)))

    # -- queues and workers ---------------------------------------------------------------
    def set_queue(self, name: str, max_concurrency: int | None) -> None:
        self._run(
            lambda cur: cur.execute(
                "INSERT INTO queues (name, max_concurrency) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET max_concurrency = excluded.max_concurrency",
                (name, max_concurrency),
            ),
            what="set_queue",
        )

    def list_queues(self, *, tenant: str | None = None) -> list[QueueInfo]:
        def go(cur: psycopg.Cursor) -> list[QueueInfo]:
            cur.execute("SELECT name, max_concurrency, paused FROM queues ORDER BY name")
            queues = {
                name: QueueInfo(name, cap, {s.value: 0 for s in Status}, bool(paused))
                for name, cap, paused in cur.fetchall()
            }
            if tenant is None:
                cur.execute("SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status")
            else:
                cur.execute(_TENANT_COUNTS, (tenant,))
            for name, status, count in cur.fetchall():
                info = queues.setdefault(name, QueueInfo(name, None, {s.value: 0 for s in Status}))
                info.counts[status] = int(count)
            return sorted(queues.values(), key=lambda q: q.name)

        return self._run(go, what="read")

    def register_worker(self, info: WorkerInfo) -> None:
        self._run(
            lambda cur: cur.execute(
                "INSERT INTO workers (id, hostname, pid, queues, concurrency, started_at, heartbeat_at, stopped_at, "
                "host_key, pid_start) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues, "
                "concurrency = excluded.concurrency, started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, host_key = excluded.host_key, "
                "pid_start = excluded.pid_start",
                (info.id, info.hostname, info.pid, json.dumps(info.queues), info.concurrency,
                 info.started_at, info.heartbeat_at, info.host_key, info.pid_start),
            ),
            what="register_worker",
        )

    def worker_stopped(self, worker_id: str) -> None:
        self._run(
            lambda cur: cur.execute("UPDATE workers SET stopped_at = %s WHERE id = %s", (self._now(), worker_id)),
            what="worker_stopped",
        )

    def list_workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        clause = "" if include_stopped else "WHERE w.stopped_at IS NULL"
        rows = self._read(
            "SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at, "
            "w.stopped_at, (SELECT COUNT(*) FROM jobs j WHERE j.status = 'running' AND j.worker_id = w.id), "
            f"w.host_key, w.pid_start FROM workers w {clause} ORDER BY w.started_at"
        )
        return [
            WorkerInfo(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4], r[5], r[6], r[7], int(r[8]),
                       r[9], r[10])
            for r in rows
        ]

    # -- claiming ---------------------------------------------------------------------------
    #: scheduled/retrying -> waiting for every job whose run_at has come (SKIP LOCKED: two
    #: claimers promote disjoint rows), with their events and their fairness groups marked
    #: (under the shared group lock, see ``_mark_fair_keys``) — one statement
    _PROMOTE_CTES = (
        "WITH due AS (SELECT id, status FROM jobs WHERE status IN ('scheduled', 'retrying') "
        "AND run_at <= %(now)s ORDER BY run_at LIMIT 5000 FOR UPDATE SKIP LOCKED), "
        "up AS (UPDATE jobs j SET status = 'waiting', updated_at = %(now)s FROM due WHERE j.id = due.id "
        "RETURNING j.id, due.status AS old, j.attempt, j.fair_key), "
        "ev AS (INSERT INTO job_events (job_id, at, from_status, to_status, attempt, reason) "
        "SELECT id, %(now)s, old, 'waiting', attempt, 'due' FROM up), "
        "lk AS (SELECT k, pg_advisory_xact_lock_shared(%(ns)s, hashtext(k)) FROM "
        "(SELECT DISTINCT fair_key AS k FROM up ORDER BY 1) s), "
        "fk AS (INSERT INTO fair_keys (key) SELECT k FROM lk ON CONFLICT DO NOTHING)"
    )
    _PROMOTE = _PROMOTE_CTES + " SELECT count(*) FROM up"

    #: the common case — every ready job in the plain fairness group (no tenant, no limits) and
    #: no queue capped or paused — claimed in one statement, sent after ``_PROMOTE`` and with
    #: the COMMIT in one round trip: take the heads of the plain group (SKIP LOCKED), mark them
    #: running, write their events. ``plain`` says the plain group was the only one and
    #: ``capped`` that capped or paused queues exist; unless plain and not capped nothing is
    #: taken and the full claim decides. One row comes back even when nothing was claimed.
    #: (No per-queue filter here: with one queue, PostgreSQL estimates ``queue <> ALL(...)``
    #: to match no row at all and plans a sequential scan and a sort of every ready job.)
    _FAST_CLAIM = (
        "WITH gate AS (SELECT NOT EXISTS (SELECT 1 FROM fair_keys WHERE key <> '') AS plain, "
        "EXISTS (SELECT 1 FROM queues WHERE paused OR max_concurrency IS NOT NULL) AS capped), "
        "cand AS (SELECT id FROM jobs WHERE status = 'waiting' AND NOT paused AND fair_key = '' {queues}"
        "AND (SELECT plain AND NOT capped FROM gate) "
        "ORDER BY priority DESC, run_at, seq LIMIT %(n)s FOR UPDATE SKIP LOCKED), "
        "c AS (UPDATE jobs j SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
        "lease_until = %(lease)s, started_at = %(now)s, updated_at = %(now)s, "
        "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
        "throttled_since = NULL FROM cand WHERE j.id = cand.id RETURNING j.seq, "
        + ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(",")) + ") "
        "SELECT g.plain, g.capped, " + ", ".join(f"c.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        + " FROM gate g LEFT JOIN c ON true ORDER BY c.priority DESC, c.run_at, c.seq"
    )

    @staticmethod
    def _queue_sql(queues: list[str] | None) -> tuple[str, Any]:
        """The capped or paused queues this claim may take from that have ready jobs."""
        filt = " AND q.name = ANY(%t::text[])" if queues is not None else ""
        return (
            "SELECT q.name, q.max_concurrency, q.paused FROM queues q "
            f"WHERE (q.max_concurrency IS NOT NULL OR q.paused){filt} AND EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.queue = q.name AND j.status = 'waiting') ORDER BY q.name",
            (queues,) if queues is not None else None,
        )

    @staticmethod
    def _queue_room(cur: psycopg.Cursor, rows: list[tuple]) -> dict[str, int]:
        """Free slots of each capped queue, counted from running jobs under a per-queue
        advisory lock (so two claimers cannot both fill the last slot); a paused queue has
        none. Only queues with ready jobs are locked."""
        if not rows:
            return {}
        room = {name: 0 for name, _, paused in rows if paused}
        capped = {name: cap for name, cap, paused in rows if not paused}
        if capped:
            names = sorted(capped)
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(n)) FROM "
                "(SELECT n FROM unnest(%t::text[]) AS n ORDER BY n) s",
                (_NS_QUEUE, names),
            )
            cur.execute(
                "SELECT queue, COUNT(*) FROM jobs WHERE status = 'running' AND queue = ANY(%t::text[]) GROUP BY queue",
                (names,),
            )
            running = {q: int(c) for q, c in cur.fetchall()}
            room.update({q: cap - running.get(q, 0) for q, cap in capped.items()})
        return room

    def claim(
        self, worker_id: str, *, queues: list[str] | None, limit: int, lease: float,
        without_limits: bool = False, ahead: int = 0,
    ) -> ClaimedJobs:
        if limit <= 0:
            return ClaimedJobs()
        if time.monotonic() >= self._fast_claim_after:
            # every job this claim can take holds no limit, so the jobs ``ahead`` come with it
            fast, plain, capped = self._run(
                lambda cur: self._fast_claim(cur, worker_id, queues, limit + max(ahead, 0), lease), what="claim")
            if plain and not capped:
                return ClaimedJobs(fast)
            # tenants, limits or queue caps are in play (nothing was taken): the full claim
            # decides, and the plain-group claim is tried again a little later
            self._fast_claim_after = time.monotonic() + _FAST_CLAIM_RECHECK
        return self._run(lambda cur: self._claim(cur, worker_id, queues, limit, lease, without_limits),
                         what="claim")

    def _fast_claim(self, cur: psycopg.Cursor, worker_id: str, queues: list[str] | None, limit: int,
                    lease: float) -> Any:  # a _Deferred: _run reads it once the pipeline is done
        """The plain-group claim (``_FAST_CLAIM``) in one round trip with its COMMIT; returns
        (jobs, plain, capped)."""
        now = self._now()
        params: dict[str, Any] = {"now": now, "ns": _NS_FAIR, "n": limit, "w": worker_id, "lease": now + lease}
        where = ""
        if queues is not None:
            where, params["queues"] = "AND queue = ANY(%(queues)t::text[]) ", queues
        # promoted first, in a statement of its own: a CTE's changes are invisible to its siblings
        cur.connection.cursor().execute(self._PROMOTE, params)
        cur.execute(self._FAST_CLAIM.format(queues=where), params)

        def claimed() -> tuple[list[Job], bool, bool]:
            rows = cur.fetchall()
            plain, capped = rows[0][0], rows[0][1]
            return [_job_from_row(r[2:]) for r in rows if r[2] is not None], plain, capped

        return _Deferred(claimed)

    def _claim(self, cur: psycopg.Cursor, worker_id: str, queues: list[str] | None, limit: int,
               lease: float, without_limits: bool = False) -> ClaimedJobs:
        now = self._now()
        conn = cur.connection
        page_size = max(limit, 32)
        queue_sql, queue_params = self._queue_sql(queues)
        # the prelude in one round trip: promote due jobs, read caps, limits, the first groups
        with _pipelined(conn):
            promote, caps, limits, groups = (conn.cursor() for _ in range(4))
            promote.execute(self._PROMOTE, {"now": now, "ns": _NS_FAIR})
            caps.execute(queue_sql, queue_params)
            limits.execute("SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits")
            groups.execute("SELECT key, served_at FROM fair_keys ORDER BY served_at, key LIMIT %s", (page_size,))
            cap_rows = caps.fetchall()
            specs = {row[0]: LimitSpec.from_row(*row) for row in limits.fetchall()}
            first_page = groups.fetchall()
        room = self._queue_room(cur, cap_rows)
        admission = _Admission(specs, now)
        chosen, served, empty, many_groups = self._choose(
            cur, admission, room, queues, limit, first_page, page_size, without_limits)
        lease_until = now + lease
        ids = [row[0] for row in chosen]
        if empty:
            self._drop_empty_groups(cur, empty)
        # the writes go out with the COMMIT, in one round trip: the claim's own UPDATE last,
        # its rows read back after the COMMIT was sent (see _Deferred)
        admission.write_back(cur)
        if admission.blocked_ids:
            cur.execute(
                "UPDATE jobs SET throttled_since = COALESCE(throttled_since, %s) WHERE id = ANY(%t::text[])",
                (now, admission.blocked_ids),
            )
        if served and many_groups:
            # fairness: least recently served first; SKIP LOCKED — a group another claimer
            # is stamping right now is being served anyway
            keys, stamps = served_stamps(served, now)
            cur.execute(
                "UPDATE fair_keys f SET served_at = s.at FROM unnest(%t::text[], %t::float8[]) AS s(key, at) "
                "WHERE f.key = s.key AND f.key IN "
                "(SELECT key FROM fair_keys WHERE key = ANY(%t::text[]) ORDER BY key FOR UPDATE SKIP LOCKED)",
                (keys, stamps, keys),
            )
        if not ids:
            return ClaimedJobs(wake_at=admission.wake_at)
        cur.execute(
            "WITH c AS (UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
            "lease_until = %(lease)s, started_at = %(now)s, updated_at = %(now)s, "
            "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
            f"throttled_since = NULL WHERE id = ANY(%(ids)t::text[]) RETURNING {_JOB_COLUMNS}) "
            f"SELECT {_JOB_COLUMNS} FROM c",
            {"w": worker_id, "lease": lease_until, "now": now, "ids": ids},
        )

        def claimed() -> ClaimedJobs:
            by_id = {row[0]: row for row in cur.fetchall()}
            return ClaimedJobs((_job_from_row(by_id[i]) for i in ids if i in by_id), wake_at=admission.wake_at)

        return _Deferred(claimed)  # type: ignore[return-value]

    def _choose(
        self,
        cur: psycopg.Cursor,
        admission: _Admission,
        room: dict[str, int],
        queues: list[str] | None,
        limit: int,
        first_page: list[tuple],
        page_size: int,
        without_limits: bool = False,
    ) -> tuple[list[tuple], list[str], list[str], bool]:
        """Pick up to ``limit`` ready jobs: round-robin over fairness groups (least recently
        served first), then priority, then age; skipping full queues and jobs whose limits do
        not admit them now. The same walk as the SQLite store's, fed by batched, row-locking
        (SKIP LOCKED) reads of each group's head rows.

        Returns (chosen rows, groups served, groups found empty, whether >1 group was seen).
        """
        groups: list[str] = []
        more_groups = True
        last: tuple[float, str] | None = None

        def load_groups(rows: list[tuple] | None = None) -> None:
            nonlocal more_groups, last
            if rows is None:
                cur.execute(
                    "SELECT key, served_at FROM fair_keys WHERE (served_at, key) > (%s, %s) "
                    "ORDER BY served_at, key LIMIT %s",
                    (last[0], last[1], page_size),  # type: ignore[index]  # set by the first page
                )
                rows = cur.fetchall()
            if rows:
                last = (rows[-1][1], rows[-1][0])
            more_groups = len(rows) == page_size
            groups.extend(r[0] for r in rows)

        pending: dict[str, deque] = {}
        fetched_ids: dict[str, list[str]] = {}
        exhausted: set[str] = set()
        inactive: set[str] = set()
        empty: list[str] = []
        chosen: list[tuple] = []
        served: list[str] = []

        def fetch(batch: list[str], per: int) -> None:
            full = sorted(q for q, left in room.items() if left <= 0)
            where = "j.status = 'waiting' AND NOT j.paused AND j.fair_key = g.key"
            params: dict[str, Any] = {"groups": batch, "per": per}
            if queues is not None:
                where += " AND j.queue = ANY(%(queues)t::text[])"
                params["queues"] = queues
            if without_limits:
                where += " AND j.limits IS NULL"
            if full:
                where += " AND NOT (j.queue = ANY(%(full)t::text[]))"
                params["full"] = full
            seen = [i for g in batch for i in fetched_ids.get(g, ())]
            if seen:
                where += " AND NOT (j.id = ANY(%(seen)t::text[]))"
                params["seen"] = seen
            cols = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
            cur.execute(
                f"SELECT g.key, {cols} FROM unnest(%(groups)t::text[]) WITH ORDINALITY AS g(key, ord) "
                f"CROSS JOIN LATERAL (SELECT * FROM jobs j WHERE {where} "
                "ORDER BY j.priority DESC, j.run_at, j.seq LIMIT %(per)s FOR UPDATE OF j SKIP LOCKED) j "
                "ORDER BY g.ord",
                params,
            )
            got: dict[str, list[tuple]] = {g: [] for g in batch}
            for row in cur.fetchall():
                got[row[0]].append(row[1:])
            for group, rows in got.items():
                pending.setdefault(group, deque()).extend(rows)
                fetched_ids.setdefault(group, []).extend(r[0] for r in rows)
                if len(rows) < per:
                    exhausted.add(group)
                    if not fetched_ids[group] and queues is None and not without_limits and not full:
                        empty.append(group)
            admission.lock(cur, (r for rows in got.values() for r in rows))

        load_groups(first_page)
        budget = max(200, limit * 20)
        i = 0
        cycle_progress = False
        while len(chosen) < limit and budget > 0:
            if i >= len(groups):
                if more_groups:
                    load_groups()
                    if i < len(groups):
                        continue
                if not cycle_progress:
                    break
                i, cycle_progress = 0, False
                continue
            group = groups[i]
            i += 1
            if group in inactive:
                continue
            heads = pending.get(group)
            if not heads:
                if group in exhausted:
                    inactive.add(group)
                    continue
                if group not in fetched_ids:
                    # the first visit: fetch heads for this group and the next unfetched ones
                    batch = [g for g in groups[i - 1 : i - 1 + page_size] if g not in fetched_ids and g not in inactive]
                    remaining_slots = limit - len(chosen)
                    per = max(1, math.ceil(remaining_slots / len(batch))) + (1 if len(batch) == 1 else 0)
                    fetch(batch, min(per, 100))
                else:
                    fetch([group], min(max(limit - len(chosen), 1) + 1, 100))
                heads = pending.get(group)
                if not heads:
                    inactive.add(group)
                    continue
            row = heads.popleft()
            budget -= 1
            cycle_progress = True
            queue = row[_J["queue"]]
            if queue in room and room[queue] <= 0:
                continue  # its queue filled during this claim; the next fetch skips it
            raw = row[_J["limits"]]
            limits = json.loads(raw) if raw else []
            if limits and not admission.admit(row[0], limits):
                inactive.add(group)  # this group's head is held back by a limit: serve others
                continue
            if queue in room:
                room[queue] -= 1
            chosen.append(row)
            served.append(group)  # once per job: served_stamps orders groups by their last
        return chosen, served, empty, len(groups) > 1

    def _drop_empty_groups(self, cur: psycopg.Cursor, keys: list[str]) -> None:
        """Delete fairness groups that have no ready job — only under the exclusive advisory
        lock (try, never wait), and re-checked in a fresh statement after it, so a group
        being made ready by a transaction in flight is never lost."""
        cur.execute(
            "SELECT k FROM unnest(%t::text[]) AS k WHERE pg_try_advisory_xact_lock(%s, hashtext(k))",
            (sorted(set(keys)), _NS_FAIR),
        )
        locked = [r[0] for r in cur.fetchall()]
        if locked:
            cur.execute(
                "DELETE FROM fair_keys f WHERE f.key = ANY(%t::text[]) AND NOT EXISTS "
                "(SELECT 1 FROM jobs j WHERE j.status = 'waiting' AND NOT j.paused AND j.fair_key = f.key)",
                (locked,),
            )

    def next_due(self, queues: list[str] | None) -> float | None:
        # paused jobs and queues are not work to wait for
        extra = " AND NOT paused AND NOT (queue = ANY(ARRAY(SELECT name FROM queues WHERE paused)))"
        params: dict[str, Any] = {}
        if queues is not None:
            extra += " AND queue = ANY(%(q)t::text[])"
            params["q"] = queues
        rows = self._read(
            f"SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE status = 'waiting'{extra}) THEN 0 ELSE "
            f"(SELECT MIN(run_at) FROM jobs WHERE status IN ('scheduled', 'retrying'){extra}) END",
            params or None,
        )
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    # -- finishing --------------------------------------------------------------------------
    def finish(self, worker_id: str, outcomes: list[Outcome]) -> list[str]:
        if not outcomes:
            return []
        unique: dict[str, Outcome] = {}
        for o in outcomes:
            check_transition(Status.RUNNING, o.status)
            unique.setdefault(o.job_id, o)
        batch = list(unique.values())

        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            # one statement: the guarded update, the events, step slots and the finished jobs'
            # own state go; the slots come back as 's' rows to be released below
            cur.execute(
                "WITH o AS (SELECT * FROM unnest(%(ids)t::text[], %(attempts)t::int[], %(statuses)t::text[], "
                "%(results)t::text[], %(errors)t::text[], %(run_ats)t::float8[], %(back)t::int[], "
                "%(throttled)t::float8[], %(finals)t::bool[], %(reasons)t::text[], %(purge)t::bool[], "
                "%(events)t::bool[]) "
                "AS o(id, attempt, status, result, error, run_at, back, throttled, final, reason, purge, events)), "
                "u AS (UPDATE jobs j SET status = o.status, result = o.result, "
                "error = CASE WHEN o.status = 'complete' THEN NULL ELSE COALESCE(o.error, j.error) END, "
                "run_at = COALESCE(o.run_at, j.run_at), attempt = j.attempt - o.back, "
                "worker_id = CASE WHEN o.final THEN j.worker_id END, "
                "lease_until = NULL, cancel_requested = false, updated_at = %(now)s, "
                "throttled_seconds = j.throttled_seconds + o.throttled, "
                "finished_at = CASE WHEN o.final THEN %(now)s ELSE j.finished_at END "
                "FROM o WHERE j.id = o.id AND j.status = 'running' AND j.worker_id = %(w)s "
                "AND j.attempt = o.attempt "
                "RETURNING j.id, j.limits, j.fair_key, j.state_key, j.queue, o.status, o.attempt, "
                "o.attempt - o.back AS ev_attempt, j.started_at, o.error, o.reason, o.purge, o.events), "
                # a plain completion stores no event (the row holds the run, see
                # ``stores_run_events``); any other end stores the run's start, then its end
                "e AS (INSERT INTO job_events (job_id, at, from_status, to_status, attempt, error, worker_id, reason) "
                "SELECT u.id, v.at, v.src, v.dst, v.attempt, v.error, %(w)s, v.reason FROM u CROSS JOIN LATERAL "
                "(VALUES (0, u.started_at, 'waiting', 'running', u.attempt, NULL, NULL), "
                "(1, %(now)s, 'running', u.status, u.ev_attempt, u.error, u.reason)) "
                "AS v(k, at, src, dst, attempt, error, reason) WHERE u.events ORDER BY u.id, v.k), "
                # each delete is gated on its table holding any row at all (a one-time check):
                # plain jobs use none of them, and probing an empty table once per job cost
                # a tenth of this statement
                "sl AS (DELETE FROM job_slots WHERE job_id IN (SELECT id FROM u) "
                "AND EXISTS (SELECT FROM job_slots) RETURNING limit_name, key), "
                "sg AS (DELETE FROM segments WHERE job_id IN (SELECT id FROM u WHERE purge) "
                "AND EXISTS (SELECT FROM segments)), "
                "st AS (DELETE FROM state WHERE key IN (SELECT 'job:' || id FROM u WHERE purge AND state_key IS NULL) "
                "AND EXISTS (SELECT FROM state)), "
                "lg AS (DELETE FROM ledger WHERE state_key IN "
                "(SELECT 'job:' || id FROM u WHERE purge AND state_key IS NULL) AND EXISTS (SELECT FROM ledger)) "
                "SELECT 'j', id, limits, fair_key, queue, status FROM u "
                "UNION ALL SELECT 's', limit_name, key, NULL, NULL, NULL FROM sl",
                {
                    "ids": [o.job_id for o in batch],
                    "attempts": [o.attempt for o in batch],
                    "statuses": [o.status.value for o in batch],
                    "results": [o.result_json for o in batch],
                    "errors": [json.dumps(o.error) if o.error else None for o in batch],
                    "run_ats": [float(o.run_at) if o.run_at is not None else None for o in batch],
                    "back": [0 if o.spend_attempt else 1 for o in batch],
                    "throttled": [float(o.throttled_seconds) for o in batch],
                    "finals": [o.status.is_final for o in batch],
                    "reasons": [o.reason for o in batch],
                    "purge": [o.status is Status.COMPLETE and o.purge_state for o in batch],
                    "events": [stores_run_events(o.status, o.error, o.reason) for o in batch],
                    "now": now,
                    "w": worker_id,
                },
            )
            rows = cur.fetchall()
            written: set[str] = set()
            held: list[list[str]] = []
            ready_groups, wake_queues = set(), set()
            for tag, job_id, limits, fair_key, queue, status in rows:
                if tag == "s":
                    held.append([job_id, limits])  # a step slot: (limit_name, key)
                    continue
                written.add(job_id)
                if limits:
                    held.extend(json.loads(limits))
                    wake_queues.add(queue)  # a concurrency slot came free
                if status == Status.WAITING.value:
                    ready_groups.add(fair_key)
                    wake_queues.add(queue)
                elif status in (Status.SCHEDULED.value, Status.RETRYING.value):
                    wake_queues.add(queue)  # idle workers recompute when to look again
            if ready_groups or held or wake_queues:
                with _pipelined(cur.connection):
                    self._mark_fair_keys(cur, ready_groups)
                    self._release_limits(cur, held)
                    self._notify(cur, wake_queues)
            return [o.job_id for o in batch if o.job_id in written]

        return self._run(go, what="finish")

    @staticmethod
    def _take_slots(cur: psycopg.Cursor, job_ids: list[str]) -> list[list[str]]:
        """Step slots still held by jobs that stopped running (a crash mid-step): deleted
        here, returned so ``_release_limits`` gives them back."""
        if not job_ids:
            return []
        cur.execute("DELETE FROM job_slots WHERE job_id = ANY(%t::text[]) RETURNING limit_name, key", (job_ids,))
        return [[name, key] for name, key in cur.fetchall()]

    @staticmethod
    def _release_limits(cur: psycopg.Cursor, held: list[list[str]]) -> None:
        """Jobs left ``running``: give back their slots, one locked update per (limit, key),
        rows locked in key order."""
        if not held:
            return
        counts: dict[tuple[str, str], int] = {}
        for name, key in held:
            counts[(name, key)] = counts.get((name, key), 0) + 1
        ordered = sorted(counts)
        cur.execute(
            "WITH v AS (SELECT * FROM unnest(%t::text[], %t::text[], %t::int[]) AS v(n, k, c)), "
            "locked AS (SELECT l.limit_name, l.key, v.c FROM limit_keys l JOIN v ON l.limit_name = v.n AND l.key = v.k "
            "ORDER BY l.limit_name, l.key FOR UPDATE OF l) "
            "UPDATE limit_keys l SET running = GREATEST(l.running - locked.c, 0) FROM locked "
            "WHERE l.limit_name = locked.limit_name AND l.key = locked.key",
            ([p[0] for p in ordered], [p[1] for p in ordered], [counts[p] for p in ordered]),
        )

    def heartbeat(self, worker_id: str, job_ids: list[str], lease: float) -> Renewal:
        def go(cur: psycopg.Cursor) -> Renewal:
            now = self._now()
            cur.execute("UPDATE workers SET heartbeat_at = %s WHERE id = %s", (now, worker_id))
            if not job_ids:
                return Renewal()
            cur.execute(
                "UPDATE jobs SET lease_until = %s WHERE worker_id = %s AND status = 'running' "
                "AND lease_until >= %s AND id = ANY(%t::text[]) RETURNING id, cancel_requested",
                (now + lease, worker_id, now, sorted(job_ids)),
            )
            rows = cur.fetchall()
            return Renewal({r[0] for r in rows if r[1]}, set(job_ids) - {r[0] for r in rows})

        return self._run(go, what="heartbeat")

    def rescue_expired(self) -> list[str]:
        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            cur.execute(
                "SELECT id, attempt, max_attempts, worker_id, cancel_requested, limits, fair_key, queue, started_at "
                "FROM jobs WHERE status = 'running' AND lease_until < %s ORDER BY id FOR UPDATE SKIP LOCKED",
                (now,),
            )
            expired = cur.fetchall()
            if not expired:
                return []
            events, held, ready, wake = [], [], [], set()
            ids, targets, errors, finals = [], [], [], []
            for job_id, attempt, max_attempts, owner, cancel_requested, limits, fair_key, queue, started in expired:
                if limits:
                    held.extend(json.loads(limits))
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
                    ready.append(fair_key)
                    wake.add(queue)
                if held:
                    wake.add(queue)
                ids.append(job_id)
                targets.append(target.value)
                errors.append(json.dumps(error))
                finals.append(target.is_final)
                # the claim stored no event: the run's start goes in with its end
                events.append(self._event(job_id, started, Status.WAITING, Status.RUNNING, attempt, worker_id=owner))
                events.append(self._event(job_id, now, Status.RUNNING, target, attempt, error=error,
                                          worker_id=owner, reason=reason))
            cur.execute(
                "UPDATE jobs j SET status = v.status, worker_id = CASE WHEN v.final THEN j.worker_id END, "
                "lease_until = NULL, error = v.error, "
                "updated_at = %s, finished_at = CASE WHEN v.final THEN %s ELSE NULL END "
                "FROM unnest(%t::text[], %t::text[], %t::text[], %t::bool[]) AS v(id, status, error, final) "
                "WHERE j.id = v.id AND j.status = 'running'",
                (now, now, ids, targets, errors, finals),
            )
            self._insert_events(cur, events)
            held.extend(self._take_slots(cur, ids))
            self._mark_fair_keys(cur, ready)
            self._release_limits(cur, held)
            self._notify(cur, wake)
            return ids

        return self._run(go, what="rescue")

    def lease_holders(self) -> list[LeaseHolder]:
        rows = self._read(
            "SELECT j.worker_id, COUNT(*), MIN(j.lease_until), w.host_key, w.pid, w.pid_start, w.heartbeat_at, "
            "w.stopped_at FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id "
            "WHERE j.status = 'running' AND j.worker_id IS NOT NULL "
            "GROUP BY j.worker_id, w.host_key, w.pid, w.pid_start, w.heartbeat_at, w.stopped_at"
        )
        now = self._now()
        # each row holds the fields before observed_at, in order
        return [LeaseHolder(r[0], int(r[1]), *r[2:], observed_at=now) for r in rows]  # type: ignore[misc]

    def rescue_worker(self, worker_id: str, *, dead: bool, heartbeat_before: float | None = None) -> list[str]:
        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            # the worker row locked: a heartbeat of that worker waits for this rescue, or wins
            cur.execute("SELECT heartbeat_at FROM workers WHERE id = %s FOR UPDATE", (worker_id,))
            row = cur.fetchone()
            if heartbeat_before is not None and (row is None or row[0] >= heartbeat_before):
                return []  # it spoke meanwhile: alive after all
            if dead:
                cur.execute("UPDATE workers SET stopped_at = COALESCE(stopped_at, %s) WHERE id = %s", (now, worker_id))
            cur.execute(
                "SELECT id, attempt, max_attempts, cancel_requested, limits, fair_key, queue, started_at, lost_runs "
                "FROM jobs WHERE status = 'running' AND worker_id = %s ORDER BY id FOR UPDATE SKIP LOCKED",
                (worker_id,),
            )
            lost = cur.fetchall()
            if not lost:
                return []
            events, held, ready, wake = [], [], [], set()
            ids, targets, errors, finals, back = [], [], [], [], []
            for job_id, attempt, max_attempts, cancel_requested, limits, fair_key, queue, started, lost_runs in lost:
                if limits:
                    held.extend(json.loads(limits))
                    wake.add(queue)
                target, reason, error, give_back = worker_rescue(
                    worker_id, attempt, max_attempts, bool(cancel_requested), lost_runs, dead=dead
                )
                if target is Status.WAITING:
                    ready.append(fair_key)
                    wake.add(queue)
                ids.append(job_id)
                targets.append(target.value)
                errors.append(json.dumps(error))
                finals.append(target.is_final)
                back.append(int(give_back))
                # the claim stored no event: the run's start goes in with its end
                events.append(self._event(job_id, started, Status.WAITING, Status.RUNNING, attempt, worker_id=worker_id))
                events.append(self._event(job_id, now, Status.RUNNING, target, attempt - int(give_back), error=error,
                                          worker_id=worker_id, reason=reason))
            cur.execute(
                "UPDATE jobs j SET status = v.status, worker_id = CASE WHEN v.final THEN j.worker_id END, "
                "lease_until = NULL, error = v.error, attempt = j.attempt - v.back, lost_runs = j.lost_runs + %s, "
                "updated_at = %s, finished_at = CASE WHEN v.final THEN %s ELSE NULL END "
                "FROM unnest(%t::text[], %t::text[], %t::text[], %t::bool[], %t::int[]) "
                "AS v(id, status, error, final, back) "
                "WHERE j.id = v.id AND j.status = 'running'",
                (int(dead), now, now, ids, targets, errors, finals, back),
            )
            self._insert_events(cur, events)
            held.extend(self._take_slots(cur, ids))
            self._mark_fair_keys(cur, ready)
            self._release_limits(cur, held)
            self._notify(cur, wake)
            return ids

        return self._run(go, what="rescue")

    def average_duration(self, tasks: list[str], *, sample: int = 200) -> float | None:
        if not tasks:
            return None
        rows = self._read(
            "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
            "WHERE status = 'complete' AND task = ANY(%t::text[]) ORDER BY finished_at DESC LIMIT %s) s",
            (tasks, sample),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- limits ---------------------------------------------------------------------------
    def declare_limit(self, spec: LimitSpec) -> None:
        declared = json.dumps(spec.to_dict(), sort_keys=True)

        def go(cur: psycopg.Cursor) -> None:
            cur.execute("SELECT declared FROM limits WHERE name = %s FOR UPDATE", (spec.name,))
            row = cur.fetchone()
            if row is not None and row[0] == declared:
                return  # unchanged in code: keep any change made at run time
            self._write_limit(cur, spec, declared)

        self._run(go, what="declare_limit")

    def update_limit(self, spec: LimitSpec) -> None:
        def go(cur: psycopg.Cursor) -> None:
            cur.execute("SELECT declared FROM limits WHERE name = %s FOR UPDATE", (spec.name,))
            row = cur.fetchone()
            self._write_limit(cur, spec, row[0] if row else None)

        self._run(go, what="update_limit")

    def _write_limit(self, cur: psycopg.Cursor, spec: LimitSpec, declared: str | None) -> None:
        cur.execute(
            "INSERT INTO limits (name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds, declared, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            "rate_count = excluded.rate_count, rate_period = excluded.rate_period, burst = excluded.burst, "
            "concurrency = excluded.concurrency, key = excluded.key, adaptive = excluded.adaptive, "
            "bounds = excluded.bounds, declared = excluded.declared, updated_at = excluded.updated_at",
            (spec.name, spec.rate.count if spec.rate else None, spec.rate.period if spec.rate else None,
             spec.burst, spec.concurrency, spec.key, bool(spec.adaptive), spec.bounds, declared, self._now()),
        )
        # a rate set in code or by an operator is their word: what was learned before is forgotten
        cur.execute("UPDATE limit_keys SET learned = NULL WHERE limit_name = %s AND learned IS NOT NULL", (spec.name,))

    def list_limits(self, *, tenant_keys: Iterable[str] | None = None) -> list[LimitInfo]:
        def go(cur: psycopg.Cursor) -> list[LimitInfo]:
            now = self._now()
            cur.execute(
                "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits ORDER BY name"
            )
            infos = {row[0]: LimitInfo(LimitSpec.from_row(*row)) for row in cur.fetchall()}
            cur.execute(
                "SELECT limit_name, key, tat, paused_until, pause_reason, running, admitted, rate_limited, learned "
                "FROM limit_keys ORDER BY limit_name, key"
            )
            for name, key, tat, paused_until, reason, running, admitted, limited, learned in cur.fetchall():
                info = infos.get(name)
                if info is not None:
                    info.keys.append(key_info(info.spec, key, tat, paused_until, reason, running, int(admitted),
                                              int(limited), learned, now))
            return list(infos.values())

        return self._run(go, what="read")

    _SPEC_SQL = "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits WHERE name = %s"

    @classmethod
    def _spec_and_lock(cls, cur: psycopg.Cursor, name: str, key: str) -> tuple[LimitSpec, tuple]:
        """The limit's spec and its key's row, locked (created if missing) — one round trip."""
        conn = cur.connection
        with _pipelined(conn):
            spec_cur = conn.cursor()
            spec_cur.execute(cls._SPEC_SQL, (name,))
            cur.execute(
                "INSERT INTO limit_keys (limit_name, key) SELECT %s, %s WHERE EXISTS "
                "(SELECT 1 FROM limits WHERE name = %s) ON CONFLICT DO NOTHING",
                (name, key, name),
            )
            cur.execute(
                "SELECT tat, paused_until, running, admitted, learned FROM limit_keys "
                "WHERE limit_name = %s AND key = %s FOR UPDATE",
                (name, key),
            )
            row = spec_cur.fetchone()
            state = cur.fetchone()
        if row is None:
            raise ConfigError(f"unknown limit {name!r}")
        assert state is not None  # the row was inserted above when missing
        return LimitSpec.from_row(*row), state

    def acquire(self, name: str, key: str, cost: int = 1) -> tuple[bool, float]:
        def go(cur: psycopg.Cursor) -> tuple[bool, float]:
            now = self._now()
            spec, (tat, paused_until, _, admitted, learned) = self._spec_and_lock(cur, name, key)
            if paused_until > now:
                return False, paused_until
            rate, burst = key_pace(spec, Learned.loads(learned), int(admitted), now)
            if rate is None:
                return True, now
            ok, new_tat, retry_at = gcra(tat, now, rate, burst, cost)
            if not ok:
                return False, retry_at
            cur.execute(
                "UPDATE limit_keys SET tat = %s, admitted = admitted + %s WHERE limit_name = %s AND key = %s",
                (new_tat, cost, name, key),
            )
            return True, now

        ok, at = self._run(go, what="acquire")
        return ok, at - self._offset

    def paused_until(self, name: str, key: str) -> float:
        rows = self._read("SELECT paused_until FROM limit_keys WHERE limit_name = %s AND key = %s", (name, key))
        return float(rows[0][0]) - self._offset if rows and rows[0][0] else 0.0

    def resume_limit(self, name: str, key: str | None = None) -> int:
        def go(cur: psycopg.Cursor) -> int:
            now = self._now()
            cur.execute("SELECT 1 FROM limits WHERE name = %s", (name,))
            if cur.fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = %s AND paused_until > %s", [name, now]
            if key is not None:
                where += " AND key = %s"
                params.append(key)
            # the key's GCRA state restarts now: the budget comes back at the steady rate
            with _pipelined(cur.connection):
                cur.execute(
                    f"UPDATE limit_keys SET paused_until = 0, pause_reason = NULL, tat = %s WHERE {where}", (now, *params)
                )
            count = cur.rowcount
            if count:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))  # held-back jobs may run now
            return count

        return self._run(go, what="resume_limit")

    def pause_limit(self, name: str, key: str, until: float, reason: str) -> float:
        until = until + self._offset

        def go(cur: psycopg.Cursor) -> float:
            spec, (tat, paused_until, _, admitted, learned) = self._spec_and_lock(cur, name, key)
            end = max(until, paused_until)
            rate, burst = key_pace(spec, Learned.loads(learned), int(admitted), self._now())
            if rate is not None:
                # no burst at the reset: one admission at `end`, then the steady rate
                tat = max(tat, end + rate.interval * (burst - 1))
            cur.execute(
                "UPDATE limit_keys SET tat = %s, paused_until = %s, pause_reason = %s, rate_limited = rate_limited + 1 "
                "WHERE limit_name = %s AND key = %s",
                (tat, end, reason, name, key),
            )
            return end

        return self._run(go, what="pause_limit") - self._offset

    def observe_limit(self, name: str, key: str, obs: Observation) -> tuple[float | None, str | None]:
        # the learned state keeps the server's clock, like every other time in this store
        shift = self._offset
        obs = Observation(**{**obs.__dict__, "now": obs.now + shift,
                             "token_at": None if obs.token_at is None else obs.token_at + shift,
                             "reset_at": None if obs.reset_at is None else obs.reset_at + shift})

        def go(cur: psycopg.Cursor) -> tuple[float | None, str | None]:
            spec, (tat, _, _, admitted, raw) = self._spec_and_lock(cur, name, key)
            learned, changed = observe(spec, Learned.loads(raw), int(admitted), obs)
            cur.execute("UPDATE limit_keys SET tat = %s, learned = %s WHERE limit_name = %s AND key = %s",
                        (settled_tat(spec, float(tat), learned, int(admitted), changed, obs.now), learned.dumps(), name, key))
            if changed:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))  # a faster rate may admit held jobs now
            return effective_rate(spec, learned, int(admitted), obs.now), changed

        return self._run(go, what="observe_limit")

    def reset_learned(self, name: str, key: str | None = None) -> int:
        def go(cur: psycopg.Cursor) -> int:
            cur.execute("SELECT 1 FROM limits WHERE name = %s", (name,))
            if cur.fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = %s AND learned IS NOT NULL", [name]
            if key is not None:
                where += " AND key = %s"
                params.append(key)
            cur.execute(f"UPDATE limit_keys SET learned = NULL WHERE {where}", params)
            return cur.rowcount

        return self._run(go, what="reset_learned")

    # -- resumable work ---------------------------------------------------------------------
    def load_state(self, key: str) -> StateSnapshot:
        rows = self._read("SELECT cursor, checkpoints FROM state WHERE key = %s", (key,))
        if not rows:
            return StateSnapshot(key)
        return StateSnapshot(key, json.loads(rows[0][0]) if rows[0][0] is not None else None, rows[0][1])

    def load_ledger(self, key: str) -> dict[str, str | None]:
        return dict(self._read("SELECT entry, result FROM ledger WHERE state_key = %s", (key,)))

    @staticmethod
    def _check_owner(cur: psycopg.Cursor, job_id: str, worker_id: str, attempt: int) -> Callable[[], None]:
        """Send the ownership check now, verify it later: with ``_run(pipeline=True)`` the
        writes that follow go out in the same round trip, and a failed check raises
        ``LeaseLost`` before COMMIT, so they are rolled back. FOR SHARE: a rescue cannot take
        the job away until this transaction commits."""
        check = cur.connection.cursor()
        check.execute(
            "SELECT 1 FROM jobs WHERE id = %s AND status = 'running' AND worker_id = %s AND attempt = %s FOR SHARE",
            (job_id, worker_id, attempt),
        )

        def verify() -> None:
            if check.fetchone() is None:
                raise LeaseLost(f"job {job_id}: this run (attempt {attempt}) no longer owns the job")

        return verify

    def checkpoint(self, job_id: str, worker_id: str, attempt: int, key: str, cursor_json: str) -> int:
        def go(cur: psycopg.Cursor) -> int:
            verify = self._check_owner(cur, job_id, worker_id, attempt)
            cur.execute("DELETE FROM ledger WHERE state_key = %s", (key,))
            cur.execute(
                "INSERT INTO state (key, cursor, checkpoints, job_id, updated_at) VALUES (%s, %s, 1, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, checkpoints = state.checkpoints + 1, "
                "job_id = excluded.job_id, updated_at = excluded.updated_at RETURNING checkpoints",
                (key, cursor_json, job_id, self._now()),
            )
            verify()
            return _scalar(cur)

        return self._run(go, what="checkpoint", pipeline=True)

    def record_once(
        self, job_id: str, worker_id: str, attempt: int, key: str, entry: str, result_json: str | None
    ) -> None:
        def go(cur: psycopg.Cursor) -> None:
            verify = self._check_owner(cur, job_id, worker_id, attempt)
            cur.execute(
                "INSERT INTO ledger (state_key, entry, result, created_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (state_key, entry) DO UPDATE SET result = excluded.result, created_at = excluded.created_at",
                (key, entry, result_json, self._now()),
            )
            verify()

        self._run(go, what="record_once", pipeline=True)

    def load_segment(self, job_id: str, arg: str, index: int) -> str:
        rows = self._read(
            "SELECT data FROM segments WHERE job_id = %s AND arg = %s AND idx = %s", (job_id, arg, index)
        )
        if not rows:
            raise StoreError(f"job {job_id}: segment {index} of {arg!r} is missing")
        return rows[0][0]

    def set_paused(self, *, job_id: str | None = None, queue: str | None = None, paused: bool) -> int:
        if (job_id is None) == (queue is None):
            raise ConfigError("pause: name one job or one queue")

        def go(cur: psycopg.Cursor) -> int:
            if job_id is not None:
                cur.execute("SELECT status, fair_key, queue FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
                row = cur.fetchone()
                if row is None:
                    raise JobNotFound(f"no job with id {job_id!r}")
                if Status(row[0]).is_final:
                    raise TransitionError(f"job {job_id} is {row[0]}; only unfinished jobs can be paused")
                with _pipelined(cur.connection):
                    cur.execute("UPDATE jobs SET paused = %s, updated_at = %s WHERE id = %s",
                                (bool(paused), self._now(), job_id))
                count = cur.rowcount
                if not paused:
                    self._mark_fair_keys(cur, [row[1]])
                    self._notify(cur, [row[2]])
                return count
            cur.execute(
                "INSERT INTO queues (name, max_concurrency) VALUES (%s, 1) ON CONFLICT DO NOTHING", (queue,)
            )
            with _pipelined(cur.connection):
                cur.execute("UPDATE queues SET paused = %s WHERE name = %s", (bool(paused), queue))
            count = cur.rowcount
            if not paused:
                self._notify(cur, [str(queue)])  # a queue is named on this path
            return count

        return self._run(go, what="set_paused")

    def paused_among(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        rows = self._read(
            "SELECT j.id FROM jobs j LEFT JOIN queues q ON q.name = j.queue "
            "WHERE j.id = ANY(%t::text[]) AND (j.paused OR COALESCE(q.paused, false))",
            (list(job_ids),),
        )
        return {r[0] for r in rows}

    def activity(self, since: float, *, tenant: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        queries = _TENANT_ACTIVITY if tenant is not None else _ACTIVITY
        scope: tuple[Any, ...] = (tenant,) if tenant is not None else ()

        def go(cur: psycopg.Cursor) -> dict[str, dict[str, dict[str, int]]]:
            queues: dict[str, dict[str, int]] = {}
            cur.execute(queries["created"], (*scope, since))
            for queue, created in cur.fetchall():
                queues.setdefault(queue, {"created": 0, "finished": 0})["created"] = int(created)
            cur.execute(queries["finished"], (*scope, since))
            for queue, finished in cur.fetchall():
                queues.setdefault(queue, {"created": 0, "finished": 0})["finished"] = int(finished)
            limits: dict[str, dict[str, int]] = {}
            # grouped by the job's (limit, key) list: a few distinct lists, however many jobs
            for field, sql, params in (("waiting", queries["limits_waiting"], scope),
                                       ("created", queries["limits_created"], (*scope, since)),
                                       ("finished", queries["limits_finished"], (*scope, since))):
                cur.execute(sql, params)
                for held, count in cur.fetchall():
                    for name in {pair[0] for pair in json.loads(held)}:
                        limits.setdefault(name, {"waiting": 0, "created": 0, "finished": 0})[field] += int(count)
            return {"queues": queues, "limits": limits}

        return self._run(go, what="read")

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
        rows = self._read(
            f"SELECT {self._STEP_COLUMNS} FROM steps WHERE job_id = %s ORDER BY started_at", (job_id,)
        )
        return {r[1]: self._step_from_row(r) for r in rows}

    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        def go(cur: psycopg.Cursor) -> None:
            verify = self._check_owner(cur, record.job_id, worker_id, attempt)
            updates = ", ".join(
                f"{c.strip()} = excluded.{c.strip()}" for c in self._STEP_COLUMNS.split(",")[2:]
            )
            cur.execute(
                f"INSERT INTO steps ({self._STEP_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (job_id, step_id) DO UPDATE SET {updates}",
                (record.job_id, record.step_id, record.kind, bool(record.critical), record.status,
                 record.result_json, json.dumps(record.error) if record.error else None, record.attempts,
                 record.retries, record.duration, record.total_time, record.throttle_overhead,
                 json.dumps(record.throttle) if record.throttle else None, record.tenant,
                 record.started_at, record.finished_at),
            )
            verify()

        self._run(go, what="record_step", pipeline=True)

    def step_records(self, *, kind: str | None = None, since: float | None = None, limit: int = 1000) -> list[StepRecord]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = %s")
            params.append(kind)
        if since is not None:
            where.append("finished_at >= %s")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {self._STEP_COLUMNS} FROM steps {clause} ORDER BY finished_at DESC LIMIT %s", (*params, limit)
        )
        return [self._step_from_row(r) for r in rows]

    def acquire_slot(self, job_id: str, name: str, key: str, holder: str) -> bool:
        def go(cur: psycopg.Cursor) -> bool:
            spec, (_, _, running, _, _) = self._spec_and_lock(cur, name, key)
            if spec.concurrency is not None and running >= spec.concurrency:
                return False
            with _pipelined(cur.connection):
                cur.execute(
                    "UPDATE limit_keys SET running = running + 1, admitted = admitted + 1 "
                    "WHERE limit_name = %s AND key = %s",
                    (name, key),
                )
                cur.execute(
                    "INSERT INTO job_slots (job_id, limit_name, key, holder, acquired_at) VALUES (%s, %s, %s, %s, %s)",
                    (job_id, name, key, holder, self._now()),
                )
            return True

        return self._run(go, what="acquire_slot")

    def release_slot(self, job_id: str, name: str, key: str, holder: str) -> None:
        # one statement: the slot goes, and its limit key gets it back (released already — the
        # job was rescued meanwhile — deletes nothing and changes nothing)
        self._run(
            lambda cur: cur.execute(
                "WITH d AS (DELETE FROM job_slots WHERE id = (SELECT id FROM job_slots WHERE job_id = %s "
                "AND limit_name = %s AND key = %s AND holder = %s LIMIT 1 FOR UPDATE) RETURNING limit_name, key) "
                "UPDATE limit_keys l SET running = GREATEST(l.running - 1, 0) FROM d "
                "WHERE l.limit_name = d.limit_name AND l.key = d.key",
                (job_id, name, key, holder),
            ),
            what="release_slot",
        )

    # -- schedules --------------------------------------------------------------------------
    def save_schedule(self, info: ScheduleInfo) -> None:
        self._run(
            lambda cur: cur.execute(
                "INSERT INTO schedules (name, task, cron, tz, args, options, missed, last_tick, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET task = excluded.task, "
                "cron = excluded.cron, tz = excluded.tz, args = excluded.args, options = excluded.options, "
                "missed = excluded.missed, updated_at = excluded.updated_at",
                (info.name, info.task, info.cron, info.tz, json.dumps(info.args), json.dumps(info.options),
                 info.missed, info.last_tick, self._now()),
            ),
            what="save_schedule",
        )

    def list_schedules(self) -> list[ScheduleInfo]:
        rows = self._read(
            "SELECT name, task, cron, tz, args, options, missed, last_tick FROM schedules ORDER BY name"
        )
        return [ScheduleInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5] or "{}"), r[6], r[7])
                for r in rows]

    def advance_schedule(self, name: str, last_tick: float | None, new_tick: float) -> bool:
        def go(cur: psycopg.Cursor) -> bool:
            with _pipelined(cur.connection):
                cur.execute(
                    "UPDATE schedules SET last_tick = %s, updated_at = %s WHERE name = %s "
                    "AND last_tick IS NOT DISTINCT FROM %s",
                    (new_tick, self._now(), name, last_tick),
                )
            return cur.rowcount == 1

        return self._run(go, what="advance_schedule")

    # -- tokens -------------------------------------------------------------------------------
    _TOKEN_COLUMNS = "id, tenant, admin, label, created_at, last_used_at, revoked_at"

    def create_token(self, info: TokenInfo, secret_hash: str) -> None:
        self._run(
            lambda cur: cur.execute(
                "INSERT INTO tokens (id, secret_hash, tenant, admin, label, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (info.id, secret_hash, info.tenant, bool(info.admin), info.label, info.created_at),
            ),
            what="create_token",
        )

    def token_for(self, secret_hash: str) -> TokenInfo | None:
        def go(cur: psycopg.Cursor) -> TokenInfo | None:
            cur.execute(
                f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE secret_hash = %s AND revoked_at IS NULL",
                (secret_hash,),
            )
            r = cur.fetchone()
            if r is None:
                return None
            if r[5] is None or time.time() - r[5] > 60:  # record use, at most once a minute
                cur.execute("UPDATE tokens SET last_used_at = %s WHERE id = %s", (time.time(), r[0]))
            return TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6])

        return self._run(go, what="token_for")

    def list_tokens(self) -> list[TokenInfo]:
        return [TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6])
                for r in self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str) -> bool:
        def go(cur: psycopg.Cursor) -> bool:
            with _pipelined(cur.connection):
                cur.execute("UPDATE tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                            (time.time(), token_id))
            return cur.rowcount == 1

        return self._run(go, what="revoke_token")

    # -- user actions -----------------------------------------------------------------------
    def cancel(self, job_id: str) -> Status:
        def go(cur: psycopg.Cursor) -> Status:
            now = self._now()
            cur.execute("SELECT status, attempt FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status, attempt = Status(row[0]), row[1]
            if status is Status.RUNNING:
                cur.execute("UPDATE jobs SET cancel_requested = true, updated_at = %s WHERE id = %s", (now, job_id))
                return status
            if status is Status.CANCELLED:
                return status
            check_transition(status, Status.CANCELLED)
            cur.execute(
                "UPDATE jobs SET status = 'cancelled', updated_at = %s, finished_at = %s WHERE id = %s",
                (now, now, job_id),
            )
            self._insert_events(cur, [self._event(job_id, now, status, Status.CANCELLED, attempt,
                                                  reason="cancelled by user")])
            return Status.CANCELLED

        return self._run(go, what="cancel")

    def retry_now(self, job_id: str) -> Status:
        def go(cur: psycopg.Cursor) -> Status:
            now = self._now()
            cur.execute("SELECT status, fair_key, queue FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status = Status(row[0])
            if not can_transition(status, Status.WAITING) or status in (Status.RUNNING, Status.SCHEDULED):
                raise TransitionError(f"job {job_id} is {status}; only failed, cancelled or retrying jobs can be retried")
            cur.execute(
                "UPDATE jobs SET status = 'waiting', attempt = 0, run_at = %s, cancel_requested = false, "
                "finished_at = NULL, updated_at = %s WHERE id = %s",
                (now, now, job_id),
            )
            self._insert_events(cur, [self._event(job_id, now, status, Status.WAITING, 0, reason="retried by user")])
            self._mark_fair_keys(cur, [row[1]])
            self._notify(cur, [row[2]])
            return Status.WAITING

        return self._run(go, what="retry_now")

    def purge(self, *, older_than: float, statuses: Iterable[Status | str]) -> int:
        wanted = [Status(s) for s in statuses]
        for s in wanted:
            if not s.is_final:
                raise ConfigError(f"purge: only finished jobs can be purged, not {s}")
        if not wanted:
            return 0

        def go(cur: psycopg.Cursor) -> int:
            cur.execute(
                "WITH doomed AS (DELETE FROM jobs WHERE status = ANY(%t::text[]) AND finished_at < %s "
                "RETURNING id, state_key), "
                "ev AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM doomed)), "
                "seg AS (DELETE FROM segments WHERE job_id IN (SELECT id FROM doomed)), "
                "stp AS (DELETE FROM steps WHERE job_id IN (SELECT id FROM doomed)), "
                "led AS (DELETE FROM ledger WHERE state_key IN (SELECT 'job:' || id FROM doomed)), "
                "st AS (DELETE FROM state WHERE key IN (SELECT 'job:' || id FROM doomed)) "
                "SELECT COUNT(*) FROM doomed",
                ([s.value for s in wanted], older_than + self._offset),
            )
            return int(_scalar(cur))

        return self._run(go, what="purge")

    # -- notifications ------------------------------------------------------------------------
    def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _end_frozen_transactions(self, conn: psycopg.Connection) -> None:
        """End the transactions of floodway sessions whose client froze in the middle of them.

        A worker frozen inside a transaction (SIGSTOP, a paused VM, swap) keeps its row locks,
        and with them every other worker's claim, for as long as it stays frozen. The server's
        ``idle_in_transaction_session_timeout`` ends most of these, but not a session frozen
        right after sending a statement (the server is still reading the client's pipeline and
        no server timeout applies). Every listening worker therefore looks, every
        ``_REAP_EVERY`` seconds, for floodway sessions that have been waiting on their client
        inside a transaction for longer than ``IDLE_IN_TRANSACTION_MS`` — a healthy floodway
        transaction never waits on its own client that long — and terminates them: the frozen
        worker finds its connection gone when it thaws (a ``StoreError``; nothing it wrote in
        that transaction was committed), and its leases run out and are rescued as usual.
        Needs the right to signal the sessions' role (the same role, or ``pg_signal_backend``).
        """
        now = time.monotonic()
        if not self._may_reap or now < self._reap_at:
            return
        self._reap_at = now + _REAP_EVERY
        try:
            ended = conn.execute(
                # MATERIALIZED: the sessions are chosen first, and only those are signalled
                "WITH frozen AS MATERIALIZED (SELECT pid, extract(epoch FROM now() - xact_start)::float8 AS secs, "
                "left(query, 80) AS query FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND pid <> pg_backend_pid() AND wait_event = 'ClientRead' "
                "AND state IN ('active', 'idle in transaction') "
                "AND xact_start < now() - make_interval(secs => %s)) "
                "SELECT pid, secs, query FROM frozen WHERE pg_terminate_backend(pid)",
                (self._app_name, IDLE_IN_TRANSACTION_MS / 1000),
            ).fetchall()
        except pg_errors.InsufficientPrivilege as exc:
            self._may_reap = False
            log.warning("cannot end frozen floodway transactions (%s); a frozen worker's locks "
                        "last until it thaws or idle_in_transaction_session_timeout ends them", str(exc).strip())
            return
        for pid, seconds, query in ended:
            log.warning("ended a floodway transaction frozen for %.0fs (server pid %s, at %r): its worker "
                        "stopped responding while holding locks", seconds, pid, query)

    def wait_for_jobs(self, timeout: float, queues: Iterable[str] | None = None) -> bool:
        """Block up to ``timeout`` seconds for a NOTIFY that work is ready (in ``queues``, or
        any). True when notified; False on timeout or while the server is unreachable (the
        caller's slow poll covers both). Call it from one thread at a time."""
        wanted = set(queues) if queues is not None else None
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._listener_lock:
            try:
                if self._closed:
                    return False
                if self._listener is None or self._listener.closed:
                    self._listener = self._connect(autocommit=True)
                    self._listener.execute(f"LISTEN {CHANNEL}")
                while True:
                    self._end_frozen_transactions(self._listener)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    for note in self._listener.notifies(timeout=min(left, _REAP_EVERY), stop_after=1):
                        if wanted is None or not note.payload or note.payload in wanted:
                            return True
                    if self._closed:
                        return False
            except psycopg.Error as exc:
                log.debug("LISTEN connection failed (%s); falling back to polling", exc)
                self._close_listener()
                time.sleep(max(0.0, min(deadline - time.monotonic(), 1.0)))
                return False
            finally:
                if self._closed:
                    self._close_listener()


__all__ = ["PostgresStore", "CHANNEL"]
