"""The PostgreSQL store's limits role: declared and learned rates, pauses and concurrency slots."""

from __future__ import annotations

import psycopg

from ...errors import ConfigError
from ...limits import LimitSpec
from ...quota import Learned, Observation, effective_rate, observe, spent_until
from ..base import (
    held_until,
    key_pace,
    settled_tat,
)
from ..rules import admit_one
from ..sql import HOLD_KEY, SLOT_INSERT
from .connection import (
    CHANNEL,
    PostgresConnection,
    _pipelined,
)
from .queries import LOCK_KEYS


class PostgresLimits(PostgresConnection):
    """Limits: declare, admit outside a claim, pause, learn, concurrency slots."""

    @classmethod
    def _spec_and_lock(cls, cur: psycopg.Cursor, name: str, key: str) -> tuple[LimitSpec, tuple]:
        """The limit's spec and its key's row, locked (created if missing) — one round trip."""
        conn = cur.connection
        with _pipelined(conn):
            spec_cur = conn.cursor()
            spec_cur.execute(cls._SPEC_SQL, (name,))
            cur.execute(
                "INSERT INTO limit_keys (limit_name, key) SELECT %s, %s WHERE EXISTS "
                "(SELECT 1 FROM limits WHERE name = %s) ON CONFLICT DO NOTHING",
                (name, key, name),
            )
            cur.execute(LOCK_KEYS.format(skip=""), ([name], [key]))
            row = spec_cur.fetchone()
            state = cur.fetchone()
        if row is None:
            raise ConfigError(f"unknown limit {name!r}")
        assert state is not None  # the row was inserted above when missing
        return LimitSpec.from_row(*row), state[2:]

    def acquire(self, name: str, key: str, cost: int = 1, horizon: float = 0.0) -> tuple[bool, float]:
        def go(cur: psycopg.Cursor) -> tuple[bool, float]:
            now = self._now()
            spec, (tat, paused_until, _, admitted, learned) = self._spec_and_lock(cur, name, key)
            ok, at, new_tat = admit_one(spec, tat, paused_until, int(admitted), learned, now, cost, horizon)
            if new_tat is None:
                return ok, at
            cur.execute(
                "UPDATE limit_keys SET tat = %s, admitted = admitted + %s WHERE limit_name = %s AND key = %s",
                (new_tat, cost, name, key),
            )
            return True, at

        ok, at = self._run(go, what="acquire")
        return ok, at - self._offset

    def paused_until(self, name: str, key: str) -> float:
        rows = self._read("SELECT paused_until FROM limit_keys WHERE limit_name = %s AND key = %s", (name, key))
        return float(rows[0][0]) - self._offset if rows and rows[0][0] else 0.0

    def pause_limit(self, name: str, key: str, until: float, reason: str, *, sent: float | None = None) -> float:
        # the learned state keeps the server's clock, like every other time in this store
        shift = self._offset
        until = until + shift

        def go(cur: psycopg.Cursor) -> float:
            spec, (tat, paused_until, _, admitted, learned) = self._spec_and_lock(cur, name, key)
            if sent is not None:
                stated, ends = spent_until(
                    Learned.loads(learned), self._now(), until, sent + shift, float(paused_until)
                )
                learned = ends.dumps()
            else:
                stated = until
            end = max(stated, paused_until)
            rate, burst = key_pace(spec, Learned.loads(learned), int(admitted), self._now())
            if rate is not None:
                # no burst at the reset: one admission at `end`, then the steady rate
                tat = max(tat, end + rate.interval * (burst - 1))
            cur.execute(
                "UPDATE limit_keys SET tat = %s, paused_until = %s, pause_reason = %s, rate_limited = rate_limited + 1, "
                "learned = %s WHERE limit_name = %s AND key = %s",
                (tat, end, reason, learned, name, key),
            )
            return end

        return self._run(go, what="pause_limit") - self._offset

    def observe_limit(self, name: str, key: str, obs: Observation) -> tuple[float | None, str | None]:
        # the learned state keeps the server's clock, like every other time in this store
        shift = self._offset
        obs = Observation(
            **{
                **obs.__dict__,
                "now": obs.now + shift,
                "token_at": None if obs.token_at is None else obs.token_at + shift,
                "first_ok": None if obs.first_ok is None else obs.first_ok + shift,
                "renewed": None if obs.renewed is None else obs.renewed + shift,
                "renewed_reset": None if obs.renewed_reset is None else obs.renewed_reset + shift,
                "renewed_from": None if obs.renewed_from is None else obs.renewed_from + shift,
                "reset_at": None if obs.reset_at is None else obs.reset_at + shift,
            }
        )

        def go(cur: psycopg.Cursor) -> tuple[float | None, str | None]:
            spec, (tat, _, _, admitted, raw) = self._spec_and_lock(cur, name, key)
            learned, changed = observe(spec, Learned.loads(raw), int(admitted), obs)
            cur.execute(
                "UPDATE limit_keys SET tat = %s, learned = %s WHERE limit_name = %s AND key = %s",
                (settled_tat(spec, float(tat), learned, int(admitted), changed, obs.now), learned.dumps(), name, key),
            )
            held = held_until(learned, changed, obs.now)
            if held is not None:
                until, reason = held
                cur.execute(self._q(HOLD_KEY), (until, until, until, reason, name, key))
            if changed:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))  # a faster rate may admit held jobs now
            return effective_rate(spec, learned, int(admitted), obs.now), changed

        return self._run(go, what="observe_limit")

    def reset_learned(self, name: str, key: str | None = None) -> int:
        def go(cur: psycopg.Cursor) -> int:
            cur.execute("SELECT 1 FROM limits WHERE name = %s", (name,))
            if cur.fetchone() is None:
                raise ConfigError(f"unknown limit {name!r}")
            where, params = "limit_name = %s AND learned IS NOT NULL", [name]
            if key is not None:
                where += " AND key = %s"
                params.append(key)
            cur.execute(f"UPDATE limit_keys SET learned = NULL WHERE {where}", params)
            return cur.rowcount

        return self._run(go, what="reset_learned")

    def acquire_slot(self, job_id: str, name: str, key: str, holder: str) -> bool:
        def go(cur: psycopg.Cursor) -> bool:
            spec, (_, _, running, _, _) = self._spec_and_lock(cur, name, key)
            if spec.concurrency is not None and running >= spec.concurrency:
                return False
            with _pipelined(cur.connection):
                cur.execute(
                    "UPDATE limit_keys SET running = running + 1, admitted = admitted + 1 "
                    "WHERE limit_name = %s AND key = %s",
                    (name, key),
                )
                cur.execute(self._q(SLOT_INSERT), (job_id, name, key, holder, self._now()))
            return True

        return self._run(go, what="acquire_slot")

    def release_slot(self, job_id: str, name: str, key: str, holder: str) -> None:
        # one statement: the slot goes, and its limit key gets it back (released already — the
        # job was rescued meanwhile — deletes nothing and changes nothing)
        self._run(
            lambda cur: cur.execute(
                "WITH d AS (DELETE FROM job_slots WHERE id = (SELECT id FROM job_slots WHERE job_id = %s "
                "AND limit_name = %s AND key = %s AND holder = %s LIMIT 1 FOR UPDATE) RETURNING limit_name, key) "
                "UPDATE limit_keys l SET running = GREATEST(l.running - 1, 0) FROM d "
                "WHERE l.limit_name = d.limit_name AND l.key = d.key",
                (job_id, name, key, holder),
            ),
            what="release_slot",
        )
