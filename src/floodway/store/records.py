"""What a store returns and takes besides jobs (the records of limits, queues, steps, schedules,
tokens, workers, outcomes, bulk filters), and the small pure helpers both backends build them
with: a job from its row, its timeline from its rows, an event row, a limit key's pace."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import window_ends
from ..jobs import Event, Job, Status
from ..limits import LimitSpec, Rate, remaining
from ..quota import Learned, effective_burst, effective_rate
from ..units import iso


def stores_run_events(status: Status, error: Any, reason: str | None) -> bool:
    """Whether the end of a run with this outcome stores the run's two events (its start and
    its end). A plain completion stores none: the job row itself says when the run started,
    on which worker, at which attempt and when it ended (see ``timeline_from_rows``). That is
    every job's last run in the common case; the two event rows took about 7 % of the server's
    CPU per no-op job on PostgreSQL."""
    return status is not Status.COMPLETE or error is not None or reason is not None


def timeline_from_rows(job_id: str, rows: list[tuple] | list[list]) -> list[Event]:
    """A job's events from the rows of ``store.sql.TIMELINE``.

    Three events are not stored, because the job row holds them exactly:

    * the enqueue (it would double the rows a bulk enqueue writes): the row's ``created_at``;
      the status the job was enqueued in is the ``from_status`` of the first stored event, or
      when none is stored the job's status (``waiting`` for a running or complete job);
    * the start of the current run (``waiting`` → ``running``): a claim writes no event, the
      row has ``started_at``, ``attempt`` and ``worker_id``. A run that ends in anything but a
      plain completion stores its start and its end together (``stores_run_events``);
    * a plain completion: ``finished_at``, with the attempt and worker of the run.

    Timelines written before a change in this rule come out as they were: a start or a
    completion already stored is not made up a second time.
    """
    stored = [
        Event(
            job_id=job_id,
            at=r[2],
            from_status=Status(r[3]) if r[3] else None,
            to_status=Status(r[4]),
            attempt=r[5],
            error=json.loads(r[6]) if r[6] else None,
            worker_id=r[7],
            reason=r[8],
        )
        for r in rows
        if r[0] == 1
    ]
    job = rows[0] if rows and rows[0][0] == 0 else None
    if job is None:
        return stored
    status, attempt, worker_id, started_at, finished_at = Status(job[4]), job[5], job[7], job[9], job[10]
    events = stored
    if not stored or stored[0].from_status is not None:
        # with nothing stored, a running or complete job was claimed straight from ``waiting``
        first = (
            (stored[0].from_status or Status.WAITING)
            if stored
            else (Status.WAITING if status in (Status.RUNNING, Status.COMPLETE) else status)
        )
        events = [
            Event(
                job_id=job_id,
                at=job[2],
                from_status=None,
                to_status=first,
                attempt=0,
                error=None,
                worker_id=None,
                reason="enqueued",
            ),
            *stored,
        ]
    last = stored[-1] if stored else None
    if status in (Status.RUNNING, Status.COMPLETE) and started_at is not None:
        if last is not None and last.to_status is Status.COMPLETE:
            return events  # the whole run is stored
        if not (last is not None and last.to_status is Status.RUNNING and last.attempt == attempt):
            events.append(
                Event(
                    job_id=job_id,
                    at=started_at,
                    from_status=Status.WAITING,
                    to_status=Status.RUNNING,
                    attempt=attempt,
                    worker_id=worker_id,
                )
            )
        if status is Status.COMPLETE and finished_at is not None:
            events.append(
                Event(
                    job_id=job_id,
                    at=finished_at,
                    from_status=Status.RUNNING,
                    to_status=Status.COMPLETE,
                    attempt=attempt,
                    worker_id=worker_id,
                )
            )
    return events


def served_stamps(served: list[str], now: float) -> tuple[list[str], list[float]]:
    """``fair_keys.served_at`` for the fairness groups a claim served. ``served`` names a
    group once per job taken, in claim order; each group is stamped by its last job, a
    microsecond apart, so the next claim starts with the group that has waited longest. Equal
    stamps would fall back to key order and let the same group lead every claim."""
    last = {group: i for i, group in enumerate(served)}
    keys = sorted(last, key=last.__getitem__)
    return keys, [now + i * 1e-6 for i in range(len(keys))]


def event_row(
    job_id: str,
    at: float,
    src: Status | None,
    dst: Status,
    attempt: int,
    *,
    error: dict | None = None,
    worker_id: str | None = None,
    reason: str | None = None,
) -> tuple:
    """One ``job_events`` row: (job_id, at, from_status, to_status, attempt, error, worker_id, reason)."""
    return (
        job_id,
        at,
        src.value if src else None,
        dst.value,
        attempt,
        json.dumps(error) if error else None,
        worker_id,
        reason,
    )


def started(job: Job, worker_id: str, lease_until: float, now: float, start_at: float | None = None) -> Job:
    """A job a claim just moved to ``running`` for ``worker_id``, as its row now reads (started
    at ``start_at`` when its rate tokens were booked for then, else now)."""
    return Job(
        **{
            **job.__dict__,
            "status": Status.RUNNING,
            "attempt": job.attempt + 1,
            "worker_id": worker_id,
            "lease_until": lease_until,
            "started_at": now if start_at is None else start_at,
            "updated_at": now,
        }
    )


def job_from_row(row: tuple | list, *, _new: Any = object.__new__, _loads: Any = json.loads) -> Job:
    """A job from a row whose columns come in the backends' shared order (``_JOB_COLUMNS``).

    The fields are written into the instance's ``__dict__`` in one step: ``Job`` is a frozen
    dataclass, whose ``__init__`` sets each of its 26 fields through ``object.__setattr__``,
    and that was a third of the cost of reading a claimed job (every field is set here; a test
    compares the result with ``Job(...)``)."""
    job = _new(Job)
    job.__dict__.update(
        {
            "id": row[0],
            "task": row[1],
            "args": _loads(row[2]),
            "queue": row[3],
            "status": Status(row[4]),
            "priority": row[5],
            "attempt": row[6],
            "max_attempts": row[7],
            "retry": _loads(row[8]) if row[8] else None,
            "run_at": row[9],
            "tenant": row[10],
            "result": _loads(row[11]) if row[11] is not None else None,
            "error": _loads(row[12]) if row[12] else None,
            "worker_id": row[13],
            "lease_until": row[14],
            "cancel_requested": bool(row[15]),
            "created_at": row[16],
            "updated_at": row[17],
            "started_at": row[18],
            "finished_at": row[19],
            "limits": tuple(tuple(pair) for pair in _loads(row[20])) if row[20] else (),
            "fair_key": row[21],
            "throttled_seconds": row[22],
            "shared_state": row[23],
            "paused": bool(row[24]),
            "trace": row[25],
        }
    )
    return job


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk action acts on: every condition given must hold (``error``: text the
    job's error contains, in any case)."""

    statuses: tuple[Status, ...] = ()
    task: str | None = None
    queue: str | None = None
    tenant: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    error: str | None = None

    def is_empty(self) -> bool:
        return not (self.statuses or any(v is not None for v in self.__dict__.values() if v != ()))


