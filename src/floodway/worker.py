"""The worker: claims jobs, runs them on asyncio, renews their leases, writes their outcomes.

Read top to bottom, one worker process does this:

1. registers itself and writes the app's declared queue caps to the store;
2. loops: when it has free slots and the store has ready jobs, claims a batch of them
   (one transaction) and starts each as an asyncio task — sync functions run on a thread pool;
3. each finished run becomes an ``Outcome`` in a buffer; a single flusher writes the whole
   buffer in one transaction whenever it is not already writing (group commit), so completions
   are batched without a fixed delay;
4. beside the claim loop run supervised tasks (each its own loop; a failure is logged and
   the task goes on, ``worker_leases``): the **heartbeat** renews the leases of its jobs and
   stops the ones whose lease was lost (another worker took them over), and the **cancel
   watch** stops the ones a user cancelled, from the same renewal's answer (no query of its
   own); the **rescue** takes back the jobs of workers that died: at once when their process
   is gone or their heartbeat stopped (``floodway.liveness``), else when their lease expires;
   the **pause watch** passes pauses on to running jobs; the **listener** wakes the loop on a
   store notification; and the app's own periodic tasks;
5. the worker imports none of the features built beside it: the app hands it ``WorkerHooks``
   (on start: store the schedules; periodic: the scheduler, queue-depth alerts; at the end of a
   run: the flow summary log). How many jobs to claim and how long to back off are pure
   functions (``worker_plan``), and so is the outcome a run ends with (``worker_outcomes``);
6. on SIGTERM/SIGINT it stops claiming, gives running jobs ``grace`` seconds to finish, and
   releases the rest to ``waiting`` without spending an attempt. A second signal skips the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from . import http, jsontext, liveness, tracing
from .context import Context
from .errors import ConfigError, LeaseLost, RateLimited, StoreError
from .hooks import WorkerHooks, loop_factory
from .jobs import Job, Status
from .limits import MAX_HORIZON
from .resumable import ContinueLater
from .retry import Retry
from .store.base import Outcome, WorkerInfo
from .units import parse_duration, retry_after_seconds
from .worker_batches import BatchRunning
from .worker_leases import LeaseKeeping
from .worker_outcomes import call_arguments, continue_later, failure, hard_timeout, interrupted, unknown_task
from .worker_pacing import BookedStarts, wait_booked
from .worker_plan import Backoff, ClaimPlan, describe_left, plan_claim, still_to_do, work_left

if TYPE_CHECKING:
    from .app import App, Task

log = logging.getLogger("floodway.worker")

#: how long a starting worker waits for a store that is briefly unavailable (a restart)
STARTUP_PATIENCE = 10.0

#: with a store that announces new work (PostgreSQL), the longest an idle worker waits
#: before looking anyway — a safety net for a notification lost while reconnecting
_SAFETY_POLL = 2.0
#: how long claims ahead pause after one found nothing it could take ahead
_AHEAD_RECHECK = 1.0
BOOK_AHEAD = 0.05  # the default ``book_ahead``: how far ahead a claim books a binding rate


class Worker(LeaseKeeping, BatchRunning):
    """Runs the jobs of one app until stopped.

    :param queues: the queues to take jobs from (all when ``None``).
    :param concurrency: how many jobs run at once in this process.
    :param burst: exit once nothing is ready now and nothing is running (what is left, and when
        it is due, is logged on exit).
    :param until_empty: exit once no job of its queues is waiting, retrying or running and none
        is scheduled within ``horizon`` (a cron or CI run that must finish the work).
    :param horizon: with ``until_empty``, how far ahead a scheduled job still counts as work.
    :param lease: how long a claimed job stays ours without a heartbeat; a worker that dies
        loses its jobs to another worker after this long.
    :param grace: how long a stopping worker lets running jobs finish before releasing them.
    :param poll_interval: the longest an idle worker sleeps before looking for work again.
    :param batch_size: the most jobs claimed ahead in one transaction, and the outcomes that
        may wait to be written beyond the slots and the prefetch (default: twice the
        concurrency).
    :param prefetch: how many jobs to claim ahead while every slot is busy (default: one
        batch, so twice the concurrency; 0 turns it off), and, while draining a backlog, in the
        same claim as the free slots (PostgreSQL). A slot that comes free starts one of them at
        once, without waiting for a claim's round trip. A job that holds limits is claimed ahead
        only while they have headroom (half the concurrency cap and half the burst free, no
        pause, no lanes: an admitted rate-limited job must run close to its admission);
        prefetched jobs are leased like running ones, renewed by the heartbeat, and given back
        when the worker stops (no attempt spent; a rate token taken stays spent). Long jobs: lower it, so that jobs do not wait behind them on one worker while
        another is idle.
    :param book_ahead: how far ahead a claim books the tokens of a rate limit that binds: a job
        whose token comes free within this long is claimed now and started at that moment, so a
        binding limit is claimed in batches, not a claim per token, and a late claim loses no
        tokens. 0 turns it off; at most 1 s (``MAX_HORIZON``).
    :param loop: the event loop ``run()`` uses: ``"auto"`` (uvloop when it is installed, as
        uvicorn does, else asyncio's), ``"uvloop"`` or ``"asyncio"``. uvloop's loop costs less
        CPU per job, and its timers keep closer to time: they run on a millisecond clock (a
        fraction of a millisecond early or late), where asyncio's fire up to a millisecond
        late (BENCHMARKS.md). ``run_async()`` runs on whatever loop awaits it.
    """

    def __init__(
        self,
        app: "App",
        *,
        queues: list[str] | None = None,
        concurrency: int = 20,
        burst: bool = False,
        until_empty: bool = False,
        horizon: str | float = "60s",
        lease: str | float = "30s",
        grace: str | float = "30s",
        poll_interval: str | float = "100ms",
        batch_size: int | None = None,
        prefetch: int | None = None,
        book_ahead: str | float = BOOK_AHEAD,
        worker_id: str | None = None,
        loop: str = "auto",
        hooks: WorkerHooks | None = None,
    ):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if queues is not None:
            queues = list(queues)
            if not queues or not all(isinstance(q, str) and q for q in queues):
                raise ConfigError(f"queues must be a non-empty list of queue names, got {queues!r}")
        self.app = app
        self.hooks = hooks or WorkerHooks()
        self.queues = queues
        self.concurrency = concurrency
        self.burst = burst
        self.until_empty = until_empty
        self.horizon = parse_duration(horizon, name="horizon")
        self.lease = parse_duration(lease, name="lease", allow_zero=False)
        self.grace = parse_duration(grace, name="grace")
        self.poll_interval = parse_duration(poll_interval, name="poll_interval", allow_zero=False)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        # twice the slots by default: a transaction's fixed cost (a round trip, the statement's
        # start-up, the commit) is most of what a short job costs the database, and claims and
        # outcome writes of up to 2x the slots halve how many there are (BENCHMARKS.md)
        self.batch_size = 2 * concurrency if batch_size is None else batch_size
        if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0):
            raise ConfigError(f"prefetch must be an int >= 0, got {prefetch!r}")
        self.prefetch = self.batch_size if prefetch is None else prefetch
        self.book_ahead = parse_duration(book_ahead, name="book_ahead")
        if self.book_ahead > MAX_HORIZON:
            raise ConfigError(f"book_ahead must be at most {MAX_HORIZON:g}s, got {book_ahead!r}")
        self.loop_factory = loop_factory(loop)
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}
        self._prefetched: deque[Job] = deque()  # claimed ahead, not started yet
        self._booked_starts = BookedStarts()
        self._outcomes: list[Outcome] = []
        self._unflushed: set[str] = set()
        self._cancel_requested: set[str] = set()
        self._contexts: dict[str, Context] = {}
        self._forming: dict[str, list[Job]] = {}  # batches gathering their items (worker_batches)
        # lease bookkeeping (monotonic instants): when each held job's lease was last taken or
        # renewed; until when our heartbeats prove no worker can have judged us dead; the
        # runs (job id, attempt) found to have lost their job, whose outcomes are dropped
        self._leased_at: dict[str, float] = {}
        #: the cursors of claimed runs, read for a whole claim at once: (job id, attempt) -> cursor
        self._cursors: dict[tuple[str, int], Any] = {}
        self._alive_until = 0.0
        self._last_beat_ok: float | None = None
        self._beats_ok_since: float | None = None
        self._lost: set[tuple[str, int]] = set()
        self._releasing = False
        self._stopping = False
        # the claim loop's memory: the last claim took jobs (more are likely ready: claim
        # straight away); (burst) when this worker first found nothing to do; the last claim
        # found jobs held back by a rate until this moment (a wake-up before it, such as a
        # local job ending, would find the same, so the next claim waits for it)
        self._found_work = False
        self._idle_since: float | None = None
        self._held_until = 0.0
        # (monotonic) until when claims ahead are not tried: the last one found nothing to
        # take ahead while the claims for slots found work (the ready jobs hold limits)
        self._ahead_after = 0.0
        self._next_renewal: float | None = None  # (monotonic) when the heartbeat renews leases next
        self._wake: asyncio.Event | None = None
        self._flush_wanted: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store_threads: ThreadPoolExecutor | None = None
        self._task_threads: ThreadPoolExecutor | None = None
        self.processed = 0

    # -- public controls ------------------------------------------------------------------
    def run(self) -> None:
        """Run until stopped (or idle, with ``burst``), on the event loop chosen by ``loop``."""
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            runner.run(self.run_async())

    def stop(self, *, immediately: bool = False) -> None:
        """Ask the worker to stop; thread-safe. ``immediately`` skips the grace period."""
        if self._loop is None:
            self._stopping = True
            return
        self._loop.call_soon_threadsafe(self._request_stop, immediately)

    def _request_stop(self, immediately: bool = False) -> None:
        self._stopping = True
        if immediately:
            self.grace = 0.0
            self._releasing = True
            for task in list(self._running.values()):
                task.cancel()
        if self._wake:
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------
    async def run_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._store_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="floodway-store")
        self._task_threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="floodway-task")
        self._install_signal_handlers()
        # the listener starts first: besides wake-ups it ends the transactions of frozen
        # workers, whose row locks would otherwise block this worker's own start-up (declaring
        # limits, rescuing) with nobody left to end them
        listening = (
            asyncio.create_task(self._listen_loop(), name="floodway-listen") if self.app.store.notifies else None
        )
        try:
            # ctx.http's TLS context and transport are readied beside the store's setup (see http.prepare)
            await asyncio.gather(self._start_up(), asyncio.to_thread(http.prepare, self.app.settings.http_transport))
            flusher = asyncio.create_task(self._flush_loop(), name="floodway-flusher")
            # the supervised tasks: each a loop of its own that logs a failure and goes on
            renew_every = self.lease / 3
            pulse = min(liveness.PULSE, renew_every)
            beside = [
                self._supervise("heartbeat", self._heartbeat, pulse, first=pulse),
                self._supervise("rescue", self._rescue, pulse, first=pulse),
                self._supervise("pause watch", self._watch_pauses, renew_every, first=renew_every),
                *(self._supervise(p.name, self._periodic(p), p.every, first=p.first) for p in self.hooks.periodic),
            ]
            helpers = [asyncio.create_task(coro, name="floodway-helper") for coro in beside]
            try:
                await self._claim_loop()
                await self._drain()
            finally:
                for helper in helpers:
                    helper.cancel()
                self._flush_wanted.set()
                await self._flush_all()
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*helpers, flusher, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await self._store(self.app.store.worker_stopped, self.id)
                log.info("worker %s stopped after %d jobs", self.id, self.processed)
        finally:
            if listening is not None:  # (it outlives the helpers: start-up may fail before them)
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listening
            with contextlib.suppress(Exception):
                await http.close_pools()  # the connections ctx.http kept alive for this worker
            self._remove_signal_handlers()
            self._task_threads.shutdown(wait=False, cancel_futures=True)
            self._store_threads.shutdown(wait=True)
            self._loop = None

    async def _start_up(self) -> None:
        """Declare queues, limits and schedules, register, rescue. A database that is briefly
        unavailable (restarting) is retried with backoff for up to ``STARTUP_PATIENCE`` seconds;
        one that stays unusable (read-only, missing) ends the worker with its error."""
        backoff = Backoff(first=0.2, cap=2.0)
        deadline = time.monotonic() + STARTUP_PATIENCE
        self.app.check_limits()
        while True:
            try:
                await self._store(self.app.sync_queues)
                await self._store(self.app.sync_limits)
                for hook in self.hooks.on_start:
                    await self._store(hook, self.concurrency)
                now = time.time()
                began = time.monotonic()
                await self._store(
                    self.app.store.register_worker,
                    WorkerInfo(
                        self.id,
                        socket.gethostname(),
                        os.getpid(),
                        self.queues,
                        self.concurrency,
                        now,
                        now,
                        host_key=liveness.host_key(),
                        pid_start=liveness.start_time(os.getpid()),
                    ),
                )
                self._beat_ok(began, began)
                log.info("worker %s started: queues=%s concurrency=%d", self.id, self.queues or "all", self.concurrency)
                # (dead workers first: their jobs spend no attempt, even when their lease has run out)
                await self._store(self._rescue_dead_holders)
                return
            except StoreError as exc:
                pause = backoff.failed()
                if self._stopping or time.monotonic() + pause > deadline:
                    raise
                log.warning("worker %s cannot reach the store yet (%s); retrying in %.1fs", self.id, exc, pause)
                await asyncio.sleep(pause)

    async def _claim_loop(self) -> None:
        """Claim and start jobs until stopped (or, with ``burst``, until nothing is left)."""
        assert self._wake is not None
        backoff = Backoff()
        while not self._stopping:
            # cleared before looking, so a wake-up (a local job ending, a store notification)
            # that arrives while we look is not lost
            self._wake.clear()
            self._start_prefetched()
            plan = plan_claim(
                concurrency=self.concurrency,
                prefetch=self.prefetch,
                batch_size=self.batch_size,
                running=len(self._running),
                prefetched=len(self._prefetched),
                unflushed=len(self._unflushed),
                found_work=self._found_work,
                may_claim_ahead=time.monotonic() >= self._ahead_after,
            )
            timeout: float | None = self.poll_interval
            if plan.ahead or plan.free > 0:
                try:
                    timeout = await (self._claim_ahead(plan) if plan.ahead else self._claim_for_slots(plan))
                    backoff.succeeded()
                except Exception as exc:  # the database is unreachable (restart, failover): back off
                    timeout = backoff.failed()
                    log.warning("could not look for jobs (%s: %s); retrying in %.1fs", type(exc).__name__, exc, timeout)
            if timeout is None:
                return  # (burst) nothing left
            if timeout == 0:
                continue  # jobs were found: look again at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_ahead(self, plan: ClaimPlan) -> float:
        """Every slot is busy and the store had work: claim the next jobs now (jobs that hold
        limits only while those have headroom). Returns how long to wait before the next look
        (0: at once)."""
        began = time.monotonic()
        jobs = await self._store(self._claim, self.id, queues=self.queues, limit=0, lease=self.lease, ahead=plan.room)
        self._leased(jobs, began)
        self._unflushed.update(job.id for job in jobs)
        self._prefetched.extend(jobs)
        if jobs:
            return 0.0
        # nothing to take ahead: the next free slot claims as usual, without a look at what is
        # due first (the last claim for slots found work), and claims ahead pause a while
        self._ahead_after = time.monotonic() + _AHEAD_RECHECK
        return self.poll_interval

    async def _claim_for_slots(self, plan: ClaimPlan) -> float | None:
        """Claim jobs for the free slots (and, draining a backlog, ahead in the same claim).
        Returns how long to wait before the next look: 0 at once, None when a burst is done."""
        # whether anything of ours is still in flight, read *before* the store is asked: an
        # outcome written during that read (a job released back to waiting) would otherwise
        # make a stale "nothing due" look final
        settled = not self._running and not self._unflushed
        now = time.time()
        if now < self._held_until:
            # limits hold the ready jobs back until a moment the last claim named: asking the
            # store what is due before then only costs it a statement (every outcome written
            # while a binding rate holds wakes this loop)
            return self._held_until - now
        # when the last claim took jobs the claim itself is the cheapest look; otherwise ask
        # first whether anything is due, and when
        assumed = self._found_work
        due = 0.0 if assumed else await self._store(self.app.store.next_due, self.queues)
        self._found_work = False
        now = time.time()
        if due is not None and due <= now:
            self._held_until = 0.0
            began = time.monotonic()
            jobs = await self._store(
                self._claim,
                self.id,
                queues=self.queues,
                limit=plan.want,
                lease=self.lease,
                ahead=plan.extra,
                horizon=self.book_ahead,
            )
            self._leased(jobs, began)
            for n, job in enumerate(jobs):
                if n < plan.want:
                    self._start(job, jobs.start_at.get(job.id))
                else:  # claimed ahead (its limits, if any, have headroom): starts as a slot frees
                    self._unflushed.add(job.id)
                    self._prefetched.append(job)
            if jobs:
                self._found_work = True
                self._idle_since = None
                if jobs.start_at and jobs.wake_at is not None and len(jobs) < plan.want:
                    # a binding rate, booked ahead as far as it goes: a claim now would find none
                    timeout = min(self.poll_interval, max(jobs.wake_at - time.time(), 0.001))
                    self._held_until = time.time() + timeout
                    return timeout
                return 0.0
            if assumed and jobs.wake_at is None:
                return 0.0  # nothing was taken: look at what is due (and when) at once
            # ready jobs exist but limits or queue caps hold them back: sleep until the
            # earliest admission (or a local job finishing, or the poll)
            if jobs.wake_at is None:
                return self.poll_interval
            timeout = min(self.poll_interval, max(jobs.wake_at - time.time(), 0.001))
            self._held_until = time.time() + timeout
            self._found_work = True  # they are there: at the admission, claim without a look first
            return timeout
        if (self.burst or self.until_empty) and settled:
            # a job held by a dead worker is rescued and done first, and one held by a worker
            # that stopped renewing its lease is waited for until it expires (and a holder that
            # looks alive must show it: a heartbeat since we looked)
            self._idle_since = self._idle_since or time.time()
            rescued, pending = await self._store(self._rescue_dead_holders, self._idle_since)
            if rescued:
                self._idle_since = None
                return 0.0
            if pending:
                return self.poll_interval
            left = work_left(await self._store(self.app.store.list_queues), self.queues)
            if self.until_empty and still_to_do(left, due, now, self.horizon):
                return self.poll_interval if due is None else min(self.poll_interval, max(due - now, 0.001))
            message = describe_left(left, due, now)
            if message:
                log.warning(
                    "worker %s exits (nothing ready now) leaving %s (--until-empty waits for them)", self.id, message
                )
            return None
        if due is not None:
            return min(self.poll_interval, max(due - now, 0.001))
        if self.app.store.notifies:
            # nothing pending at all: new work announces itself (LISTEN/NOTIFY); the poll is
            # only a safety net
            return max(self.poll_interval, _SAFETY_POLL)
        return self.poll_interval

    def _start_prefetched(self) -> None:
        """Start jobs claimed ahead while slots are free (never once stopping: they go back)."""
        while self._prefetched and not self._stopping and len(self._running) < self.concurrency:
            self._start(self._prefetched.popleft())

    def _drop_prefetched(self, job_id: str, outcome: Outcome) -> bool:
        """End a job claimed ahead without running it; False if it is not waiting here."""
        for job in self._prefetched:
            if job.id == job_id:
                self._prefetched.remove(job)
                self._outcomes.append(outcome)
                assert self._flush_wanted is not None
                self._flush_wanted.set()
                return True
        return False

    async def _drain(self) -> None:
        """Give back the jobs claimed ahead, let running jobs finish within the grace period,
        then release the rest."""
        for job in list(self._prefetched):
            self._drop_prefetched(
                job.id,
                Outcome(
                    job.id,
                    job.attempt,
                    Status.WAITING,
                    spend_attempt=False,
                    reason=f"released unstarted by stopping worker {self.id}",
                ),
            )
        if self._running:
            log.info("worker %s stopping: %d running job(s), grace %.1fs", self.id, len(self._running), self.grace)
            await asyncio.wait(list(self._running.values()), timeout=self.grace)
        if self._running:
            self._releasing = True
            for task in list(self._running.values()):
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    # -- running one job ------------------------------------------------------------------
    def _start(self, job: Job, start_at: float | None = None) -> None:
        if self._join_batch(job):
            return  # an item of a batch forming here: it runs in that batch's call
        if job.id in self._running:
            # a run of this job is still going here: its lease was lost (we stalled), the job was
            # rescued, and this worker claimed it again. The old run stops now.
            self._lose(job.id, "the job was rescued and claimed again", before=float("inf"))
        self._jobs[job.id] = job
        self._unflushed.add(job.id)
        self._running[job.id] = asyncio.create_task(self._run(job, start_at), name=f"floodway-job-{job.id}")

    async def _run(self, job: Job, start_at: float | None = None) -> None:
        with tracing.process(job) as span:
            try:
                if start_at is not None:  # its rate tokens were booked for then
                    await wait_booked(self._booked_starts, job.limits, start_at)
                outcome = await self._execute(job)
            except asyncio.CancelledError:
                outcome = interrupted(job, cancelled=job.id in self._cancel_requested, worker_id=self.id)
            except BaseException as exc:  # a bug in floodway itself must not lose the job
                log.exception("internal error running job %s", job.id)
                outcome = failure(job, None, exc)
            tracing.finish(span, outcome.status.value, outcome.error, outcome.throttled_seconds)
        current = self._running.get(job.id) is asyncio.current_task()
        if (job.id, job.attempt) in self._lost:
            # another worker owns the job now: this run's outcome is not ours to write
            self._lost.discard((job.id, job.attempt))
            log.warning(
                "job %s: the run that lost its lease (attempt %d) stopped; its outcome is dropped", job.id, job.attempt
            )
            if current:
                self._unflushed.discard(job.id)
                self._leased_at.pop(job.id, None)
        else:
            self._outcomes.append(outcome)
        if current:  # (a newer run of the same job may have replaced this one here)
            self._running.pop(job.id, None)
            self._jobs.pop(job.id, None)
            self._cancel_requested.discard(job.id)
        self.processed += 1
        self._start_prefetched()
        assert self._flush_wanted is not None and self._wake is not None
        self._flush_wanted.set()
        self._wake.set()

    async def _execute(self, job: Job) -> Outcome:
        task = self.app.tasks.get(job.task)
        if task is None:
            return unknown_task(job, self.id)
        try:
            ctx = await self._context_for(task, job)
        except StoreError as exc:
            # the database is unavailable (restarting): give the job back untouched
            log.warning("could not load job %s's state (%s); releasing it", job.id, exc)
            return Outcome(
                job.id,
                job.attempt,
                Status.WAITING,
                spend_attempt=False,
                reason=f"store unavailable before the run: {exc}",
            )
        self._contexts[job.id] = ctx
        if task.batch is not None:
            try:
                return await self._execute_batch(task, job, ctx)
            finally:
                self._contexts.pop(job.id, None)
        try:
            if task.is_async:
                result = await self._run_async_fn(task, job, ctx)
            else:
                result = await self._run_sync_fn(task, job, ctx)
        except asyncio.TimeoutError:
            if task.budget is not None and ctx.checkpoints:
                # the run ignored its budget but made progress: resume from the checkpoint
                log.warning(
                    "job %s (%s) overran its budget of %.1fs; it resumes from its last checkpoint",
                    job.id,
                    task.name,
                    task.budget,
                )
                return continue_later(job, ctx, ContinueLater(), reason="budget overrun; resumes from its checkpoint")
            limit = hard_timeout(task)
            return failure(job, task, TimeoutError(f"task {task.name} timed out after {limit}s"))
        except asyncio.CancelledError:
            raise
        except RateLimited as exc:
            return await self._rate_limited(job, task, ctx, exc)
        except LeaseLost as exc:
            log.warning("%s; its outcome will not be written", exc)
            return failure(job, task, exc)
        except Exception as exc:
            return failure(job, task, exc)
        finally:
            if self._contexts.get(job.id) is ctx:
                del self._contexts[job.id]
        if isinstance(result, ContinueLater):
            return continue_later(job, ctx, result, reason="continue_later")
        try:
            result_json = jsontext.dumps(result)
        except (TypeError, ValueError) as exc:
            return failure(
                job, task, TypeError(f"task {task.name} returned a value that is not JSON-serialisable: {exc}")
            )
        for hook in self.hooks.on_run_end:
            hook(job.id, ctx.steps, "completed")
        return Outcome(
            job.id,
            job.attempt,
            Status.COMPLETE,
            result_json=result_json,
            throttled_seconds=ctx.throttled_seconds,
            purge_state=not task.retain_state,
        )

    def _claim(self, worker_id: str, **options: Any) -> Any:
        """Claim jobs (on a store thread), and read the cursors of those that own their state
        in one read for the claim rather than one per run: only a run of the job itself
        writes that state, under the lease just taken, so it cannot change before the run."""
        jobs = self.app.store.claim(worker_id, **options)
        own = {}
        for job in jobs:
            task = self.app.tasks.get(job.task)
            if task is not None and task.wants_context and job.shared_state is None:
                own[job.state_key] = (job.id, job.attempt)
        if own:
            try:
                cursors = self.app.store.load_cursors(list(own))
            except StoreError as exc:  # the jobs are ours now: each run reads its own cursor
                log.warning("could not read the cursors of claimed jobs (%s); each run reads its own", exc)
                return jobs
            for key, run in own.items():
                self._cursors[run] = cursors.get(key)
        return jobs

    async def _context_for(self, task: "Task", job: Job) -> Context:
        cursor = None
        if task.wants_context:  # tasks without a Context cannot read a cursor: skip the read
            run = (job.id, job.attempt)
            if run in self._cursors:
                cursor = self._cursors.pop(run)
            else:  # a shared state (other jobs write it), or a run not claimed here
                cursor = (await self._store(self.app.store.load_state, job.state_key)).cursor
        ctx = Context(self.app, job, self.id, cursor=cursor, budget=task.budget, margin=task.margin)
        ctx.loop = self._loop
        self._bound(ctx)
        if job.paused:
            ctx.pause_requested = True
        return ctx

    async def _run_async_fn(self, task: "Task", job: Job, ctx: Context) -> Any:
        args, kwargs = call_arguments(task, job, ctx)
        call = task.fn(*args, **kwargs)
        limit = hard_timeout(task)
        if limit is None:
            return await call
        try:
            return await asyncio.wait_for(call, limit)
        except asyncio.TimeoutError:
            if self._releasing or job.id in self._cancel_requested:
                raise asyncio.CancelledError() from None
            raise

    async def _run_sync_fn(self, task: "Task", job: Job, ctx: Context) -> Any:
        """Run a sync function on the thread pool.

        A thread cannot be interrupted, so a sync job is never released or written off while
        its function still runs: on cancellation (shutdown, user cancel) or timeout the worker
        keeps its lease and waits for the function to return, and then records what really
        happened. Otherwise another worker could run the same job at the same time.
        """
        assert self._loop is not None and self._task_threads is not None
        args, kwargs = call_arguments(task, job, ctx)
        # the thread sees the run's context variables (its trace span among them), as
        # ``asyncio.to_thread`` would give it
        call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
        future = self._loop.run_in_executor(self._task_threads, call)
        try:
            return await asyncio.wait_for(asyncio.shield(future), hard_timeout(task))
        except (asyncio.CancelledError, asyncio.TimeoutError) as interruption:
            log.warning(
                "job %s (%s) runs in a thread that cannot be interrupted; waiting for it to return", job.id, task.name
            )
            while not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    continue  # a second signal: still cannot stop the thread
                except Exception:
                    break
            if isinstance(interruption, asyncio.TimeoutError):
                raise
            return future.result()  # its real outcome: complete, or the exception it raised

    async def _rate_limited(self, job: Job, task: "Task", ctx: Context, exc: RateLimited) -> Outcome:
        """A 429 (or a limit without budget): back to ``scheduled`` until the reset, no
        attempt spent; the limit's key is paused for every worker unless it was already."""
        now = time.time()
        wait = retry_after_seconds(exc.retry_after, now)
        if wait is None:
            policy = Retry.from_dict(job.retry) if job.retry else task.retry
            wait = policy.delay(max(job.attempt, 1))
            log.warning(
                "job %s (%s) was rate limited with no usable reset time (%r); waiting %.2fs per its retry backoff",
                job.id,
                job.task,
                exc.retry_after,
                wait,
            )
        wait = min(wait, http.MAX_RESET_SECONDS)
        until = now + wait
        if exc.limit is not None and not exc.paused:
            try:
                key = exc.key if exc.key is not None else ctx.limit_key(exc.limit)
                until = await self._store(self.app.store.pause_limit, exc.limit, key, until, exc.reason)
                self.app.pauses.forget(exc.limit, key)
            except Exception as error:  # an unknown limit must not lose the job
                log.warning("could not pause limit %r: %s", exc.limit, error)
        # spread the jobs of one reset a little, so they do not all come back at once
        run_at = until + random.uniform(0, min(1.0, max(wait, 0.0) * 0.1))
        return Outcome(
            job.id,
            job.attempt,
            Status.SCHEDULED,
            run_at=run_at,
            spend_attempt=False,
            throttled_seconds=ctx.throttled_seconds + (run_at - now),
            reason=f"{exc.reason}"
            + (f" (limit {exc.limit})" if exc.limit else "")
            + f"; resumes in {run_at - now:.2f}s",
        )

    # -- writing outcomes -----------------------------------------------------------------
    async def _flush_loop(self) -> None:
        assert self._flush_wanted is not None
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            await self._flush_all()

    async def _flush_all(self) -> None:
        # one writer at a time: the final flush at shutdown must wait for one in flight
        assert self._flush_lock is not None
        async with self._flush_lock:
            await self._write_outcomes()

    async def _write_outcomes(self) -> None:
        # retries with backoff: a busy or briefly unavailable database must not lose outcomes
        backoff = Backoff(first=0.05, cap=5.0)
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                written = await self._store(self.app.store.finish, self.id, batch)
            except Exception:
                pause = backoff.failed()
                log.exception("could not write %d outcome(s); retrying in %.2fs", len(batch), pause)
                self._outcomes = batch + self._outcomes
                await asyncio.sleep(pause)
                continue
            backoff.succeeded()
            for outcome in batch:
                self._unflushed.discard(outcome.job_id)
                if outcome.job_id not in self._running:
                    self._leased_at.pop(outcome.job_id, None)
            assert self._wake is not None
            self._wake.set()  # the claim loop may be waiting for this write (backpressure, burst exit)
            lost = {o.job_id for o in batch} - set(written)
            if lost:
                log.warning("lease lost before the outcome was written for %d job(s): %s", len(lost), sorted(lost)[:5])

    # -- plumbing ---------------------------------------------------------------------------
    async def _store(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None and self._store_threads is not None
        return await self._loop.run_in_executor(self._store_threads, lambda: fn(*args, **kwargs))

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._loop is None:
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: releasing running jobs now", sig.name)
            self._request_stop(immediately=True)
        else:
            log.info("%s received: finishing running jobs (grace %.1fs)", sig.name, self.grace)
            self._request_stop()
