"""The worker's batch runs: many queued items of a batch task in one call (a mixin of
``Worker``, kept apart so the worker's loop reads in one screen).

A batch forms around the first item a claim starts (its *lead*, admitted by the task's limits
for the whole call). Items of the same batch key that the same claim (or the prefetch) starts
join it instead of starting runs of their own; the lead then takes the key's other ready items
from the store (``Store.claim_batch``) and, while the batch is short of ``max_size``, waits up to
``max_wait`` after the oldest item was enqueued for more. The function is called once with the
items' arguments; each item ends with an outcome of its own: its result, or its failure
(retried or final per its own attempts), or, for a 429, rescheduled with the others without
spending an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from . import jsontext
from .context import Context
from .errors import EnqueueError, RateLimited
from .jobs import Job, Status
from .store.base import Outcome
from .worker_outcomes import failure, hard_timeout, interrupted

if TYPE_CHECKING:
    from .app import App, Task

log = logging.getLogger("floodway.worker")

#: how often a batch short of ``max_size`` looks for more items while it waits for them
FILL_POLL = 0.05


def batch_key(task: "Task", job: Job) -> str | None:
    """The batch an item waits in (as its enqueue computed it), or None for a job of a task that
    does not batch."""
    if task.batch is None:
        return None
    try:
        return task.batch.key_for(task.name, job.args, job.tenant)
    except EnqueueError:
        return None


def item_outcomes(task: "Task", items: list[Job], ctx: Context, result: Any) -> list[Outcome]:
    """Each item's outcome from what the batch function returned: one result per item (a list
    as long as the batch) or None for all; the items ``ctx.fail`` marked fail alone."""
    if result is None:
        results: list[Any] = [None] * len(items)
    elif isinstance(result, (list, tuple)) and len(result) == len(items):
        results = list(result)
    else:
        shape = f"a list of {len(result)}" if isinstance(result, (list, tuple)) else type(result).__name__
        error = TypeError(
            f"batch task {task.name} returned {shape} for {len(items)} items; return one result per item, or None"
        )
        return [failure(item, task, error) for item in items]
    outcomes = []
    for index, (item, value) in enumerate(zip(items, results)):
        if index in ctx.failed_items:
            outcomes.append(failure(item, task, ctx.failed_items[index]))
            continue
        try:
            text = jsontext.dumps(value)
        except (TypeError, ValueError) as exc:
            outcomes.append(failure(item, task, TypeError(f"item {index}'s result is not JSON-serialisable: {exc}")))
            continue
        outcomes.append(Outcome(item.id, item.attempt, Status.COMPLETE, result_json=text))
    return outcomes


class BatchRunning:
    """Forming and running batches, for ``Worker``."""

    # the worker's state this part reads and keeps (set in ``Worker.__init__``)
    app: "App"
    id: str
    lease: float
    _stopping: bool
    _unflushed: set[str]
    _outcomes: list[Outcome]
    _cancel_requested: set[str]
    _prefetched: deque[Job]
    #: batch key -> the items of the batch forming here (its lead first)
    _forming: dict[str, list[Job]]

    # the worker's own (``Worker`` and ``LeaseKeeping`` define them)
    async def _store(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _leased(self, jobs: list[Job], began: float) -> None:
        raise NotImplementedError

    async def _run_async_fn(self, task: "Task", job: Job, ctx: Context) -> Any:
        raise NotImplementedError

    async def _run_sync_fn(self, task: "Task", job: Job, ctx: Context) -> Any:
        raise NotImplementedError

    async def _rate_limited(self, job: Job, task: "Task", ctx: Context, exc: RateLimited) -> Outcome:
        raise NotImplementedError

    def _join_batch(self, job: Job) -> bool:
        """A started item joins the batch of its key forming here, if there is one with room:
        it then runs in that batch's call, not on its own (True). Otherwise it starts a batch
        of its own, which the items started after it join (False: it runs, as the lead)."""
        task = self.app.tasks.get(job.task)
        if task is None or task.batch is None:
            return False
        key = batch_key(task, job)
        if key is None:
            return False
        forming = self._forming.get(key)
        if forming is None or len(forming) >= task.batch.max_size:
            self._forming[key] = [job]
            return False
        forming.append(job)
        self._unflushed.add(job.id)
        return True

    def _take_prefetched(self, task: "Task", key: str, room: int) -> list[Job]:
        """Items of the batch key claimed ahead here (waiting for a slot): they join now."""
        taken = [job for job in self._prefetched if job.task == task.name and batch_key(task, job) == key][:room]
        for job in taken:
            self._prefetched.remove(job)
        return taken

    async def _execute_batch(self, task: "Task", lead: Job, ctx: Context) -> Outcome:
        """Form the batch around ``lead``, call the function once, and end every item; the
        lead's outcome is returned (the run's), the others' go to the outcome buffer."""
        assert task.batch is not None
        key = batch_key(task, lead)
        forming = self._forming.get(key) if key is not None else None
        items = forming if forming and forming[0] is lead else [lead]
        try:
            if key is not None:
                self._forming[key] = items
                try:
                    await self._fill(task, key, items)
                finally:
                    if self._forming.get(key) is items:
                        del self._forming[key]
            ctx.batch = items
            if task.batch.charge == "item" and len(items) > 1:
                await self._charge_items(task, ctx, len(items) - 1)
            outcomes = await self._call_batch(task, lead, items, ctx)
        except asyncio.CancelledError:
            # stopping or cancelled: the other items go back unspent, as the lead does
            for item in items[1:]:
                self._outcomes.append(interrupted(item, cancelled=False, worker_id=self.id))
            raise
        except Exception as exc:  # the store failed while the batch formed: every item goes back
            log.warning("batch of %s could not be formed (%s); its %d item(s) go back", task.name, exc, len(items))
            outcomes = [
                Outcome(item.id, item.attempt, Status.WAITING, spend_attempt=False, reason=f"batch not formed: {exc}")
                for item in items
            ]
        self._outcomes.extend(outcomes[1:])
        return outcomes[0]

    async def _fill(self, task: "Task", key: str, items: list[Job]) -> None:
        """Take the key's ready items until the batch is full, or ``max_wait`` after its oldest
        item was enqueued has passed (or the worker stops)."""
        assert task.batch is not None
        items.extend(self._take_prefetched(task, key, task.batch.max_size - len(items)))
        deadline = min(item.created_at for item in items) + task.batch.max_wait
        while len(items) < task.batch.max_size:
            began = time.monotonic()
            more = await self._store(
                self.app.store.claim_batch, self.id, key, limit=task.batch.max_size - len(items), lease=self.lease
            )
            self._leased(more, began)
            self._unflushed.update(job.id for job in more)
            # items started here joined while the store was asked: what does not fit waits for
            # a slot with the jobs claimed ahead, and starts (or joins) the next batch
            room = task.batch.max_size - len(items)
            items.extend(more[:room])
            self._prefetched.extendleft(reversed(more[room:]))
            items.extend(self._take_prefetched(task, key, task.batch.max_size - len(items)))
            wait = deadline - time.time()
            if len(items) >= task.batch.max_size or wait <= 0 or self._stopping:
                return
            await asyncio.sleep(min(wait, FILL_POLL))

    async def _charge_items(self, task: "Task", ctx: Context, extra: int) -> None:
        """A batch charged per item: the lead's admission paid for one; take the rest of each
        rate limit's tokens (in steps no larger than its burst) before the call."""
        for name in task.limits:
            spec = self.app.limits.get(name)
            if spec is None or spec.rate is None:
                continue
            left = extra
            while left > 0:
                step = min(left, spec.burst)
                await ctx.acquire(name, cost=step)
                left -= step

    async def _call_batch(self, task: "Task", lead: Job, items: list[Job], ctx: Context) -> list[Outcome]:
        """Call the function with the items and say how each ended."""
        try:
            if task.is_async:
                result = await self._run_async_fn(task, lead, ctx)
            else:
                result = await self._run_sync_fn(task, lead, ctx)
        except asyncio.CancelledError:
            raise
        except RateLimited as exc:
            first = await self._rate_limited(lead, task, ctx, exc)
            return [first] + [
                Outcome(
                    item.id,
                    item.attempt,
                    first.status,
                    run_at=first.run_at,
                    spend_attempt=False,
                    throttled_seconds=first.throttled_seconds,
                    reason=first.reason,
                )
                for item in items[1:]
            ]
        except asyncio.TimeoutError:
            error = TimeoutError(f"batch task {task.name} timed out after {hard_timeout(task)}s")
            return [failure(item, task, error) for item in items]
        except Exception as exc:
            return [failure(item, task, exc) for item in items]
        log.debug("batch of %d item(s) of %s ran in one call", len(items), task.name)
        return item_outcomes(task, items, ctx, result)
