"""The SQLite store's limits role: declared and learned rates, pauses, tokens and slots."""

from __future__ import annotations

import sqlite3
import time

from ...errors import ConfigError
from ...limits import LimitSpec, check_cost
from ...quota import Learned, Observation, effective_rate, observe, spent_until
from ..base import (
    held_until,
    key_pace,
    settled_tat,
)
from ..rules import admit_one
from ..sql import HOLD_KEY, SLOT_INSERT
from .connection import SQLiteConnection
from .queries import _SPEC_SQL


class SQLiteLimits(SQLiteConnection):
    """Limits: declare, admit outside a claim, pause, learn, concurrency slots."""

    def acquire(self, name: str, key: str, cost: int = 1, horizon: float = 0.0) -> tuple[bool, float]:
        now = time.time()
        with self._write() as conn:
            spec = self._spec(conn, name)
            check_cost(cost, spec.burst, f"limit {name!r}")
            state = conn.execute(
                "SELECT tat, paused_until, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                (name, key),
            ).fetchone()
            tat, paused_until, admitted, learned = state if state else (0.0, 0.0, 0, None)
            ok, at, new_tat = admit_one(spec, tat, paused_until, admitted, learned, now, cost, horizon)
            if new_tat is None:
                return ok, at
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, admitted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, admitted = admitted + ?",
                (name, key, new_tat, cost, cost),
            )
            return True, at

    def paused_until(self, name: str, key: str) -> float:
        rows = self._read("SELECT paused_until FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key))
        return rows[0][0] if rows else 0.0

    @staticmethod
    def _spec(conn: sqlite3.Connection, name: str) -> LimitSpec:
        row = conn.execute(f"{_SPEC_SQL} WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"unknown limit {name!r}")
        return LimitSpec.from_row(*row)

    def pause_limit(self, name: str, key: str, until: float, reason: str, *, sent: float | None = None) -> float:
        with self._write() as conn:
            spec = self._spec(conn, name)
            state = conn.execute(
                "SELECT tat, paused_until, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                (name, key),
            ).fetchone()
            tat, paused_until, admitted, learned = state if state else (0.0, 0.0, 0, None)
            if sent is not None:
                until, ends = spent_until(Learned.loads(learned), time.time(), until, sent, paused_until)
                learned = ends.dumps()
            until = max(until, paused_until)
            rate, burst = key_pace(spec, Learned.loads(learned), admitted, time.time())
            if rate is not None:
                # no burst at the reset: one admission at `until`, then the steady rate
                tat = max(tat, until + rate.interval * (burst - 1))
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, paused_until, pause_reason, rate_limited, learned) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, "
                "paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, "
                "rate_limited = rate_limited + 1, learned = excluded.learned",
                (name, key, tat, until, reason, learned),
            )
        return until

    def observe_limit(self, name: str, key: str, obs: Observation) -> tuple[float | None, str | None]:
        with self._write() as conn:
            spec = self._spec(conn, name)
            state = conn.execute(
                "SELECT tat, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key)
            ).fetchone()
            tat, admitted, raw = state if state else (0.0, 0, None)
            learned, changed = observe(spec, Learned.loads(raw), admitted, obs)
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, tat, learned) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, learned = excluded.learned",
                (name, key, settled_tat(spec, tat, learned, admitted, changed, obs.now), learned.dumps()),
            )
            held = held_until(learned, changed, obs.now)
            if held is not None:
                until, reason = held
                conn.execute(HOLD_KEY, (until, until, until, reason, name, key))
            return effective_rate(spec, learned, admitted, obs.now), changed

    def reset_learned(self, name: str, key: str | None = None) -> int:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM limits WHERE name = ?", (name,)).fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = ? AND learned IS NOT NULL", [name]
            if key is not None:
                where += " AND key = ?"
                params.append(key)
            return conn.execute(f"UPDATE limit_keys SET learned = NULL WHERE {where}", params).rowcount

    def acquire_slot(self, job_id: str, name: str, key: str, holder: str) -> bool:
        with self._write() as conn:
            spec = conn.execute("SELECT concurrency FROM limits WHERE name = ?", (name,)).fetchone()
            if spec is None:
                raise ConfigError(f"unknown limit {name!r}")
            row = conn.execute(
                "SELECT running FROM limit_keys WHERE limit_name = ? AND key = ?", (name, key)
            ).fetchone()
            running = row[0] if row else 0
            if spec[0] is not None and running >= spec[0]:
                return False
            conn.execute(
                "INSERT INTO limit_keys (limit_name, key, running, admitted) VALUES (?, ?, 1, 1) "
                "ON CONFLICT (limit_name, key) DO UPDATE SET running = running + 1, admitted = admitted + 1",
                (name, key),
            )
            conn.execute(SLOT_INSERT, (job_id, name, key, holder, time.time()))
            return True

    def release_slot(self, job_id: str, name: str, key: str, holder: str) -> None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT rowid FROM job_slots WHERE job_id = ? AND limit_name = ? AND key = ? AND holder = ? LIMIT 1",
                (job_id, name, key, holder),
            ).fetchone()
            if row is None:
                return  # released already (the job was rescued meanwhile)
            conn.execute("DELETE FROM job_slots WHERE rowid = ?", (row[0],))
            self._release_limits(conn, [[name, key]])
