"""What both SQL backends run the same way: the shared queries and the methods built on them.

Each backend supplies its dialect (how a parameter is marked, how a row is locked for the
rest of a transaction, how a column is matched against a list) and its way of running a
transaction (``_run``), reading (``_read``) and telling the time (``_now``); the statements and
the rules around them are written once, here. What truly differs stays in the backends: the
claim, bulk enqueue, completion and rescue (their hot paths), and notifications.

Queries are written with ``?`` for a parameter and are put in the backend's dialect by
``in_dialect``; they contain no other ``?`` and no ``%``.
"""

from __future__ import annotations

import abc
import functools
import json
import time
from importlib import resources
from typing import Any, Callable, Iterable, TypeVar

from ..errors import ConfigError, JobNotFound, SchemaTooNewError, StoreError
from ..jobs import Event, Job, NewJob, Status
from ..limits import MAX_HORIZON, LimitSpec, split_lane
from .base import (
    CONTAINS,
    ClaimedJobs,
    EnqueueResult,
    JobFilter,
    LimitInfo,
    QueueInfo,
    ScheduleInfo,
    StateSnapshot,
    StepRecord,
    Store,
    TokenInfo,
    WorkerInfo,
    contains_pattern,
    event_row,
    job_from_row,
    key_info,
    timeline_from_rows,
)
from .batches import claim_batch
from .bulk import bulk_action
from .drain import TENANT_DRAIN_QUERIES, drain_counts
from .keyed import enqueue_keyed
from .rules import CancelAction, cancel_action, check_retryable, lane_view, settle_one

T = TypeVar("T")

#: the columns ``job_from_row`` reads, in its order
JOB_COLUMNS = (
    "id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, tenant, "
    "result, error, worker_id, lease_until, cancel_requested, created_at, updated_at, "
    "started_at, finished_at, limits, fair_key, throttled_seconds, state_key, paused, trace"
)
#: the columns ``TokenInfo`` is made of, in its order
TOKEN_COLUMNS = "id, tenant, admin, label, created_at, last_used_at, revoked_at"
#: the columns a ``StepRecord`` is made of, in its order
STEP_COLUMNS = (
    "job_id, step_id, kind, critical, status, result, error, attempts, retries, duration, "
    "total_time, throttle_overhead, throttle, tenant, started_at, finished_at"
)
#: store a step's record (one row per job and step, the newest wins); params: ``step_values``
STEP_UPSERT = (
    f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id, step_id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in STEP_COLUMNS.split(",")[2:])
)

#: a job's stored events, and the three read from its row (see ``timeline_from_rows``)
TIMELINE = (
    "SELECT 0, 0, created_at, NULL, status, attempt, NULL, worker_id, NULL, started_at, finished_at "
    "FROM jobs WHERE id = ? "
    "UNION ALL SELECT 1, seq, at, from_status, to_status, attempt, error, worker_id, reason, NULL, NULL "
    "FROM job_events WHERE job_id = ? ORDER BY 1, 2"
)
#: every limit's declaration, in the order ``LimitSpec.from_row`` takes it
SPEC_SQL = "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits"
#: a concurrency slot taken by a job's step; params: job_id, limit, key, holder, at
#: a lane's last demand (see ``rules.KeyState``): a lane row's ``paused_until`` column
LANE_DEMAND = (
    "INSERT INTO limit_keys (limit_name, key, paused_until) VALUES (?, ?, ?) "
    "ON CONFLICT (limit_name, key) DO UPDATE SET paused_until = excluded.paused_until"
)
#: a run of refusals, or a fixed window that ran out, holds every worker off
#: (``records.held_until``): the key's pause, never shortening a longer one nor taking its
#: reason (both right-hand sides read the old row)
HOLD_KEY = (
    "UPDATE limit_keys SET paused_until = CASE WHEN paused_until > ? THEN paused_until ELSE ? END, "
    "pause_reason = CASE WHEN paused_until > ? THEN pause_reason ELSE ? END WHERE limit_name = ? AND key = ?"
)

