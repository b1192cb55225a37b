"""The PostgreSQL store's connection: URL options, type adapters, the pool, one transaction per call
in pipeline mode with retries on a lost connection, and the schema migrations."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import ConfigError, SchemaTooNewError, StoreError
from ..rules import CLAIM_FROM, PROMOTE_FROM
from ..sql import SPEC_SQL, SQLStore, event_row, in_dialect, load_migrations
from .queries import (
    _JOB_COLUMNS,
    _LOCKED_FAIR_KEYS,
    _NS_FAIR,
    _NS_MIGRATE,
    FOLD_GONE_STRIPES,
    KEY_RUNNING,
    LOCK_KEYS,
    RELEASE_SLOTS,
    _ready_heads,
)

log = logging.getLogger("floodway.store.postgres")


T = TypeVar("T")


#: the channel enqueue (and anything that makes a job ready) notifies; the payload is the queue
CHANNEL = "floodway_jobs"


_OPTIONS = {"pool_min", "pool_max", "pool_timeout", "reconnect_timeout", "prepare_threshold"}


#: SQLSTATEs worth a retry of the whole transaction (nothing was committed)
_RETRY_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "57P01",  # admin_shutdown (server restarting)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (server starting up)
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",  # connection exceptions
}


class _Deferred:
    """A result ``_run`` reads only after the pipeline is done: BEGIN, the statements and the
    COMMIT then go out in one round trip. An error in a statement aborts the transaction (the
    server skips the COMMIT) and is raised when the pipeline ends."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn


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
    return urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), parts.fragment)
    ), options


def _number(
    url: str, options: dict[str, str], name: str, default: float, *, minimum: float, integer: bool = False
) -> Any:
    raw = options.get(name)
    if raw is None:
        return int(default) if integer else default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(
            f"database URL {url!r}: {name} must be a{'n integer' if integer else ' number'}, got {raw!r}"
        ) from None
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
#: how often a store sums the slots given back by connections that are gone (see _release_limits)
_FOLD_STRIPES_EVERY = 60.0


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
    # floodway's statements are short, but the planner's estimate for a claim over a large
    # backlog can pass the server's jit_above_cost: compiling the statement then takes 10-15 ms,
    # ten times what running it does, on every claim for as long as the estimate stays high
    conn.execute("SET jit = off")
    conn.commit()