@dataclass
class Outcome:
    """What a worker reports when one run of a job ends.

    ``attempt`` guards the write: an outcome for a run whose lease was lost (the job was
    rescued and claimed again) matches no row and is dropped.
    """

    job_id: str
    attempt: int
    status: Status
    result_json: str | None = None
    error: dict[str, Any] | None = None
    run_at: float | None = None
    #: False gives the attempt back: shutdown releases, rate-limit pauses, continue_later.
    spend_attempt: bool = True
    reason: str | None = None
    #: seconds this run spent held back by limits (waits in place, or the wait until run_at)
    throttled_seconds: float = 0.0
    #: on completion, delete the job's own cursor, ledger and segments
    purge_state: bool = True


class ClaimedJobs(list):  # list[Job]
    """The jobs a claim moved to ``running``, and ``wake_at``: the earliest moment a ready job
    that limits held back could be admitted (``None`` when none was held back by a rate or a
    pause), so an idle worker sleeps exactly until then; ``start_at``: the jobs whose rate
    tokens were booked ahead (a claim's ``horizon``), each with the moment it may start."""

    def __init__(
        self, jobs: Iterable[Job] = (), wake_at: float | None = None, start_at: dict[str, float] | None = None
    ):
        super().__init__(jobs)
        self.wake_at = wake_at
        self.start_at = start_at or {}


