"""The store interface: the only layer of floodway that speaks SQL.

A store persists jobs, their timelines, queues and workers, and performs each change in one
short transaction. Callers (``App``, ``Handle``, ``Worker``, the CLI) speak only this interface,
so a backend can be swapped by URL without changing them. Status changes are validated against
``floodway.jobs.TRANSITIONS`` by the backend before they are written.

The interface is synchronous: the worker runs it on a small thread pool, which keeps sync and
async callers alike simple and lets each backend use its own driver in the way it works best.
"""

from __future__ import annotations

import abc
import time
from typing import Any, Iterable

from ..jobs import Event, Job, NewJob, Status
from ..limits import LimitSpec
from ..liveness import LeaseHolder
from ..quota import Observation
from .records import (
    CONTAINS,
    HOLD_REASON,
    WINDOW_REASON,
    ClaimedJobs,
    EnqueueResult,
    JobFilter,
    LaneInfo,
    LimitInfo,
    LimitKeyInfo,
    Outcome,
    QueueInfo,
    Renewal,
    ScheduleInfo,
    StateSnapshot,
    StepRecord,
    TokenInfo,
    WorkerInfo,
    contains_pattern,
    event_row,
    held_until,
    job_from_row,
    key_info,
    key_pace,
    key_rate,
    served_stamps,
    settled_tat,
    started,
    stores_run_events,
    timeline_from_rows,
)

__all__ = [
    "CONTAINS",
    "contains_pattern",
    "stores_run_events",
    "timeline_from_rows",
    "served_stamps",
    "event_row",
    "started",
    "job_from_row",
    "JobFilter",
    "Outcome",
    "ClaimedJobs",
    "Renewal",
    "LaneInfo",
    "LimitKeyInfo",
    "settled_tat",
    "held_until",
    "HOLD_REASON",
    "WINDOW_REASON",
    "key_rate",
    "key_pace",
    "key_info",
    "LimitInfo",
    "QueueInfo",
    "StepRecord",
    "ScheduleInfo",
    "TokenInfo",
    "StateSnapshot",
    "WorkerInfo",
    "EnqueueResult",
    "QueuePort",
    "LimitsPort",
    "StatePort",
    "AdminPort",
    "Store",
]


