"""The SQLite store's state role: cursors, the once-ledger, segments and flow steps."""

from __future__ import annotations

import sqlite3
import time

from ...errors import LeaseLost
from ..base import (
    StepRecord,
)
from ..sql import STEP_UPSERT, step_values
from .connection import SQLiteConnection


class SQLiteState(SQLiteConnection):
    """Durable job state: cursors, the once-ledger, segments, steps."""

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

    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        with self._write() as conn:
            self._check_owner(conn, record.job_id, worker_id, attempt)
            conn.execute(STEP_UPSERT, step_values(record))
