"""What a task is: a registered function with its options (``Task``), and the queues tasks run
in (``Queue``). ``App.task`` makes them; ``App`` enqueues and runs them."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .argtypes import check_values, checks_for
from .context import Context
from .errors import ConfigError, EnqueueError
from .handle import Handle
from .inputs import check_int, check_name
from .retry import Retry
from .shaping import Batch, KeyPolicy, check_batch_function, key_policy

if TYPE_CHECKING:
    from .app import App

#: how many distinct sets of argument names a task remembers the binding outcome of; past
#: this (a ``**kwargs`` task fed ever new names) the rest are bound one by one, as before
BIND_MEMO_SIZE = 1024


@dataclass(frozen=True)
class Queue:
    """A named queue with a concurrency cap that holds across every worker on the store.

    As in a bulk-job API, a queue named without a cap runs one job at a time; pass
    ``max_concurrency=None`` for an unlimited queue.
    """

    name: str
    max_concurrency: int | None = 1

    def __post_init__(self) -> None:
        check_name(self.name, "queue name")
        cap = self.max_concurrency
        if cap is not None:
            check_int(cap, f"queue {self.name!r}: max_concurrency (an int >= 1 or None)", 1)


def qualified_name(cls: type) -> str:
    """A class's import path: how a job records its final error types."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Task:
    """A registered function with its options. Calling it runs the function directly."""

    def __init__(
        self,
        app: "App",
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str | Queue,
        retry: Retry,
        timeout: float | None,
        priority: int,
        limits: tuple[str, ...] = (),
        state: str | None = None,
        budget: float | None = None,
        margin: float | None = None,
        payload: str | None = None,
        retain_state: bool = False,
    ):
        self.app = app
        self.limits = limits
        #: the reserved lane of its limits its jobs run on (``App.limit(lanes=...)``), or None
        self.lane: str | None = None
        #: a shared state key template ("orders:{tenant}"), or None for per-job state
        self.state = state
        #: the run budget in seconds (time-limited runs that resume), and the margin that
        #: ``ctx.out_of_time()`` keeps in reserve
        self.budget = budget
        self.margin = margin if margin is not None else (min(max(budget * 0.1, 1.0), budget / 2) if budget else 0.0)
        #: the list argument stored in segments when it is large
        self.payload = payload
        #: keep the cursor, ledger and segments after completion (for audit)
        self.retain_state = retain_state
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retry = retry
        self.timeout = timeout
        self.priority = priority
        self.is_async = inspect.iscoroutinefunction(fn)
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        self.wants_context = bool(params) and (params[0].annotation in (Context, "Context") or params[0].name == "ctx")
        if self.wants_context:
            params = params[1:]
        self.signature = signature.replace(parameters=params)
        #: the type check of each annotated argument (``argtypes``), built once
        self._arg_checks = checks_for(fn, self.signature)
        #: argument names (in the order given) -> why they do not bind, or None when they do
        self._bind_memo: dict[tuple[str, ...], str | None] = {}
        #: the dedupe or debounce options declared with the task, and the policy they make
        self.key_options: dict[str, Any] = {}
        self.key_policy: KeyPolicy | None = None
        #: many queued items run in one call (``Batch``), or None
        self.batch: Batch | None = None
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def queue_name(self) -> str:
        return self.queue.name if isinstance(self.queue, Queue) else self.queue

    def check_args(self, args: Mapping[str, Any]) -> None:
        """Raise ``EnqueueError`` unless ``args`` fit the function's parameters.

        Binding keyword arguments depends on their names only, never on their values, so the
        outcome (and its message, which names the first offending argument in the order given)
        is remembered per tuple of names: a bulk enqueue of items with the same keys binds
        once, not once per item.
        """
        if self.batch is not None:
            return  # an item of a batch is any object: the function takes the list of them
        names = tuple(args)
        try:
            problem = self._bind_memo[names]
        except KeyError:
            try:
                self.signature.bind(**args)
                problem = None
            except TypeError as exc:
                problem = str(exc) + self._other_problems(names, str(exc))
            if len(self._bind_memo) < BIND_MEMO_SIZE:
                self._bind_memo[names] = problem
        if problem is not None:
            raise EnqueueError(f"args do not match {self.name}{self.signature}: {problem}")

    def check_types(self, args: Mapping[str, Any]) -> None:
        """Raise ``EnqueueError`` naming the first argument whose value does not fit its
        annotation (``argtypes``); called once the args are known to be JSON."""
        if self._arg_checks and self.batch is None:
            checks = self._arg_checks
            if self.payload is not None and isinstance(args.get(self.payload), dict):
                # a large list stored in segments: the job holds a marker in its place
                checks = {name: check for name, check in checks.items() if name != self.payload}
            wrong = check_values(checks, args)
            if wrong is not None:
                raise EnqueueError(f"args do not match {self.name}: {wrong}")

    def _other_problems(self, names: tuple[str, ...], first: str) -> str:
        """Binding names one problem; a user fixing a call wants all of them: every unexpected
        key as well as every missing argument."""
        params = self.signature.parameters
        extras = []
        required = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        missing = [n for n, p in params.items() if p.default is p.empty and p.kind in required and n not in names]
        if missing and not first.startswith("missing"):
            extras.append("missing " + ", ".join(repr(n) for n in missing))
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unexpected = [n for n in names if n not in params]
            if unexpected and "unexpected" not in first:
                extras.append("unexpected " + ", ".join(repr(n) for n in unexpected))
        return "".join(f"; {extra}" for extra in extras)

    def set_batch(self, batch: Batch | None) -> None:
        """Make the task a batch task (``ConfigError`` when its function cannot take a list)."""
        if batch is None:
            return
        if not isinstance(batch, Batch):
            raise ConfigError(f"task {self.name!r}: batch must be a floodway.Batch, got {batch!r}")
        check_batch_function(self.name, self.signature)
        if self.payload is not None or self.budget is not None:
            raise ConfigError(f"task {self.name!r}: a batch task takes no payload= or budget=")
        self.batch = batch

    def set_key_options(self, options: Mapping[str, Any]) -> None:
        """Declare the task's dedupe or debounce (``ConfigError`` names a bad option)."""
        self.key_policy = key_policy(options, f"task {self.name!r}", self.signature)
        self.key_options = {name: value for name, value in options.items() if value is not None}

    def key_policy_for(self, overrides: Mapping[str, Any]) -> KeyPolicy | None:
        """The dedupe or debounce of one enqueue: the task's, with the options the enqueue passed
        (``EnqueueError`` names a bad one)."""
        given = {name: value for name, value in overrides.items() if value is not None}
        if not given:
            return self.key_policy
        try:
            return key_policy({**self.key_options, **given}, f"enqueue of {self.name}", self.signature)
        except ConfigError as exc:
            raise EnqueueError(str(exc)) from None

    def gives_up_on(self, exc: BaseException, stored: Iterable[str] = ()) -> bool:
        """True when ``exc`` is one of the task's (or the job's) final error types."""
        names = set(stored) | {qualified_name(t) for t in self.retry.give_up_on}
        return any(qualified_name(t) in names for t in type(exc).__mro__)

    # sugar: my_task.enqueue({...}) == app.enqueue(my_task, {...})
    def enqueue(self, args: Mapping[str, Any] | None = None, **options: Any) -> Handle:
        return self.app.enqueue(self, args, **options)

    def enqueue_many(self, args_list: Sequence[Mapping[str, Any]], **options: Any) -> list[Handle]:
        return self.app.enqueue_many(self, args_list, **options)