class PostgresConnection(SQLStore):
    """The connection, transaction and schema half every role of the PostgreSQL store builds on."""

    notifies = True
    _PROMOTE_CTES = (
        f"WITH due AS (SELECT id, status FROM jobs WHERE {PROMOTE_FROM} "
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
    _FAST_CLAIM = (
        "WITH gate AS (SELECT NOT EXISTS (SELECT 1 FROM fair_keys WHERE key <> '') AS plain, "
        "EXISTS (SELECT 1 FROM queues WHERE paused OR max_concurrency IS NOT NULL) AS capped), "
        "cand AS ({cand}), "
        "c AS (UPDATE jobs j SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
        "lease_until = %(lease)s, started_at = %(now)s, updated_at = %(now)s, "
        "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
        "throttled_since = NULL FROM cand WHERE j.id = cand.id RETURNING j.seq, "
        + ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        + ") "
        "SELECT g.plain, g.capped, "
        + ", ".join(f"c.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        + " FROM gate g LEFT JOIN c ON true ORDER BY c.priority DESC, c.run_at, c.seq"
    )
    #: the plain-group claim's candidates: ready jobs of the plain group, while it is the only one
    _FAST_CANDIDATES = (
        f"j.{CLAIM_FROM} AND NOT j.paused AND j.fair_key = '' AND (SELECT plain AND NOT capped FROM gate)"
    )
    #: for any queue, and for those of the ``%(queues)t`` parameter (one index range each)
    _FAST_CLAIM_BY_QUEUE = _FAST_CLAIM.format(
        cand=_ready_heads(_FAST_CANDIDATES, "%(n)s", "j.id, j.priority, j.run_at, j.seq", by_queue=True)
    )
    _FAST_CLAIM = _FAST_CLAIM.format(cand=_ready_heads(_FAST_CANDIDATES, "%(n)s", "j.id"))
    _SPEC_SQL = in_dialect(f"{SPEC_SQL} WHERE name = ?", "%s")
    BACKEND = "postgres"
    MARK = "%s"
    FOR_UPDATE = " FOR UPDATE"
    KEY_RUNNING = KEY_RUNNING
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    INSERT_ORDER = "seq"

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self._conninfo, options = _parse_url(url)
        self._where = _redact(self._conninfo)
        # floodway's sessions are recognisable, so frozen ones can be told apart (see
        # _end_frozen_transactions); a name given in the URL is kept
        self._app_name = dict(parse_qsl(urlsplit(self._conninfo).query)).get("application_name") or "floodway"
        self._reap_at = 0.0
        self._fold_stripes_at = 0.0
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
        self._held_claim_after = 0.0  # and the one-group claim
        self._held_claim_wait = 0.0  # (how long it waited after its last decline)
        # the (limit, key) pairs the jobs of each fairness group held when last claimed: the
        # claim locks their rows in the round trip that reads the group's jobs
        self._group_limits: dict[str, list] = {}
        # whether the last claim found capped or paused queues with ready jobs, and the limit
        # rows its first groups' jobs held (see PostgresClaim._claim's prelude)
        self._caps_seen = False
        self._first_locks: list[tuple[str, str]] = []
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
            kwargs={
                "autocommit": True,
                "prepare_threshold": self.prepare_threshold or None,
                "cursor_factory": _SyncingCursor,
                "application_name": self._app_name,
                "context": _ADAPTERS,
            },
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

    def _connect(self, *, autocommit: bool) -> psycopg.Connection:
        return psycopg.connect(
            self._conninfo,
            autocommit=autocommit,
            application_name=self._app_name,
            prepare_threshold=self.prepare_threshold or None,
            context=_ADAPTERS,
        )

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

    def _run(
        self, fn: Callable[[psycopg.Cursor], T], *, what: str = "query", pipeline: bool = True, single: bool = False
    ) -> T:
        """Run ``fn(cursor)`` in one transaction and commit it.

        A transaction that failed before COMMIT (a dropped connection, a server restart, a
        deadlock or serialization failure) committed nothing, so it is retried with backoff
        for up to ``reconnect_timeout``. Errors of floodway itself (TransitionError...) pass
        through untouched after a rollback.

        The transaction runs in psycopg's pipeline mode: BEGIN, the statements ``fn`` sends
        and COMMIT go out together, so a transaction costs one network round trip plus one per
        result ``fn`` must read before it can go on (the pool's connections are in autocommit
        mode and the transaction is explicit, so BEGIN is not a round trip of its own).

        ``single``: ``fn`` sends exactly one statement, which is then its own transaction (the
        connection's autocommit): no BEGIN and no COMMIT for the server to run and the client
        to read the results of. It still goes out in a pipeline, so a connection found dead
        while sending it has sent nothing and is retried like any other.
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
                    if single:
                        with conn.pipeline():
                            result = fn(cur)
                            committing = True  # sent: the Sync that ends the pipeline commits it
                        if isinstance(result, _Deferred):
                            result = result.fn()
                    elif pipeline:
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
                retryable = (
                    broken or state in _RETRY_STATES or isinstance(exc, psycopg.OperationalError) and state is None
                )
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

    def _any(self, column: str, values: list) -> tuple[str, list]:
        return f"{column} = ANY(%t::text[])", [list(values)]

    def _rowcount(self, cur: psycopg.Cursor, sql: str, params: Any) -> int:
        with _pipelined(cur.connection):
            cur.execute(sql, params)
        return cur.rowcount

    def _read(self, sql: str, params: Any = None) -> list[tuple]:
        def go(cur: psycopg.Cursor) -> list[tuple]:
            cur.execute(sql, params)
            return cur.fetchall()

        # one statement is its own transaction: no BEGIN and COMMIT for the server to run
        return self._run(go, what="read", single=True)

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
            # a whole script: simple query protocol, no parameters
            return self._apply_migrations(cur, current, lambda script: cur.execute(script.encode()))

        return self._run(go, what="migration", pipeline=False)

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

    #: one ``job_events`` row (``store.sql.event_row``)
    _event = staticmethod(event_row)

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

    def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _locked_keys(self, cur: Any, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, float]]:
        cur.execute(LOCK_KEYS.format(skip=""), ([p[0] for p in pairs], [p[1] for p in pairs]))
        return {(r[0], r[1]): (int(r[4]), float(r[3])) for r in cur.fetchall()}

    def _release_limits(self, cur: psycopg.Cursor, held: list[list[str]], wake: Iterable[str] = ()) -> None:
        """Jobs left ``running``: give back their slots, added to this connection's stripe of
        each (limit, key) (``queries.RELEASE_SLOTS``): the key rows are not locked. The workers
        of the queues ``wake`` are woken if a claim may have waited for these slots (see
        there). Now and then the stripes of connections that are gone are summed into one, so
        a key's stripes stay as few as the connections that release."""
        if not held:
            return
        counts: dict[tuple[str, str], int] = {}
        for name, key in held:
            counts[(name, key)] = counts.get((name, key), 0) + 1
        ordered = sorted(counts)
        cur.execute(
            RELEASE_SLOTS,
            {
                "names": [p[0] for p in ordered],
                "keys": [p[1] for p in ordered],
                "counts": [counts[p] for p in ordered],
                "channel": CHANNEL,
                "queues": sorted(set(wake)),
            },
        )
        if time.monotonic() >= self._fold_stripes_at:
            self._fold_stripes_at = time.monotonic() + _FOLD_STRIPES_EVERY
            cur.execute(FOLD_GONE_STRIPES)
