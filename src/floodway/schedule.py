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

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from .errors import ConfigError
from .store.base import ScheduleInfo

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("floodway.schedule")

MAX_CATCH_UP = 1000
MISSED_POLICIES = ("skip", "catch_up")
#: a cron that does not fire within this many years never fires (30 February, 31 April);
#: 8 covers 29 February across a century year that is not a leap year
MAX_YEARS_BETWEEN_TICKS = 8


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
        try:
            self.next_tick(time.time())
        except (CroniterBadDateError, CroniterBadCronError, ValueError, OverflowError):
            raise ConfigError(
                f"schedule {self.name!r}: {self.cron!r} never fires (no tick within {MAX_YEARS_BETWEEN_TICKS} years)"
            ) from None

    def _iter(self, after: float) -> croniter:
        return croniter(
            self.cron,
            datetime.fromtimestamp(after, ZoneInfo(self.tz)),
            max_years_between_matches=MAX_YEARS_BETWEEN_TICKS,
        )

    def ticks(self, after: float, until: float) -> list[float]:
        """The tick times in (after, until], oldest first (at most MAX_CATCH_UP + 1)."""
        it = self._iter(after)
        out: list[float] = []
        while len(out) <= MAX_CATCH_UP:
            tick = it.get_next(float)
            if tick > until:
                break
            out.append(tick)
        return out

    def next_tick(self, after: float) -> float:
        return self._iter(after).get_next(float)

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


def stored_schedule(info: ScheduleInfo) -> Schedule:
    """The rule of a stored schedule; ``ConfigError`` when it no longer parses or never fires
    (stored by another deployment, or before such crons were refused)."""
    return Schedule(info.name, info.task, info.cron, info.tz, info.args, info.options, info.missed)


def next_fire(info: ScheduleInfo, now: float) -> tuple[float | None, str | None]:
    """A stored schedule's next tick, or ``(None, why)`` when it has none: listing schedules
    never fails on one bad row."""
    try:
        return stored_schedule(info).next_tick(max(now, info.last_tick or now)), None
    except Exception as exc:  # noqa: BLE001 - any stored row must list
        return None, str(exc)


class ScheduleHealth:
    """Which schedules are failing, so each failure episode is logged once (when it starts)
    and its end once, however many times the scheduler retries meanwhile."""

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}

    def failed(self, name: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if name not in self.failing:
            log.error(
                "schedule %s failed; the other schedules go on (logged once until it recovers): %s",
                name,
                message,
                exc_info=exc,
            )
        self.failing[name] = message

    def succeeded(self, name: str) -> None:
        if self.failing.pop(name, None) is not None:
            log.info("schedule %s recovered", name)


def run_due(app: "App", now: float | None = None, health: ScheduleHealth | None = None) -> list[str]:
    """Enqueue every due tick of every schedule; returns the ids enqueued (created or not).

    Schedules are isolated: one that fails (an enqueue refused, a rule that cannot compute its
    next tick) is reported to ``health`` and skipped; the others go on."""
    now = time.time() if now is None else now
    health = health if health is not None else ScheduleHealth()
    enqueued: list[str] = []
    for info in app.store.list_schedules():
        schedule = app.schedules.get(info.name)
        if schedule is None or schedule.task not in app.tasks:
            continue  # declared by another deployment of the app
        try:
            enqueued.extend(_run_one(app, schedule, info, now))
        except Exception as exc:  # noqa: BLE001 - one schedule must not stop the others
            health.failed(info.name, exc)
        else:
            health.succeeded(info.name)
    return enqueued


def _run_one(app: "App", schedule: Schedule, info: ScheduleInfo, now: float) -> list[str]:
    last = info.last_tick if info.last_tick is not None else now
    due = schedule.ticks(last, now)
    if not due:
        return []
    if schedule.missed == "skip":
        due = due[-1:]
    enqueued: list[str] = []
    for tick in due:
        handle = app.enqueue(schedule.task, schedule.args, id=tick_id(schedule.name, tick), **schedule.options)
        enqueued.append(handle.id)
        if handle.created:
            log.info("schedule %s: enqueued the tick of %s", schedule.name, datetime.fromtimestamp(tick).isoformat())
    app.store.advance_schedule(info.name, info.last_tick, due[-1])
    return enqueued


def seconds_until_next(app: "App", now: float | None = None) -> float | None:
    """Seconds until the earliest next tick; a schedule that cannot tell is left out."""
    now = time.time() if now is None else now
    upcoming = []
    for schedule in app.schedules.values():
        try:
            upcoming.append(schedule.next_tick(now))
        except Exception:  # noqa: BLE001 - reported by run_due
            continue
    return max(0.0, min(upcoming) - now) if upcoming else None


def tick(app: "App", health: ScheduleHealth) -> float:
    """One turn of a worker's scheduler: enqueue the due ticks; the seconds until the next one
    (just after it, and at least once a minute)."""
    run_due(app, None, health)
    wait = seconds_until_next(app)
    return min(max(wait if wait is not None else 60.0, 0.0) + 0.01, 60.0)
