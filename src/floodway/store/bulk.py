"""Acting on many jobs at once, chosen by a filter: retry, cancel, pause, resume and purge, written
once for both SQL backends.

The filter is compiled once into a ``WHERE`` clause; the action's own rule (which statuses it
may act on: the same rules as the single-job actions, ``store.rules``) is part of it, so a job
that moved on meanwhile is left alone. The matching jobs are taken in chunks in id order, each
chunk its own short transaction that locks only its rows, with a pause between chunks, so a bulk
action over 100,000 jobs never keeps workers from the locks they need, and a crash leaves every
job acted on or untouched (a job is never half-written). A retried job keeps its ledger: ``ctx.once`` records
stay, so a bulk retry never sends a recorded call again.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..jobs import FINAL_STATUSES, Status
from .base import CONTAINS, JobFilter, contains_pattern, event_row
from .rules import purgeable

if TYPE_CHECKING:
    from .sql import SQLStore

#: the statuses each action may act on (a running job asked to cancel is stopped by its worker)
ACTS_ON: dict[str, frozenset[Status]] = {
    "retry": frozenset({Status.FAILED, Status.CANCELLED, Status.RETRYING}),
    "cancel": frozenset(set(Status) - FINAL_STATUSES),
    "pause": frozenset(set(Status) - FINAL_STATUSES),
    "resume": frozenset(set(Status) - FINAL_STATUSES),
    "purge": FINAL_STATUSES,
}
ACTIONS = tuple(ACTS_ON)
#: jobs per transaction
CHUNK = 1000
#: chunks whose ids one read takes
CHUNKS_PER_READ = 20
#: the longest pause between two chunks (seconds)
MAX_GIVE_WAY = 0.1


def _where(store: SQLStore, action: str, flt: JobFilter) -> tuple[str, list[Any]]:
    """The filter and the action's rule as one condition, and its parameters."""
    if action not in ACTS_ON:
        raise ConfigError(f"unknown bulk action {action!r} (one of: {', '.join(ACTIONS)})")
    allowed = ACTS_ON[action]
    statuses = set(flt.statuses) or set(allowed)
    if action == "purge":
        purgeable(statuses)  # a clear error for an unfinished status
    refused = sorted(s.value for s in statuses - allowed)
    if refused:
        names = ", ".join(sorted(s.value for s in allowed))
        raise ConfigError(f"{action}: acts on {names} jobs only, not {', '.join(refused)}")
    clause, params = store._any("status", sorted(s.value for s in statuses))
    where, values = [clause], list(params)
    for column, value in (("task", flt.task), ("queue", flt.queue), ("tenant", flt.tenant)):
        if value is not None:
            where.append(f"{column} = ?")
            values.append(value)
    if flt.created_after is not None:
        where.append("created_at >= ?")
        values.append(flt.created_after)
    if flt.created_before is not None:
        where.append("created_at < ?")
        values.append(flt.created_before)
    if flt.error is not None:
        where.append(CONTAINS.format(column="error"))
        values.append(contains_pattern(flt.error))
    if action == "pause":
        where.append("NOT paused")
    elif action == "resume":
        where.append("paused")
    return store._q(" AND ".join(where)), values


def bulk_action(store: SQLStore, action: str, flt: JobFilter, *, dry_run: bool = False, chunk: int = CHUNK) -> int:
    """Apply ``action`` to every job ``flt`` matches (see the module); returns how many jobs it
    acted on (a dry run: how many it would)."""
    where, params = _where(store, action, flt)
    if dry_run:
        return int(store._read(f"SELECT COUNT(*) FROM jobs WHERE {where}", params)[0][0])
    done, last = 0, ""
    while True:
        # the ids are read a page of chunks at a time: each read may walk every matching row
        # (the filter's index is not in id order), so fewer reads is what keeps 100,000 fast
        ids = [
            r[0]
            for r in store._read(
                store._q(f"SELECT id FROM jobs WHERE {where} AND id > ? ORDER BY id LIMIT ?"),
                (*params, last, chunk * CHUNKS_PER_READ),
            )
        ]
        if not ids:
            return done
        last = ids[-1]
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            began = time.monotonic()
            done += store._run(
                functools.partial(_act, store, action=action, where=where, params=params, ids=part),
                what=f"bulk {action}",
            )
            # give way: back-to-back chunks would starve a worker waiting for the write lock
            # (SQLite's busy handler polls) or a row a chunk holds; pausing as long as the chunk
            # took leaves the workers at least half the time
            time.sleep(min(time.monotonic() - began, MAX_GIVE_WAY))