class QueuePort(abc.ABC):
    """Jobs in and out: enqueue, claim, finish, heartbeat and the rescue of lost leases."""

    #: True when ``wait_for_jobs`` really waits for a notification (PostgreSQL LISTEN/NOTIFY)
    notifies: bool = False

    def wait_for_jobs(self, timeout: float, queues: Iterable[str] | None = None) -> bool:
        """Block up to ``timeout`` seconds until the store announces ready work (in ``queues``,
        or any): True when it did, False on timeout. Without notifications (``notifies`` is
        False) this just sleeps; workers poll instead."""
        time.sleep(max(timeout, 0.0))
        return False

    # -- enqueue ------------------------------------------------------------------------
    @abc.abstractmethod
    def enqueue(
        self, jobs: list[NewJob], queues: dict[str, int | None] | None = None, *, owner: str | None = None
    ) -> list[EnqueueResult]:
        """Insert ``jobs`` in one transaction (all or nothing).

        A job whose id exists already is not touched (``created=False``). ``queues`` maps the
        queue names used to their declared caps (``None`` = unlimited); queues not yet known
        to the store are created with them. With ``owner`` (a tenant), an id that exists already
        as the job of anybody else raises ``JobIdTaken`` and nothing is written: the check is
        made inside the transaction, after the insert, so a job made meanwhile cannot slip by.
        """

    def enqueue_new(self, jobs: Iterable[NewJob], queues: dict[str, int | None] | None = None) -> list[EnqueueResult]:
        """``enqueue`` for jobs whose ids the caller has just generated, so none exists yet.

        ``jobs`` may be a generator that makes each job as it is asked for, and raises on a
        bad one: then nothing is written and its exception propagates. A store may start
        writing before the last job is made, and skip looking for existing ids (PostgreSQL
        streams the jobs with COPY while they are being made); it must still report an id that
        clashed after all, as ``enqueue`` would. This default makes them all, then enqueues.
        """
        return self.enqueue(list(jobs), queues)

    @abc.abstractmethod
    def enqueue_keyed(self, jobs: list[NewJob], queues: dict[str, int | None] | None = None) -> list[EnqueueResult]:
        """``enqueue`` for jobs some of which carry an ``enqueue_key`` (a dedupe window or a
        debounce): each keyed job is made, or answered with the job its key stands for now
        (``created=False``; a debounced one takes the new arguments). Holds across processes:
        two enqueuers of one key take turns on the key's row."""

    # -- the worker's side --------------------------------------------------------------
    @abc.abstractmethod
    def claim_batch(self, worker_id: str, batch_key: str, *, limit: int, lease: float) -> list[Job]:
        """Claim up to ``limit`` ready items of one batch (their ``batch_key``) for the worker
        running it: no rate is spent (the batch's first item was admitted for the call), each
        item takes a concurrency slot of the limits it holds, within their caps; an item of a
        paused limit key is left. Two workers never take the same item."""

    @abc.abstractmethod
    def claim(
        self,
        worker_id: str,
        *,
        queues: list[str] | None,
        limit: int,
        lease: float,
        ahead: int = 0,
        horizon: float = 0.0,
    ) -> ClaimedJobs:
        """Move up to ``limit`` ready jobs to ``running`` under a lease owned by ``worker_id``.

        ``scheduled`` and ``retrying`` jobs whose run_at has come are promoted to ``waiting``
        first. Queue caps and limits (pauses, concurrency, GCRA rates) hold across every
        worker on the store; a job they hold back stays ``waiting`` and spends nothing. Order:
        round-robin over fairness groups (tenant or limit keys), then priority (high first),
        then run_at, then enqueue order.

        ``ahead`` allows up to that many more jobs after the first ``limit``: the worker keeps
        them to start as its slots free (its prefetch), so a backlog of short jobs is claimed
        in fewer, fuller transactions; ``limit=0`` claims only such jobs (a busy worker's
        prefetch). They may wait a moment in the worker before they run, so a job that holds
        limits is taken ahead only while they have headroom (``rules.Admission.admit``): an
        admitted rate-limited job must run close to its admission, or the calls bunch up at
        the destination. A backend may take fewer or none when ``limit`` > 0 (SQLite takes
        none: it has no round trip to save; PostgreSQL does).

        ``horizon``: a job held back only by rates whose tokens come free within this many
        seconds is claimed now with those tokens booked (``rules.Admission``); the claim's
        ``start_at`` holds the moment each such job may start, and the caller must not start
        it earlier. With 0 (the default) every job is admitted for now or not at all.
        """

    @abc.abstractmethod
    def next_due(self, queues: list[str] | None) -> float | None:
        """0 if a job is ready now, else the earliest run_at of a pending job, else None."""

    @abc.abstractmethod
    def finish(self, worker_id: str, outcomes: list[Outcome]) -> list[str]:
        """Write the outcomes of runs in one transaction; return the job ids written."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, job_ids: list[str], lease: float) -> Renewal:
        """Extend the leases of ``job_ids`` that are still live (a lease that ran out is not
        renewed: another worker may have rescued the job meanwhile); return those whose
        cancellation was requested, and in ``.lost`` those not renewed."""

    @abc.abstractmethod
    def rescue_expired(self) -> list[str]:
        """Release running jobs whose lease expired (their worker died); return their ids."""

    @abc.abstractmethod
    def lease_holders(self) -> list["LeaseHolder"]:
        """Every worker id holding running jobs: how many, their earliest lease, and what the
        ``workers`` table says of it (nothing for an unknown id)."""

    @abc.abstractmethod
    def rescue_worker(self, worker_id: str, *, dead: bool, heartbeat_before: float | None = None) -> list[str]:
        """Release the running jobs of a worker found dead (its process is gone: ``dead``) or
        silent (its heartbeat older than ``heartbeat_before``, checked in the same
        transaction: a heartbeat that arrived meanwhile cancels the rescue). A dead worker's
        jobs spend no attempt while they have lost fewer than ``FREE_LOST_RUNS`` runs so; other
        rescues count as a lease expiry does (the last attempt fails: ``WorkerLost``). A dead
        worker is marked stopped. Returns the ids released."""


class LimitsPort(abc.ABC):
    """Limits shared by every worker: declared and learned rates, pauses, concurrency slots."""

    # -- limits ---------------------------------------------------------------------------
    @abc.abstractmethod
    def declare_limit(self, spec: LimitSpec) -> None:
        """Store a limit as the code declares it. A limit changed at run time keeps its
        change until the code declares something different."""

    @abc.abstractmethod
    def update_limit(self, spec: LimitSpec) -> None:
        """Change a limit at run time (every worker sees it at its next claim)."""

    @abc.abstractmethod
    def list_limits(self, *, tenant_keys: Iterable[str] | None = None) -> list[LimitInfo]:
        """Each limit with the state of each of its keys."""

    @abc.abstractmethod
    def acquire(self, name: str, key: str, cost: int = 1, horizon: float = 0.0) -> tuple[bool, float]:
        """Take ``cost`` tokens from a limit key: ``(True, at)``, taken for now or booked for
        ``at`` up to ``horizon`` seconds ahead (the caller sends no earlier), or
        ``(False, retry_at)``. A paused key books nothing."""

    @abc.abstractmethod
    def settle(self, name: str, key: str, delta: float) -> None:
        """Settle a call whose real cost is known only after it: credit (``delta < 0``) or
        debit (``delta > 0``) that many tokens to the key's GCRA state, for every worker (see
        ``floodway.limits.gcra_settle``). A key with no rate, or never used, is left alone."""

    @abc.abstractmethod
    def paused_until(self, name: str, key: str) -> float:
        """When the pause of a limit key ends (0 when it was never paused); a read only."""

    @abc.abstractmethod
    def resume_limit(self, name: str, key: str | None = None) -> int:
        """End the pauses of a limit now (one key, or every key); returns how many ended."""

    @abc.abstractmethod
    def observe_limit(self, name: str, key: str, obs: Observation) -> tuple[float | None, str | None]:
        """Apply what a destination said about a limit key (``floodway.quota.observe``) in one
        transaction; returns the key's effective rate afterwards and what changed."""

    @abc.abstractmethod
    def reset_learned(self, name: str, key: str | None = None) -> int:
        """Forget what was learned about a limit (every key, or one): the declared rate holds
        again. Returns how many keys had learned something."""

    @abc.abstractmethod
    def pause_limit(self, name: str, key: str, until: float, reason: str, *, sent: float | None = None) -> float:
        """Pause one key of a limit for every worker until ``until`` (never shortening a
        longer pause); after it, jobs are admitted at the limit's rate, not all at once.
        ``sent``: ``until`` is a reset a destination stated, rounded up to a whole second, for
        the window of a request sent then: the pause ends at the window's learned end instead
        (``floodway.quota.spent_until``). Returns the pause's end."""

    @abc.abstractmethod
    def acquire_slot(self, job_id: str, name: str, key: str, holder: str) -> bool:
        """Take one concurrency slot of limit ``name`` for a running step, if one is free."""

    @abc.abstractmethod
    def release_slot(self, job_id: str, name: str, key: str, holder: str) -> None: ...


