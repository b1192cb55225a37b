"""How an enqueue becomes jobs: the options checked, each item's arguments checked and encoded
(large list payloads stored in segments), the limits and fairness group each job holds, its
dedupe or debounce key, and the store call that writes them (group-committed for a single
plain job, streamed for a bulk one, matched on keys for keyed ones). ``App.enqueue`` and
``App.enqueue_many`` are the public doors; the web API and the CLI come through here too."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, cast

from . import jsontext, tracing
from .errors import ConfigError, EnqueueError
from .handle import Handle
from .inputs import check_job_id, check_priority, check_run_at, check_tenant
from .jobs import NewJob, Status
from .limits import NO_LANE, lane_key, resolve_key
from .options import check_lane, check_limit_names, new_job_ids, retry_json
from .resumable import SEGMENT_MARK, split_segments
from .retry import Retry
from .shaping import KeyPolicy
from .tasks import Queue, Task
from .units import parse_duration, parse_instant

if TYPE_CHECKING:
    from .app import App
    from .store.base import EnqueueResult


class EnqueuePlan:
    """One enqueue, checked: its options, the jobs it will make (each item checked and encoded
    as it is made) and how they are written. Made by ``plan_enqueue``; ``write`` writes from a
    thread, ``write_async`` from a coroutine.

    ``owner``: a tenant every id that exists already must belong to; one that belongs to
    anybody else raises ``JobIdTaken`` inside the store's transaction, so nothing is written
    (the web API passes a tenant token's tenant)."""

    def __init__(
        self,
        app: App,
        task: Task | str,
        args_list: list[Mapping[str, Any] | None],
        *,
        single: bool,
        id: str | None,
        queue: str | Queue | None,
        delay: Any,
        start_at: Any,
        retry: Retry | int | None,
        priority: int | None,
        tenant: str | None,
        limits: Iterable[str] | None,
        owner: str | None = None,
        shaping: Mapping[str, Any] | None = None,
        lane: str | None = None,
    ):
        self.app = app
        self.task = the_task = app.get_task(task)
        self.args_list = args_list
        self.single = single
        self.id = id
        self.tenant = tenant
        self.owner = owner
        now = time.time()
        self.limit_names, self.run_at, policy, self.job_queue, self.priority = check_enqueue_options(
            app,
            the_task,
            count=None if single else len(args_list),
            id=id,
            queue=queue,
            delay=delay,
            start_at=start_at,
            retry=retry,
            priority=priority,
            tenant=tenant,
            limits=limits,
            now=now,
            lane=lane,
        )
        self.lane = lane if lane is not None else the_task.lane
        self.policy_key = check_shaping(the_task, shaping or {}, id=id, delay=delay, start_at=start_at)
        self.queue_name, self.cap, self.declared = app._queue_cap(self.job_queue)
        self.status = Status.SCHEDULED if self.run_at > now else Status.WAITING
        self.retry_text = retry_json(policy)
        self.max_attempts = policy.max_attempts
        # without limits a job's fairness group is the tenant's alone: the same for every item
        self.fixed_limits = None if self.limit_names else resolve_limits(app, (), {}, tenant, None)
        self.ids = new_job_ids(len(args_list)) if id is None else None

    def make_jobs(self, trace: str | None) -> Iterator[NewJob]:
        """Each item checked and made into a job (carrying ``trace``, the enqueue's span
        context); an EnqueueError names the item."""
        app, the_task, tenant = self.app, self.task, self.tenant
        for index, args in enumerate(self.args_list):
            try:
                args, segments = segment_payload(app, the_task, args)
                args_json = encode_args(app, the_task, args)
                held, fair_key = self.fixed_limits or resolve_limits(
                    app, self.limit_names, args or {}, tenant, self.lane
                )
                shared_state = None
                batch_key = None
                if the_task.batch is not None:
                    batch_key = the_task.batch.key_for(the_task.name, args or {}, tenant)
                    # the batches of one key share a ledger: an item a batch already sent
                    # (``ctx.once``) is not sent again by the batch that retries it
                    shared_state = f"batch:{batch_key}"
                if the_task.state is not None:
                    try:
                        shared_state = resolve_key(the_task.state, args or {}, tenant)
                    except ConfigError as exc:
                        raise EnqueueError(f"state {the_task.state!r}: {exc}") from None
                enqueue_key = self.policy_key.key_for(args or {}, tenant, args_json) if self.policy_key else None
            except EnqueueError as exc:
                # the item's place is added here, once, rather than formatted for every item
                raise EnqueueError(str(exc) if self.single else f"{exc} (item {index})") from None
            if self.ids is not None:
                job_id = self.ids[index]
            else:
                job_id = cast(str, self.id) if self.single else f"{self.id}-{index}"  # an id was given
            yield NewJob(
                id=job_id,
                task=the_task.name,
                args_json=args_json,
                queue=self.queue_name,
                priority=self.priority,
                max_attempts=self.max_attempts,
                retry_json=self.retry_text,
                run_at=self.run_at,
                tenant=tenant,
                status=self.status,
                limits_json=json.dumps(held) if held else None,
                fair_key=fair_key,
                shared_state=shared_state,
                segments=segments,
                enqueue_key=enqueue_key,
                batch_key=batch_key,
                trace=trace,
            )

    def _queues(self) -> dict[str, int | None]:
        # the queue's row, written by the first enqueue to it (INSERT unless it exists); rows
        # are never deleted, so later enqueues of this app skip that statement
        return {} if self.queue_name in self.app._queues_written else {self.queue_name: self.cap}

    def _handles(self, results: Iterable[EnqueueResult]) -> list[Handle]:
        self.app._queues_written.add(self.queue_name)
        return [Handle(self.app, r.id, created=r.created) for r in results]

    def write(self, trace: str | None = None) -> list[Handle]:
        """Write the jobs (a single plain one group-committed with other callers')."""
        app = self.app
        # generated ids are new by construction: the store may write the jobs as they are made
        # (a bad item then raises inside the transaction, and nothing is written). Ids given by
        # the caller may exist already: every item is checked before the store looks.
        generated = self.ids is not None
        jobs: Iterable[NewJob] = self.make_jobs(trace) if generated else list(self.make_jobs(trace))
        if self.declared:
            app.sync_queues([self.job_queue])
        if self.limit_names:
            app.sync_limits()
        queues = self._queues()
        if self.single and self.owner is None:
            (job,) = list(jobs)
            return self._handles([app.group_commit.submit(job, queues)])
        if self.policy_key is not None:
            results = app.store.enqueue_keyed(list(jobs), queues)
        elif generated:
            results = app.store.enqueue_new(jobs, queues)
        else:
            results = app.store.enqueue(jobs, queues, owner=self.owner)  # type: ignore[arg-type]
        return self._handles(results)

    def _group_committed_from_a_coroutine(self) -> bool:
        """A single plain job whose queue and limits are written to the store already: a
        coroutine hands it to the group commit without a thread of its own (anything that may
        write first goes through ``write`` on a thread)."""
        app = self.app
        return (
            self.single
            and self.owner is None
            and (not self.declared or app._synced_queues.get(self.queue_name, -1) == self.cap)
            and (not self.limit_names or all(spec in app._synced_limits for spec in app.limits.values()))
        )

    def traced(self) -> list[Handle]:
        """``write`` inside the enqueue's span (when a tracer records it)."""
        if not self.args_list:
            return []
        if not tracing.ENABLED or tracing.silent():
            return self.write()
        with tracing.send(self.task.name, self.queue_name, len(self.args_list)) as trace:
            return self.write(trace)

    async def write_async(self) -> list[Handle]:
        """``traced`` for a coroutine: a single plain job joins the group commit and the
        coroutine awaits its transaction (a burst of coroutines shares a few transactions, with
        no thread per call); anything else runs ``traced`` on a thread."""
        if not self.args_list or not self._group_committed_from_a_coroutine():
            return await asyncio.to_thread(self.traced)
        if not tracing.ENABLED or tracing.silent():
            return await self._submit_async(None)
        with tracing.send(self.task.name, self.queue_name, len(self.args_list)) as trace:
            return await self._submit_async(trace)

    async def _submit_async(self, trace: str | None) -> list[Handle]:
        (job,) = list(self.make_jobs(trace))
        return self._handles([await self.app.group_commit.submit_async(job, self._queues())])


def enqueue_jobs(app: App, task: Task | str, args_list: list[Mapping[str, Any] | None], **options: Any) -> list[Handle]:
    """Enqueue ``args_list`` as jobs of ``task`` (the options of ``EnqueuePlan``)."""
    return EnqueuePlan(app, task, args_list, **options).traced()


async def enqueue_jobs_async(
    app: App, task: Task | str, args_list: list[Mapping[str, Any] | None], **options: Any
) -> list[Handle]:
    """``enqueue_jobs`` for a coroutine: checked in the event loop, written as ``write_async``."""
    return await EnqueuePlan(app, task, args_list, **options).write_async()


def check_enqueue_options(
    app: App,
    task: Task | str,
    *,
    count: int | None = None,
    id: str | None = None,
    queue: str | Queue | None = None,
    delay: Any = None,
    start_at: Any = None,
    retry: Retry | int | None = None,
    priority: int | None = None,
    tenant: str | None = None,
    limits: Iterable[str] | None = None,
    now: float | None = None,
    lane: str | None = None,
) -> tuple[tuple[str, ...], float, Retry, str | Queue, int]:
    """Check the options of an enqueue (``count`` items of a bulk one; None for a single
    job) as ``enqueue`` does, without writing: ``EnqueueError`` names what is wrong. Returns
    the limit names, run time, retry policy, queue and priority the jobs get. The CLI checks
    a file's options with it before reading the file."""
    the_task = app.get_task(task)
    try:
        limit_names = the_task.limits if limits is None else check_limit_names(limits)
    except ConfigError as exc:
        raise EnqueueError(str(exc)) from None
    for name in limit_names:
        if name not in app.limits:
            known = ", ".join(sorted(app.limits)) or "none"
            raise EnqueueError(f"unknown limit {name!r} (declared: {known}); declare it with app.limit()")
    try:
        check_lane(lane if lane is not None else the_task.lane, limit_names, app.limits)
    except ConfigError as exc:
        raise EnqueueError(str(exc)) from None
    if delay is not None and start_at is not None:
        raise EnqueueError("pass delay or start_at, not both")
    try:
        if id is not None:
            check_job_id(id)
            if count is not None:  # the items' ids are id-0, id-1, ...: the longest must fit too
                check_job_id(f"{id}-{max(count - 1, 0)}")
        if tenant is not None:
            check_tenant(tenant)
        now = time.time() if now is None else now
        if delay is not None:
            run_at = check_run_at(now + parse_duration(delay, name="delay"), now, "delay")
        elif start_at is not None:
            run_at = check_run_at(parse_instant(start_at), now, "start_at")
        else:
            run_at = now
        policy = Retry.coerce(retry, the_task.retry)
        job_queue = app._coerce_queue(queue) if queue is not None else the_task.queue
        job_priority = check_priority(the_task.priority if priority is None else priority)
    except ConfigError as exc:
        raise EnqueueError(str(exc)) from None
    return limit_names, run_at, policy, job_queue, job_priority


def check_shaping(
    task: Task, shaping: Mapping[str, Any], *, id: str | None, delay: Any, start_at: Any
) -> KeyPolicy | None:
    """The dedupe or debounce of an enqueue, and the options it cannot be combined with."""
    policy = task.key_policy_for(shaping)
    if policy is None:
        return None
    if id is not None:
        raise EnqueueError(f"pass id= or a {policy.kind} key, not both: each decides which job an enqueue returns")
    if policy.kind == "debounce" and (delay is not None or start_at is not None):
        raise EnqueueError("a debounced job runs when its window ends: pass no delay or start_at")
    return policy


def resolve_limits(
    app: App, names: tuple[str, ...], args: Mapping[str, Any], tenant: str | None, lane: str | None
) -> tuple[list[list[str]], str]:
    """The (limit, key) pairs a job holds, and its fairness group.

    The group is the tenant plus every (limit, key) held: round-robin between groups keeps
    one tenant's backlog from starving another, and a group whose limit is paused or spent
    holds back only jobs that share that limit. On a limit with lanes a job holds its
    lane's key (``limits.lane_key``), so each lane is a group of its own too.
    """
    held: list[list[str]] = []
    for name in names:
        spec = app.limits[name]
        try:
            key = resolve_key(spec.key, args, tenant)
        except ConfigError as exc:
            raise EnqueueError(f"limit {name!r}: {exc}") from None
        held.append([name, lane_key(key, lane or NO_LANE) if spec.lanes else key])
    parts = ([f"tenant={tenant}"] if tenant is not None else []) + [f"{n}={k}" for n, k in held]
    return held, "|".join(parts)


def segment_payload(
    app: App, task: Task, args: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any] | None, dict[str, list[str]]]:
    """Store a large ``payload=`` list in segments of at most ``segment_bytes``."""
    if task.payload is None or not isinstance(args, Mapping) or task.payload not in args:
        return args, {}
    items = args[task.payload]
    if not isinstance(items, (list, tuple)):
        raise EnqueueError(f"args: the payload argument {task.payload!r} must be a list")
    try:
        size = len(jsontext.dumps(items))  # ASCII: characters are bytes
    except (TypeError, ValueError) as exc:
        raise EnqueueError(f"args: {task.payload!r} is not JSON-serialisable: {exc}") from None
    if size <= app.segment_bytes:
        return args, {}
    pieces = split_segments(items, app.segment_bytes)
    marker = {SEGMENT_MARK: len(pieces), "count": len(items)}
    return {**args, task.payload: marker}, {task.payload: pieces}


def encode_args(app: App, task: Task, args: Mapping[str, Any] | None) -> str:
    if args is None:
        args = {}
    # a plain dict skips the (slower) abstract Mapping check
    if type(args) is not dict and not isinstance(args, Mapping):
        raise EnqueueError(f"args must be a dict of argument names to values, got {type(args).__name__}")
    for key in args:
        if not isinstance(key, str):
            raise EnqueueError(f"args: argument names must be strings, got {key!r}")
    task.check_args(args)
    try:
        # a plain dict is encoded as it is; any other mapping through a dict copy
        encoded = jsontext.dumps(args if type(args) is dict else dict(args))
    except (TypeError, ValueError) as exc:
        raise EnqueueError(f"args are not JSON-serialisable: {exc}") from None
    task.check_types(args)
    size = len(encoded)  # ASCII: characters are bytes
    if size > app.max_payload_bytes:
        raise EnqueueError(f"args are {size} bytes, over max_payload_bytes={app.max_payload_bytes}")
    return encoded