class Renewal(set):  # set[str]
    """What ``heartbeat`` returns: the ids whose cancellation was requested, and ``lost``: the
    ids given that this worker does not hold under a live lease any more (rescued, finished,
    or their lease ran out before this renewal), whose runs must stop."""

    def __init__(self, cancelled: Iterable[str] = (), lost: Iterable[str] = ()):
        super().__init__(cancelled)
        self.lost = set(lost)


@dataclass
class LaneInfo:
    """One reserved lane of a limit key (see ``rules.lane_view``); ``lane`` is ``""`` for the
    jobs that name no lane."""

    lane: str
    share: float
    active: bool
    #: the rate (per second) the lane is paced at now: its part of the key's effective rate
    effective_rate: float | None
    concurrency: int | None
    running: int
    admitted: int


@dataclass
class LimitKeyInfo:
    key: str
    remaining: int | None
    paused_until: float | None
    pause_reason: str | None
    running: int
    admitted: int
    rate_limited: int  # pauses of the key (a 429 that asked for a long wait, a budget of 0, a task's RateLimited)
    #: the rate (per second) the key is paced at now: the declared one, or what was learned
    #: (without the faster pace that spends a window resumed late: see ``quota.effective_rate``)
    effective_rate: float | None = None
    #: where the effective rate comes from: "declared", "429s", "headers", "usage", "window" or "slow start"
    source: str = "declared"
    throttled: int = 0  # refusals the destination answered (429s), all time
    throttled_last_minute: int = 0
    exhausted: int = 0  # refusals that meant an exhausted quota (a pause until the reset)
    cuts: int = 0  # rounds of refusals that cut the rate
    #: where a stated budget's last fixed window really ended, as learned: after the first
    #: instant, by the second (Unix times), and the windows' length (0: not known yet); None
    #: when nothing was learned (see ``floodway.window_ends``)
    window_end: tuple[float, float, float] | None = None
    #: the key's reserved lanes, when its limit declares some
    lanes: list[LaneInfo] = field(default_factory=list)


def settled_tat(spec: LimitSpec, tat: float, learned: Learned, admitted: int, changed: str | None, now: float) -> float:
    """A key's GCRA state after an observation: a cut's settle time (see ``floodway.quota._settle``),
    a hold after refusals in a row or a quota that fell (``floodway.quota.HUSH``, ``_deep``) or a
    fixed window's reset (``floodway.quota._window``) holds every admission back, and then no
    burst: one admission, then the new pace. A slow start's exit shown to be a bucket's ("leak")
    voids the exit's hold: the bucket has room again at once."""
    if changed == "leak":
        return min(tat, now)
    if changed not in ("cut", "window", "pause", "fell") or learned.settle <= now:
        return tat
    rate, burst = key_pace(spec, learned, admitted, now)
    return max(tat, learned.settle + (rate.interval * (burst - 1) if rate is not None else 0.0))


#: why a key is paused while a run of refusals is told apart (see ``floodway.quota.HUSH``)
HOLD_REASON = "429s in a row: holding every worker"
#: why a key is paused after a fixed window ran out (see ``floodway.quota._window``)
WINDOW_REASON = "fixed window spent: holding every worker until its reset"


def held_until(learned: Learned, changed: str | None, now: float) -> tuple[float, str] | None:
    """Until when an observation pauses its key for every worker, and why (the tokens booked
    before then are void): a hold after refusals in a row, a quota that fell
    (``floodway.quota``), or a fixed window that ran out: the tokens booked into what is left
    of it would each be refused (a window's end with a wait of up to two seconds reads as
    congestion, not as an exhausted quota whose pause voids them). None for any other change."""
    if learned.settle <= now:
        return None
    if changed in ("pause", "fell"):
        return learned.settle, HOLD_REASON
    if changed == "window":
        return learned.settle, WINDOW_REASON
    return None


def key_rate(spec: LimitSpec, learned: Learned | None, admitted: int, now: float) -> Rate | None:
    """The GCRA rate of one limit key now: the declared rate, or the learned one."""
    return key_pace(spec, learned, admitted, now)[0]


