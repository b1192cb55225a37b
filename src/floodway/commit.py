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

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .store.base import EnqueueResult, NewJob

__all__ = ["GroupCommit"]

Write = Callable[[list[NewJob], dict[str, int | None]], list[EnqueueResult]]


@dataclass(eq=False)
class _Pending:
    job: NewJob
    queues: dict[str, int | None]
    done: threading.Event = field(default_factory=threading.Event)
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
    when many callers enqueue at once. ``transactions`` and ``jobs`` count what it did."""

    def __init__(self, write: Write):
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False
        self.transactions = 0
        self.jobs = 0

    def submit(self, job: NewJob, queues: dict[str, int | None]) -> EnqueueResult:
        item = _Pending(job, queues)
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        if not lead:
            item.done.wait()
            if not item.lead:
                return item.outcome()  # a leader committed it
        # leading: commit all that is pending (this caller's job among them), then hand over
        try:
            with self._lock:
                batch, self._queue = self._queue, []
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._busy = False
        return item.outcome()

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
            for item in batch:
                item.done.set()
