"""Taking the rest of a batch: the ready items of one batch key, claimed for the worker that
runs the batch, written once for both SQL backends.

The batch's first item came through the claim and its limits admitted it; that admission is
the call's. The items taken here spend no rate (a task charged per item acquires the rest
before the call), but each running item holds a concurrency slot of every limit it holds, as
any running job does, so completion, release and rescue give back exactly what was taken and
a limit's concurrency cap also bounds how many items run. Ready rows are read with ``SKIP
LOCKED`` where the backend has it (PostgreSQL), so two workers taking items of one key at
once never take the same item; SQLite's write lock serialises them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..jobs import Job
from .base import job_from_row, started
from .rules import CLAIM_FROM

if TYPE_CHECKING:
    from .sql import SQLStore

_READY_ITEMS = (
    "SELECT {columns} FROM jobs WHERE batch_key = ? AND status = 'waiting' AND NOT paused "
    "ORDER BY priority DESC, run_at LIMIT ?"
)
_TAKE_SLOTS = (
    "INSERT INTO limit_keys (limit_name, key, running) VALUES (?, ?, ?) "
    "ON CONFLICT (limit_name, key) DO UPDATE SET running = limit_keys.running + excluded.running"
)
_START_ITEM = (
    "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, lease_until = ?, "
    "started_at = ?, updated_at = ?, throttled_seconds = throttled_seconds + COALESCE(? - throttled_since, 0), "
    f"throttled_since = NULL WHERE id = ? AND {CLAIM_FROM}"
)


def claim_batch(store: SQLStore, columns: str, worker_id: str, batch_key: str, limit: int, lease: float) -> list[Job]:
    """Claim up to ``limit`` ready items of ``batch_key`` for ``worker_id`` (see the module);
    ``columns`` are the job columns ``job_from_row`` reads."""
    if limit <= 0:
        return []

    def go(cur: Any) -> list[Job]:
        now = store._now()
        rows = cur.execute(
            store._q(_READY_ITEMS.format(columns=columns) + store.SKIP_LOCKED), (batch_key, limit)
        ).fetchall()
        if not rows:
            return []
        held = {row[0]: [tuple(pair) for pair in json.loads(row[20])] if row[20] else [] for row in rows}
        room = _room(store, cur, {pair for pairs in held.values() for pair in pairs}, now)
        chosen: list[Any] = []
        taken: dict[tuple[str, str], int] = {}
        for row in rows:
            pairs = held[row[0]]
            if any(room[pair] <= 0 for pair in pairs):
                continue  # its limit is at its concurrency cap or paused: it waits for a later batch
            for pair in pairs:
                room[pair] -= 1
                taken[pair] = taken.get(pair, 0) + 1
            chosen.append(row)
        for (name, key), count in sorted(taken.items()):
            cur.execute(store._q(_TAKE_SLOTS), (name, key, count))
        lease_until = now + lease
        for row in chosen:
            cur.execute(store._q(_START_ITEM), (worker_id, lease_until, now, now, now, row[0]))
        return [started(job_from_row(row), worker_id, lease_until, now) for row in chosen]

    return store._run(go, what="claim batch", pipeline=False)


def _room(store: SQLStore, cur: Any, pairs: set[tuple[str, str]], now: float) -> dict[tuple[str, str], float]:
    """How many more running items each (limit, key) takes: its concurrency cap less what runs,
    none while it is paused, unbounded without a cap. Rows locked in key order."""
    if not pairs:
        return {}
    caps = dict(cur.execute("SELECT name, concurrency FROM limits").fetchall())
    room: dict[tuple[str, str], float] = {}
    found = store._locked_keys(cur, sorted(pairs))
    for name, key in sorted(pairs):
        running, paused_until = found.get((name, key), (0, 0.0))
        cap = caps.get(name)
        if paused_until > now:
            room[(name, key)] = 0
        else:
            room[(name, key)] = float("inf") if cap is None else cap - running
    return room
