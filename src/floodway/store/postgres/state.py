"""The PostgreSQL store's state role: cursors, the once-ledger, segments and flow steps."""

from __future__ import annotations

import json
from typing import Any, Callable

import psycopg

from ...errors import LeaseLost, StoreError
from ..base import (
    StateSnapshot,
    StepRecord,
)
from .connection import (
    PostgresConnection,
    _scalar,
)


class PostgresState(PostgresConnection):
    """Durable job state: cursors, the once-ledger, segments, steps."""

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
