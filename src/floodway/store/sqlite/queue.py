"""The SQLite store's queue role: enqueue, finish, heartbeat and the rescue of lost leases."""

from __future__ import annotations

import json
import sqlite3
import time

from ...errors import JobIdTaken
from ...jobs import (
    NewJob,
    Status,
    check_transition,
)
from ...liveness import LeaseHolder
from ..base import (
    EnqueueResult,
    Outcome,
    Renewal,
    stores_run_events,
)
from ..keyed import JOB_INSERT, job_values
from ..rules import IS_RUNNING, lease_rescue, worker_rescue
from .connection import SQLiteConnection


class SQLiteQueue(SQLiteConnection):
    """Enqueue, finish, heartbeat and rescue."""

    def enqueue(
        self, jobs: list[NewJob], queues: dict[str, int | None] | None = None, *, owner: str | None = None
    ) -> list[EnqueueResult]:
        if any(job.enqueue_key is not None for job in jobs):
            return self.enqueue_keyed(jobs, queues)
        if len(jobs) == 1 and owner is None:
            return [self._enqueue_one(jobs[0], queues)]
        now = time.time()
        results: list[EnqueueResult] = []
        with self._write() as conn:
            self._add_queues(conn, queues)
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
            conn.executemany(JOB_INSERT, [job_values(j, now) for j in fresh])
            segment_rows = [row for j in fresh for row in j.segment_rows()]
            if segment_rows:
                conn.executemany("INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)", segment_rows)
            # no ``enqueued`` event row: the job row is the enqueue (see ``timeline_from_rows``)
            self._mark_fair_keys(conn, {j.fair_key for j in fresh if j.status is Status.WAITING})
        return results

    def _enqueue_one(self, job: NewJob, queues: dict[str, int | None] | None) -> EnqueueResult:
        """The common single enqueue: the insert itself finds out whether the id exists (``ON
        CONFLICT (id) DO NOTHING`` writes no row then), so no look comes before it."""
        check_transition(None, job.status)
        with self._write() as conn:
            self._add_queues(conn, queues)
            created = (
                conn.execute(JOB_INSERT + " ON CONFLICT (id) DO NOTHING", job_values(job, time.time())).rowcount == 1
            )
            if created:
                if job.segments:
                    conn.executemany(
                        "INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)", job.segment_rows()
                    )
                if job.status is Status.WAITING:
                    self._mark_fair_keys(conn, (job.fair_key,))
        return EnqueueResult(job.id, created)

    @staticmethod
    def _add_queues(conn: sqlite3.Connection, queues: dict[str, int | None] | None) -> None:
        """A row for each queue the jobs go to (one that exists keeps its settings)."""
        if queues:
            conn.executemany("INSERT OR IGNORE INTO queues (name, max_concurrency) VALUES (?, ?)", list(queues.items()))

    @staticmethod
    def _check_tenant_owns(conn: sqlite3.Connection, ids: list[str], owner: str) -> None:
        """Raise ``JobIdTaken`` for the first of ``ids`` that is not a job of tenant ``owner``."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            row = conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({marks}) AND tenant IS NOT ? ORDER BY id LIMIT 1", [*chunk, owner]
            ).fetchone()
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
                    f"WHERE id = ? AND {IS_RUNNING} AND worker_id = ? AND attempt = ? "
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
                events.extend(
                    self._event_rows(
                        [(o.job_id, Status.WAITING, Status.RUNNING, o.attempt)], row[3], worker_id=worker_id
                    )
                )
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
            held = conn.execute(f"SELECT limit_name, key FROM job_slots WHERE job_id IN ({marks})", chunk).fetchall()
            if held:
                SQLiteConnection._release_limits(conn, [list(pair) for pair in held])
                conn.execute(f"DELETE FROM job_slots WHERE job_id IN ({marks})", chunk)

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
                    f"UPDATE jobs SET lease_until = ? WHERE worker_id = ? AND {IS_RUNNING} "
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
                target, reason, error = lease_rescue(owner, attempt, max_attempts, bool(cancel_requested))
                if target is Status.WAITING:
                    self._mark_fair_keys(conn, [fair_key])
                conn.execute(
                    "UPDATE jobs SET status = ?, worker_id = CASE WHEN ? THEN worker_id END, lease_until = NULL, "
                    "error = ?, updated_at = ?, finished_at = CASE WHEN ? THEN ? ELSE NULL END "
                    f"WHERE id = ? AND {IS_RUNNING}",
                    (target.value, target.is_final, json.dumps(error), now, target.is_final, now, job_id),
                )
                # the claim stored no event: the run's start goes in with its end
                events += self._event_rows(
                    [(job_id, Status.WAITING, Status.RUNNING, attempt)], started, worker_id=owner
                )
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
                    f"attempt = attempt - ?, lost_runs = lost_runs + ? WHERE id = ? AND {IS_RUNNING}",
                    (
                        target.value,
                        target.is_final,
                        json.dumps(error),
                        now,
                        target.is_final,
                        now,
                        int(give_back),
                        int(dead),
                        job_id,
                    ),
                )
                # the claim stored no event: the run's start goes in with its end
                events += self._event_rows(
                    [(job_id, Status.WAITING, Status.RUNNING, attempt)], started, worker_id=worker_id
                )
                events += self._event_rows(
                    [(job_id, Status.RUNNING, target, attempt - int(give_back))],
                    now,
                    worker_id=worker_id,
                    error=error,
                    reason=reason,
                )
            self._insert_events(conn, events)
        return [row[0] for row in lost]
