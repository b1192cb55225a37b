"""The ``Context`` a task receives when its first parameter is annotated ``Context`` or named
``ctx``: what the running job is, and (as floodway grows) the tools to checkpoint, pace and
resume it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .jobs import Job

if TYPE_CHECKING:
    from .app import App


class Context:
    """The running job as seen from inside its task."""

    def __init__(self, app: "App", job: Job, worker_id: str):
        self.app = app
        self.job = job
        self.worker_id = worker_id
        self.logger = logging.getLogger(f"floodway.task.{job.task}")

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
