"""The SQLite store's claim: due jobs promoted, fairness groups served in turn, limits admitted
in the claim's own write transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ...jobs import (
    Status,
)
from ...limits import LimitSpec
from ...quota import Learned
from ..base import (
    ClaimedJobs,
    served_stamps,
    started,
)
from ..base import job_from_row as _job_from_row
from ..rules import CLAIM_FROM, PROMOTE_FROM, Admission, guard
from ..sql import LANE_DEMAND
from .connection import SQLiteConnection
from .queries import _JOB_COLUMNS, _SPEC_SQL

#: one index range each (a UNION ALL of the two reads jobs_due twice, not the whole table);
#: each also states jobs_due's own condition (``PROMOTE_FROM``): SQLite uses a partial index
#: only for a query that repeats the index's WHERE term
_DUE_SCHEDULED = f"{guard(Status.WAITING, Status.SCHEDULED)} AND {PROMOTE_FROM}"
_DUE_RETRY = f"{guard(Status.WAITING, Status.RETRYING)} AND {PROMOTE_FROM}"


#: a fairness group's ready jobs (the group a parameter)
_GROUP_READY = "status = 'waiting' AND fair_key = ? AND paused = 0"
#: one queue's ready jobs in a fairness group, in claim order, through jobs_fair_queue
_QUEUE_HEADS = (
    f"SELECT * FROM (SELECT {_JOB_COLUMNS}, rowid AS rid FROM jobs WHERE {_GROUP_READY} AND queue = ? "
    "ORDER BY priority DESC, run_at, rowid LIMIT ?)"
)


def _group_heads(conn: sqlite3.Connection, group: str, queues: list[str], fetch: int, offset: int) -> list[tuple]:
    """Rows ``offset`` to ``offset + fetch`` of a fairness group's ready jobs of ``queues``
    (distinct), in claim order: the first ``offset + fetch`` of each queue, read queue by queue
    and merged, so another queue's jobs are never read however many of them wait."""
    if not queues:
        return []
    arms = " UNION ALL ".join([_QUEUE_HEADS] * len(queues))
    params: list[Any] = [p for q in queues for p in (group, q, fetch + offset)]
    rows = conn.execute(f"{arms} ORDER BY priority DESC, run_at, rid LIMIT ? OFFSET ?", (*params, fetch, offset))
    return [row[:-1] for row in rows]


class _Admission(Admission):
    """Admission (``rules.Admission``) inside the claim's write transaction, which already holds
    the database's write lock: each pair's state is read the first time a job asks for it."""

    def __init__(self, conn: sqlite3.Connection, now: float, horizon: float = 0.0):
        specs = {row[0]: LimitSpec.from_row(*row) for row in conn.execute(_SPEC_SQL)}
        super().__init__(specs, now, horizon)
        self.conn = conn

    def state(self, pair: tuple[str, str]) -> list[Any]:
        if pair not in self.states:
            row = self.conn.execute(
                "SELECT tat, paused_until, running, admitted, learned FROM limit_keys WHERE limit_name = ? AND key = ?",
                pair,
            ).fetchone()
            state: list[Any] = list(row) if row else [0.0, 0.0, 0, 0, None]
            state[4] = Learned.loads(state[4])
            self.states[pair] = state
        return self.states[pair]

    def write_back(self) -> None:
        if self.demanded:
            self.conn.executemany(LANE_DEMAND, [(*pair, self.states[pair][1]) for pair in sorted(self.demanded)])
        if not self.dirty:
            return
        self.conn.executemany(
            "INSERT INTO limit_keys (limit_name, key, tat, running, admitted) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (limit_name, key) DO UPDATE SET tat = excluded.tat, running = excluded.running, "
            "admitted = excluded.admitted",
            [(name, key, *self.states[(name, key)][0:1], *self.states[(name, key)][2:4]) for name, key in self.dirty],
        )


