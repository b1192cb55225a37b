"""The SQLite store's admin role: reading jobs, queues, workers, schedules, tokens, user actions."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from ...errors import ConfigError, JobNotFound, TransitionError
from ...jobs import (
    Event,
    Job,
    Status,
    can_transition,
    check_transition,
)
from ..base import (
    QueueInfo,
    ScheduleInfo,
    TokenInfo,
    WorkerInfo,
    timeline_from_rows,
)
from ..base import job_from_row as _job_from_row
from .connection import SQLiteConnection
from .queries import _ACTIVITY, _JOB_COLUMNS, _TENANT_ACTIVITY, _TENANT_COUNTS, _TIMELINE


class SQLiteAdmin(SQLiteConnection):
    """What people and schedules read and do: jobs, queues, workers, schedules, tokens, cancel, retry, purge."""

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
