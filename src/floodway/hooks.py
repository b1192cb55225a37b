"""How a worker is fitted into its process and its app: the event loop it runs on, and the
hooks through which it calls the features built beside it (it imports none of them)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable

from .errors import ConfigError


@dataclasses.dataclass
class Periodic:
    """A task the worker runs beside its jobs, supervised: ``fn`` runs on a store thread and
    returns the seconds until it is due again (None: ``every``); a failure is logged and the
    task tried again ``every`` seconds later."""

    name: str
    fn: Callable[[], float | None]
    every: float
    #: seconds before its first run
    first: float = 0.0


LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``Worker(loop=...)``; ``None`` means asyncio's own loop.

    Checked when the worker is built, so a typo or a missing uvloop is a ``ConfigError`` at
    start-up, not a crash once jobs are claimed."""
    if loop not in LOOPS:
        raise ConfigError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise ConfigError("loop='uvloop' needs the uvloop package (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


@dataclasses.dataclass
class WorkerHooks:
    """Where the worker calls the features built beside it, supplied by whoever builds it (the
    app), so that the worker imports none of them (schedules, alerts, flow logging).

    - ``on_start``: run once on a store thread when the worker has declared its queues and
      limits, with the worker's concurrency (e.g. store the app's schedules; warn when the
      concurrency cannot reach a limit's rate);
    - ``periodic``: supervised tasks started with the worker and stopped with it (e.g. the
      scheduler, queue-depth alerts);
    - ``on_run_end``: a job's run completed: ``hook(job_id, steps, status)`` with the flow steps
      it recorded (e.g. the flow summary log); called on the event loop, so keep it short.
    """

    on_start: list[Callable[[int], object]] = dataclasses.field(default_factory=list)
    periodic: list[Periodic] = dataclasses.field(default_factory=list)
    on_run_end: list[Callable[[str, list[Any], str], object]] = dataclasses.field(default_factory=list)
