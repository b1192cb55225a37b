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

from typing import TYPE_CHECKING, Any, cast

from ..jobs import NOT_STARTED, EnqueueKey, NewJob, Status, check_transition
from .base import EnqueueResult
from .rules import KeyMatch, debounce_run_at, match_enqueue_key

if TYPE_CHECKING:
    from .sql import SQLStore

#: a job row as an enqueue writes it; params: ``job_values``
JOB_INSERT = (
    "INSERT INTO jobs (id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, "
    "tenant, created_at, updated_at, limits, fair_key, state_key, batch_key, trace) "
    "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
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
        job.trace,
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


Ident = tuple[str, str, str]  # (kind, task, key)


def enqueue_keyed(
    store: SQLStore, jobs: list[NewJob], queues: dict[str, int | None] | None = None
) -> list[EnqueueResult]:
    """Enqueue ``jobs`` (some with an ``enqueue_key``) in one transaction: each keyed job is
    made, or answered with the job its key stands for (``created=False``). Items of one call
    with the same key are matched with each other too, in order.

    The keys of a call are handled together, in a fixed number of statements whatever their
    number (a group commit of many concurrent enqueues costs about what one does): their rows
    claimed in one insert, the existing ones and their jobs read under row locks (taken in key
    order, so two enqueuers never deadlock), each decided by ``rules.match_enqueue_key``, and
    the folds, the moved keys, the counts and the new jobs written in batches."""
    for status in {job.status for job in jobs}:
        check_transition(None, status)  # all or nothing: refuse before writing

    def go(cur: Any) -> list[EnqueueResult]:
        now = store._now()
        if queues:
            cur.executemany(
                store._q("INSERT INTO queues (name, max_concurrency) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                list(queues.items()),
            )
        # each key's first job (the one made if the key makes one) and last job (whose arguments
        # a debounce keeps), and how many enqueues of this call it has
        first: dict[Ident, NewJob] = {}
        last: dict[Ident, NewJob] = {}
        count: dict[Ident, int] = {}
        for job in jobs:
            if job.enqueue_key is not None:
                ident = _ident(job)
                first.setdefault(ident, job)
                last[ident] = job
                count[ident] = count.get(ident, 0) + 1
        idents = sorted(first)  # rows are locked in key order
        for ident in idents:
            key = cast(EnqueueKey, first[ident].enqueue_key)
            if key.kind == "debounce":
                job = first[ident]
                job.status, job.run_at = Status.SCHEDULED, debounce_run_at(key, now, now)
                job.args_json, job.segments = last[ident].args_json, last[ident].segments
        target = _match_keys(store, cur, first, last, count, idents, now)
        results: list[EnqueueResult] = []
        fresh: list[NewJob] = []
        for job in jobs:
            if job.enqueue_key is None:
                fresh.append(job)
                results.append(EnqueueResult(job.id, True))
                continue
            ident = _ident(job)
            made = target[ident] is None and first[ident] is job
            if made:
                fresh.append(job)
            results.append(EnqueueResult(job.id if made else (target[ident] or first[ident].id), made))
        _insert_jobs(store, cur, fresh, now)
        return results

    return store._run(go, what="enqueue", pipeline=False)


def _ident(job: NewJob) -> Ident:
    key = cast(EnqueueKey, job.enqueue_key)
    return (key.kind, job.task, key.key)


def _chunks(items: list[Any], size: int = 300) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _match_keys(
    store: SQLStore,
    cur: Any,
    first: dict[Ident, NewJob],
    last: dict[Ident, NewJob],
    count: dict[Ident, int],
    idents: list[Ident],
    now: float,
) -> dict[Ident, str | None]:
    """Each key's answer: the id of the job an enqueue of it returns, or None when its first
    job of this call is to be made (the key then names it)."""
    new: set[Ident] = set()
    for chunk in _chunks(idents):
        rows = [
            (*ident, first[ident].id, now, _expiry(cast(EnqueueKey, first[ident].enqueue_key), now)) for ident in chunk
        ]
        marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
        claimed = cur.execute(
            store._q(
                f"INSERT INTO job_keys (kind, task, key, job_id, first_at, expires_at) VALUES {marks} "
                "ON CONFLICT (kind, task, key) DO NOTHING RETURNING kind, task, key"
            ),
            [value for row in rows for value in row],
        ).fetchall()
        new.update((r[0], r[1], r[2]) for r in claimed)
    answer: dict[Ident, str | None] = {ident: None for ident in new}
    held = [ident for ident in idents if ident not in new]
    folds: list[tuple] = []
    moves: list[tuple] = []
    counts: list[tuple] = []
    events_new: list[tuple[tuple, Status]] = []
    events_old: list[tuple[tuple, Status]] = []
    keys: dict[Ident, tuple] = {}
    for chunk in _chunks(held):
        marks = ", ".join(["(?, ?, ?)"] * len(chunk))
        for row in cur.execute(
            store._q(
                "SELECT kind, task, key, job_id, first_at, expires_at, collapsed FROM job_keys "
                f"WHERE (kind, task, key) IN (VALUES {marks}) ORDER BY kind, task, key{store.FOR_UPDATE}"
            ),
            [value for ident in chunk for value in ident],
        ).fetchall():
            keys[(row[0], row[1], row[2])] = tuple(row[3:])
    ids = sorted({str(keys[ident][0]) for ident in held})
    status: dict[str, Status] = {}
    for chunk in _chunks(ids):
        clause, params = store._any("id", chunk)
        # locked too: a claim (which skips locked rows) cannot start a job being folded
        for job_id, value in cur.execute(
            f"SELECT id, status FROM jobs WHERE {clause} ORDER BY id{store.FOR_UPDATE}", params
        ).fetchall():
            status[job_id] = Status(value)
    for ident in held:
        job_id, first_at, expires_at, collapsed = keys[ident]
        key = cast(EnqueueKey, first[ident].enqueue_key)
        match = match_enqueue_key(key, status.get(job_id), expires_at, now)
        if match is KeyMatch.EXISTING:
            answer[ident] = str(job_id)
        elif match is KeyMatch.FOLD:
            answer[ident] = str(job_id)
            latest = last[ident]
            folds.append((latest.args_json, now, debounce_run_at(key, first_at, now), job_id))
            if latest.segments:
                _replace_segments(store, cur, job_id, latest)
            total = collapsed + count[ident]
            event = (now, fold_reason(total), job_id)
            (events_old if collapsed else events_new).append((event, status[job_id]))
            counts.append((count[ident], *ident))
        else:
            answer[ident] = None
            moves.append((first[ident].id, now, _expiry(key, now), *ident))
    for ident in idents:
        if answer[ident] is None and ident[0] == "debounce" and count[ident] > 1:
            # the rest of this call folded into the job it makes
            counts.append((count[ident] - 1, *ident))
            events_new.append(((now, fold_reason(count[ident] - 1), first[ident].id), Status.SCHEDULED))
    if folds:
        cur.executemany(store._q(_FOLD), folds)
    if moves:
        cur.executemany(store._q(_KEY_MOVE), moves)
    if counts:
        cur.executemany(store._q(_KEY_FOLDED), counts)
    if events_old:
        cur.executemany(store._q(_FOLD_EVENT_UPDATE), [event for event, _ in events_old])
    if events_new:
        store._insert_events(
            cur, [(job_id, at, st.value, st.value, 0, None, None, reason) for (at, reason, job_id), st in events_new]
        )
    return answer


def _replace_segments(store: SQLStore, cur: Any, job_id: str, job: NewJob) -> None:
    cur.execute(store._q("DELETE FROM segments WHERE job_id = ?"), (job_id,))
    cur.executemany(
        store._q("INSERT INTO segments (job_id, arg, idx, data) VALUES (?, ?, ?, ?)"),
        [(job_id, arg, idx, data) for _, arg, idx, data in job.segment_rows()],
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
