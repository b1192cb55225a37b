"""The checks and encodings of a task's and a job's options that ``App`` applies when a task
is declared and a job enqueued: resumable-run options, retry policies, limit names and
numbers, and the ids floodway makes for jobs."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import threading
import time
from typing import Any, Callable, Iterable

from .errors import ConfigError
from .inputs import check_int, check_name, check_tenant
from .jobs import Status
from .limits import NO_LANE, LimitSpec, template_fields
from .retry import Retry
from .store.base import JobFilter
from .tasks import qualified_name
from .units import parse_duration, parse_instant


def resumable_options(
    name: str,
    func: Callable[..., Any],
    state: str | None,
    budget: Any,
    margin: Any,
    payload: str | None,
    retain_state: bool,
) -> dict[str, Any]:
    options: dict[str, Any] = {"retain_state": bool(retain_state), "payload": payload, "state": state}
    if state is not None:
        template_fields(state, where=f"task {name!r}: state")
    if budget is not None:
        options["budget"] = parse_duration(budget, name=f"task {name!r}: budget", allow_zero=False)
    if margin is not None:
        if budget is None:
            raise ConfigError(f"task {name!r}: margin needs a budget")
        options["margin"] = parse_duration(margin, name=f"task {name!r}: margin")
        if options["margin"] >= options["budget"]:
            raise ConfigError(f"task {name!r}: the budget ({budget}) must be longer than its margin ({margin})")
    if payload is not None:
        params = inspect.signature(func).parameters
        if payload not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ConfigError(f"task {name!r}: payload {payload!r} is not one of its parameters")
    return options


def retry_json(policy: Retry) -> str:
    """The stored form of a retry policy (with its final error types by qualified name)."""
    # give_up_on is left out of a policy's equality, so it is part of the cache key itself
    return encode_retry(policy, policy.give_up_on)


@functools.lru_cache(maxsize=256)
def encode_retry(policy: Retry, give_up_on: tuple[type[BaseException], ...]) -> str:
    """Policies are frozen and few (one per task, plus per-call overrides): each is encoded
    once, not on every enqueue."""
    stored = policy.to_dict()
    stored["give_up_on"] = sorted({qualified_name(t) for t in give_up_on})
    return json.dumps(stored)


#: ids are made in batches of at most this many under one random prefix (a 4-digit counter)
_ID_BATCH = 0x10000


class _RandomBytes:
    """The operating system's random bytes, drawn a few KiB at a time and handed out in order.

    ``os.urandom`` is a system call that lets go of the GIL: one per single enqueue cost 13 µs
    of an enqueue from a busy event loop, mostly in waiting to take the GIL back from the thread
    that commits. The bytes are still the kernel's (job ids must stay unguessable: a tenant
    that could predict another's next id could take it first). Each byte is handed out once,
    and a forked child drops what its parent had drawn, so parent and child never share ids."""

    def __init__(self, size: int = 4096):
        self._size = size
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()  # (a lock the parent held while forking stays held here)
        self._pool, self._at = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._at + count > len(self._pool):
                self._pool, self._at = os.urandom(max(self._size, count)), 0
            self._at += count
            return self._pool[self._at - count : self._at]


_random = _RandomBytes()


def new_job_ids(count: int) -> list[str]:
    """``count`` fresh job ids of 32 lowercase hex digits (the length and alphabet of the
    ``uuid4().hex`` ids they replace).

    Twelve digits of milliseconds since the epoch, sixteen random digits drawn once per batch
    of up to 65,536 ids, then a four-digit counter. Ids made together are neighbours in every
    index keyed on them (the jobs' primary key, the events' job index), and later ones sort
    after earlier ones: a bulk insert writes a few index pages at the growing end instead of
    one random page per job. Two batches share ids only if they start in the same millisecond
    with the same 64 random bits.
    """
    if count == 1:  # a single enqueue's: the batch's first id
        return [f"{time.time_ns() // 1_000_000:012x}{_random.take(8).hex()}0000"]
    ids: list[str] = []
    for start in range(0, count, _ID_BATCH):
        prefix = f"{time.time_ns() // 1_000_000:012x}{_random.take(8).hex()}"
        ids.extend([f"{prefix}{n:04x}" for n in range(min(count - start, _ID_BATCH))])
    return ids


def check_limit_names(names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ConfigError(f"limits: expected a list of limit names, got the string {names!r}")
    out = tuple(names)
    for name in out:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"limits: {name!r} is not a limit name")
    return out


def check_limit_numbers(spec: LimitSpec) -> LimitSpec:
    """A limit's numbers must fit the stores: burst and concurrency in 32 bits, a finite rate."""
    check_int(spec.burst, f"limit {spec.name!r}: burst", 1)
    if spec.concurrency is not None:
        check_int(spec.concurrency, f"limit {spec.name!r}: concurrency", 1)
    for what, rate in (("rate", spec.rate), ("floor", spec.floor), ("ceiling", spec.ceiling)):
        if rate is not None and not (math.isfinite(rate.count) and math.isfinite(rate.period) and rate.interval > 0):
            raise ConfigError(f"limit {spec.name!r}: {what} {rate.count:g}/{rate.period:g}s is not a usable rate")
    return spec


