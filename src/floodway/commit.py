"""Group commit: concurrent single enqueues of one process share a transaction.

A web server enqueues one job per request from many threads (or coroutines, through
``enqueue_async``) at once. Each enqueue is its own transaction, and transactions on one
database serialize on its write lock (SQLite) or cost a round trip and a WAL flush each
(PostgreSQL). Here the first caller becomes the *leader*: it commits every enqueue that is
pending when its transaction starts, its own included, and hands the lead to the first caller
that arrived meanwhile. No caller waits for others to arrive (a caller alone commits at once,
as before); callers that arrive while a commit is under way share the next one. Each call
still returns only once the transaction holding its own job has committed.

A batch that fails is committed again one job at a time, so a job the store refuses fails
alone with its own error and the others are written.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .store.base import EnqueueResult, NewJob

__all__ = ["GroupCommit"]

Write = Callable[[list[NewJob], dict[str, int | None]], list[EnqueueResult]]


@dataclass(eq=False)
class _Pending:
    """One caller's job: a thread waits on ``done``, a coroutine awaits ``future``.

    ``done`` is a lock taken when the item is made and released once, when its caller may go
    on (it leads, or its job's transaction ended): cheaper than an Event's condition, which
    a burst of threads pays once per job."""

    job: NewJob
    queues: dict[str, int | None]
    done: threading.Lock | None = None
    future: asyncio.Future[EnqueueResult] | None = None
    lead: bool = False
    result: EnqueueResult | None = None
    error: BaseException | None = None

    def outcome(self) -> EnqueueResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class GroupCommit:
    """Commits single jobs through ``write`` (a store's ``enqueue``), many per transaction
    when many callers enqueue at once. ``transactions`` and ``jobs`` count what it did.

    Threads lead in turn (``submit``). Coroutines (``submit_async``) never block their event
    loop: when one has to lead, a thread of the loop's executor leads for it, and goes on
    committing while coroutines keep arriving; only a waiting thread takes the lead from it."""

    def __init__(self, write: Write):
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False
        self.transactions = 0
        self.jobs = 0

    def _join(self, item: _Pending) -> bool:
        """Queue ``item``; True when its caller must lead (no commit is under way)."""
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        return lead

    def submit(self, job: NewJob, queues: dict[str, int | None]) -> EnqueueResult:
        done = threading.Lock()
        done.acquire()
        item = _Pending(job, queues, done=done)
        if not self._join(item):
            done.acquire()  # released by a leader: this caller's job committed, or its turn to lead
            if not item.lead:
                return item.outcome()  # a leader committed it
        # leading: commit all that is pending (this caller's job among them), then hand over
        self._lead(keep=False)
        return item.outcome()

    async def submit_async(self, job: NewJob, queues: dict[str, int | None]) -> EnqueueResult:
        loop = asyncio.get_running_loop()
        item = _Pending(job, queues, future=loop.create_future())
        if self._join(item):
            self._lead_from(loop)
        assert item.future is not None
        return await item.future

    def _lead_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Lead for coroutines from a thread of ``loop``'s executor (called in the loop)."""
        try:
            loop.run_in_executor(None, self._lead, True)
        except RuntimeError:  # the executor is shut down (the loop is ending): a thread of its own
            threading.Thread(target=self._lead, args=(True,), daemon=True).start()

    def _lead(self, keep: bool) -> None:
        """Commit what is pending, then hand the lead over (``_hand_over``); ``keep``: leading
        for coroutines, go on while only coroutines' jobs are pending."""
        while True:
            try:
                with self._lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
            except BaseException:
                self._hand_over(keep=False)  # interrupted: somebody else leads the rest
                raise
            if not self._hand_over(keep):
                return

    def _hand_over(self, keep: bool) -> bool:
        """After a commit: nobody pending ends the lead; a waiting thread takes it; a waiting
        coroutine gets a leader from its loop, or this one when ``keep`` (True: go on)."""
        with self._lock:
            head = self._queue[0] if self._queue else None
            if head is None:
                self._busy = False
                return False
            if head.done is not None:
                head.lead = True
                head.done.release()
                return False
        if keep:
            return True
        # a thread returns to its caller; the coroutines get a leader of their own
        assert head.future is not None
        loop = head.future.get_loop()
        try:
            loop.call_soon_threadsafe(self._lead_from, loop)
        except RuntimeError:  # that loop is closed: lead from a thread of its own
            threading.Thread(target=self._lead, args=(True,), daemon=True).start()
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            queues: dict[str, int | None] = {}
            for item in batch:
                queues.update(item.queues)
            try:
                results = self._write([item.job for item in batch], queues)
                self.transactions += 1
                for item, result in zip(batch, results):
                    item.result = result
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    for item in batch:  # alone, so only the job at fault fails
                        try:
                            item.result = self._write([item.job], item.queues)[0]
                            self.transactions += 1
                        except Exception as alone:
                            item.error = alone
            self.jobs += len(batch)
        except BaseException as exc:  # interrupted: nobody may wait for an outcome forever
            for item in batch:
                if item.result is None and item.error is None:
                    item.error = exc
            raise
        finally:
            _settle(batch)


def _settle(batch: list[_Pending]) -> None:
    """Tell each caller of ``batch`` its outcome: threads at once, coroutines through their
    event loop (one callback per loop for the whole batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for item in batch:
        if item.done is not None:
            if not item.lead:  # a leader was woken to lead already (or never waited)
                item.done.release()
        elif item.future is not None:
            by_loop.setdefault(item.future.get_loop(), []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass


def _resolve(items: list[_Pending]) -> None:
    for item in items:
        future = item.future
        if future is None or future.done():  # the caller was cancelled
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.outcome())
