"""The SQLite store's state role: cursors, the once-ledger, segments and flow steps."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ...errors import LeaseLost, StoreError
from ..base import (
    StateSnapshot,
    StepRecord,
)
from .connection import SQLiteConnection


class SQLiteState(SQLiteConnection):
    """Durable job state: cursors, the once-ledger, segments, steps."""

    def load_state(self, key: str) -> StateSnapshot:
        rows = self._read("SELECT cursor, checkpoints FROM state WHERE key = ?", (key,))
        if not rows:
            return StateSnapshot(key)
        return StateSnapshot(key, json.loads(rows[0][0]) if rows[0][0] is not None else None, rows[0][1])

    def load_ledger(self, key: str) -> dict[str, str | None]:
        return dict(self._read("SELECT entry, result FROM ledger WHERE state_key = ?", (key,)))

    @staticmethod
    def _check_owner(conn: sqlite3.Connection, job_id: str, worker_id: str, attempt: int) -> None:
        row = conn.execute(
            "SELECT 1 FROM jobs WHERE id = ? AND status = 'running' AND worker_id = ? AND attempt = ?",
            (job_id, worker_id, attempt),
        ).fetchone()
        if row is None:
            raise LeaseLost(f"job {job_id}: this run (attempt {attempt}) no longer owns the job")

    def checkpoint(self, job_id: str, worker_id: str, attempt: int, key: str, cursor_json: str) -> int:
        now = time.time()
        with self._write() as conn:
            self._check_owner(conn, job_id, worker_id, attempt)
            row = conn.execute(
                "INSERT INTO state (key, cursor, checkpoints, job_id, updated_at) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, checkpoints = checkpoints + 1, "
                "job_id = excluded.job_id, updated_at = excluded.updated_at RETURNING checkpoints",
                (key, cursor_json, job_id, now),
            ).fetchone()
            conn.execute("DELETE FROM ledger WHERE state_key = ?", (key,))
        return row[0]

    def record_once(
        self, job_id: str, worker_id: str, attempt: int, key: str, entry: str, result_json: str | None
    ) -> None:
        with self._write() as conn:
            self._check_owner(conn, job_id, worker_id, attempt)
            conn.execute(
                "INSERT OR REPLACE INTO ledger (state_key, entry, result, created_at) VALUES (?, ?, ?, ?)",
                (key, entry, result_json, time.time()),
            )

    def load_segment(self, job_id: str, arg: str, index: int) -> str:
        rows = self._read("SELECT data FROM segments WHERE job_id = ? AND arg = ? AND idx = ?", (job_id, arg, index))
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
        rows = self._read(f"SELECT {self._STEP_COLUMNS} FROM steps WHERE job_id = ? ORDER BY started_at", (job_id,))
        return {r[1]: self._step_from_row(r) for r in rows}

    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        with self._write() as conn:
            self._check_owner(conn, record.job_id, worker_id, attempt)
            conn.execute(
                f"INSERT OR REPLACE INTO steps ({self._STEP_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.job_id, record.step_id, record.kind, int(record.critical), record.status,
                 record.result_json, json.dumps(record.error) if record.error else None, record.attempts,
                 record.retries, record.duration, record.total_time, record.throttle_overhead,
                 json.dumps(record.throttle) if record.throttle else None, record.tenant,
                 record.started_at, record.finished_at),
            )

    def step_records(self, *, kind: str | None = None, since: float | None = None, limit: int = 1000) -> list[StepRecord]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("finished_at >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {self._STEP_COLUMNS} FROM steps {clause} ORDER BY finished_at DESC LIMIT ?", (*params, limit)
        )
        return [self._step_from_row(r) for r in rows]
