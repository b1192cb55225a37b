"""The ``Context`` a task receives when its first parameter is annotated ``Context`` or named
``ctx``: what the running job is, and the tools to pace it against shared limits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Sequence

from . import tracing
from .errors import ConfigError, LeaseLost, RateLimited
from .flows import run_step
from .http import client_for
from .jobs import Job
from .limits import MAX_HORIZON, resolve_key, split_lane
from .resumable import (
    ContinueLater,
    Pages,
    Records,
    bounded_map,
    call_maybe_async,
    current_idempotency_key,
    decode_result,
    encode_result,
    idempotency_key,
    ledger_entry,
)
from .units import parse_duration

if TYPE_CHECKING:
    from .app import App


class Context:
    """The running job as seen from inside its task."""

    def __init__(
        self,
        app: "App",
        job: Job,
        worker_id: str,
        *,
        cursor: Any = None,
        budget: float | None = None,
        margin: float = 0.0,
    ):
        self.app = app
        self.job = job
        self.worker_id = worker_id
        self._cursor = cursor
        self._ledger: dict[str, str | None] | None = None
        self.checkpoints = 0
        self.budget = budget
        self.margin = margin
        self.started = time.monotonic()
        #: set by the worker when the job (or its queue) is paused from outside
        self.pause_requested = False
        self._steps: dict[str, Any] | None = None
        #: the worker's event loop, so sync tasks can run the async helpers on it
        self.loop: asyncio.AbstractEventLoop | None = None
        self._logger: logging.Logger | None = None
        #: seconds this run spent waiting on limits (added to the job's throttling overhead)
        self.throttled_seconds = 0.0
        #: set by the worker (monotonic instants; None outside a worker): when this run's lease
        #: runs out unless renewed, and until when its worker's heartbeats prove that no other
        #: worker can have taken the job (see ``floodway.liveness``)
        self.lease_deadline: float | None = None
        self.owned_until: float | None = None
        self._lost: str | None = None
        # admission at claim took one token of each rate limit the job holds: the job's first
        # call against that limit spends it instead of taking another
        self._prepaid: dict[tuple[str, str], int] = {}
        # a token the store booked for a later moment (``acquire``'s horizon): the job sleeps
        # until then and spends it, unless the key was paused or refused in between
        self._booked: dict[tuple[str, str], float] = {}
        #: when the token of the latest request of each (limit, key) was issued: a refusal of a
        #: request admitted before the rate was last cut belongs to the same round (see quota)
        self._token_at: dict[tuple[str, str], float] = {}
        #: a batch run: the jobs of its items, in the order of the list the function takes;
        #: the items ``fail`` marked, by index, with their errors
        self.batch: list[Job] = []
        self.failed_items: dict[int, BaseException] = {}
        for name, key in job.limits:
            spec = app.limits.get(name)
            if spec is None or spec.rate is not None or spec.adaptive:  # a rate, declared or learned
                self._prepaid[(name, split_lane(key)[0])] = 1

    @property
    def steps(self) -> list[Any]:
        """The flow steps this run has loaded or recorded (``StepRecord``s), in order; empty for
        a job that is not a flow."""
        return list((self._steps or {}).values())

    async def step_records(self) -> dict[str, Any]:
        """This job's flow steps by id, read from the store on first use and kept for the run:
        ``floodway.flows`` looks up finished steps in it and adds each step that ends."""
        if self._steps is None:
            loaded: dict[str, Any] = await asyncio.to_thread(self.app.store.load_steps, self.job_id)
            self._steps = loaded
            return loaded
        return self._steps

    @property
    def logger(self) -> logging.Logger:
        """The task's logger, ``floodway.task.<task name>`` (looked up on first use: most runs
        never log, and the lookup takes a lock)."""
        if self._logger is None:
            self._logger = logging.getLogger(f"floodway.task.{self.job.task}")
        return self._logger

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

    # -- batches ------------------------------------------------------------------------------
    def fail(self, index: int, error: BaseException | str) -> None:
        """In a batch run: item ``index`` failed (the others did not); only it is retried, in
        a later batch, per its own retry policy (an exception type the task gives up on fails
        it for good)."""
        if not self.batch:
            raise ConfigError("ctx.fail(index, error) marks an item of a batch; this run is not a batch")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.batch):
            raise ConfigError(f"ctx.fail: index must be 0..{len(self.batch) - 1}, got {index!r}")
        if not isinstance(error, BaseException):
            error = Exception(str(error))
        self.failed_items[index] = error

    # -- ownership ----------------------------------------------------------------------------
    def lose_lease(self, why: str) -> None:
        """Called by the worker when this run no longer owns its job: every further
        ``http``/``once``/``checkpoint``/``acquire``/``step`` call raises ``LeaseLost``."""
        if self._lost is None:
            self._lost = why

    def _ownership(self) -> float | None:
        """None while this run surely owns its job; seconds to wait while that is unproven
        (its worker's heartbeat has not got through lately: the database is slow or away);
        ``LeaseLost`` once it may have lost it (its worker learnt so, or the lease ran out
        without a renewal: the worker stalled, and another worker may run the job now)."""
        if self._lost is not None:
            raise LeaseLost(f"job {self.job.id}: this run (attempt {self.job.attempt}) lost its lease: {self._lost}")
        if self.lease_deadline is None:
            return None
        now = time.monotonic()
        if now >= self.lease_deadline:
            raise LeaseLost(
                f"job {self.job.id}: this run's lease (attempt {self.job.attempt}) ran out before "
                f"its worker renewed it; another worker may own the job"
            )
        if self.owned_until is None or now < self.owned_until:
            return None
        return min(0.05, self.lease_deadline - now)

    def ensure_owned(self) -> None:
        """Return once this run is known to own its job, or raise ``LeaseLost``: called before
        every side effect floodway makes for a task (``http``, ``once``, ``checkpoint``,
        ``acquire``, ``step``). Blocks while ownership is unproven: for sync tasks (threads);
        async code awaits ``owned()``."""
        while (wait := self._ownership()) is not None:
            time.sleep(wait)

    async def owned(self) -> None:
        """``ensure_owned`` for async code."""
        while (wait := self._ownership()) is not None:
            await asyncio.sleep(wait)

    # -- resumable work ---------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Where the cursor and ledger live: the job's own, or the task's shared ``state=``."""
        return self.job.state_key

    @property
    def cursor(self) -> Any:
        """The last checkpointed position (None before the first checkpoint)."""
        return self._cursor

    async def checkpoint(self, value: Any) -> None:
        """Save ``value`` as the cursor, durably and atomically with the job's state, and clear
        the once-ledger (everything before the cursor is done). A rescued, retried or resumed
        run starts here."""
        await self.owned()
        text = self._encode_cursor(value)
        self.checkpoints = await asyncio.to_thread(
            self.app.store.checkpoint, self.job.id, self.worker_id, self.job.attempt, self.state_key, text
        )
        self._cursor = json.loads(text)
        self._ledger = {}
        tracing.event("floodway.checkpoint", **{"floodway.checkpoints": self.checkpoints})

    def checkpoint_sync(self, value: Any) -> None:
        """``checkpoint`` for sync tasks."""
        self.ensure_owned()
        text = self._encode_cursor(value)
        self.checkpoints = self.app.store.checkpoint(
            self.job.id, self.worker_id, self.job.attempt, self.state_key, text
        )
        self._cursor = json.loads(text)
        self._ledger = {}

    @staticmethod
    def _encode_cursor(value: Any) -> str:
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint: the cursor must be JSON (a number, string, list or dict): {exc}") from None

    async def once(self, key: str | int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` at most once per ``key`` under this state.

        The key and the result are recorded when ``fn`` returns; a rerun (after a crash, a
        retry, a 429 or a budget) returns the recorded result without calling ``fn``. Calls made
        through ``ctx.http`` inside ``fn`` carry ``Idempotency-Key``, derived from the state and
        the key, so an idempotent destination applies each record exactly once even if the
        process dies between the call and the record. An httpx error response (4xx/5xx) raises
        instead of being recorded.
        """
        entry = ledger_entry(key)
        if self._ledger is None:
            self._ledger = await asyncio.to_thread(self.app.store.load_ledger, self.state_key)
        if entry in self._ledger:
            return decode_result(self._ledger[entry])
        await self.owned()
        token = current_idempotency_key.set(idempotency_key(self.state_key, entry))
        try:
            result = await call_maybe_async(fn, *args, **kwargs)
        finally:
            current_idempotency_key.reset(token)
        _raise_for_error_response(result)
        text = encode_result(result)
        await asyncio.to_thread(
            self.app.store.record_once, self.job.id, self.worker_id, self.job.attempt, self.state_key, entry, text
        )
        self._ledger[entry] = text
        return result

    def once_sync(self, key: str | int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``once`` for sync tasks."""
        entry = ledger_entry(key)
        if self._ledger is None:
            self._ledger = self.app.store.load_ledger(self.state_key)
        if entry in self._ledger:
            return decode_result(self._ledger[entry])
        self.ensure_owned()
        token = current_idempotency_key.set(idempotency_key(self.state_key, entry))
        try:
            result = fn(*args, **kwargs)
        finally:
            current_idempotency_key.reset(token)
        _raise_for_error_response(result)
        text = encode_result(result)
        self.app.store.record_once(self.job.id, self.worker_id, self.job.attempt, self.state_key, entry, text)
        self._ledger[entry] = text
        return result

    def idempotency_key(self, key: str | int) -> str:
        """The ``Idempotency-Key`` sent for ``key`` (for clients other than ``ctx.http``)."""
        return idempotency_key(self.state_key, ledger_entry(key))

    def time_left(self) -> float | None:
        """Seconds left of the run budget (None without a budget)."""
        if self.budget is None:
            return None
        return self.budget - (time.monotonic() - self.started)

    def out_of_time(self) -> bool:
        """True when what is left of the budget is below the margin, or the job was paused:
        finish the current record, checkpoint, and ``return ctx.continue_later()``."""
        if self.pause_requested:
            return True
        left = self.time_left()
        return left is not None and left < self.margin

    def continue_later(self, delay: Any = None) -> ContinueLater:
        """End this run with the cursor saved; the same job runs again (after ``delay``),
        spending no attempt. ``return ctx.continue_later()`` from the task."""
        return ContinueLater(parse_duration(delay, name="continue_later delay") if delay is not None else None)

    def pages(
        self,
        fetch_page: Callable[[Any], Awaitable[Sequence[Any]] | Sequence[Any]],
        *,
        start: Any = ...,
        position: Callable[[Any], Any] | None = None,
    ) -> Pages:
        """Walk an API page by page from the cursor: see ``floodway.resumable.Pages``."""
        if position is None:
            return Pages(self, fetch_page, start=start)
        return Pages(self, fetch_page, start=start, position=position)

    async def map(self, items: Iterable[Any], fn: Callable[[Any], Any], *, concurrency: int = 1) -> list[Any]:
        """``fn`` over ``items`` with at most ``concurrency`` at once (like p-map), in order."""
        return await bounded_map(items, fn, concurrency=concurrency)

    def records(self, arg: str) -> Records:
        """The items of list argument ``arg`` (stored in segments when large), resumed at the
        cursor: see ``floodway.resumable.Records``."""
        return Records(self, arg)

    # -- flows --------------------------------------------------------------------------------
    async def step(
        self,
        step_id: str,
        fn: Callable[..., Any],
        *args: Any,
        kind: str = "default",
        critical: bool = True,
        throttle: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as durable step ``step_id`` of this flow.

        A finished step's result is stored: a retried, rescued or resumed job gets it back
        without running ``fn`` again. ``kind`` picks the per-kind throttling defaults
        (``http_request``, ``oauth_api_call``, ``sandbox_sync``, ``sandbox_async``,
        ``code_execution``, ``data_transform``, ``conditional``, ``event_publish``, or the global
        defaults for any other kind); ``throttle=`` overrides them for this step. A critical
        step that fails all its attempts fails the job; a non-critical one returns None and
        the flow goes on.
        """
        await self.owned()
        with tracing.span(f"step {step_id}", **{"floodway.step.id": step_id, "floodway.step.kind": kind}):
            return await run_step(self, step_id, fn, args, kwargs, kind=kind, critical=critical, throttle=throttle)

    def step_sync(self, step_id: str, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        """``step`` for sync tasks: runs on the worker's loop; ``fn`` runs in a thread."""
        if self.loop is None:
            raise RuntimeError("step_sync is only available inside a running job")
        known = {k: options.pop(k) for k in ("kind", "critical", "throttle") if k in options}

        async def in_thread() -> Any:
            return await asyncio.to_thread(fn, *args, **options)

        future = asyncio.run_coroutine_threadsafe(self.step(step_id, in_thread, **known), self.loop)
        return future.result()

    # -- limits -----------------------------------------------------------------------------
    def limit_key(self, name: str) -> str:
        """The key of limit ``name`` for this job (its own, or resolved from its args)."""
        for held, key in self.job.limits:
            if held == name:
                # a job on a lane takes tokens, learns and pauses on its key: lanes split only
                # the admissions of a claim
                return split_lane(key)[0]
        spec = self.app.limits.get(name)
        if spec is None:
            raise ConfigError(f"unknown limit {name!r}; declare it with app.limit()")
        return resolve_key(spec.key, self.job.args, self.job.tenant)

    def _try_acquire(self, name: str, key: str, cost: int) -> float | None:
        """One try at a token (blocking store calls): None when taken, else seconds to wait.

        The token the job's admission took is spent first — unless the key was paused after
        the job was admitted, or this process is telling the store of a refusal on it: then
        that token is void and the job queues for a fresh one, so jobs admitted just before a
        429 neither follow it into the full window nor all fire at the reset.

        A fresh token is booked in the key's line (up to ``MAX_HORIZON`` ahead), the way a
        claim books its jobs': the job then waits for its moment and spends it. Asking for one
        free right now instead would lose, round after round, to the claims that keep booking
        every coming slot, and the job would poll the key's row until the backlog ran dry.
        """
        pair = (name, key)
        held = self.app.pauses.held_until(name, key)
        if held is not None:  # a refusal of this process is being told to the store
            self._prepaid[pair] = 0  # (booked at the pace just refused)
            self._booked.pop(pair, None)
            return max(held - time.time(), 0.0)
        booked = self._booked.pop(pair, None)
        if booked is not None and _not_paused_since(self.app.pauses.paused_until(name, key), booked):
            early = booked - time.time()
            if early > 0:  # woken before the booked moment
                self._booked[pair] = booked
                return early
            self._token_at[pair] = booked
            return None
        prepaid = False
        if self._prepaid.get(pair, 0) > 0:
            prepaid = self._prepaid_holds(pair, self.app.pauses.paused_until(name, key))
        if prepaid and cost == 1:
            self._spend_prepaid(pair)
            return None
        # a larger cost counts the admission's token as its first: the key is charged `cost`
        horizon = min(self.app.wait_in_place, MAX_HORIZON)
        ok, at = self.app.store.acquire(name, key, cost - 1 if prepaid else cost, horizon)
        now = time.time()
        if ok and prepaid:
            self._prepaid[pair] -= 1
        if ok and at <= now:
            self._token_at[pair] = now
            return None
        if ok:
            self._booked[pair] = at
        return max(at - now, 0.0)

    def _prepaid_holds(self, pair: tuple[str, str], paused_until: float) -> bool:
        """Whether the admission's token is still good: the key was not paused since."""
        if _not_paused_since(paused_until, self.job.started_at or 0):
            return True
        self._prepaid[pair] = 0
        return False

    def _spend_prepaid(self, pair: tuple[str, str]) -> None:
        self._prepaid[pair] -= 1
        self._token_at[pair] = self.job.started_at or time.time()

    def _wait_or_reschedule(self, name: str, key: str, wait: float) -> float:
        if wait > self.app.wait_in_place:
            raise RateLimited(retry_after=wait, key=key, reason=f"limit {name!r} has no budget now")
        self.throttled_seconds += wait
        return wait

    async def acquire(self, name: str, *, key: str | None = None, cost: int = 1) -> None:
        """Take a token from limit ``name`` before a call, waiting for it if need be.

        A wait of up to the app's ``wait_in_place`` is slept here, keeping the job's slot;
        a longer one raises ``RateLimited`` so the job goes back to ``scheduled`` until then
        without spending an attempt (and without holding a worker slot).
        """
        await self.owned()
        key = self.limit_key(name) if key is None else key
        # the admission's token, with a fresh reading of the key's pause: no thread, no store
        pair = (name, key)
        if cost == 1 and self._prepaid.get(pair, 0) > 0:
            until = self.app.pauses.fresh(name, key)
            if until is not None and self._prepaid_holds(pair, until):
                self._spend_prepaid(pair)
                return
        wait = await asyncio.to_thread(self._try_acquire, name, key, cost)
        if wait is None:
            return
        with tracing.span(f"wait {name}", **{"floodway.limit": name, "floodway.limit.key": key}):
            while wait is not None:
                await asyncio.sleep(self._wait_or_reschedule(name, key, wait))
                wait = await asyncio.to_thread(self._try_acquire, name, key, cost)

    def acquire_sync(self, name: str, *, key: str | None = None, cost: int = 1) -> None:
        """``acquire`` for sync tasks (which run in a thread)."""
        self.ensure_owned()
        key = self.limit_key(name) if key is None else key
        while (wait := self._try_acquire(name, key, cost)) is not None:
            time.sleep(self._wait_or_reschedule(name, key, wait))

    def http(
        self,
        base_url: str = "",
        *,
        limit: str | None = None,
        throttled: Any = None,
        cost: int = 1,
        actual_cost: Any = None,
        **options: Any,
    ) -> Any:
        """An ``httpx.AsyncClient`` that takes a token from ``limit`` before each request and
        learns the destination's quota from its answers (see ``floodway.http`` and
        ``floodway.quota``). ``throttled``: extra statuses that mean "quota" for this API
        (``[403]``), or a predicate ``fn(response) -> bool``. ``cost``: the tokens each request
        is charged (an estimate; ``extensions={"floodway_cost": n}`` overrides it per request);
        ``actual_cost``: ``fn(response)`` -> what the call really cost (or
        ``floodway.graphql_cost``), settled with the limit after each response (see
        ``floodway.cost``). Use ``async with``. Its connections come from the worker's shared
        pool for these transport options (``verify``, ``cert``, ``http2``, ``limits``,
        ``proxy``); closing the client leaves the pool open."""
        return client_for(
            self,
            base_url=base_url,
            limit=limit,
            sync=False,
            throttled=throttled,
            cost=cost,
            actual_cost=actual_cost,
            **options,
        )

    def http_sync(
        self,
        base_url: str = "",
        *,
        limit: str | None = None,
        throttled: Any = None,
        cost: int = 1,
        actual_cost: Any = None,
        **options: Any,
    ) -> Any:
        """The sync twin of ``http`` (an ``httpx.Client``) for sync tasks."""
        return client_for(
            self,
            base_url=base_url,
            limit=limit,
            sync=True,
            throttled=throttled,
            cost=cost,
            actual_cost=actual_cost,
            **options,
        )


def _not_paused_since(paused_until: float, moment: float) -> bool:
    """Whether a token admitted or booked for ``moment`` is still good: no pause of its key
    reaches past that moment (a pause set later ends later, and voids it)."""
    return paused_until <= moment


def _raise_for_error_response(result: Any) -> None:
    try:
        import httpx
    except ImportError:  # pragma: no cover
        return
    if isinstance(result, httpx.Response) and result.is_error:
        result.raise_for_status()
