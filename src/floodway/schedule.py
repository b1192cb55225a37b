"""Cron schedules: ``app.schedule(task, cron="*/10 * * * *", args=..., tz="Europe/Paris")``.

Every worker runs the scheduler. Each tick is enqueued with the id ``cron:<name>:<tick>``, so
however many workers see it due, the tick becomes one job. Ticks missed while no worker ran
follow the schedule's ``missed`` policy: ``"skip"`` (the default) enqueues only the latest
missed tick, ``"catch_up"`` enqueues every missed tick (at most ``MAX_CATCH_UP``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import ConfigError
from .store.base import ScheduleInfo

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("floodway.schedule")

MAX_CATCH_UP = 1000
MISSED_POLICIES = ("skip", "catch_up")


@dataclass
class Schedule:
    name: str
    task: str
    cron: str
    tz: str = "UTC"
    args: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    missed: str = "skip"

    def __post_init__(self) -> None:
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise ConfigError(f"schedule {self.name!r}: {self.cron!r} is not a valid cron expression")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(f"schedule {self.name!r}: unknown time zone {self.tz!r}") from None
        if self.missed not in MISSED_POLICIES:
            raise ConfigError(f"schedule {self.name!r}: missed must be one of {MISSED_POLICIES}, got {self.missed!r}")

    def ticks(self, after: float, until: float) -> list[float]:
        """The tick times in (after, until], oldest first (at most MAX_CATCH_UP + 1)."""
        zone = ZoneInfo(self.tz)
        it = croniter(self.cron, datetime.fromtimestamp(after, zone))
        out: list[float] = []
        while len(out) <= MAX_CATCH_UP:
            tick = it.get_next(float)
            if tick > until:
                break
            out.append(tick)
        return out

    def next_tick(self, after: float) -> float:
        return croniter(self.cron, datetime.fromtimestamp(after, ZoneInfo(self.tz))).get_next(float)

    def info(self) -> ScheduleInfo:
        return ScheduleInfo(self.name, self.task, self.cron, self.tz, self.args, self.options, self.missed, None)


def tick_id(name: str, tick: float) -> str:
    return f"cron:{name}:{int(tick)}"


def sync_schedules(app: "App") -> None:
    """Write the app's schedules to the store; a new one starts from now (no backfill)."""
    stored = {s.name: s for s in app.store.list_schedules()}
    for schedule in app.schedules.values():
        info = schedule.info()
        info.last_tick = stored[schedule.name].last_tick if schedule.name in stored else None
        app.store.save_schedule(info)
        if info.last_tick is None:
            app.store.advance_schedule(schedule.name, None, time.time())


def run_due(app: "App", now: float | None = None) -> list[str]:
    """Enqueue every due tick of every schedule; returns the ids enqueued (created or not)."""
    now = time.time() if now is None else now
    enqueued: list[str] = []
    for info in app.store.list_schedules():
        schedule = app.schedules.get(info.name)
        if schedule is None or schedule.task not in app.tasks:
            continue  # declared by another deployment of the app
        last = info.last_tick if info.last_tick is not None else now
        due = schedule.ticks(last, now)
        if not due:
            continue
        if schedule.missed == "skip":
            due = due[-1:]
        for tick in due:
            handle = app.enqueue(schedule.task, schedule.args, id=tick_id(schedule.name, tick), **schedule.options)
            enqueued.append(handle.id)
            if handle.created:
                log.info("schedule %s: enqueued the tick of %s", schedule.name, datetime.fromtimestamp(tick).isoformat())
        app.store.advance_schedule(info.name, info.last_tick, due[-1])
    return enqueued


def seconds_until_next(app: "App", now: float | None = None) -> float | None:
    now = time.time() if now is None else now
    upcoming = [s.next_tick(now) for s in app.schedules.values()]
    return max(0.0, min(upcoming) - now) if upcoming else None
