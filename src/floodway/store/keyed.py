"""Enqueues with a dedupe or debounce key, written once for both SQL backends.

Each key has one row in ``job_keys`` naming the job it stands for. An enqueue first inserts
that row (``ON CONFLICT DO NOTHING``); when the row exists it reads it under a row lock, so two
enqueuers of one key, in two processes or on two machines, take turns: the second sees what
the first decided. ``rules.match_enqueue_key`` then says whether the enqueue makes its job,
returns the existing one (a dedupe window) or folds into it (a debounce: the job takes the
last arguments and its run moves). A fold is an ``UPDATE ... WHERE status IN (not started)``,
so a worker that claimed the job meanwhile wins and the enqueue makes the next job instead.

Keyed enqueues cost a few statements per job where a plain bulk enqueue costs one per batch:
they are the exception, so plain enqueues keep their fast paths and only keyed ones come here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs import NOT_STARTED, EnqueueKey, NewJob, Status, check_transition
from .base import EnqueueResult
from .rules import KeyMatch, debounce_run_at, match_enqueue_key

if TYPE_CHECKING:
    from .sql import SQLStore

#: a job row as an enqueue writes it; params: ``job_values``
JOB_INSERT = (
    "INSERT INTO jobs (id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, "
    "tenant, created_at, updated_at, limits, fair_key, state_key, batch_key) "
    "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_KEY_CLAIM = (
    "INSERT INTO job_keys (kind, task, key, job_id, first_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, task, key) DO NOTHING"
)
_KEY_READ = "SELECT job_id, first_at, expires_at, collapsed FROM job_keys WHERE kind = ? AND task = ? AND key = ?"
_KEY_MOVE = "UPDATE job_keys SET job_id = ?, first_at = ?, expires_at = ?, collapsed = 0 WHERE kind = ? AND task = ? AND key = ?"
_KEY_FOLDED = "UPDATE job_keys SET collapsed = collapsed + ? WHERE kind = ? AND task = ? AND key = ?"
_NOT_STARTED = ", ".join(f"'{s.value}'" for s in sorted(NOT_STARTED, key=lambda s: s.value))
#: the fold: new arguments; a job still scheduled also moves its run (a ready one runs as it is)
_FOLD = (
    "UPDATE jobs SET args = ?, updated_at = ?, run_at = CASE WHEN status = 'scheduled' THEN ? ELSE run_at END "
    f"WHERE id = ? AND status IN ({_NOT_STARTED})"
)
#: the timeline's one line for a debounced job, rewritten on each fold (from = to: no status change)
_FOLD_EVENT_UPDATE = "UPDATE job_events SET at = ?, reason = ? WHERE job_id = ? AND from_status = to_status"


def job_values(job: NewJob, now: float) -> tuple:
    """The parameters of ``JOB_INSERT`` for ``job``."""
    return (
        job.id,
        job.task,
        job.args_json,
        job.queue,
        job.status.value,
        job.priority,
        job.max_attempts,
        job.retry_json,
        job.run_at,
        job.tenant,
        now,
        now,
        job.limits_json,
        job.fair_key,
        job.shared_state,
        job.batch_key,
    )


_FOLD_PREFIX = "debounced: "
_FOLD_MIDDLE = " later enqueue(s) folded into this job"


def fold_reason(collapsed: int) -> str:
    return f"{_FOLD_PREFIX}{collapsed}{_FOLD_MIDDLE}; it runs with the last one's arguments"


def folds_in(reason: str | None) -> int | None:
    """How many enqueues the timeline line ``reason`` says were folded into its job (the line
    ``fold_reason`` writes), or None for any other line."""
    if not reason or not reason.startswith(_FOLD_PREFIX):
        return None
    count, _, rest = reason[len(_FOLD_PREFIX) :].partition(_FOLD_MIDDLE)
    return int(count) if count.isdigit() and rest else None


def _expiry(key: EnqueueKey, now: float) -> float | None:
    return now + key.window if key.kind == "unique" and not key.while_unfinished else None


def enqueue_keyed(
    store: SQLStore, jobs: list[NewJob], queues: dict[str, int | None] | None = None
) -> list[EnqueueResult]:
    """Enqueue ``jobs`` (some with an ``enqueue_key``) in one transaction: each keyed job is
    made, or answered with the job its key stands for (``created=False``). Items of one
    call with the same key are matched with each other too, in order."""
    for status in {job.status for job in jobs}:
        check_transition(None, status)  # all or nothing: refuse before writing

    def go(cur: Any) -> list[EnqueueResult]:
        now = store._now()
        if queues:
            for name, cap in queues.items():
                cur.execute(
                    store._q("INSERT INTO queues (name, max_concurrency) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                    (name, cap),
                )
        results: list[EnqueueResult] = []
        fresh: list[NewJob] = []
        made: dict[tuple[str, str, str], NewJob] = {}  # keys made by this call
        folded: dict[tuple[str, str, str], tuple[str, Status, int]] = {}  # key -> (job, status, folds)
        for job in jobs:
            key = job.enqueue_key
            if key is None:
                fresh.append(job)
                results.append(EnqueueResult(job.id, True))
                continue
            ident = (key.kind, job.task, key.key)
            earlier = made.get(ident)
            if earlier is not None:
                if key.kind == "debounce":  # the job made by this call takes the last arguments
                    earlier.args_json, earlier.segments = job.args_json, job.segments
                    earlier.run_at = max(earlier.run_at, job.run_at)
                results.append(EnqueueResult(earlier.id, False))
                continue
            target = _match_key(store, cur, job, key, ident, now, folded)
            if target is None:
                made[ident] = job
                fresh.append(job)
                results.append(EnqueueResult(job.id, True))
            else:
                results.append(EnqueueResult(target, False))
        _write_folds(store, cur, folded, now)
        _insert_jobs(store, cur, fresh, now)
        return results

    return store._run(go, what="enqueue", pipeline=False)


def _match_key(
    store: SQLStore,
    cur: Any,
    job: NewJob,
    key: EnqueueKey,
    ident: tuple[str, str, str],
    now: float,
    folded: dict[tuple[str, str, str], tuple[str, Status, int]],
) -> str | None:
    """The id of the job this enqueue is answered with, or None when ``job`` is to be made
    (the key then names it)."""
    if key.kind == "debounce":
        job.status, job.run_at = Status.SCHEDULED, debounce_run_at(key, now, now)
    if store._rowcount(cur, store._q(_KEY_CLAIM), (*ident, job.id, now, _expiry(key, now))):
        return None  # the key is new
    held_id, first_at, expires_at, _ = cur.execute(store._q(_KEY_READ + store.FOR_UPDATE), ident).fetchone()
    row = cur.execute(store._q("SELECT status FROM jobs WHERE id = ?"), (held_id,)).fetchone()
    status = Status(row[0]) if row else None
    match = match_enqueue_key(key, status, expires_at, now)
    if match is KeyMatch.EXISTING:
        return str(held_id)
    if match is KeyMatch.FOLD:
        run_at = debounce_run_at(key, first_at, now)
        if store._rowcount(cur, store._q(_FOLD), (job.args_json, now, run_at, held_id)):
            _replace_segments(store, cur, held_id, job)
            _, _, count = folded.get(ident, (held_id, status, 0))
            folded[ident] = (held_id, status, count + 1)  # type: ignore[assignment]
            return str(held_id)
        # claimed meanwhile: it runs with the arguments it had; this enqueue makes the next job
    store._rowcount(cur, store._q(_KEY_MOVE), (job.id, now, _expiry(key, now), *ident))
    return None


def _replace_segments(store: SQLStore, cur: Any, job_id: str, job: NewJob) -> None:
    cur.execute(store._q("DELETE FROM segments WHERE job_id = ?"), (job_id,))
    for _, arg, idx, data in job.segment_rows():
        cur.execute(
            store._q("INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)"), (job_id, arg, idx, data)
        )


def _write_folds(
    store: SQLStore, cur: Any, folded: dict[tuple[str, str, str], tuple[str, Status, int]], now: float
) -> None:
    """Count each key's folds and keep its job's timeline line current."""
    for ident, (job_id, status, count) in folded.items():
        store._rowcount(cur, store._q(_KEY_FOLDED), (count, *ident))
        total = cur.execute(store._q(_KEY_READ), ident).fetchone()[3]
        if not store._rowcount(cur, store._q(_FOLD_EVENT_UPDATE), (now, fold_reason(total), job_id)):
            store._insert_events(
                cur,
                [(job_id, now, status.value, status.value, 0, None, None, fold_reason(total))],
            )


def _insert_jobs(store: SQLStore, cur: Any, fresh: list[NewJob], now: float) -> None:
    """Write the jobs made, their segments, their fairness groups, and wake their queues."""
    if not fresh:
        return
    cur.executemany(store._q(JOB_INSERT), [job_values(job, now) for job in fresh])
    segments = [row for job in fresh for row in job.segment_rows()]
    if segments:
        cur.executemany(store._q("INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)"), segments)
    store._mark_fair_keys(cur, {job.fair_key for job in fresh if job.status is Status.WAITING})
    store._notify(cur, {job.queue for job in fresh})
