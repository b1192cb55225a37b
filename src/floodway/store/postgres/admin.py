"""The PostgreSQL store's admin role: reading jobs, queues, workers, schedules, tokens, user actions."""

from __future__ import annotations

from typing import Iterable

import psycopg

from ...errors import ConfigError, JobNotFound, TransitionError
from ...jobs import Status
from ..rules import purgeable
from .connection import (
    PostgresConnection,
    _pipelined,
    _scalar,
)


class PostgresAdmin(PostgresConnection):
    """What people and schedules read and do: jobs, queues, workers, schedules, tokens, cancel, retry, purge."""

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
                    cur.execute(
                        "UPDATE jobs SET paused = %s, updated_at = %s WHERE id = %s",
                        (bool(paused), self._now(), job_id),
                    )
                count = cur.rowcount
                if not paused:
                    self._mark_fair_keys(cur, [row[1]])
                    self._notify(cur, [row[2]])
                return count
            cur.execute("INSERT INTO queues (name, max_concurrency) VALUES (%s, 1) ON CONFLICT DO NOTHING", (queue,))
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

    def purge(self, *, older_than: float, statuses: Iterable[Status | str]) -> int:
        wanted = purgeable(statuses)
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
                "st AS (DELETE FROM state WHERE key IN (SELECT 'job:' || id FROM doomed)), "
                "jk AS (DELETE FROM job_keys WHERE job_id IN (SELECT id FROM doomed)) "
                "SELECT COUNT(*) FROM doomed",
                ([s.value for s in wanted], older_than + self._offset),
            )
            return int(_scalar(cur))

        return self._run(go, what="purge")