def _act(store: SQLStore, cur: Any, *, action: str, where: str, params: list[Any], ids: list[str]) -> int:
    """One chunk, in one transaction: its rows locked and read again (still matching?), then acted on."""
    now = store._now()
    clause, id_params = store._any("id", ids)
    rows = cur.execute(
        f"SELECT id, status, attempt, fair_key, queue FROM jobs WHERE {clause} AND {where} ORDER BY id{store.FOR_UPDATE}",
        (*id_params, *params),
    ).fetchall()
    if not rows:
        return 0
    chosen = [r[0] for r in rows]
    clause, id_params = store._any("id", chosen)
    if action == "retry":
        cur.execute(
            store._q(
                "UPDATE jobs SET status = 'waiting', attempt = 0, run_at = ?, cancel_requested = false, "
                f"finished_at = NULL, updated_at = ? WHERE {clause}"
            ),
            (now, now, *id_params),
        )
        store._insert_events(
            cur, [event_row(r[0], now, Status(r[1]), Status.WAITING, 0, reason="retried by user (bulk)") for r in rows]
        )
        store._mark_fair_keys(cur, {r[3] for r in rows})
        store._notify(cur, {r[4] for r in rows})
    elif action == "cancel":
        running = [r[0] for r in rows if r[1] == Status.RUNNING.value]
        others = [r for r in rows if r[1] != Status.RUNNING.value]
        if running:
            run_clause, run_params = store._any("id", running)
            cur.execute(
                store._q(f"UPDATE jobs SET cancel_requested = true, updated_at = ? WHERE {run_clause}"),
                (now, *run_params),
            )
        if others:
            other_clause, other_params = store._any("id", [r[0] for r in others])
            cur.execute(
                store._q(f"UPDATE jobs SET status = 'cancelled', updated_at = ?, finished_at = ? WHERE {other_clause}"),
                (now, now, *other_params),
            )
            store._insert_events(
                cur,
                [
                    event_row(r[0], now, Status(r[1]), Status.CANCELLED, r[2], reason="cancelled by user (bulk)")
                    for r in others
                ],
            )
    elif action in ("pause", "resume"):
        cur.execute(
            store._q(
                f"UPDATE jobs SET paused = {'true' if action == 'pause' else 'false'}, updated_at = ? WHERE {clause}"
            ),
            (now, *id_params),
        )
        if action == "resume":
            store._mark_fair_keys(cur, {r[3] for r in rows if r[1] == Status.WAITING.value})
            store._notify(cur, {r[4] for r in rows})
    else:  # purge: the job and everything kept for it
        own = [f"job:{job_id}" for job_id in chosen]
        own_clause, own_params = store._any("state_key", own)
        key_clause, key_params = store._any("key", own)
        for sql, values in (
            (f"DELETE FROM job_events WHERE {store._any('job_id', chosen)[0]}", id_params),
            (f"DELETE FROM segments WHERE {store._any('job_id', chosen)[0]}", id_params),
            (f"DELETE FROM steps WHERE {store._any('job_id', chosen)[0]}", id_params),
            (f"DELETE FROM job_keys WHERE {store._any('job_id', chosen)[0]}", id_params),
            (f"DELETE FROM ledger WHERE {own_clause}", own_params),
            (f"DELETE FROM state WHERE {key_clause}", key_params),
            (f"DELETE FROM jobs WHERE {clause}", id_params),
        ):
            cur.execute(store._q(sql), values)
    return len(rows)
