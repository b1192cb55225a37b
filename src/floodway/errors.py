"""The exceptions floodway raises and the ones user code raises to steer it."""

from __future__ import annotations

import traceback
from typing import Any


class FloodwayError(Exception):
    """Base class of every error floodway raises."""


class ConfigError(FloodwayError, ValueError):
    """A value given to floodway (option, duration, URL, setting) is invalid."""


class EnqueueError(FloodwayError, ValueError):
    """A job could not be enqueued because its input is invalid; nothing was written."""


class JobIdTaken(FloodwayError):
    """An enqueue named an id that belongs to another tenant's job; nothing was written."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"job id {job_id!r} is taken; choose another id")


class StoreError(FloodwayError):
    """The store (database) cannot be opened or used."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer floodway than the one running."""


class TransitionError(FloodwayError):
    """A job status change that the transition table does not allow."""


class LeaseLost(FloodwayError):
    """This run no longer owns its job (its lease expired and another worker took it over);
    its checkpoints and ledger writes are refused so two runs never both move the cursor."""


class PagingError(FloodwayError):
    """A page broke the ascending-order contract of ``ctx.pages`` (it went backwards)."""


class JobNotFound(FloodwayError, LookupError):
    """No job has the given id."""


class JobFailed(FloodwayError):
    """Raised by ``Handle.result()`` when the job ended ``failed``; carries the stored error."""

    def __init__(self, job_id: str, error: dict[str, Any] | None):
        self.job_id = job_id
        self.error = error or {}
        self.type = self.error.get("type")
        self.message = self.error.get("message")
        self.traceback = self.error.get("traceback")
        super().__init__(f"job {job_id} failed: {self.type}: {self.message}")


class JobCancelled(FloodwayError):
    """Raised by ``Handle.result()`` when the job was cancelled."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


class Fail(Exception):
    """Raise from a task to fail the job for good: no retry is attempted."""


class RateLimited(Exception):
    """Raise from a task when an API says "not now" (or let ``ctx.http`` raise it on a 429).

    The job goes back to ``scheduled`` until ``retry_after`` has passed, **without spending an
    attempt**. With ``limit=`` that limit — only the job's key of it, for a keyed limit — is
    paused for every worker until then, so nobody hammers the API during the reset window.
    ``retry_after`` is seconds, a duration string, a ``timedelta`` or an aware ``datetime``;
    when it is unknown (``None``) the job's retry backoff decides the wait.
    """

    def __init__(
        self,
        retry_after: Any = None,
        *,
        limit: str | None = None,
        key: str | None = None,
        reason: str | None = None,
        paused: bool = False,
    ):
        self.retry_after = retry_after
        self.limit = limit
        self.key = key
        self.reason = reason or "rate limited"
        #: True when the limit was paused already (``ctx.http`` does it at once)
        self.paused = paused
        super().__init__(f"{self.reason}; retry after {retry_after!r}" + (f" (limit {limit})" if limit else ""))


def error_info(exc: BaseException) -> dict[str, Any]:
    """The stored form of an exception: type, message and traceback."""
    return {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
