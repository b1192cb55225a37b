"""Handles: what ``enqueue`` returns, and what ``App.handle(id)`` rebuilds later."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .errors import JobCancelled, JobFailed, JobNotFound
from .jobs import Event, Job, Status

if TYPE_CHECKING:
    from .app import App

_FIRST_POLL = 0.01
_MAX_POLL = 0.5


class Handle:
    """A reference to one job by id: read its status, wait for its result, cancel it.

    ``created`` tells whether the enqueue that returned this handle created the job (False
    when a job with the same id existed already).
    """

    def __init__(self, app: "App", job_id: str, *, created: bool = True):
        self._app = app
        self.id = job_id
        self.created = created

    def __repr__(self) -> str:
        return f"<Handle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- sync -------------------------------------------------------------------------------
    def job(self) -> Job:
        """The job as stored now."""
        job = self._app.store.get_job(self.id)
        if job is None:
            raise JobNotFound(f"no job with id {self.id!r}")
        return job

    def status(self) -> Status:
        return self.job().status

    def events(self) -> list[Event]:
        """The job's timeline: every status transition, oldest first."""
        self.job()  # a clear JobNotFound rather than an empty list
        return self._app.store.events(self.id)

    def cancel(self) -> Status:
        """Cancel the job; a running job is stopped by its worker at the next heartbeat."""
        return self._app.store.cancel(self.id)

    def retry(self) -> Status:
        """Run a failed or cancelled job again, with a fresh set of attempts."""
        return self._app.store.retry_now(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end and return its result.

        Raises ``JobFailed`` (carrying the stored error), ``JobCancelled``, or
        ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            job = self.job()
            if job.status.is_final:
                return self._outcome(job)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {self.id} is still {job.status} after {timeout}s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)

    def _outcome(self, job: Job) -> Any:
        if job.status is Status.COMPLETE:
            return job.result
        if job.status is Status.CANCELLED:
            raise JobCancelled(job.id)
        raise JobFailed(job.id, job.error)

    # -- async twins ------------------------------------------------------------------------
    async def job_async(self) -> Job:
        return await asyncio.to_thread(self.job)

    async def status_async(self) -> Status:
        return (await self.job_async()).status

    async def events_async(self) -> list[Event]:
        return await asyncio.to_thread(self.events)

    async def cancel_async(self) -> Status:
        return await asyncio.to_thread(self.cancel)

    async def retry_async(self) -> Status:
        return await asyncio.to_thread(self.retry)

    async def result_async(self, timeout: float | None = None) -> Any:
        """Like ``result`` but waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = _FIRST_POLL
        while True:
            job = await self.job_async()
            if job.status.is_final:
                return self._outcome(job)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"job {self.id} is still {job.status} after {timeout}s")
                pause = min(pause, left)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)
