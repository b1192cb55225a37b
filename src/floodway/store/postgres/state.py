"""The PostgreSQL store's state role: cursors, the once-ledger, segments and flow steps."""

from __future__ import annotations

from typing import Callable

import psycopg

from ...errors import LeaseLost
from ..base import (
    StepRecord,
)
from ..sql import STEP_UPSERT, in_dialect, step_values
from .connection import (
    PostgresConnection,
    _scalar,
)

_STEP_UPSERT = in_dialect(STEP_UPSERT, "%s")


class PostgresState(PostgresConnection):
    """Durable job state: cursors, the once-ledger, segments, steps."""

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

    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        def go(cur: psycopg.Cursor) -> None:
            verify = self._check_owner(cur, record.job_id, worker_id, attempt)
            cur.execute(_STEP_UPSERT, step_values(record))
            verify()

        self._run(go, what="record_step", pipeline=True)
