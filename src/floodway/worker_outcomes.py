"""How a run ends, as the outcome the worker writes: a failure retried or final, a run that
continues later, a run interrupted by a cancel or a stopping worker. Pure rules (no I/O beyond
the log line that says what was decided), so each is unit-tested without a worker."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, Fail, error_info
from .jobs import Job, Status
from .resumable import SEGMENT_MARK, ContinueLater, SegmentedList
from .retry import Retry
from .store.base import Outcome

if TYPE_CHECKING:
    from .context import Context
    from .tasks import Task

log = logging.getLogger("floodway.worker")


def hard_timeout(task: "Task") -> float | None:
    """A run stops at its timeout, or at its budget when it has one and no timeout."""
    return task.timeout if task.timeout is not None else task.budget


def call_arguments(task: "Task", job: Job, ctx: "Context") -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of the task's function for this job: the context
    first when the task takes one; a segmented payload as a ``SegmentedList``; for a batch, the
    list of its items' arguments."""
    if task.batch is not None:
        items = [item.args for item in ctx.batch] if ctx.batch else [job.args]
        return ((ctx, items) if task.wants_context else (items,)), {}
    kwargs = dict(job.args)
    if task.payload is not None:
        raw = kwargs.get(task.payload)
        if isinstance(raw, dict) and SEGMENT_MARK in raw:
            kwargs[task.payload] = SegmentedList(ctx, task.payload, raw[SEGMENT_MARK], raw["count"])
    return ((ctx,) if task.wants_context else ()), kwargs


def unknown_task(job: Job, worker_id: str) -> Outcome:
    """The job names a task this worker does not have: it fails for good."""
    return Outcome(
        job.id,
        job.attempt,
        Status.FAILED,
        error={
            "type": "UnknownTask",
            "traceback": None,
            "message": f"task {job.task!r} is not registered in worker {worker_id}",
        },
    )


def continue_later(job: Job, ctx: "Context", later: ContinueLater, *, reason: str) -> Outcome:
    """End this run, keep the cursor, run the same job again; no attempt is spent."""
    if later.delay:
        status, run_at = Status.SCHEDULED, time.time() + later.delay
    else:
        status, run_at = Status.WAITING, None
    return Outcome(
        job.id,
        job.attempt,
        status,
        run_at=run_at,
        spend_attempt=False,
        throttled_seconds=ctx.throttled_seconds,
        reason=f"{reason} (cursor {json.dumps(ctx.cursor)[:80]})",
    )


def failure(job: Job, task: "Task | None", exc: BaseException) -> Outcome:
    """A run that raised: retried after its policy's delay, or failed for good (no task, a
    programming error, an exception the task gives up on, or its last attempt)."""
    error = error_info(exc)
    policy = Retry.from_dict(job.retry) if job.retry else (task.retry if task else Retry())
    stored_final = (job.retry or {}).get("give_up_on", [])
    final = (
        task is None
        or isinstance(exc, (Fail, ConfigError))  # a programming error: retrying cannot fix it
        or task.gives_up_on(exc, stored_final)
        or job.attempt >= job.max_attempts
    )
    if final:
        log.warning(
            "job %s (%s) failed for good on attempt %d: %s: %s",
            job.id,
            job.task,
            job.attempt,
            error["type"],
            error["message"],
        )
        return Outcome(job.id, job.attempt, Status.FAILED, error=error)
    delay = policy.delay(job.attempt)
    log.info(
        "job %s (%s) failed on attempt %d, retrying in %.2fs: %s: %s",
        job.id,
        job.task,
        job.attempt,
        delay,
        error["type"],
        error["message"],
    )
    return Outcome(job.id, job.attempt, Status.RETRYING, error=error, run_at=time.time() + delay)


def interrupted(job: Job, *, cancelled: bool, worker_id: str) -> Outcome:
    """A run stopped from outside: cancelled by a user, or given back by a stopping worker
    without spending its attempt."""
    if cancelled:
        return Outcome(job.id, job.attempt, Status.CANCELLED, reason="cancelled by user while running")
    return Outcome(
        job.id, job.attempt, Status.WAITING, spend_attempt=False, reason=f"released by stopping worker {worker_id}"
    )
