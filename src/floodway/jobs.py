"""Jobs, their statuses and the one table of allowed status transitions.

Every status change in floodway is checked against ``TRANSITIONS`` here before a store writes
it, and every change is recorded as an ``Event`` (the job's timeline). Stores never invent a
transition of their own: they ask ``check_transition`` and write what it allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .errors import TransitionError
from .units import iso


class Status(str, enum.Enum):
    """A job's status (the bulk-job API's names, plus ``cancelled``)."""

    SCHEDULED = "scheduled"  # run_at is in the future
    WAITING = "waiting"  # ready; runs as soon as a worker and the limits allow
    RUNNING = "running"  # claimed by a worker holding a lease
    RETRYING = "retrying"  # failed, will run again at run_at
    FAILED = "failed"  # attempts exhausted or the failure was final
    COMPLETE = "complete"  # returned a result
    CANCELLED = "cancelled"  # cancelled by a user

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


class StepStatus(str, enum.Enum):
    """How a flow step ended (a step is recorded once it has ended; while it runs, its job runs)."""

    COMPLETE = "complete"  # returned; its result is kept, so a re-run of the flow skips it
    FAILED = "failed"  # out of attempts; a critical step fails its flow, another is skipped

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({Status.FAILED, Status.COMPLETE, Status.CANCELLED})
#: Statuses a worker may claim from (once run_at has come).
CLAIMABLE_STATUSES = frozenset({Status.WAITING, Status.RETRYING})

S = Status
#: The allowed transitions. ``None`` as a source means "a new job".
#: Why each edge exists:
TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    # enqueue: ready now, or at a later run_at
    None: frozenset({S.WAITING, S.SCHEDULED}),
    # run_at came (waiting); cancelled before it ran
    S.SCHEDULED: frozenset({S.WAITING, S.CANCELLED}),
    # claimed; cancelled; throttled until a limit admits it (scheduled)
    S.WAITING: frozenset({S.RUNNING, S.CANCELLED, S.SCHEDULED}),
    # finished; failed with or without attempts left; released (shutdown, lease rescue,
    # continue_later) to waiting; rate limited until a reset (scheduled); cancelled mid-run
    S.RUNNING: frozenset({S.COMPLETE, S.FAILED, S.RETRYING, S.WAITING, S.SCHEDULED, S.CANCELLED}),
    # its retry came and a worker claimed it; cancelled; retried now by a user (waiting)
    S.RETRYING: frozenset({S.RUNNING, S.CANCELLED, S.WAITING}),
    # a user asked to run it again
    S.FAILED: frozenset({S.WAITING}),
    S.CANCELLED: frozenset({S.WAITING}),
    # complete is final: its effect happened, running it again is a new job
    S.COMPLETE: frozenset(),
}


def can_transition(source: Status | str | None, target: Status | str) -> bool:
    src = Status(source) if source is not None else None
    return Status(target) in TRANSITIONS[src]


def check_transition(source: Status | str | None, target: Status | str) -> None:
    """Raise ``TransitionError`` unless ``source -> target`` is in the table."""
    if not can_transition(source, target):
        raise TransitionError(f"a job cannot go from {source or 'new'} to {target}")


def sources_for(target: Status) -> frozenset[Status]:
    """Every status from which ``target`` may be reached (for guarded UPDATEs)."""
    return frozenset(s for s, targets in TRANSITIONS.items() if s is not None and target in targets)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job as stored."""

    id: str
    task: str
    args: dict[str, Any]
    queue: str
    status: Status
    priority: int
    attempt: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    tenant: str | None = None
    retry: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    #: the worker running the job; once it is complete, failed or cancelled, the one that ran it last
    worker_id: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    #: the (limit, key) pairs the job holds, resolved at enqueue
    limits: tuple[tuple[str, str], ...] = ()
    fair_key: str = ""
    #: seconds the job was held back by limits (the throttling overhead)
    throttled_seconds: float = 0.0
    #: a shared state key ("orders:acme"), or None for the job's own state
    shared_state: str | None = None
    paused: bool = False
    #: the span context of its enqueue (JSON), when OpenTelemetry recorded it
    trace: str | None = None

    @property
    def state_key(self) -> str:
        """Where the job's cursor and once-ledger live."""
        return self.shared_state or f"job:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with instants as ISO-8601 strings."""
        return {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "queue": self.queue,
            "status": self.status.value,
            "priority": self.priority,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "tenant": self.tenant,
            "run_at": iso(self.run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "worker_id": self.worker_id,
            "result": self.result,
            "error": self.error,
            "limits": [list(pair) for pair in self.limits],
            "throttled_seconds": round(self.throttled_seconds, 6),
            "state_key": self.state_key,
            "paused": self.paused,
        }


@dataclass(frozen=True)
class Event:
    """One entry of a job's timeline: a status transition."""

    job_id: str
    at: float
    from_status: Status | None
    to_status: Status
    attempt: int
    error: dict[str, Any] | None = None
    worker_id: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "at": iso(self.at),
            "from": self.from_status.value if self.from_status else None,
            "to": self.to_status.value,
            "attempt": self.attempt,
            "error": self.error,
            "worker_id": self.worker_id,
            "reason": self.reason,
        }


#: the statuses of a job that has not finished: what ``unique_while="active"`` dedupes against
UNFINISHED = frozenset({Status.SCHEDULED, Status.WAITING, Status.RUNNING, Status.RETRYING})
#: the statuses of a debounced job that later enqueues may still fold into: it has not started
NOT_STARTED = frozenset({Status.SCHEDULED, Status.WAITING})


@dataclass(frozen=True)
class EnqueueKey:
    """How one enqueue is matched with earlier ones of the same task and key.

    ``kind`` is ``"unique"`` (the dedupe window: an enqueue whose key was made within
    ``window`` seconds, or while its job is unfinished when ``while_unfinished``, returns that
    job and makes nothing) or ``"debounce"`` (enqueues fold into one job that has not started
    yet; it runs ``window`` seconds after the last of them, or ``max_wait`` after the first).
    """

    kind: str
    key: str
    window: float = 0.0
    while_unfinished: bool = False
    max_wait: float | None = None


@dataclass
class NewJob:
    """A job as validated by ``App.enqueue``, ready for a store to insert."""

    id: str
    task: str
    args_json: str
    queue: str
    priority: int
    max_attempts: int
    retry_json: str
    run_at: float
    tenant: str | None = None
    status: Status = field(default=Status.WAITING)
    limits_json: str | None = None
    fair_key: str = ""
    shared_state: str | None = None
    #: argument name -> the JSON texts of its segments (large list payloads)
    segments: dict[str, list[str]] = field(default_factory=dict)
    #: the dedupe or debounce key the enqueue is matched on, if any
    enqueue_key: EnqueueKey | None = None
    #: the batch an item of a batch task waits in (its task and batch key)
    batch_key: str | None = None
    #: the span context of its enqueue (``floodway.tracing``)
    trace: str | None = None

    def segment_rows(self) -> list[tuple[str, str, int, str]]:
        """The stored rows of its segments: (job id, argument, index, JSON text)."""
        return [
            (self.id, arg, index, data) for arg, pieces in self.segments.items() for index, data in enumerate(pieces)
        ]
