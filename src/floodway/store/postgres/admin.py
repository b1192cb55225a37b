"""The PostgreSQL store's admin role: reading jobs, queues, workers, schedules, tokens, user actions."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import psycopg

from ...errors import ConfigError, JobNotFound, TransitionError
from ...jobs import Event, Job, Status, can_transition, check_transition
from ..base import (
    QueueInfo,
    ScheduleInfo,
    TokenInfo,
    WorkerInfo,
    timeline_from_rows,
)
from ..base import job_from_row as _job_from_row
from .connection import (
    PostgresConnection,
    _pipelined,
    _scalar,
)
from .queries import (
    _ACTIVITY,
    _JOB_COLUMNS,
    _TENANT_ACTIVITY,
    _TENANT_COUNTS,
    _TIMELINE,
)


class PostgresAdmin(PostgresConnection):
    """What people and schedules read and do: jobs, queues, workers, schedules, tokens, cancel, retry, purge."""

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

    def average_duration(self, tasks: list[str], *, sample: int = 200) -> float | None:
        if not tasks:
            return None
        rows = self._read(
            "SELECT AVG(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs "
            "WHERE status = 'complete' AND task = ANY(%t::text[]) ORDER BY finished_at DESC LIMIT %s) s",
            (tasks, sample),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

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