class StatePort(abc.ABC):
    """A job's durable state: cursors, the once-ledger, segments and flow steps."""

    # -- resumable work ---------------------------------------------------------------------
    @abc.abstractmethod
    def load_state(self, key: str) -> StateSnapshot: ...

    @abc.abstractmethod
    def load_cursors(self, keys: list[str]) -> dict[str, Any]:
        """The cursors saved under ``keys``, in one read (a key without one is left out)."""

    @abc.abstractmethod
    def load_ledger(self, key: str) -> dict[str, str | None]:
        """Entries ``ctx.once`` recorded under ``key`` since its last checkpoint -> result JSON."""

    @abc.abstractmethod
    def checkpoint(self, job_id: str, worker_id: str, attempt: int, key: str, cursor_json: str) -> int:
        """Save the cursor and clear the ledger in one transaction, if this run still owns the
        job (else ``LeaseLost``). Returns the state's checkpoint count."""

    @abc.abstractmethod
    def record_once(
        self, job_id: str, worker_id: str, attempt: int, key: str, entry: str, result_json: str | None
    ) -> None:
        """Record that ``entry`` was done under ``key`` (``LeaseLost`` if the run lost its job)."""

    @abc.abstractmethod
    def load_segment(self, job_id: str, arg: str, index: int) -> str:
        """The JSON text of one segment of a large list argument."""

    # -- flows ------------------------------------------------------------------------------
    @abc.abstractmethod
    def load_steps(self, job_id: str) -> dict[str, StepRecord]:
        """The finished steps of a job, by step id."""

    @abc.abstractmethod
    def record_step(self, worker_id: str, attempt: int, record: StepRecord) -> None:
        """Store a finished step (``LeaseLost`` if this run no longer owns the job)."""

    @abc.abstractmethod
    def step_records(
        self, *, kind: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[StepRecord]:
        """Recent finished steps, newest first (for stats and dashboards)."""


class AdminPort(abc.ABC):
    """What people, schedules and dashboards read and do: jobs, queues, workers, schedules, tokens, cancel, retry, purge, stats."""

    # -- schema -------------------------------------------------------------------------
    @abc.abstractmethod
    def bulk_action(self, action: str, flt: JobFilter, *, dry_run: bool = False) -> int:
        """Retry, cancel, pause, resume or purge every job ``flt`` matches, in chunks of short
        transactions; returns how many it acted on (a dry run: would act on)."""

    @abc.abstractmethod
    def history(self, since: float, *, tenant: str | None = None) -> dict[str, dict[int, int]]:
        """Jobs created and finished in each whole second since ``since`` (of one tenant, or
        all): ``{"created": {second: count}, "finished": {...}}``."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending numbered migrations; return the versions applied."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The highest migration applied to the database (0 for an empty one)."""

    # -- reading ------------------------------------------------------------------------
    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        status: Iterable[Status | str] | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        text: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs newest first, filtered by what is given (``text``: held by the job's arguments or
        its error, in any case)."""

    @abc.abstractmethod
    def count_jobs(self, *, queue: str | None = None) -> dict[str, int]:
        """Number of jobs per status."""

    @abc.abstractmethod
    def events(self, job_id: str) -> list[Event]:
        """The job's timeline, oldest first: its enqueue, then every status change."""

    # -- queues and workers ---------------------------------------------------------------
    @abc.abstractmethod
    def set_queue(self, name: str, max_concurrency: int | None) -> None:
        """Create or update a queue's concurrency cap (``None`` = unlimited)."""

    @abc.abstractmethod
    def list_queues(self, *, tenant: str | None = None) -> list[QueueInfo]:
        """Every queue with its job counts per status; with ``tenant``, the counts are that
        tenant's jobs only (aggregated by the store, read through an index)."""

    @abc.abstractmethod
    def register_worker(self, info: WorkerInfo) -> None: ...

    @abc.abstractmethod
    def worker_stopped(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    def list_workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]: ...

    @abc.abstractmethod
    def average_duration(self, tasks: list[str], *, sample: int = 200) -> float | None:
        """Mean run time in seconds of the latest completed jobs of ``tasks`` (None if none)."""

    @abc.abstractmethod
    def set_paused(self, *, job_id: str | None = None, queue: str | None = None, paused: bool) -> int:
        """Pause (or resume) one job or a whole queue: paused work is not claimed, and a
        running job stops at its next checkpoint. Returns how many jobs/queues changed."""

    @abc.abstractmethod
    def paused_among(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` (running here) that were paused, or whose queue was."""

    @abc.abstractmethod
    def activity(self, since: float, *, tenant: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Counts for stats: ``{"queues": {q: {"created", "finished"}}, "limits": {name:
        {"waiting", "created", "finished"}}}`` — created/finished since ``since``; with
        ``tenant``, of that tenant's jobs only."""

    @abc.abstractmethod
    def drain_counts(self, since: float, width: float, *, tenant: str | None = None) -> dict[str, Any]:
        """What a drain forecast reads (``floodway.forecast``): per queue and per (limit, key),
        the backlog by status, and jobs created and finished per bucket of ``width`` seconds
        from ``since``; with ``tenant``, of that tenant's jobs only."""

    # -- schedules ------------------------------------------------------------------------
    @abc.abstractmethod
    def save_schedule(self, info: ScheduleInfo) -> None:
        """Create or update a schedule (its last tick is kept)."""

    @abc.abstractmethod
    def list_schedules(self) -> list[ScheduleInfo]: ...

    @abc.abstractmethod
    def advance_schedule(self, name: str, last_tick: float | None, new_tick: float) -> bool:
        """Move a schedule's last tick from ``last_tick`` to ``new_tick`` if nobody did first."""

    # -- tokens -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_token(self, info: TokenInfo, secret_hash: str) -> None: ...

    @abc.abstractmethod
    def token_for(self, secret_hash: str) -> TokenInfo | None:
        """The live (not revoked) token with this hash; marks it used."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenInfo]: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: str) -> bool: ...

    # -- user actions -------------------------------------------------------------------
    @abc.abstractmethod
    def cancel(self, job_id: str) -> Status:
        """Cancel a job. A running one is flagged and stopped by its worker at its next
        heartbeat; the status returned is the one the job has after the call."""

    @abc.abstractmethod
    def retry_now(self, job_id: str) -> Status:
        """Run a failed, cancelled or retrying job again now, with a fresh set of attempts."""

    @abc.abstractmethod
    def purge(self, *, older_than: float, statuses: Iterable[Status | str]) -> int:
        """Delete finished jobs (and their timelines) that finished before ``older_than``."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Store(QueuePort, LimitsPort, StatePort, AdminPort):
    """A durable home for jobs, in four role ports (a feature that needs one role asks for that
    port only). Implementations: ``SQLiteStore`` (embedded default) and ``PostgresStore`` (many
    workers on many machines), both built on ``store.sql.SQLStore``."""

    url: str