SLOT_INSERT = "INSERT INTO job_slots (job_id, limit_name, key, holder, acquired_at) VALUES (?, ?, ?, ?, ?)"
#: a tenant's jobs per (queue, status), counted in the index jobs_tenant
TENANT_COUNTS = "SELECT queue, status, COUNT(*) FROM jobs WHERE tenant = ? GROUP BY queue, status"
#: what moved since an instant (``app.stats()``), per queue and per limit
ACTIVITY = {
    "created": "SELECT queue, COUNT(*), MIN(created_at) FROM jobs WHERE created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*), MIN(finished_at) FROM jobs WHERE finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE status = 'waiting' AND limits IS NOT NULL "
    "GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*), MIN(created_at) FROM jobs WHERE created_at >= ? AND limits IS NOT NULL "
    "GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*), MIN(finished_at) FROM jobs WHERE finished_at >= ? AND limits IS NOT NULL "
    "GROUP BY limits",
}
#: the same for one tenant, each read through one of the jobs_tenant* indexes
TENANT_ACTIVITY = {
    "created": "SELECT queue, COUNT(*), MIN(created_at) FROM jobs WHERE tenant = ? AND created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*), MIN(finished_at) FROM jobs WHERE tenant = ? AND finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND status = 'waiting' "
    "AND limits IS NOT NULL GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*), MIN(created_at) FROM jobs WHERE tenant = ? AND created_at >= ? "
    "AND limits IS NOT NULL GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*), MIN(finished_at) FROM jobs WHERE tenant = ? AND finished_at >= ? "
    "AND limits IS NOT NULL GROUP BY limits",
}
#: jobs created and finished in each second since an instant (the dashboard's chart, seeded)
HISTORY = {
    "created": "SELECT CAST(created_at AS BIGINT), COUNT(*) FROM jobs WHERE created_at >= ? GROUP BY 1",
    "finished": "SELECT CAST(finished_at AS BIGINT), COUNT(*) FROM jobs WHERE finished_at >= ? GROUP BY 1",
}
TENANT_HISTORY = {
    "created": "SELECT CAST(created_at AS BIGINT), COUNT(*) FROM jobs WHERE tenant = ? AND created_at >= ? GROUP BY 1",
    "finished": "SELECT CAST(finished_at AS BIGINT), COUNT(*) FROM jobs WHERE tenant = ? AND finished_at >= ? "
    "GROUP BY 1",
}
#: every query a tenant's views run on the jobs table, by name (its plan must use an index)
TENANT_QUERIES = {
    "counts": TENANT_COUNTS,
    **TENANT_ACTIVITY,
    **{f"history_{name}": sql for name, sql in TENANT_HISTORY.items()},
    **TENANT_DRAIN_QUERIES,
}


def load_migrations(backend: str) -> list[tuple[int, str, str]]:
    """The numbered SQL migrations shipped for ``backend``: (version, name, sql)."""
    folder = resources.files("floodway.store") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


@functools.lru_cache(maxsize=512)
def in_dialect(sql: str, mark: str) -> str:
    """A shared query with its ``?`` parameters written as the backend marks them."""
    return sql if mark == "?" else sql.replace("?", mark)


def step_from_row(r: tuple | list) -> StepRecord:
    """A ``StepRecord`` from a row of ``STEP_COLUMNS``."""
    return StepRecord(
        r[0],
        r[1],
        r[2],
        bool(r[3]),
        r[4],
        r[5],
        json.loads(r[6]) if r[6] else None,
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        json.loads(r[12]) if r[12] else None,
        r[13],
        r[14],
        r[15],
    )