def key_pace(spec: LimitSpec, learned: Learned | None, admitted: int, now: float) -> tuple[Rate | None, int]:
    """The GCRA rate and burst of one limit key now (see ``floodway.quota.effective_burst``)."""
    per_second = effective_rate(spec, learned, admitted, now)
    if per_second is None:
        return None, spec.burst
    return Rate(per_second, 1.0), effective_burst(spec, learned, per_second)


def key_info(
    spec: LimitSpec,
    key: str,
    tat: float,
    paused_until: float,
    reason: str | None,
    running: int,
    admitted: int,
    limited: int,
    learned_raw: str | None,
    now: float,
) -> LimitKeyInfo:
    """A key's row as the CLI, API and dashboard show it (both stores read the same columns)."""
    learned = Learned.loads(learned_raw)
    rate = key_rate(spec, learned, admitted, now)
    if learned is not None and learned.rate is not None:
        source = learned.source or "429s"
    elif spec.rate is None and spec.adaptive:
        source = "slow start"
    else:
        source = "declared"
    return LimitKeyInfo(
        key=key,
        remaining=remaining(tat, now, rate, effective_burst(spec, learned, rate.per_second)) if rate else None,
        paused_until=paused_until if paused_until > now else None,
        pause_reason=reason if paused_until > now else None,
        running=running,
        admitted=admitted,
        rate_limited=limited,
        effective_rate=effective_rate(spec, learned, admitted, now, steady=True),
        source=source,
        throttled=learned.throttled if learned else 0,
        throttled_last_minute=learned.throttled_last_minute(now) if learned else 0,
        exhausted=learned.exhausted if learned else 0,
        cuts=learned.cuts if learned else 0,
        window_end=_window_end(learned),
    )


def _window_end(learned: Learned | None) -> tuple[float, float, float] | None:
    end = window_ends.check(learned.reset_end) if learned is not None else None
    return None if end is None else (end[window_ends.LO], end[window_ends.HI], end[window_ends.LENGTH])


@dataclass
class LimitInfo:
    spec: LimitSpec
    keys: list[LimitKeyInfo] = field(default_factory=list)


@dataclass
class QueueInfo:
    name: str
    max_concurrency: int | None
    counts: dict[str, int] = field(default_factory=dict)
    paused: bool = False


@dataclass
class StepRecord:
    """One finished step of a flow, with its throttling metrics (seconds)."""

    job_id: str
    step_id: str
    kind: str
    critical: bool
    status: str  # a StepStatus value
    result_json: str | None
    error: dict[str, Any] | None
    attempts: int
    retries: int
    duration: float
    total_time: float
    throttle_overhead: float
    throttle: dict[str, Any] | None
    tenant: str | None
    started_at: float
    finished_at: float


@dataclass
class ScheduleInfo:
    name: str
    task: str
    cron: str
    tz: str
    args: dict[str, Any]
    options: dict[str, Any]
    missed: str
    last_tick: float | None


@dataclass
class TokenInfo:
    """An API token as stored: never the secret, only its hash's owner and scope."""

    id: str
    tenant: str | None
    admin: bool
    label: str | None
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None


@dataclass
class StateSnapshot:
    """A state key's cursor (decoded JSON, None before the first checkpoint)."""

    key: str
    cursor: Any = None
    checkpoints: int = 0


@dataclass
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: list[str] | None
    concurrency: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None
    running: int = 0
    #: the process table it runs in and its process start time (``floodway.liveness``), so a
    #: worker on the same host can tell that its process is gone
    host_key: str | None = None
    pid_start: int | None = None

    def to_dict(self, now: float) -> dict[str, Any]:
        """A JSON-ready view (the CLI's ``workers --json`` and the web API's), its heartbeat's
        age taken at ``now``."""
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "running": self.running,
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "heartbeat_age": round(now - self.heartbeat_at, 3),
            "stopped_at": iso(self.stopped_at),
        }


@dataclass
class EnqueueResult:
    id: str
    created: bool


#: the condition "the text holds this" of ``contains_pattern``, for a column (any case)
CONTAINS = "LOWER({column}) LIKE ? ESCAPE '\\'"


def contains_pattern(text: str) -> str:
    """The ``LIKE`` pattern of ``CONTAINS`` that matches text holding ``text`` in any case: its
    ``%`` and ``_`` are plain characters, not wildcards."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
