"""The worker's lease keeping: heartbeats and lease renewal, the rescue of the jobs of dead or
silent workers (and the end of frozen ones' transactions), the runs that lost their job, and the
supervised tasks that do it beside the jobs (a mixin of ``Worker``, kept apart so the worker's loop reads in one screen)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from . import liveness
from .context import Context
from .hooks import Periodic
from .jobs import Job, Status
from .store.base import Outcome

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("floodway.worker")

#: how long one wait for a store notification lasts before the listener looks again (seconds)
LISTEN_TURN = 1.0


class LeaseKeeping:
    """Heartbeat, lease renewal, rescue and pause watch, for ``Worker``."""

    # the worker's state this part reads and keeps (set in ``Worker.__init__``)
    app: "App"
    id: str
    lease: float
    _prefetched: deque[Job]
    _leased_at: dict[str, float]
    _last_beat_ok: float | None
    _beats_ok_since: float | None
    _alive_until: float
    _next_renewal: float | None
    _contexts: dict[str, Context]
    _unflushed: set[str]
    _running: dict[str, asyncio.Task[None]]
    _jobs: dict[str, Job]
    _lost: set[tuple[str, int]]
    _cancel_requested: set[str]
    _loop: asyncio.AbstractEventLoop | None
    _wake: asyncio.Event | None
    _stopping: bool
    queues: list[str] | None

    # the worker's own (``Worker`` defines them)
    async def _store(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _drop_prefetched(self, job_id: str, outcome: Outcome) -> bool:
        raise NotImplementedError

    def _leased(self, jobs: list[Job], began: float) -> None:
        """Note when the leases of freshly claimed jobs were taken (at the latest)."""
        for job in jobs:
            self._leased_at[job.id] = began

    def _bound(self, ctx: Context) -> None:
        """Tell a run until when it surely owns its job, and when its lease runs out."""
        leased = self._leased_at.get(ctx.job.id)
        if leased is None:
            return
        ctx.lease_deadline = leased + self.lease
        ctx.owned_until = min(ctx.lease_deadline, self._alive_until)

    def _beat_ok(self, began: float, ended: float) -> None:
        """A heartbeat that started at ``began`` got through. While they get through without a
        gap of ``STALE_AFTER``, no other worker can judge this one silent, so its runs own
        their jobs until ``STALE_AFTER`` after the last one."""
        if self._last_beat_ok is None or ended - self._last_beat_ok > liveness.STALE_AFTER:
            self._beats_ok_since = began  # a new unbroken chain starts
        self._last_beat_ok = began
        self._alive_until = began + liveness.STALE_AFTER
        for ctx in self._contexts.values():
            self._bound(ctx)

    def _lose(self, job_id: str, why: str, *, before: float) -> None:
        """Stop the run of ``job_id`` here: it no longer owns the job. Only a run whose lease
        was taken before ``before`` (a heartbeat's start): a newer claim of the job is its own."""
        for job in self._prefetched:
            if job.id == job_id:
                if self._leased_at.get(job_id, before) < before:
                    self._prefetched.remove(job)
                    self._unflushed.discard(job_id)
                    self._leased_at.pop(job_id, None)
                    log.warning("job %s was claimed ahead and lost its lease (%s); dropped", job_id, why)
                return
        running, task = self._jobs.get(job_id), self._running.get(job_id)
        if running is None or task is None or (running.id, running.attempt) in self._lost:
            return  # ended here already: its outcome's write is guarded by (worker, attempt)
        if self._leased_at.get(job_id, before) >= before:
            return
        self._lost.add((running.id, running.attempt))
        log.warning("job %s lost its lease (%s): this run (attempt %d) stops now", job_id, why, running.attempt)
        ctx = self._contexts.get(job_id)
        if ctx is not None:
            ctx.lose_lease(why)  # a sync run cannot be interrupted: it gets LeaseLost at its next call
        definition = self.app.tasks.get(running.task)
        if definition is None or definition.is_async:
            task.cancel()

    def _rescue_dead_holders(self, proof_since: float | None = None) -> tuple[list[str], int]:
        """Rescue the jobs of workers found dead or silent (``floodway.liveness``); return the
        ids rescued and how many running jobs are held by workers that look frozen (their
        lease is the safety net) or, with ``proof_since``, that sent no heartbeat since then
        (not yet seen alive). Runs on a store thread."""
        store = self.app.store
        here = liveness.host_key()
        judge = (
            self._beats_ok_since is not None
            and self._last_beat_ok is not None
            and self._last_beat_ok - self._beats_ok_since >= liveness.STALE_AFTER
        )
        rescued: list[str] = []
        pending = 0
        expired = False
        for holder in store.lease_holders():
            if holder.lease_until is not None and holder.lease_until < holder.observed_at:
                expired = True
            if holder.worker_id == self.id:
                continue
            verdict = liveness.verdict(holder, here=here, judge_stale=judge)
            if verdict == liveness.DEAD:
                ids = store.rescue_worker(holder.worker_id, dead=True)
                if ids:
                    log.warning(
                        "worker %s is dead (its process is gone): rescued %d job(s)", holder.worker_id, len(ids)
                    )
                rescued += ids
            elif verdict == liveness.STALE:
                ids = store.rescue_worker(
                    holder.worker_id, dead=False, heartbeat_before=holder.observed_at - liveness.STALE_AFTER
                )
                if ids:
                    log.warning(
                        "worker %s sent no heartbeat for %.1fs: rescued %d job(s)",
                        holder.worker_id,
                        holder.observed_at - (holder.heartbeat_at or 0.0),
                        len(ids),
                    )
                rescued += ids
            elif verdict == liveness.FROZEN:
                pending += holder.running
            elif proof_since is not None and holder.heartbeat_at is not None and holder.heartbeat_at < proof_since:
                pending += holder.running
        if expired:
            ids = store.rescue_expired()
            if ids:
                log.warning("rescued %d job(s) whose worker stopped renewing its lease", len(ids))
            rescued += ids
        if rescued and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        return rescued, pending

    async def _supervise(
        self, name: str, step: Callable[[], Awaitable[float | None]], every: float, *, first: float = 0.0
    ) -> None:
        """Run ``step`` after ``first`` seconds, then every ``every`` seconds (or after the delay
        it returns) until cancelled; a failure is logged and the step tried again at its next turn."""
        await asyncio.sleep(first)
        while True:
            try:
                delay = await step()
            except Exception:
                log.exception("%s failed; will try again", name)
                delay = None
            await asyncio.sleep(every if delay is None else delay)

    def _periodic(self, task: Periodic) -> Callable[[], Awaitable[float | None]]:
        async def step() -> float | None:
            return await self._store(task.fn)

        return step

    async def _listen_loop(self) -> None:
        """Wake the claim loop as soon as the store announces ready work (PostgreSQL
        LISTEN/NOTIFY), from a thread of its own so the store threads stay free. The store's
        listener also ends the transactions of frozen workers (their row locks would block
        everybody's claims, and this worker's own start-up), so it runs from the start."""
        assert self._loop is not None and self._wake is not None
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floodway-listen")
        try:
            while not self._stopping:
                try:
                    woke = await self._loop.run_in_executor(
                        thread, self.app.store.wait_for_jobs, LISTEN_TURN, self.queues
                    )
                except Exception:
                    log.debug("waiting for store notifications failed", exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                if woke:
                    self._wake.set()
        finally:
            thread.shutdown(wait=False)

    async def _rescue(self) -> None:
        """Every ``PULSE``: rescue the jobs of workers found dead or silent, and expired leases."""
        await self._store(self._rescue_dead_holders)

    async def _heartbeat(self) -> float:
        """Every ``PULSE``: write this worker's heartbeat; every lease/3 (and at once after a
        gap, as after a stall): renew the leases of our jobs, and learn which were cancelled or
        lost."""
        renew_every = self.lease / 3
        pulse = min(liveness.PULSE, renew_every)
        began = time.monotonic()
        if self._next_renewal is None:  # the start-up took the leases' first turn
            self._next_renewal = began - pulse + renew_every
        gap = self._last_beat_ok is None or began - self._last_beat_ok > min(liveness.STALE_AFTER, renew_every)
        if began >= self._next_renewal or gap:
            await self._renew(began)
            self._next_renewal = began + renew_every
        else:
            await self._store(self.app.store.heartbeat, self.id, [], self.lease)
            self._beat_ok(began, time.monotonic())
        return pulse

    async def _renew(self, began: float) -> None:
        ids = sorted(self._unflushed)
        renewal = await self._store(self.app.store.heartbeat, self.id, ids, self.lease)
        lost: set[str] = getattr(renewal, "lost", set())
        for job_id in ids:
            if job_id not in lost and self._leased_at.get(job_id, began) < began:
                self._leased_at[job_id] = began
        self._beat_ok(began, time.monotonic())
        for job_id in sorted(lost):
            self._lose(job_id, "its lease ran out or another worker took the job over", before=began)
        self._stop_cancelled(renewal)

    def _stop_cancelled(self, cancelled: Iterable[str]) -> None:
        """The cancel watch: the renewal also answers which of our jobs a user cancelled (no
        query of its own, so a cancel is seen at the next renewal, as leases are). A job
        claimed ahead ends cancelled without running; a running one is stopped."""
        for job_id in cancelled:
            job = next((j for j in self._prefetched if j.id == job_id), None)
            if job is not None:
                self._drop_prefetched(
                    job_id, Outcome(job_id, job.attempt, Status.CANCELLED, reason="cancelled by user before it started")
                )
                continue
            task = self._running.get(job_id)
            if task is not None and job_id not in self._cancel_requested:
                self._cancel_requested.add(job_id)
                task.cancel()

    async def _watch_pauses(self) -> None:
        """Every lease/3: pass on the pauses of our jobs (or their queues) to their runs, which
        stop at their next checkpoint; a job claimed ahead starts with the pause it has by then."""
        if not (self._contexts or self._prefetched):
            return
        waiting_here = {j.id for j in self._prefetched}
        paused = await self._store(self.app.store.paused_among, list(self._contexts) + list(waiting_here))
        self._prefetched = deque(dataclasses.replace(j, paused=True) if j.id in paused else j for j in self._prefetched)
        for job_id in paused:
            ctx = self._contexts.get(job_id)
            if ctx is not None and not ctx.pause_requested:
                log.info("job %s was paused: it stops at its next checkpoint", job_id)
                ctx.pause_requested = True
