"""The exceptions floodway raises and the ones user code raises to steer it."""

from __future__ import annotations

from typing import Any


class FloodwayError(Exception):
    """Base class of every error floodway raises."""


class ConfigError(FloodwayError, ValueError):
    """A value given to floodway (option, duration, URL, setting) is invalid."""


class EnqueueError(FloodwayError, ValueError):
    """A job could not be enqueued because its input is invalid; nothing was written."""


class StoreError(FloodwayError):
    """The store (database) cannot be opened or used."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer floodway than the one running."""


class TransitionError(FloodwayError):
    """A job status change that the transition table does not allow."""


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