def check_lane(lane: str | None, names: Iterable[str], specs: dict[str, LimitSpec]) -> str | None:
    """The lane a job runs on, checked against the limits it holds (declared ones): a lane must
    be declared by every limit of the job that has lanes, and ``lane=`` on a job none of whose
    limits has lanes is a mistake. A job that names no lane runs on the rest of each limit's
    rate (``NO_LANE``); a limit whose lanes take all of it has no rest: the job must name one."""
    laned = [name for name in names if name in specs and specs[name].lanes]
    if lane is not None:
        check_name(lane, "lane")
        if not laned:
            held = ", ".join(names) or "none"
            raise ConfigError(f"lane {lane!r}: none of the job's limits ({held}) has lanes")
        for name in laned:
            if lane not in dict(specs[name].lanes):
                known = ", ".join(lane for lane, _ in specs[name].lanes)
                raise ConfigError(f"lane {lane!r}: limit {name!r} has no such lane (its lanes: {known})")
        return lane
    for name in laned:
        if NO_LANE not in specs[name].lane_shares:
            known = ", ".join(lane for lane, _ in specs[name].lanes)
            raise ConfigError(
                f"limit {name!r} gives its whole rate to its lanes ({known}): name one with lane=, "
                "or leave part of the rate to jobs without a lane"
            )
    return None


def job_filter(
    *,
    status: Any = None,
    task: str | None = None,
    queue: str | None = None,
    tenant: str | None = None,
    created_after: Any = None,
    created_before: Any = None,
    error: str | None = None,
) -> JobFilter:
    """A bulk action's filter from values given by a person (the library, the CLI, the API):
    ``ConfigError`` names the first that is not valid."""
    names = [status] if isinstance(status, (str, Status)) else list(status or ())
    statuses: list[Status] = []
    for name in names:
        try:
            statuses.append(Status(name.lower() if isinstance(name, str) else name))
        except ValueError:
            raise ConfigError(f"status: {name!r} is not a job status ({', '.join(s.value for s in Status)})") from None
    for what, value in (("task", task), ("queue", queue)):
        if value is not None:
            check_name(value, what)
    if tenant is not None:
        check_tenant(tenant)
    if error is not None and (not isinstance(error, str) or not error.strip() or len(error) > 255):
        raise ConfigError(f"error: expected the text an error contains (1-255 characters), got {error!r}")
    after = parse_instant(created_after, name="created_after") if created_after is not None else None
    before = parse_instant(created_before, name="created_before") if created_before is not None else None
    if after is not None and before is not None and after >= before:
        raise ConfigError("created_after must be before created_before")
    return JobFilter(tuple(dict.fromkeys(statuses)), task, queue, tenant, after, before, error)
