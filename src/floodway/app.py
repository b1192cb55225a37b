"""``App``: the registry of tasks and queues bound to one store, and the enqueue API."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, overload

from .alerts import check_queues, install_webhook
from .commit import GroupCommit
from .config import Settings, load_settings
from .enqueueing import check_enqueue_options, encode_args, enqueue_jobs, enqueue_jobs_async
from .errors import ConfigError, EnqueueError
from .flows import build_declarative_flow, flow_insights, log_flow_finished
from .forecasting import check_drain, forecast_view
from .handle import Handle
from .hooks import Periodic, WorkerHooks
from .inputs import check_job_id, check_name, check_priority, check_tenant, is_internal_task
from .limits import LimitSpec, Rate, RecentPauses, concurrency_for
from .options import check_lane, check_limit_names, check_limit_numbers, job_filter, resumable_options
from .retry import Retry
from .schedule import Schedule, ScheduleHealth, sync_schedules, tick, tick_id
from .shaping import Batch
from .stats import collect
from .store import Store, open_store
from .store.bulk import ACTIONS as BULK_ACTIONS
from .tasks import Queue, Task
from .units import parse_duration
from .worker import Worker

log = logging.getLogger("floodway.worker")  # the concurrency check speaks for the worker

__all__ = ["App", "Task", "Queue"]

DEFAULT_QUEUE = "default"
DEFAULT_MAX_PAYLOAD = 1_000_000

#: one encoder for every job's args: ``json.dumps`` with options builds a new encoder per call.
#: ASCII output (``ensure_ascii``, the default) makes a text's length its size in bytes.
F = TypeVar("F", bound=Callable[..., Any])


#: the options of ``App.enqueue`` / ``enqueue_many`` an ``EnqueuePlan`` takes as they are, and
#: those it takes together as the enqueue's shaping (dedupe or debounce)
_PLAN_OPTIONS = ("id", "queue", "delay", "start_at", "retry", "priority", "tenant", "limits", "lane")
_SHAPING_OPTIONS = ("unique_for", "unique_key", "unique_while", "debounce", "debounce_key", "debounce_max")


def _plan_options(single: bool, options: Mapping[str, Any]) -> dict[str, Any]:
    """An enqueue's options as ``EnqueuePlan`` takes them (an unknown one is a TypeError, as a
    call to ``App.enqueue`` with it would be)."""
    unknown = set(options) - set(_PLAN_OPTIONS) - set(_SHAPING_OPTIONS)
    if unknown:
        raise TypeError(f"enqueue() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return {
        "single": single,
        **{name: options.get(name) for name in _PLAN_OPTIONS},
        "shaping": {name: options.get(name) for name in _SHAPING_OPTIONS},
    }


class App:
    """The registry of tasks and queues, bound to one store.

    ``App()`` uses ``FLOODWAY_DATABASE_URL`` if set, else the SQLite file ``./floodway.db``;
    ``App("sqlite:///path.db")`` names the database. The store is opened on first use, so
    importing a module that defines an app touches no file.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        max_payload_bytes: int | None = None,
        wait_in_place: str | float | None = None,
        segment_bytes: int | None = None,
        settings: Settings | None = None,
        name: str = "floodway",
        **overrides: Any,
    ):
        if database_url is not None and not isinstance(database_url, str):
            raise ConfigError(f"database URL must be a string, got {database_url!r}")
        explicit = {
            "database_url": database_url,
            "max_payload_bytes": max_payload_bytes,
            "wait_in_place": wait_in_place,
            "segment_bytes": segment_bytes,
            **overrides,
        }
        #: arguments > FLOODWAY_* environment > [tool.floodway] in pyproject.toml > defaults
        self.settings = (
            settings.with_overrides(**{k: v for k, v in explicit.items() if v is not None})
            if settings is not None
            else load_settings(explicit)
        )
        self.database_url = self.settings.database_url
        self.max_payload_bytes = self.settings.max_payload_bytes
        #: the longest wait for a limit that is slept in place (keeping the slot); longer
        #: ones send the job back to ``scheduled`` until the limit admits it
        self.wait_in_place = self.settings.wait_in_place
        if self.settings.segment_bytes < 1024:
            raise ConfigError(f"segment_bytes must be >= 1024, got {self.settings.segment_bytes!r}")
        #: a payload argument larger than this is stored in segments (100 KB by default)
        self.segment_bytes = self.settings.segment_bytes
        self.name = name
        self.tasks: dict[str, Task] = {}
        self.queues: dict[str, Queue] = {DEFAULT_QUEUE: Queue(DEFAULT_QUEUE, None)}
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._synced_queues: dict[str, int | None] = {}
        #: queues an enqueue of this app has written the row of (see ``enqueueing``)
        self._queues_written: set[str] = set()
        self.limits: dict[str, LimitSpec] = {}
        self._synced_limits: set[LimitSpec] = set()
        #: concurrent single enqueues share transactions (see floodway.commit)
        self.group_commit = GroupCommit(lambda jobs, queues: self.store.enqueue(jobs, queues))
        self.schedules: dict[str, Schedule] = {}
        #: the limit keys' pauses, as this process's jobs check them before spending a token
        self.pauses = RecentPauses(lambda name, key: self.store.paused_until(name, key))
        if self.settings.alert_webhook_url:
            install_webhook(self)

    def __repr__(self) -> str:
        return f"<App {self.name} {self.database_url}>"

    # -- store --------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The store, opened (and migrated, for the embedded default) on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self.database_url)
        return self._store

    def use_store(self, store: Store) -> None:
        """Bind the app to an already open store (tests, embedding)."""
        self._store = store
        self._synced_queues.clear()
        self._queues_written.clear()
        self._synced_limits.clear()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
            self._synced_queues.clear()
            self._queues_written.clear()
            self._synced_limits.clear()

    # -- registration -------------------------------------------------------------------
    @overload
    def task(self, fn: F) -> Task: ...
    @overload
    def task(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        queue: str | Queue | None = None,
        retry: Retry | int | None = None,
        timeout: str | float | timedelta | None = None,
        priority: int = 0,
        give_up_on: Iterable[type[BaseException]] = (),
        limits: Iterable[str] = (),
        state: str | None = None,
        budget: str | float | timedelta | None = None,
        margin: str | float | timedelta | None = None,
        payload: str | None = None,
        retain_state: bool = False,
        unique_for: str | float | timedelta | None = None,
        unique_key: str | None = None,
        unique_while: str | None = None,
        debounce: str | float | timedelta | None = None,
        debounce_key: str | None = None,
        debounce_max: str | float | timedelta | None = None,
        batch: Batch | None = None,
        lane: str | None = None,
    ) -> Callable[[F], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | Queue | None = None,
        retry: Retry | int | None = None,
        timeout: str | float | timedelta | None = None,
        priority: int = 0,
        give_up_on: Iterable[type[BaseException]] = (),
        limits: Iterable[str] = (),
        state: str | None = None,
        budget: str | float | timedelta | None = None,
        margin: str | float | timedelta | None = None,
        payload: str | None = None,
        retain_state: bool = False,
        unique_for: str | float | timedelta | None = None,
        unique_key: str | None = None,
        unique_while: str | None = None,
        debounce: str | float | timedelta | None = None,
        debounce_key: str | None = None,
        debounce_max: str | float | timedelta | None = None,
        batch: Batch | None = None,
        lane: str | None = None,
    ) -> Any:
        """Register a function (async, or sync to run in a thread pool) as a task.

        Shaping (see ``floodway.shaping``): ``unique_for="10m"`` (or ``unique_while="active"``)
        with ``unique_key="{order_id}"`` dedupes enqueues of one key: the later ones return the
        first one's handle and make nothing. ``debounce="5s"`` with ``debounce_key`` folds
        enqueues of one key into one job that runs with the last arguments once none came for
        the window (or ``debounce_max`` after the first). ``batch=Batch(...)`` runs many
        queued items in one call of a function that takes a list (see ``Batch``). ``lane``: the
        reserved lane of its limits its jobs run on (see ``App.limit``).
        """
        key_options = {
            "unique_for": unique_for,
            "unique_key": unique_key,
            "unique_while": unique_while,
            "debounce": debounce,
            "debounce_key": debounce_key,
            "debounce_max": debounce_max,
        }

        def register(func: Callable[..., Any]) -> Task:
            if not callable(func):
                raise ConfigError(f"task must be a function, got {func!r}")
            task_name = name or func.__name__
            check_name(task_name, "task name")
            if task_name in self.tasks:
                raise ConfigError(f"a task named {task_name!r} is registered already")
            policy = Retry.coerce(retry)
            extra = tuple(give_up_on)
            for t in extra:
                if not (isinstance(t, type) and issubclass(t, BaseException)):
                    raise ConfigError(f"give_up_on: {t!r} is not an exception type")
            if extra:
                policy = Retry(
                    attempts=policy.attempts,
                    backoff=policy.backoff,
                    initial=policy.initial,
                    max=policy.max,
                    factor=policy.factor,
                    jitter=policy.jitter,
                    give_up_on=policy.give_up_on + extra,
                )
            task_queue = self._coerce_queue(queue) if queue is not None else DEFAULT_QUEUE
            task = Task(
                self,
                func,
                name=task_name,
                queue=task_queue,
                retry=policy,
                timeout=parse_duration(timeout, name="timeout", allow_zero=False) if timeout is not None else None,
                priority=check_priority(priority),
                limits=check_limit_names(limits),
                **resumable_options(task_name, func, state, budget, margin, payload, retain_state),
            )
            task.set_key_options(key_options)
            task.set_batch(batch)
            if lane is not None:
                task.lane = check_name(lane, f"task {task_name!r}: lane")
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def queue(self, name: str, max_concurrency: int | None = None) -> Queue:
        """Declare a queue; ``max_concurrency=None`` (the default here) means unlimited."""
        declared = Queue(name, max_concurrency)
        self.queues[name] = declared
        self._synced_queues.pop(name, None)
        return declared

    def limit(
        self,
        name: str,
        *,
        rate: str | Rate | None = None,
        burst: int = 1,
        concurrency: int | None = None,
        key: str | None = None,
        adaptive: bool = False,
        floor: str | Rate | None = None,
        ceiling: str | Rate | None = None,
        lanes: Mapping[str, float] | None = None,
    ) -> LimitSpec:
        """Declare a named limit held in the store, so it binds every worker on the database.

        ``rate`` (``"50/s"``, ``"100/min"``, ``"10/10s"``) is paced with GCRA and ``burst``;
        it is a ceiling and a starting point, never a promise: what the destination says
        through ``ctx.http`` (its headers, its 429s) sets the effective rate, learned per key
        and shared by every worker (see ``floodway.quota``). ``adaptive=True`` lets the learned
        rate rise above ``rate`` too (up to ``ceiling``), and works with no rate at all (a slow
        start finds it); the learned rate never falls below ``floor``. ``concurrency`` caps the
        running jobs that hold the limit; ``key`` (a template over the job's args and tenant,
        e.g. ``"{tenant}"``) gives each value its own budget. Tasks name limits with
        ``@app.task(limits=[...])``. ``lanes`` (``{"interactive": 0.2, "backfill": 0.8}``)
        reserves each lane its share of the rate and concurrency of every key under contention;
        a lane without demand lends its share to the others (see the README's section on lanes).
        """
        check_name(name, "limit name")
        spec = check_limit_numbers(
            LimitSpec.build(
                name,
                rate=rate,
                burst=burst,
                concurrency=concurrency,
                key=key,
                adaptive=adaptive,
                floor=floor,
                ceiling=ceiling,
                lanes=lanes,
            )
        )
        self.limits[name] = spec
        return spec

    def reset_learned(self, name: str, key: str | None = None) -> int:
        """Forget what floodway learned about limit ``name`` (every key, or one): the declared
        rate holds again until the destination says otherwise."""
        return self.store.reset_learned(name, key)

    def check_limits(self) -> None:
        """Every limit a task names is declared (a typo is a programming error: found when the
        worker starts, not when a job runs)."""
        for task in self.tasks.values():
            missing = [name for name in task.limits if name not in self.limits]
            if missing:
                known = ", ".join(sorted(self.limits)) or "none"
                raise ConfigError(f"task {task.name!r} names unknown limit(s) {missing} (declared: {known})")
            try:
                check_lane(task.lane, task.limits, self.limits)
            except ConfigError as exc:
                raise ConfigError(f"task {task.name!r}: {exc}") from None

    def sync_limits(self) -> None:
        """Write the declared limits to the store (on first enqueue and at worker start);
        a limit changed at run time keeps its change until the code declares another."""
        for spec in list(self.limits.values()):
            if spec not in self._synced_limits:
                self.store.declare_limit(spec)
                self._synced_limits.add(spec)

    def set_limit(self, name: str, **changes: Any) -> LimitSpec:
        """Change a limit at run time, for every worker, without a restart:
        ``app.set_limit("fulfillments", rate="20/s")``."""
        current = {info.spec.name: info.spec for info in self.store.list_limits()}.get(name) or self.limits.get(name)
        if current is None:
            raise ConfigError(f"unknown limit {name!r}")
        unknown = set(changes) - {"rate", "burst", "concurrency", "key", "adaptive", "floor", "ceiling", "lanes"}
        if unknown:
            raise ConfigError(f"set_limit: unknown option(s) {sorted(unknown)}")
        if "rate" in changes and "adaptive" not in changes:
            changes["adaptive"] = False  # an operator's rate is a ceiling until they say otherwise
        merged = {
            "rate": current.rate,
            "burst": current.burst,
            "concurrency": current.concurrency,
            "key": current.key,
            "adaptive": current.adaptive,
            "floor": current.floor,
            "ceiling": current.ceiling,
            "lanes": current.lanes or None,
            **changes,
        }
        spec = check_limit_numbers(LimitSpec.build(name, **merged))
        self.store.update_limit(spec)
        return spec

    def flow(
        self,
        name: str,
        steps: Sequence[Mapping[str, Any]],
        *,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        **task_options: Any,
    ) -> Task:
        """Register a declarative flow — a list of ``{"id", "type", "config"}`` steps, like an
        e-commerce order flow — as a task named ``name``. Enqueue it with the flow's variables as args."""
        fn = build_declarative_flow(self, name, list(steps), dict(handlers or {}))
        return self.task(name=name, **task_options)(fn)

    def flow_insights(self, job_id: str) -> dict[str, Any]:
        """A flow's insights for one job: steps, distribution, overhead, retries."""
        return flow_insights(self, job_id)

    def schedule(
        self,
        task: "Task | str",
        *,
        cron: str,
        args: Mapping[str, Any] | None = None,
        tz: str = "UTC",
        name: str | None = None,
        missed: str = "skip",
        **enqueue_options: Any,
    ) -> Schedule:
        """Enqueue ``task`` on a cron rule. Each tick becomes exactly one job however many
        workers run (its id is ``cron:<name>:<tick>``); ``missed="catch_up"`` enqueues ticks
        missed while no worker ran, ``"skip"`` only the latest."""
        the_task = self.get_task(task)
        schedule_name = name or the_task.name
        # each tick's job id embeds the name: it must make a valid id
        check_job_id(tick_id(schedule_name, time.time()), what=f"schedule {schedule_name!r}: its tick id")
        if schedule_name in self.schedules:
            raise ConfigError(f"a schedule named {schedule_name!r} exists already; pass name=")
        unknown = set(enqueue_options) - {"queue", "priority", "tenant", "retry", "limits"}
        if unknown:
            raise ConfigError(f"schedule: unknown option(s) {sorted(unknown)}")
        if enqueue_options.get("tenant") is not None:
            check_tenant(enqueue_options["tenant"])
        if enqueue_options.get("priority") is not None:
            check_priority(enqueue_options["priority"])
        if isinstance(enqueue_options.get("queue"), str):
            check_name(enqueue_options["queue"], "queue name")
        arguments = dict(args or {})
        try:
            self._encode_args(the_task, arguments)
        except EnqueueError as exc:
            raise EnqueueError(f"{exc} (schedule {schedule_name!r})") from None
        schedule = Schedule(schedule_name, the_task.name, cron, tz, arguments, dict(enqueue_options), missed)
        self.schedules[schedule_name] = schedule
        return schedule

    def stats(self, window: float = 60.0) -> dict[str, Any]:
        """Depth, running, and rates in and out (per second over ``window``) per queue and per
        limit — what ``floodway stats`` and the Prometheus metrics show."""
        return collect(self, window)

    def bulk(
        self,
        action: str,
        *,
        status: Any = None,
        task: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        created_after: Any = None,
        created_before: Any = None,
        error: str | None = None,
        all: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Retry, cancel, pause, resume or purge every job the filter matches (statuses, task,
        queue, tenant, created before/after, text of its error), in chunks that never stall the
        workers; returns how many jobs it acted on, or with ``dry_run`` would. An empty filter
        is refused unless ``all=True``. A retried job keeps its ledger."""
        if action not in BULK_ACTIONS:
            raise ConfigError(f"unknown bulk action {action!r} (one of: {', '.join(BULK_ACTIONS)})")
        flt = job_filter(
            status=status,
            task=task,
            queue=queue,
            tenant=tenant,
            created_after=created_after,
            created_before=created_before,
            error=error,
        )
        if flt.is_empty() and not all:
            raise ConfigError(f"bulk {action}: give a filter (status, task, queue, tenant, created, error) or all=True")
        # a misspelt name would match nothing and look like "nothing to do": refuse it. A task
        # no longer in the code is known by the jobs it left (so they can still be purged).
        if task is not None and task not in self.tasks and not self.store.list_jobs(task=task, limit=1):
            known = ", ".join(sorted(self.tasks)) or "none declared here"
            raise ConfigError(f"task: unknown task {task!r}: not declared and no job has it (declared: {known})")
        if queue is not None and queue not in self.queues and queue not in {q.name for q in self.store.list_queues()}:
            raise ConfigError(f"queue: unknown queue {queue!r}")
        return self.store.bulk_action(action, flt, dry_run=dry_run)

    def forecast(self, window: float = 60.0, **what_if: Any) -> dict[str, Any]:
        """When each queue and limit key will drain, with a range and why; ``queue``, ``limit``,
        ``key`` narrow it, and ``rate`` (for ``limit``), ``add`` (jobs, with ``tenant`` or
        ``key``) and ``workers`` ask what if, touching nothing (``floodway.forecasting``)."""
        return forecast_view(self, window=window, **what_if)

    def resume_limit(self, name: str, key: str | None = None) -> int:
        """End the pause of a limit (one key, or all) now, for every worker."""
        return self.store.resume_limit(name, key)

    def _coerce_queue(self, queue: str | Queue) -> str | Queue:
        if isinstance(queue, Queue):
            return queue
        check_name(queue, "queue name")
        return queue

    def _queue_cap(self, queue: str | Queue) -> tuple[str, int | None, bool]:
        """(name, cap, declared): declared caps are written over the stored ones."""
        if isinstance(queue, Queue):
            return queue.name, queue.max_concurrency, True
        if queue in self.queues:
            return queue, self.queues[queue].max_concurrency, True
        return queue, 1, False  # a queue named only by a string runs one at a time

    def sync_queues(self, names: Iterable[str | Queue] | None = None) -> None:
        """Write declared queue caps to the store (done on enqueue and at worker start)."""
        targets = list(names) if names is not None else list(self.queues.values())
        for q in targets:
            name, cap, declared = self._queue_cap(q)
            if declared and self._synced_queues.get(name, -1) != cap:
                self.store.set_queue(name, cap)
                self._synced_queues[name] = cap

    def get_task(self, task: "Task | str", *, internal: bool = True) -> Task:
        """The task ``task`` names. With ``internal=False`` (callers from outside: the web API)
        floodway's own tasks (``floodway.*``) are unknown, and the error does not list them."""
        if isinstance(task, Task):
            if task.app is not self and self.tasks.get(task.name) is not task:
                raise EnqueueError(f"task {task.name!r} belongs to another app")
            if internal or not is_internal_task(task.name):
                return task
            task = task.name
        if isinstance(task, str):
            found = self.tasks.get(task)
            if found is not None and (internal or not is_internal_task(task)):
                return found
            known = ", ".join(sorted(self.public_tasks() if not internal else self.tasks)) or "none"
            raise EnqueueError(f"unknown task {task!r} (registered: {known})")
        raise EnqueueError(f"expected a task or a task name, got {task!r}")

    def public_tasks(self) -> list[str]:
        """The names of the tasks callers from outside may enqueue: all but floodway's own."""
        return [name for name in self.tasks if not is_internal_task(name)]

    # -- enqueue ------------------------------------------------------------------------
    def enqueue(
        self,
        task: Task | str,
        args: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        queue: str | Queue | None = None,
        delay: str | float | timedelta | None = None,
        start_at: Any = None,
        retry: Retry | int | None = None,
        priority: int | None = None,
        tenant: str | None = None,
        limits: Iterable[str] | None = None,
        unique_for: str | float | timedelta | None = None,
        unique_key: str | None = None,
        unique_while: str | None = None,
        debounce: str | float | timedelta | None = None,
        debounce_key: str | None = None,
        debounce_max: str | float | timedelta | None = None,
        lane: str | None = None,
    ) -> Handle:
        """Enqueue one job; returns its handle once the job is durable.

        With an ``id`` that exists already, nothing is created and the existing job's handle
        is returned (``handle.created`` is False); the same with a dedupe key seen within its
        window, or a debounce key whose job has not started (it takes these arguments). The
        ``unique_*`` and ``debounce*`` options override the task's (see ``App.task``).
        """
        # every option of the signature above, by name (locals() holds just these here)
        options = {k: v for k, v in locals().items() if k not in ("self", "task", "args")}
        return self._enqueue(task, [args], **_plan_options(True, options))[0]

    def enqueue_many(
        self,
        task: Task | str,
        args_list: Sequence[Mapping[str, Any] | None],
        *,
        id: str | None = None,
        queue: str | Queue | None = None,
        delay: str | float | timedelta | None = None,
        start_at: Any = None,
        retry: Retry | int | None = None,
        priority: int | None = None,
        tenant: str | None = None,
        limits: Iterable[str] | None = None,
        unique_for: str | float | timedelta | None = None,
        unique_key: str | None = None,
        unique_while: str | None = None,
        debounce: str | float | timedelta | None = None,
        debounce_key: str | None = None,
        debounce_max: str | float | timedelta | None = None,
        lane: str | None = None,
    ) -> list[Handle]:
        """Enqueue one job per item of ``args_list`` in one transaction: all or nothing.

        The options apply to each job; an ``id`` becomes ``id-0``, ``id-1``, …
        """
        if isinstance(args_list, (str, bytes, Mapping)) or not isinstance(args_list, Iterable):
            raise EnqueueError("enqueue_many expects a list of argument dicts")
        options = {k: v for k, v in locals().items() if k not in ("self", "task", "args_list")}
        return self._enqueue(task, list(args_list), **_plan_options(False, options))

    async def enqueue_async(self, task: Task | str, args: Mapping[str, Any] | None = None, **options: Any) -> Handle:
        """``enqueue`` from a coroutine (the same options). Checked in the event loop; a plain
        job then joins the group commit and the coroutine awaits its transaction, so a burst of
        coroutines (an async web server's requests) shares a few transactions and no thread is
        taken per call. Returns once the job is durable. Cancelling the call does not withdraw
        a job that was handed to the commit already."""
        return (await self._enqueue_async(task, [args], **_plan_options(True, options)))[0]

    async def enqueue_many_async(
        self, task: Task | str, args_list: Sequence[Mapping[str, Any] | None], **options: Any
    ) -> list[Handle]:
        return await asyncio.to_thread(functools.partial(self.enqueue_many, task, args_list, **options))

    def handle(self, job_id: str) -> Handle:
        """Rebuild the handle of a job enqueued earlier, from its id."""
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"job id must be a non-empty string, got {job_id!r}")
        return Handle(self, job_id, created=False)

    def _enqueue(self, task: Task | str, args_list: list[Mapping[str, Any] | None], **options: Any) -> list[Handle]:
        """Enqueue ``args_list`` as jobs of ``task`` (see ``enqueueing.enqueue_jobs``)."""
        return enqueue_jobs(self, task, args_list, **options)

    async def _enqueue_async(
        self, task: Task | str, args_list: list[Mapping[str, Any] | None], **options: Any
    ) -> list[Handle]:
        """``_enqueue`` from a coroutine (see ``enqueueing.enqueue_jobs_async``)."""
        return await enqueue_jobs_async(self, task, args_list, **options)

    def check_enqueue_options(
        self, task: Task | str, **options: Any
    ) -> tuple[tuple[str, ...], float, Retry, str | Queue, int]:
        """Check an enqueue's options without writing (see ``enqueueing.check_enqueue_options``)."""
        return check_enqueue_options(self, task, **options)

    def _encode_args(self, task: Task, args: Mapping[str, Any] | None) -> str:
        return encode_args(self, task, args)

    # -- running ------------------------------------------------------------------------
    def worker(self, **options: Any) -> "Any":
        """A ``Worker`` for this app (see ``floodway.worker.Worker`` for the options)."""
        worker = Worker(self, **options)
        worker.hooks = self._worker_hooks(worker.lease)
        return worker

    def _worker_hooks(self, lease: float) -> WorkerHooks:
        """What a worker of this app runs beside its jobs: the scheduler, queue-depth alerts, and
        the flow summary logged when a flow's run completes."""
        hooks = WorkerHooks(on_start=[self._check_concurrency], on_run_end=[log_flow_finished])
        if self.schedules:
            health = ScheduleHealth()  # a failing schedule is logged once per episode, the others go on
            hooks.on_start.append(lambda _: sync_schedules(self))
            hooks.periodic.append(Periodic("scheduler", lambda: tick(self, health), every=5.0))
        if self.settings.alert_queue_depth:
            hooks.periodic.append(
                Periodic("queue alerts", lambda: check_queues(self), every=lease / 3, first=lease / 3)
            )
        if self.settings.alert_drain_deadline:
            hooks.periodic.append(Periodic("drain alerts", lambda: check_drain(self), every=lease / 3, first=lease / 3))
        return hooks

    def _check_concurrency(self, concurrency: int) -> None:
        """The concurrency formula, checked when a worker starts: concurrency = rate x average
        job time; a worker that cannot reach a limit's rate says so."""
        for spec in self.limits.values():
            if spec.rate is None:
                continue
            avg = self.store.average_duration([t.name for t in self.tasks.values() if spec.name in t.limits])
            if not avg:
                continue
            needed = concurrency_for(spec.rate, avg)
            cap = min(concurrency, spec.concurrency or concurrency)
            if cap < needed:
                log.warning(
                    "limit %s allows %s but its jobs take %.3fs on average: reaching that rate needs "
                    "a concurrency of %d, this worker runs %d (set --concurrency or the limit's concurrency)",
                    spec.name,
                    spec.rate,
                    avg,
                    needed,
                    cap,
                )

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this process until it is stopped (or, with ``burst=True``, idle)."""
        self.worker(**options).run()