def step_values(record: StepRecord) -> tuple:
    """The parameters of ``STEP_UPSERT`` for ``record``."""
    return (
        record.job_id,
        record.step_id,
        record.kind,
        bool(record.critical),
        record.status,
        record.result_json,
        json.dumps(record.error) if record.error else None,
        record.attempts,
        record.retries,
        record.duration,
        record.total_time,
        record.throttle_overhead,
        json.dumps(record.throttle) if record.throttle else None,
        record.tenant,
        record.started_at,
        record.finished_at,
    )


def _moved(*fields: str) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(fields, 0)
    counts.update({f"{field}_since": None for field in fields if field != "waiting"})
    return counts


def _token(r: tuple | list) -> TokenInfo:
    return TokenInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6])


class SQLStore(Store):
    """The methods both SQL backends share; a backend supplies the dialect and the transactions."""

    #: the backend's name, and the folder of its migrations
    BACKEND = "sqlite"
    #: how a parameter is marked in the backend's driver
    MARK = "?"
    #: what locks the rows a ``SELECT`` read until the transaction ends ("" where the whole
    #: transaction already holds the database's write lock)
    FOR_UPDATE = ""
    #: the column that orders rows of one ``created_at`` newest first
    INSERT_ORDER = "rowid"
    #: what makes a ``SELECT`` skip rows another transaction has locked, and lock the rest
    #: ("" where the whole transaction holds the database's write lock)
    SKIP_LOCKED = ""
    #: a limit key's running jobs, read from ``limit_keys`` (a backend whose releases do not
    #: lock the key's row subtracts the slots given back, counted apart)
    KEY_RUNNING = "running"

    # -- what a backend supplies -------------------------------------------------------------
    @abc.abstractmethod
    def _run(self, fn: Callable[[Any], T], *, what: str = "query", pipeline: bool = True) -> T:
        """Run ``fn(cursor)`` in one write transaction and commit it."""

    @abc.abstractmethod
    def _read(self, sql: str, params: Any = ()) -> list[tuple]:
        """The rows of one read."""

    @abc.abstractmethod
    def _now(self) -> float:
        """The store's clock (epoch seconds)."""

    @abc.abstractmethod
    def _any(self, column: str, values: list) -> tuple[str, list]:
        """A condition "``column`` is one of ``values``" and its parameters."""

    @abc.abstractmethod
    def _rowcount(self, cur: Any, sql: str, params: Any) -> int:
        """Run one statement in the transaction of ``cur`` and return how many rows it changed."""

    @staticmethod
    @abc.abstractmethod
    def _insert_events(cur: Any, rows: list[tuple]) -> None:
        """Store ``event_row`` rows."""

    @staticmethod
    @abc.abstractmethod
    def _mark_fair_keys(cur: Any, keys: Iterable[str]) -> None:
        """Make sure each fairness group with a ready job has a row in ``fair_keys``."""

    @staticmethod
    def _notify(cur: Any, queues: Iterable[str]) -> None:
        """Wake the workers of ``queues`` (a backend with notifications overrides this)."""

    def _q(self, sql: str) -> str:
        return in_dialect(sql, self.MARK)

    @abc.abstractmethod
    def _locked_keys(self, cur: Any, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, float]]:
        """The running jobs and the pause's end of each (limit, key) of ``pairs`` (in key
        order) that has a row, the rows locked until the transaction ends."""

    # -- schema -------------------------------------------------------------------------------
    #: how error messages name the database (a path, or a URL without its password)
    _where: str

    def _apply_migrations(self, cur: Any, current: int, run_script: Callable[[str], object]) -> list[int]:
        """Run every migration newer than ``current`` in the transaction of ``cur`` (the
        caller holds the lock that makes it the only migrator) and record each one."""
        applied = []
        for version, name, script in load_migrations(self.BACKEND):
            if version <= current:
                continue
            run_script(script)
            cur.execute(
                self._q("INSERT INTO floodway_schema (version, name, applied_at) VALUES (?, ?, ?)"),
                (version, name, time.time()),
            )
            applied.append(version)
        cur.execute("INSERT INTO queues (name, max_concurrency) VALUES ('default', NULL) ON CONFLICT DO NOTHING")
        return applied

    def _check_version(self) -> int:
        """The schema's version; a database migrated by a newer floodway is refused."""
        latest = max(v for v, _, _ in load_migrations(self.BACKEND))
        current = self.schema_version()
        if current > latest:
            raise SchemaTooNewError(
                f"database {self._where} is at schema version {current}, newer than this "
                f"floodway knows ({latest}); upgrade floodway"
            )
        return current

    # -- claim --------------------------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        *,
        queues: list[str] | None,
        limit: int,
        lease: float,
        ahead: int = 0,
        horizon: float = 0.0,
    ) -> ClaimedJobs:
        limit, ahead = max(limit, 0), max(ahead, 0)
        if limit + ahead <= 0:
            return ClaimedJobs()
        if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or not 0 <= horizon <= MAX_HORIZON:
            raise ConfigError(f"horizon must be a number of seconds from 0 to {MAX_HORIZON:g}, got {horizon!r}")
        return self._claim_jobs(worker_id, queues, limit, lease, ahead, float(horizon))

    @abc.abstractmethod
    def _claim_jobs(
        self, worker_id: str, queues: list[str] | None, limit: int, lease: float, ahead: int, horizon: float = 0.0
    ) -> ClaimedJobs:
        """Claim up to ``limit`` ready jobs, and up to ``ahead`` more (see ``Store.claim``)."""

    def enqueue_keyed(self, jobs: list[NewJob], queues: dict[str, int | None] | None = None) -> list[EnqueueResult]:
        return enqueue_keyed(self, jobs, queues)

    def claim_batch(self, worker_id: str, batch_key: str, *, limit: int, lease: float) -> list[Job]:
        return claim_batch(self, JOB_COLUMNS, worker_id, batch_key, limit, lease)

    # -- jobs ---------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        rows = self._read(self._q(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"), (job_id,))
        return job_from_row(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        status: Iterable[Status | str] | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        text: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            clause, values = self._any("status", [Status(s).value for s in status])
            where.append(clause)
            params += values
        for column, value in (("queue", queue), ("task", task), ("tenant", tenant)):
            if value is not None:
                where.append(self._q(f"{column} = ?"))
                params.append(value)
        if text:
            pattern = contains_pattern(text)
            args, error = CONTAINS.format(column="args"), CONTAINS.format(column="COALESCE(error, '')")
            where.append(self._q(f"({args} OR {error})"))
            params += [pattern, pattern]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = self._q(f"ORDER BY created_at DESC, {self.INSERT_ORDER} DESC LIMIT ? OFFSET ?")
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM jobs {clause} {order}", (*params, limit, offset))
        return [job_from_row(r) for r in rows]

    def count_jobs(self, *, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        else:
            rows = self._read(self._q("SELECT status, COUNT(*) FROM jobs WHERE queue = ? GROUP BY status"), (queue,))
        counts = {s.value: 0 for s in Status}
        counts.update({status: int(count) for status, count in rows})
        return counts

    def events(self, job_id: str) -> list[Event]:
        return timeline_from_rows(job_id, self._read(self._q(TIMELINE), (job_id, job_id)))

    def average_duration(self, tasks: list[str], *, sample: int = 200) -> float | None:
        if not tasks:
            return None
        clause, values = self._any("task", list(tasks))
        rows = self._read(
            "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
            f"WHERE status = 'complete' AND {clause} ORDER BY finished_at DESC " + self._q("LIMIT ?) recent"),
            (*values, sample),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def activity(self, since: float, *, tenant: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Jobs created and finished since ``since``, per queue and per limit, each with the
        earliest such moment (``created_since``, ``finished_since``): a rate is worked out over
        the time actually observed, not the whole window."""
        queries = TENANT_ACTIVITY if tenant is not None else ACTIVITY
        scope: tuple[Any, ...] = (tenant,) if tenant is not None else ()
        queues: dict[str, dict[str, Any]] = {}
        for field in ("created", "finished"):
            for queue, count, first in self._read(self._q(queries[field]), (*scope, since)):
                moved = queues.setdefault(queue, _moved("created", "finished"))
                moved[field], moved[f"{field}_since"] = int(count), first
        limits: dict[str, dict[str, Any]] = {}
        # grouped by the job's (limit, key) list: a few distinct lists, however many jobs
        for held, count in self._read(self._q(queries["limits_waiting"]), scope):
            for name in {pair[0] for pair in json.loads(held)}:
                limits.setdefault(name, _moved("waiting", "created", "finished"))["waiting"] += int(count)
        for field in ("created", "finished"):
            for held, count, first in self._read(self._q(queries[f"limits_{field}"]), (*scope, since)):
                for name in {pair[0] for pair in json.loads(held)}:
                    moved = limits.setdefault(name, _moved("waiting", "created", "finished"))
                    moved[field] += int(count)
                    earliest = moved[f"{field}_since"]
                    moved[f"{field}_since"] = first if earliest is None else min(earliest, first)
        return {"queues": queues, "limits": limits}

    def bulk_action(self, action: str, flt: JobFilter, *, dry_run: bool = False) -> int:
        return bulk_action(self, action, flt, dry_run=dry_run)

    def history(self, since: float, *, tenant: str | None = None) -> dict[str, dict[int, int]]:
        queries = TENANT_HISTORY if tenant is not None else HISTORY
        scope: tuple[Any, ...] = (tenant,) if tenant is not None else ()
        return {
            field: {int(second): int(count) for second, count in self._read(self._q(sql), (*scope, since))}
            for field, sql in queries.items()
        }

    def drain_counts(self, since: float, width: float, *, tenant: str | None = None) -> dict[str, Any]:
        return drain_counts(self, since, width, tenant)

    # -- queues and workers -------------------------------------------------------------------
    def set_queue(self, name: str, max_concurrency: int | None) -> None:
        self._run(
            lambda cur: cur.execute(
                self._q(
                    "INSERT INTO queues (name, max_concurrency) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET max_concurrency = excluded.max_concurrency"
                ),
                (name, max_concurrency),
            ),
            what="set_queue",
        )

    def list_queues(self, *, tenant: str | None = None) -> list[QueueInfo]:
        queues = {
            name: QueueInfo(name, cap, {s.value: 0 for s in Status}, bool(paused))
            for name, cap, paused in self._read("SELECT name, max_concurrency, paused FROM queues ORDER BY name")
        }
        if tenant is None:
            rows = self._read("SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status")
        else:
            rows = self._read(self._q(TENANT_COUNTS), (tenant,))
        for name, status, count in rows:
            info = queues.setdefault(name, QueueInfo(name, None, {s.value: 0 for s in Status}))
            info.counts[status] = int(count)
        return sorted(queues.values(), key=lambda q: q.name)

    def register_worker(self, info: WorkerInfo) -> None:
        self._run(
            lambda cur: cur.execute(
                self._q(
                    "INSERT INTO workers (id, hostname, pid, queues, concurrency, started_at, heartbeat_at, "
                    "stopped_at, host_key, pid_start) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid, "
                    "queues = excluded.queues, concurrency = excluded.concurrency, started_at = excluded.started_at, "
                    "heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, host_key = excluded.host_key, "
                    "pid_start = excluded.pid_start"
                ),
                (
                    info.id,
                    info.hostname,
                    info.pid,
                    json.dumps(info.queues),
                    info.concurrency,
                    info.started_at,
                    info.heartbeat_at,
                    info.host_key,
                    info.pid_start,
                ),
            ),
            what="register_worker",
        )

    def worker_stopped(self, worker_id: str) -> None:
        self._run(
            lambda cur: cur.execute(
                self._q("UPDATE workers SET stopped_at = ? WHERE id = ?"), (self._now(), worker_id)
            ),
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
            WorkerInfo(
                r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4], r[5], r[6], r[7], int(r[8]), r[9], r[10]
            )
            for r in rows
        ]

    # -- schedules and tokens -----------------------------------------------------------------
    def save_schedule(self, info: ScheduleInfo) -> None:
        self._run(
            lambda cur: cur.execute(
                self._q(
                    "INSERT INTO schedules (name, task, cron, tz, args, options, missed, last_tick, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET task = excluded.task, "
                    "cron = excluded.cron, tz = excluded.tz, args = excluded.args, options = excluded.options, "
                    "missed = excluded.missed, updated_at = excluded.updated_at"
                ),
                (
                    info.name,
                    info.task,
                    info.cron,
                    info.tz,
                    json.dumps(info.args),
                    json.dumps(info.options),
                    info.missed,
                    info.last_tick,
                    self._now(),
                ),
            ),
            what="save_schedule",
        )

    def list_schedules(self) -> list[ScheduleInfo]:
        rows = self._read("SELECT name, task, cron, tz, args, options, missed, last_tick FROM schedules ORDER BY name")
        return [
            ScheduleInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5] or "{}"), r[6], r[7]) for r in rows
        ]

    def advance_schedule(self, name: str, last_tick: float | None, new_tick: float) -> bool:
        """Move a schedule on only if nobody else did since ``last_tick`` was read (each tick
        is enqueued once, however many workers run the scheduler)."""
        sql = self._q(
            "UPDATE schedules SET last_tick = ?, updated_at = ? WHERE name = ? AND last_tick IS NOT DISTINCT FROM ?"
        )
        return self._run(
            lambda cur: self._rowcount(cur, sql, (new_tick, self._now(), name, last_tick)) == 1, what="advance_schedule"
        )

    def create_token(self, info: TokenInfo, secret_hash: str) -> None:
        self._run(
            lambda cur: cur.execute(
                self._q(
                    "INSERT INTO tokens (id, secret_hash, tenant, admin, label, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (info.id, secret_hash, info.tenant, bool(info.admin), info.label, info.created_at),
            ),
            what="create_token",
        )

    def token_for(self, secret_hash: str) -> TokenInfo | None:
        rows = self._read(
            self._q(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL"), (secret_hash,)
        )
        if not rows:
            return None
        r = rows[0]
        if r[5] is None or time.time() - r[5] > 60:  # record use, at most once a minute
            self._run(
                lambda cur: cur.execute(
                    self._q("UPDATE tokens SET last_used_at = ? WHERE id = ?"), (time.time(), r[0])
                ),
                what="token_for",
            )
        return _token(r)

    def list_tokens(self) -> list[TokenInfo]:
        return [_token(r) for r in self._read(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str) -> bool:
        sql = self._q("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        return self._run(lambda cur: self._rowcount(cur, sql, (time.time(), token_id)) == 1, what="revoke_token")

    # -- limits -------------------------------------------------------------------------------
    def declare_limit(self, spec: LimitSpec) -> None:
        declared = json.dumps(spec.to_dict(), sort_keys=True)

        def go(cur: Any) -> None:
            row = cur.execute(
                self._q(f"SELECT declared FROM limits WHERE name = ?{self.FOR_UPDATE}"), (spec.name,)
            ).fetchone()
            if row is not None and row[0] == declared:
                return  # unchanged in code: keep any change made at run time
            self._write_limit(cur, spec, declared)

        self._run(go, what="declare_limit")

    def update_limit(self, spec: LimitSpec) -> None:
        def go(cur: Any) -> None:
            row = cur.execute(
                self._q(f"SELECT declared FROM limits WHERE name = ?{self.FOR_UPDATE}"), (spec.name,)
            ).fetchone()
            self._write_limit(cur, spec, row[0] if row else None)

        self._run(go, what="update_limit")

    def _write_limit(self, cur: Any, spec: LimitSpec, declared: str | None) -> None:
        cur.execute(
            self._q(
                "INSERT INTO limits (name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds, "
                "declared, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "rate_count = excluded.rate_count, rate_period = excluded.rate_period, burst = excluded.burst, "
                "concurrency = excluded.concurrency, key = excluded.key, adaptive = excluded.adaptive, "
                "bounds = excluded.bounds, declared = excluded.declared, updated_at = excluded.updated_at"
            ),
            (
                spec.name,
                spec.rate.count if spec.rate else None,
                spec.rate.period if spec.rate else None,
                spec.burst,
                spec.concurrency,
                spec.key,
                bool(spec.adaptive),
                spec.bounds,
                declared,
                self._now(),
            ),
        )
        # a rate set in code or by an operator is their word: what was learned before is forgotten
        cur.execute(
            self._q("UPDATE limit_keys SET learned = NULL WHERE limit_name = ? AND learned IS NOT NULL"), (spec.name,)
        )

    def list_limits(self, *, tenant_keys: Iterable[str] | None = None) -> list[LimitInfo]:
        now = self._now()
        infos = {row[0]: LimitInfo(LimitSpec.from_row(*row)) for row in self._read(f"{SPEC_SQL} ORDER BY name")}
        lanes: dict[tuple[str, str], dict[str, tuple[float, int, int]]] = {}
        for name, key, tat, paused_until, reason, running, admitted, limited, learned in self._read(
            f"SELECT limit_name, key, tat, paused_until, pause_reason, {self.KEY_RUNNING}, admitted, rate_limited, "
            "learned FROM limit_keys ORDER BY limit_name, key"
        ):
            info = infos.get(name)
            if info is None:
                continue
            base, lane = split_lane(key)
            if lane is not None:  # a lane's row: shown with its key, never as a key of its own
                lanes.setdefault((name, base), {})[lane] = (float(paused_until), int(running), int(admitted))
                continue
            info.keys.append(
                key_info(info.spec, key, tat, paused_until, reason, running, int(admitted), int(limited), learned, now)
            )
        for info in infos.values():
            if not info.spec.lanes:
                continue
            for k in info.keys:
                rows = lanes.get((info.spec.name, k.key), {})
                k.lanes = lane_view(info.spec, k.effective_rate, info.spec.burst, rows, now)
                # a job on a lane holds its slot on the lane's row
                k.running += sum(running for _, running, _ in rows.values())
        return list(infos.values())

    def settle(self, name: str, key: str, delta: float) -> None:
        def go(cur: Any) -> None:
            now = self._now()
            row = cur.execute(self._q(f"{SPEC_SQL} WHERE name = ?"), (name,)).fetchone()
            if row is None:
                raise ConfigError(f"unknown limit {name!r}")
            state = cur.execute(
                self._q(
                    f"SELECT tat, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?{self.FOR_UPDATE}"
                ),
                (name, key),
            ).fetchone()
            if state is None:
                return  # nothing was ever charged to this key
            tat, admitted, learned = float(state[0]), int(state[1]), state[2]
            new_tat = settle_one(LimitSpec.from_row(*row), tat, admitted, learned, now, delta)
            if new_tat is None:
                return
            # `admitted` counts tokens (a usage bucket's leak is measured against it): the real ones
            cur.execute(
                self._q("UPDATE limit_keys SET tat = ?, admitted = ? WHERE limit_name = ? AND key = ?"),
                (new_tat, max(0, admitted + round(delta)), name, key),
            )
            if new_tat < tat:
                self._notify(cur, [""])  # a credit may admit held-back jobs sooner: wake every worker

        self._run(go, what="settle")

    def resume_limit(self, name: str, key: str | None = None) -> int:
        def go(cur: Any) -> int:
            now = self._now()
            if cur.execute(self._q("SELECT 1 FROM limits WHERE name = ?"), (name,)).fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = ? AND paused_until > ?", [name, now]
            if key is not None:
                where += " AND key = ?"
                params.append(key)
            # the key's GCRA state restarts now: the budget comes back at the steady rate
            sql = self._q(f"UPDATE limit_keys SET paused_until = 0, pause_reason = NULL, tat = ? WHERE {where}")
            count = self._rowcount(cur, sql, (now, *params))
            if count:
                self._notify(cur, [""])  # held-back jobs may run now: wake every worker
            return count

        return self._run(go, what="resume_limit")

    # -- durable state (reads) ----------------------------------------------------------------
    def load_state(self, key: str) -> StateSnapshot:
        rows = self._read(self._q("SELECT cursor, checkpoints FROM state WHERE key = ?"), (key,))
        if not rows:
            return StateSnapshot(key)
        return StateSnapshot(key, json.loads(rows[0][0]) if rows[0][0] is not None else None, rows[0][1])

    def load_cursors(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        clause, values = self._any("key", list(keys))
        rows = self._read(f"SELECT key, cursor FROM state WHERE {clause}", values)
        return {key: json.loads(cursor) for key, cursor in rows if cursor is not None}

    def load_ledger(self, key: str) -> dict[str, str | None]:
        return dict(self._read(self._q("SELECT entry, result FROM ledger WHERE state_key = ?"), (key,)))

    def load_segment(self, job_id: str, arg: str, index: int) -> str:
        rows = self._read(
            self._q("SELECT data FROM segments WHERE job_id = ? AND arg = ? AND idx = ?"), (job_id, arg, index)
        )
        if not rows:
            raise StoreError(f"job {job_id}: segment {index} of {arg!r} is missing")
        return rows[0][0]

    def load_steps(self, job_id: str) -> dict[str, StepRecord]:
        rows = self._read(self._q(f"SELECT {STEP_COLUMNS} FROM steps WHERE job_id = ? ORDER BY started_at"), (job_id,))
        return {r[1]: step_from_row(r) for r in rows}

    def step_records(
        self, *, kind: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StepRecord]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("finished_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {STEP_COLUMNS} FROM steps {clause} ORDER BY finished_at DESC LIMIT ?"
        return [step_from_row(r) for r in self._read(self._q(sql), (*params, limit))]

    # -- user actions -------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Status:
        def go(cur: Any) -> Status:
            now = self._now()
            row = cur.execute(
                self._q(f"SELECT status, attempt FROM jobs WHERE id = ?{self.FOR_UPDATE}"), (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status, attempt = Status(row[0]), row[1]
            action = cancel_action(status)
            if action is CancelAction.REQUEST:
                cur.execute(
                    self._q("UPDATE jobs SET cancel_requested = true, updated_at = ? WHERE id = ?"), (now, job_id)
                )
                return status
            if action is CancelAction.NOTHING:
                return status
            cur.execute(
                self._q("UPDATE jobs SET status = 'cancelled', updated_at = ?, finished_at = ? WHERE id = ?"),
                (now, now, job_id),
            )
            self._insert_events(
                cur, [event_row(job_id, now, status, Status.CANCELLED, attempt, reason="cancelled by user")]
            )
            return Status.CANCELLED

        return self._run(go, what="cancel")

    def retry_now(self, job_id: str) -> Status:
        def go(cur: Any) -> Status:
            now = self._now()
            row = cur.execute(
                self._q(f"SELECT status, fair_key, queue FROM jobs WHERE id = ?{self.FOR_UPDATE}"), (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status = Status(row[0])
            check_retryable(job_id, status)
            cur.execute(
                self._q(
                    "UPDATE jobs SET status = 'waiting', attempt = 0, run_at = ?, cancel_requested = false, "
                    "finished_at = NULL, updated_at = ? WHERE id = ?"
                ),
                (now, now, job_id),
            )
            self._insert_events(cur, [event_row(job_id, now, status, Status.WAITING, 0, reason="retried by user")])
            self._mark_fair_keys(cur, [row[1]])
            self._notify(cur, [row[2]])
            return Status.WAITING

        return self._run(go, what="retry_now")