class SQLiteClaim(SQLiteConnection):
    """Claim ready jobs (with limit admission) and tell when the next one is due."""

    def _promote_due(self, conn: sqlite3.Connection, now: float) -> None:
        """scheduled/retrying -> waiting for every job whose run_at has come."""
        due = conn.execute(
            f"SELECT id, attempt, status, fair_key FROM jobs WHERE {_DUE_SCHEDULED} AND run_at <= ? "
            f"UNION ALL SELECT id, attempt, status, fair_key FROM jobs WHERE {_DUE_RETRY} AND run_at <= ? "
            "LIMIT 5000",
            (now, now),
        ).fetchall()
        if not due:
            return
        conn.executemany(
            f"UPDATE jobs SET status = 'waiting', updated_at = ? WHERE id = ? AND {PROMOTE_FROM}",
            [(now, job_id) for job_id, _, _, _ in due],
        )
        self._insert_events(
            conn,
            self._event_rows(((j, Status(st), Status.WAITING, a) for j, a, st, _ in due), now, reason="due"),
        )
        self._mark_fair_keys(conn, {fk for _, _, _, fk in due})

    def _claim_jobs(
        self, worker_id: str, queues: list[str] | None, limit: int, lease: float, ahead: int, horizon: float = 0.0
    ) -> ClaimedJobs:
        # jobs ``ahead`` of a claim for slots are not taken here: a SQLite claim has no network
        # round trip to save, and taking jobs ahead is left to the worker's own prefetch claim
        # (``limit=0``)
        if limit > 0:
            ahead = 0
        now = time.time()
        with self._write() as conn:
            self._promote_due(conn, now)
            admission = _Admission(conn, now, horizon)
            room = self._queue_room(conn)
            chosen, served = self._choose(conn, admission, room, queues, limit, now, ahead)
            if served:
                keys, stamps = served_stamps(served, now)
                conn.executemany("UPDATE fair_keys SET served_at = ? WHERE key = ?", list(zip(stamps, keys)))
            admission.write_back()
            if admission.blocked_ids:
                conn.executemany(
                    "UPDATE jobs SET throttled_since = COALESCE(throttled_since, ?) WHERE id = ?",
                    [(now, job_id) for job_id in admission.blocked_ids],
                )
            if not chosen:
                return ClaimedJobs(wake_at=admission.wake_at)
            lease_until = now + lease
            # a job whose tokens were booked ahead starts (and reads as started) at their moment
            at = admission.start_at
            conn.executemany(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, "
                "lease_until = ?, started_at = ?, updated_at = ?, "
                "throttled_seconds = throttled_seconds + COALESCE(? - throttled_since, 0), "
                f"throttled_since = NULL WHERE id = ? AND {CLAIM_FROM}",
                [(worker_id, lease_until, at.get(row[0], now), now, now, row[0]) for row in chosen],
            )
        jobs = ClaimedJobs(wake_at=admission.wake_at, start_at=at)
        jobs.extend(started(_job_from_row(r), worker_id, lease_until, now, at.get(r[0], now)) for r in chosen)
        return jobs

    @staticmethod
    def _queue_room(conn: sqlite3.Connection) -> dict[str, int]:
        """Free slots of each capped queue, counted from running jobs (cannot drift); a
        paused queue has none."""
        rows = conn.execute(
            "SELECT name, max_concurrency, paused FROM queues WHERE max_concurrency IS NOT NULL OR paused = 1"
        ).fetchall()
        if not rows:
            return {}
        running = dict(conn.execute("SELECT queue, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY queue"))
        return {q: 0 if paused else cap - running.get(q, 0) for q, cap, paused in rows}

    def _choose(
        self,
        conn: sqlite3.Connection,
        admission: "_Admission",
        room: dict[str, int],
        queues: list[str] | None,
        limit: int,
        now: float,
        ahead: int = 0,
    ) -> tuple[list[tuple], list[str]]:
        """Pick up to ``limit`` ready jobs, then up to ``ahead`` more to claim ahead:
        round-robin over fairness groups (least recently served first), then priority, then
        age; skipping full queues and jobs whose limits do not admit them now (or, claimed
        ahead, leave them no headroom)."""
        groups = [k for (k,) in conn.execute("SELECT key FROM fair_keys ORDER BY served_at, key")]
        if queues is not None:
            queues = sorted(set(queues))  # each queue's jobs are read once (see _group_heads)
        pending: dict[str, list[tuple]] = {}
        offsets: dict[str, tuple[tuple[str, ...], int]] = {}
        seen: set[str] = set()
        exhausted: set[str] = set()
        chosen: list[tuple] = []
        served: list[str] = []
        active = list(groups)
        # at most this many rows are looked at per claim, so a claim stays short however
        # large and blocked the backlog is
        total = limit + ahead
        budget = max(200, total * 20)
        while active and len(chosen) < total and budget > 0:
            progressed = False
            for group in list(active):
                if len(chosen) >= total or budget <= 0:
                    break
                if not (heads := pending.get(group)):
                    if group in exhausted:
                        active.remove(group)
                        continue
                    full = tuple(sorted(q for q, left in room.items() if left <= 0))
                    last_full, offset = offsets.get(group, (full, 0))
                    if last_full != full:
                        offset = 0  # the exclusions changed: start over, `seen` drops repeats
                    fetch = min(max(total, 10), 100)
                    if queues is None:
                        extra = f" AND queue NOT IN ({','.join('?' * len(full))})" if full else ""
                        rows = conn.execute(
                            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {_GROUP_READY}{extra} "
                            "ORDER BY priority DESC, run_at, rowid LIMIT ? OFFSET ?",
                            (group, *full, fetch, offset),
                        ).fetchall()
                    else:
                        rows = _group_heads(conn, group, [q for q in queues if q not in full], fetch, offset)
                    offsets[group] = (full, offset + len(rows))
                    if len(rows) < fetch:
                        exhausted.add(group)
                    heads = [h for h in rows if h[0] not in seen]
                    if not heads:
                        if group in exhausted:
                            active.remove(group)
                            if queues is None and not full and offset == 0 and not rows:
                                conn.execute("DELETE FROM fair_keys WHERE key = ?", (group,))
                        continue
                    pending[group] = heads
                row = heads.pop(0)
                seen.add(row[0])
                budget -= 1
                progressed = True  # a row was looked at; `budget` bounds the walk
                queue = row[3]
                if queue in room and room[queue] <= 0:
                    continue  # its queue filled during this claim; the next fetch skips it
                limits = json.loads(row[20]) if row[20] else []
                if limits and not admission.admit(row[0], limits, ahead=len(chosen) >= limit):
                    # this group's head is held back by a limit (or, ahead, has no headroom):
                    # serve other groups
                    active.remove(group)
                    continue
                if queue in room:
                    room[queue] -= 1
                chosen.append(row)
                served.append(group)  # once per job: served_stamps orders groups by their last
            if not progressed:
                break
        return chosen, served

    def next_due(self, queues: list[str] | None) -> float | None:
        # paused jobs and queues are not work to wait for
        extra, params = " AND paused = 0 AND queue NOT IN (SELECT name FROM queues WHERE paused = 1)", []
        if queues is not None:
            extra += f" AND queue IN ({','.join('?' * len(queues))})"
            params = list(queues)
        if self._read(f"SELECT 1 FROM jobs WHERE status = 'waiting'{extra} LIMIT 1", params):
            return 0.0
        row = self._read(f"SELECT MIN(run_at) FROM jobs WHERE {PROMOTE_FROM}{extra}", params)  # through jobs_due
        return row[0][0] if row and row[0][0] is not None else None
