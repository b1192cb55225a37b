"""The SQLite store's admin role: reading jobs, queues, workers, schedules, tokens, user actions."""

from __future__ import annotations

import time
from typing import Iterable

from ...errors import ConfigError, JobNotFound, TransitionError
from ...jobs import (
    Status,
)
from ..rules import purgeable
from .connection import SQLiteConnection


class SQLiteAdmin(SQLiteConnection):
    """What people and schedules read and do: jobs, queues, workers, schedules, tokens, cancel, retry, purge."""

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
                cur = conn.execute(
                    "UPDATE jobs SET paused = ?, updated_at = ? WHERE id = ?", (int(paused), time.time(), job_id)
                )
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

    def purge(self, *, older_than: float, statuses: Iterable[Status | str]) -> int:
        wanted = purgeable(statuses)
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
            conn.execute(f"DELETE FROM job_keys WHERE job_id IN ({doomed})", params)
            cur = conn.execute(f"DELETE FROM jobs WHERE status IN ({marks}) AND finished_at < ?", params)
            return cur.rowcount
