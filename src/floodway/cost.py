"""Calls whose cost is known only after them: charged an estimate, settled with the real cost.

A GraphQL API charges each query by what it touched (Shopify: points out of a leaky bucket,
stated in the response body), so one request is not one token. ``ctx.http(limit=...,
cost=estimate, actual_cost=fn)`` charges the limit ``estimate`` tokens before each request
(``extensions={"floodway_cost": n}`` overrides it for one request); after the response,
``fn(response)`` says what the call really cost, and the difference is settled with the
limit key in the store (``store.settle``: a debt holds every worker's next admissions back,
a credit lets them in sooner; the arithmetic is ``floodway.limits.gcra_settle``).

``fn`` returns a number, ``None`` (nothing known: nothing settled) or a :class:`Cost`, which
may also carry the bucket the destination stated: its size, what is available and its
restore rate feed the key's learned quota through the same path as a usage header
(``floodway.quota``). :func:`graphql_cost` reads Shopify's ``extensions.cost``.

A reader that fails, or says something impossible (negative, NaN, not a number, more than
``ABSURD_BURSTS`` times the limit's burst), is ignored and logged once per limit: a bad reading
never raises into the job and never settles anything.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from .errors import ConfigError
from .limits import check_cost

log = logging.getLogger("floodway.cost")

__all__ = ["Cost", "graphql_cost", "ABSURD_BURSTS"]

#: a reported cost above this many bursts of the limit is a reader's bug, not a cost
ABSURD_BURSTS = 100
#: the request extension that overrides a client's estimate for one request
EXTENSION = "floodway_cost"


@dataclass(frozen=True)
class Cost:
    """What a call really cost, and optionally the destination's bucket after it."""

    actual: float | None
    maximum: float | None = None  # the bucket's size
    available: float | None = None  # what is left in it
    restore_rate: float | None = None  # what comes back per second

    def usage(self) -> tuple[float, float, float] | None:
        """``(used, size, leak per second)`` for the learned quota, or None when the bucket
        is not (sensibly) stated."""
        size, left, leak = self.maximum, self.available, self.restore_rate
        if not all(_number(v) for v in (size, left, leak)):
            return None
        assert size is not None and left is not None and leak is not None
        if not (0 < size < 1e9 and 0 <= left <= size and 0 < leak < 1e9):
            return None
        return float(size - left), float(size), float(leak)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def graphql_cost(response: httpx.Response) -> Cost | None:
    """Shopify's GraphQL cost object: ``extensions.cost.actualQueryCost`` and
    ``extensions.cost.throttleStatus`` (``maximumAvailable``, ``currentlyAvailable``,
    ``restoreRate``). None when the body carries none (a refusal's ``actualQueryCost`` is null:
    nothing is settled, only the bucket is read)."""
    try:
        body = response.json()
    except ValueError:
        return None
    cost = body.get("extensions", {}).get("cost") if isinstance(body, dict) else None
    if not isinstance(cost, dict):
        return None
    status = cost.get("throttleStatus")
    status = status if isinstance(status, dict) else {}
    return Cost(
        actual=cost.get("actualQueryCost"),
        maximum=status.get("maximumAvailable"),
        available=status.get("currentlyAvailable"),
        restore_rate=status.get("restoreRate"),
    )


_WARNED: set[str] = set()


def _warn_once(limit: str, message: str, *args: Any) -> None:
    """One line per limit and process: a reader that is wrong is wrong for every request."""
    if limit not in _WARNED and len(_WARNED) < 1000:
        _WARNED.add(limit)
        log.warning(message, *args)


class Settlement:
    """One client's cost rules: the estimate (checked when the client is made), a request's
    own override, and the reading of the real cost after a response."""

    def __init__(self, limit: str | None, burst: int, cost: Any, actual_cost: Any):
        where = f"ctx.http: limit {limit!r}"
        if limit is None and (cost != 1 or actual_cost is not None):
            raise ConfigError("ctx.http: cost= and actual_cost= need a limit= to charge")
        self.limit = limit or ""
        self.burst = burst
        self.cost = check_cost(cost, burst, where)
        if actual_cost is not None and not callable(actual_cost):
            raise ConfigError(f"{where}: actual_cost must be a function of the response, got {actual_cost!r}")
        self.reader: Callable[[httpx.Response], Any] | None = actual_cost

    def estimate(self, request: httpx.Request) -> int:
        """What this request is charged: its ``floodway_cost`` extension, else the client's."""
        if EXTENSION not in request.extensions:
            return self.cost
        return check_cost(request.extensions[EXTENSION], self.burst, f"ctx.http: limit {self.limit!r}")

    def read(self, response: httpx.Response, charged: int) -> tuple[float, tuple[float, float, float] | None]:
        """(tokens to settle: actual - charged, the stated bucket) — never raises."""
        assert self.reader is not None
        try:
            value = self.reader(response)
        except Exception as exc:
            _warn_once(self.limit, "limit %r: actual_cost raised %r; its costs are not settled", self.limit, exc)
            return 0.0, None
        usage = value.usage() if isinstance(value, Cost) else None
        actual = value.actual if isinstance(value, Cost) else value
        if actual is None:
            return 0.0, usage
        if not _number(actual) or actual < 0 or actual > ABSURD_BURSTS * self.burst:
            _warn_once(
                self.limit,
                "limit %r: ignoring an impossible actual cost %r (a cost is a number from 0 to %d)",
                self.limit,
                actual,
                ABSURD_BURSTS * self.burst,
            )
            return 0.0, usage
        return float(actual) - charged, usage


def buffered(response: httpx.Response, raw: bytes, request: httpx.Request) -> tuple[httpx.Response, httpx.Response]:
    """A response whose body was read here: (the one handed on, unread, so the client decodes
    it and times it as usual; a decoded copy for the cost reader)."""
    handed = httpx.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
    )
    probe = httpx.Response(status_code=response.status_code, headers=response.headers, content=raw, request=request)
    return handed, probe


async def read_async(response: httpx.Response, request: httpx.Request) -> tuple[httpx.Response, httpx.Response]:
    try:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return buffered(response, raw, request)


def read_sync(response: httpx.Response, request: httpx.Request) -> tuple[httpx.Response, httpx.Response]:
    try:
        raw = b"".join(response.iter_raw())
    finally:
        response.close()
    return buffered(response, raw, request)
