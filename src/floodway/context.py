"""The ``Context`` a task receives when its first parameter is annotated ``Context`` or named
``ctx``: what the running job is, and the tools to pace it against shared limits."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RateLimited
from .jobs import Job
from .limits import resolve_key

if TYPE_CHECKING:
    from .app import App


class Context:
    """The running job as seen from inside its task."""

    def __init__(self, app: "App", job: Job, worker_id: str):
        self.app = app
        self.job = job
        self.worker_id = worker_id
        self.logger = logging.getLogger(f"floodway.task.{job.task}")
        #: seconds this run spent waiting on limits (added to the job's throttling overhead)
        self.throttled_seconds = 0.0
        # admission at claim took one token of each rate limit the job holds: the job's first
        # call against that limit spends it instead of taking another
        self._prepaid: dict[tuple[str, str], int] = {}
        for name, key in job.limits:
            spec = app.limits.get(name)
            if spec is None or spec.rate is not None:
                self._prepaid[(name, key)] = 1

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self.job.attempt

    @property
    def args(self) -> dict[str, Any]:
        return self.job.args

    @property
    def tenant(self) -> str | None:
        return self.job.tenant

    def __repr__(self) -> str:
        return f"<Context job={self.job.id} task={self.job.task} attempt={self.attempt}>"

    # -- limits -----------------------------------------------------------------------------
    def limit_key(self, name: str) -> str:
        """The key of limit ``name`` for this job (its own, or resolved from its args)."""
        for held, key in self.job.limits:
            if held == name:
                return key
        spec = self.app.limits.get(name)
        if spec is None:
            raise ConfigError(f"unknown limit {name!r}; declare it with app.limit()")
        return resolve_key(spec.key, self.job.args, self.job.tenant)

    def _take_prepaid(self, name: str, key: str) -> bool:
        if self._prepaid.get((name, key), 0) > 0:
            self._prepaid[(name, key)] -= 1
            return True
        return False

    async def acquire(self, name: str, *, key: str | None = None, cost: int = 1) -> None:
        """Take a token from limit ``name`` before a call, waiting for it if need be.

        A wait of up to the app's ``wait_in_place`` is slept here, keeping the job's slot;
        a longer one raises ``RateLimited`` so the job goes back to ``scheduled`` until then
        without spending an attempt (and without holding a worker slot).
        """
        key = self.limit_key(name) if key is None else key
        if cost == 1 and self._take_prepaid(name, key):
            return
        while True:
            ok, retry_at = await asyncio.to_thread(self.app.store.acquire, name, key, cost)
            if ok:
                return
            wait = retry_at - time.time()
            if wait > self.app.wait_in_place:
                raise RateLimited(retry_after=wait, key=key, reason=f"limit {name!r} has no budget now")
            await asyncio.sleep(max(wait, 0.0))
            self.throttled_seconds += max(wait, 0.0)

    def acquire_sync(self, name: str, *, key: str | None = None, cost: int = 1) -> None:
        """``acquire`` for sync tasks (which run in a thread)."""
        key = self.limit_key(name) if key is None else key
        if cost == 1 and self._take_prepaid(name, key):
            return
        while True:
            ok, retry_at = self.app.store.acquire(name, key, cost)
            if ok:
                return
            wait = retry_at - time.time()
            if wait > self.app.wait_in_place:
                raise RateLimited(retry_after=wait, key=key, reason=f"limit {name!r} has no budget now")
            time.sleep(max(wait, 0.0))
            self.throttled_seconds += max(wait, 0.0)

    def http(self, base_url: str = "", *, limit: str | None = None, **options: Any) -> Any:
        """An ``httpx.AsyncClient`` that takes a token from ``limit`` before each request and
        turns 429s into shared pauses (see ``floodway.http``). Use ``async with``."""
        from .http import client_for

        return client_for(self, base_url=base_url, limit=limit, sync=False, **options)

    def http_sync(self, base_url: str = "", *, limit: str | None = None, **options: Any) -> Any:
        """The sync twin of ``http`` (an ``httpx.Client``) for sync tasks."""
        from .http import client_for

        return client_for(self, base_url=base_url, limit=limit, sync=True, **options)
