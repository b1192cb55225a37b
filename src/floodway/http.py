"""The rate-limit-aware HTTP client behind ``ctx.http``.

Before each request it takes a token from its limit (shared by every worker, paced at the
key's effective rate: see ``floodway.quota``); after each response it reads what the server
says about its quota:

- ``Retry-After`` (delta-seconds or an HTTP-date), ``X-RateLimit-Reset`` (epoch seconds, epoch
  milliseconds or delta seconds), ``RateLimit-Reset`` (delta seconds), ``X-RateLimit-Limit`` /
  ``-Remaining``, the IETF ``RateLimit`` / ``RateLimit-Policy`` fields (``limit=10,
  remaining=0, reset=5`` and the structured ``"default";r=0;t=5`` / ``"default";q=100;w=60``
  forms) and a leaky bucket's usage (``X-Shopify-Shop-Api-Call-Limit: 32/40``);
- a refusal is a 429, a 503 with a reset, any 4xx saying the budget is 0 (GitHub's 403), or
  what the task names with ``throttled=``. It never spends an attempt. A refusal asking for a
  short wait is congestion: the key's rate is cut for every worker (once per round) and the
  request is sent again when the slower pace gives it a token. One asking for a long wait (or
  saying the budget is 0) is an exhausted quota: the key is paused for every worker until the
  reset; a short pause is slept here, a longer one raises ``RateLimited`` so the job is
  rescheduled for the reset;
- accepted responses are counted, and their quota headers kept, in the process and reported
  to the store at most every ``REPORT_INTERVAL`` per key: the response path neither writes
  nor leaves the event loop in between.

Unreadable header values are ignored (and logged once), never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import httpx

from . import tracing
from .cost import Settlement, read_async, read_sync
from .errors import ConfigError, RateLimited
from .http_pools import TRANSPORT_OPTIONS, close_pools, new_transport, pool_key, pools_for, prepare, transport_kind
from .http_reports import reports_of
from .quota import Observation, classify_wait, overflow_retry
from .resumable import current_idempotency_key
from .retry import Retry

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger("floodway.http")

__all__ = ["QuotaInfo", "parse_quota_headers", "client_for", "close_pools", "prepare"]

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
#: a larger X-RateLimit-Reset is an epoch timestamp, not a delta
_EPOCH_THRESHOLD = 10**9
#: no server can pause a limit for longer than this (an absurd Retry-After is a bug, not a plan)
MAX_RESET_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class QuotaInfo:
    """What a response says about the quota: all fields optional."""

    reset_at: float | None = None  # Unix time when budget returns
    remaining: int | None = None
    limit: int | None = None
    window: float | None = None  # seconds the `limit` applies to


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    match = _NUMBER.match(value)
    return float(match.group(1)) if match else None


def _count(value: float | None) -> int | None:
    """A quota count: absurdly large (even infinite) numbers are ignored, never a crash."""
    return int(value) if value is not None and value < 1e15 else None


def _retry_after(value: str, now: float) -> float | None:
    seconds = _number(value)
    if seconds is not None:
        return now + seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(now, when.timestamp())


def _reset_value(value: str, now: float) -> float | None:
    number = _number(value)
    if number is None:
        return None
    if number > _EPOCH_THRESHOLD * 100:  # epoch milliseconds
        return max(now, number / 1000)
    if number > _EPOCH_THRESHOLD:
        return max(now, number)
    return now + number


def _params(value: str) -> dict[str, str]:
    """``limit=10, remaining=0, reset=5`` or ``"default";r=0;t=5`` -> {"limit": ..., ...}."""
    out: dict[str, str] = {}
    for item in re.split(r"[;,]", value):
        if "=" in item:
            k, _, v = item.partition("=")
            out[k.strip().lower()] = v.strip().strip('"')
    return out


def parse_quota_headers(headers: Mapping[str, str], now: float | None = None) -> QuotaInfo:
    """Read the rate-limit headers of a response. Never raises: garbage is ignored."""
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in headers.items()}
    reset_at = remaining = limit = window = None

    if "retry-after" in h:
        reset_at = _retry_after(h["retry-after"], now)
    for name in ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"):
        if reset_at is None and name in h:
            reset_at = _reset_value(h[name], now)
    for name in ("x-ratelimit-remaining", "ratelimit-remaining", "x-rate-limit-remaining"):
        if remaining is None and name in h:
            remaining = _count(_number(h[name]))
    for name in ("x-ratelimit-limit", "ratelimit-limit", "x-rate-limit-limit"):
        if limit is None and name in h:
            limit = _count(_number(h[name].split(",")[0].split(";")[0]))

    if "ratelimit" in h:  # IETF draft: combined field
        p = _params(h["ratelimit"])
        r = _number(p.get("remaining", p.get("r")))
        t = _number(p.get("reset", p.get("t")))
        q = _number(p.get("limit", p.get("q")))
        if remaining is None and r is not None:
            remaining = _count(r)
        if reset_at is None and t is not None:
            reset_at = now + t
        if limit is None and q is not None:
            limit = _count(q)
    if "ratelimit-policy" in h:
        p = _params(h["ratelimit-policy"])
        q = _number(p.get("q"))
        w = _number(p.get("w"))
        if q is None:  # older form: "100;w=60"
            q = _number(h["ratelimit-policy"].split(";")[0].split(",")[0])
        if limit is None and q is not None:
            limit = _count(q)
        if w is not None and w > 0 and w != float("inf"):
            window = w
    if window is None and "x-ratelimit-window" in h:
        window = _number(h["x-ratelimit-window"])
    if reset_at is not None and reset_at > now + MAX_RESET_SECONDS:
        log.warning("a rate-limit reset %.0fs away was capped at %.0fs", reset_at - now, MAX_RESET_SECONDS)
        reset_at = now + MAX_RESET_SECONDS
    return QuotaInfo(reset_at, remaining, limit, window)


#: a usage header: ``X-Shopify-Shop-Api-Call-Limit: 32/40`` (used/size of a leaky bucket)
_USAGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_USAGE_HEADERS = ("x-shopify-shop-api-call-limit", "x-ratelimit-usage")


def parse_usage(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """``used/size`` from a usage header, or None (a size of 0 or used > size is nonsense)."""
    for name in _USAGE_HEADERS:
        value = headers.get(name)
        if value is not None:
            match = _USAGE.match(value)
            if match:
                used, size = float(match.group(1)), float(match.group(2))
                if 0 < size < 1e9 and 0 <= used <= size:
                    return used, size
            _log_once(f"usage:{name}", "ignoring an unreadable %s header: %r", name, value)
    return None


_LOGGED: set[str] = set()
_NOTHING = QuotaInfo()
_QUOTA_HEADER = re.compile(r"ratelimit|rate-limit|retry-after", re.IGNORECASE)


def _log_once(what: str, message: str, *args: Any) -> None:
    """Bad headers are logged once per process and kind, not once per response."""
    if what not in _LOGGED and len(_LOGGED) < 1000:
        _LOGGED.add(what)
        log.warning(message, *args)


def _default_throttled(response: httpx.Response, info: QuotaInfo) -> bool:
    """A quota answer whatever its status: a 429; a 503 with a reset; any 4xx saying the
    budget is 0 (GitHub answers 403 with ``X-RateLimit-Remaining: 0``)."""
    status = response.status_code
    if status == 429:
        return True
    if status == 503 and info.reset_at is not None:
        return True
    return 400 <= status < 500 and info.remaining == 0


def throttle_rule(throttled: Any) -> Callable[[httpx.Response, QuotaInfo], bool]:
    """``ctx.http(throttled=...)``: None (the default rule), statuses (``[403, 420]``, added to
    the default rule) or a predicate ``fn(response) -> bool`` (replacing it)."""
    if throttled is None:
        return _default_throttled
    if callable(throttled):
        return lambda response, info: bool(throttled(response))
    try:
        statuses = frozenset(int(s) for s in throttled)
    except (TypeError, ValueError):
        statuses = frozenset()
    if not statuses or any(not 100 <= s <= 599 for s in statuses):
        raise ConfigError(
            f"ctx.http: throttled must be a list of HTTP statuses or a function of the response, got {throttled!r}"
        )
    return lambda response, info: response.status_code in statuses or _default_throttled(response, info)


class _Pacer:
    """The shared logic of the async and sync transports: what to do after each response."""

    def __init__(
        self, ctx: "Context", limit: str | None, throttled: Any = None, cost: Any = 1, actual_cost: Any = None
    ):
        self.ctx = ctx
        self.limit = limit
        self.key = ctx.limit_key(limit) if limit is not None else None
        self.pair = (limit or "", self.key or "")
        self.is_throttled = throttle_rule(throttled)
        burst = ctx.app.limits[limit].burst if limit is not None else 1
        self.costs = Settlement(limit, burst, cost, actual_cost)

    def settle(self, response: httpx.Response, charged: int, refused: bool, usage: Any) -> tuple[float, Any]:
        """(tokens to settle, the usage to report) after a response read by the cost reader: a
        refusal settles nothing (it is sent again, charged again), but its bucket is read."""
        delta, stated = self.costs.read(response, charged)
        return (0.0 if refused else delta), (stated or usage)

    @contextlib.contextmanager
    def holding(self, refused: bool) -> Iterator[None]:
        """While a refusal is told to the store, this process's other jobs send nothing on the
        key (see ``RecentPauses.hold``)."""
        if not refused or self.limit is None:
            yield
            return
        pauses, key = self.ctx.app.pauses, self.key or ""
        pauses.hold(self.limit, key)
        try:
            yield
        finally:
            pauses.release(self.limit, key)

    def token_at(self) -> float | None:
        return self.ctx._token_at.get(self.pair) if self.limit is not None else None

    def read(
        self, request: httpx.Request, response: httpx.Response, now: float
    ) -> tuple[bool, QuotaInfo, tuple[float, float] | None]:
        """(refused?, what the headers say, usage) — pure, on the event loop."""
        info = parse_quota_headers(response.headers, now)
        usage = parse_usage(response.headers) if self.limit is not None else None
        if info == _NOTHING and any(_QUOTA_HEADER.search(name) for name in response.headers):
            _log_once(
                f"unreadable:{request.url.host}",
                "ignoring unreadable rate-limit headers from %s: %s",
                request.url.host,
                {k: v for k, v in response.headers.items() if _QUOTA_HEADER.search(k)},
            )
        return self.is_throttled(response, info), info, usage

    def needs_store(self, refused: bool, info: QuotaInfo, usage: Any, now: float) -> bool:
        """Whether this response must reach the store now (else it is only counted)."""
        if self.limit is None:
            return False
        if refused:
            return True
        due = reports_of(self.ctx.app).add(self.pair, now, _fields(info, usage))
        return due or (info.remaining == 0 and info.reset_at is not None and info.reset_at > now)

    def decide(
        self,
        request: httpx.Request,
        response: httpx.Response,
        refused: bool,
        info: QuotaInfo,
        usage: Any,
        token_at: float | None,
        now: float,
        sent: float | None = None,
    ) -> float | None:
        """After a response that must reach the store (blocking: run on a thread by async
        callers): None to return the response, ``now`` to send it again once a token is
        taken, or the Unix time to wait until."""
        host = request.url.host
        if not refused:
            if self.limit is not None:
                self._report(now, None, info, usage)
                if info.remaining == 0 and info.reset_at is not None and info.reset_at > now:
                    self.ctx.app.store.pause_limit(
                        self.limit, self.key or "", info.reset_at, f"no budget left at {host}", sent=sent
                    )
                    self.ctx.app.pauses.forget(self.limit, self.key or "")
            return None
        wait = info.reset_at - now if info.reset_at is not None else None
        kind = classify_wait(wait, info.remaining)
        if self.limit is None:
            if wait is None:
                _log_once(
                    f"noreset:{host}",
                    "%s answered %d without a usable reset header; backing off",
                    host,
                    response.status_code,
                )
                return now + self._fallback_wait()
            return info.reset_at
        if kind == "overflow":
            # congestion, not an empty quota: slow every worker down (once per round); this
            # request waits what the destination asked (when it did not say, the round's
            # length: see overflow_retry), then takes a token at the slower pace
            stated = wait if wait is not None and wait > 0 else 1.0
            rate, changed = self._report(now, token_at, info, usage, throttled=1, wait=stated)
            if changed in ("cut", "window", "fell"):
                log.info(
                    "limit %s%s: %d from %s, pacing every worker at %.2f/s",
                    self.limit,
                    f"[{self.key}]" if self.key else "",
                    response.status_code,
                    host,
                    rate or 0.0,
                )
            return now + overflow_retry(wait, changed)
        until = info.reset_at if info.reset_at is not None else now + self._fallback_wait()
        self._report(now, None, info, usage, throttled=1, exhausted=1, wait=wait, reset_at=until)
        reason = f"{response.status_code} from {host}"
        # a stated reset: the learned end of the window (see floodway.window_ends)
        sent = sent if info.reset_at is not None else None
        until = self.ctx.app.store.pause_limit(self.limit, self.key or "", until, reason, sent=sent)
        self.ctx.app.pauses.forget(self.limit, self.key or "")
        return until

    def _report(
        self,
        now: float,
        token_at: float | None,
        info: QuotaInfo,
        usage: Any,
        *,
        throttled: int = 0,
        exhausted: int = 0,
        wait: float | None = None,
        reset_at: float | None = None,
    ) -> tuple[float | None, str | None]:
        reports = reports_of(self.ctx.app)
        in_a_row = reports.refused(self.pair) if throttled else 0
        accepted, fields, first_ok = reports.take(self.pair, now)
        renewed = {k: v for k, v in fields.items() if k.startswith("renewed")}  # see http_reports
        if not throttled:
            fields = {**(_fields(info, usage) or fields), **renewed}
        elif reset_at is not None:
            # (a stated budget of 0: the window's end is learned from the pause, see window_ends)
            spent = {"remaining": 0} if info.remaining == 0 else {}
            fields = {"reset_at": reset_at, **spent, **renewed}
        obs = Observation(now, token_at, wait, throttled, exhausted, accepted, first_ok, in_a_row=in_a_row, **fields)
        assert self.limit is not None  # only a request through a limit reports to it
        return self.ctx.app.store.observe_limit(self.limit, self.key or "", obs)

    def _fallback_wait(self) -> float:
        job = self.ctx.job
        policy = Retry.from_dict(job.retry) if job.retry else Retry()
        return policy.delay(max(job.attempt, 1))

    def too_long(self, until: float) -> bool:
        return until - time.time() > self.ctx.app.wait_in_place


def _fields(info: QuotaInfo, usage: tuple[float, float] | None) -> dict[str, Any] | None:
    """The quota fields of an Observation a response carries (None: it said nothing)."""
    fields: dict[str, Any] = {}
    if info.remaining is not None and info.reset_at is not None:
        remaining = info.remaining if info.limit is None else min(info.remaining, info.limit)
        fields.update(remaining=remaining, reset_at=info.reset_at)
    if info.limit is not None and info.window:
        fields.update(limit=info.limit, window=info.window)
    if usage is not None:
        fields.update(used=usage[0], size=usage[1])
        if len(usage) > 2:
            fields.update(leak=usage[2])  # a restore rate the destination stated
    return fields or None


class _AsyncTransport(httpx.AsyncBaseTransport):
    """One job's view of a connection pool: its pacer around the inner transport. Closing it
    closes the inner transport only when the job owns it (a ``transport=`` of its own), never
    the worker's shared pool."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pacer: _Pacer, owned: bool = True):
        self.inner = inner
        self.pacer = pacer
        self.owned = owned

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pacer = self.pacer
        _add_idempotency_key(request)
        cost = pacer.costs.estimate(request)
        while True:
            if pacer.limit is not None:
                await pacer.ctx.acquire(pacer.limit, key=pacer.key, cost=cost)
            await pacer.ctx.owned()  # a run that lost its job sends nothing more
            token_at = pacer.token_at()
            with tracing.request(request) as span:
                sent = time.time()
                response = await self.inner.handle_async_request(request)
                now = time.time()
                refused, info, usage = pacer.read(request, response, now)
                tracing.response(span, response.status_code, refused)
            if pacer.costs.reader is not None:
                response, probe = await read_async(response, request)
                delta, usage = pacer.settle(probe, cost, refused, usage)
                if delta:
                    await asyncio.to_thread(pacer.ctx.app.store.settle, pacer.pair[0], pacer.pair[1], delta)
            if not pacer.needs_store(refused, info, usage, now):
                if not refused:
                    return response
                until = pacer.decide(request, response, refused, info, usage, token_at, now, sent)
            else:
                with pacer.holding(refused):
                    until = await asyncio.to_thread(
                        pacer.decide, request, response, refused, info, usage, token_at, now, sent
                    )
            if until is None:
                return response
            await response.aclose()
            if pacer.too_long(until):
                raise RateLimited(
                    retry_after=until - time.time(),
                    limit=pacer.limit,
                    key=pacer.key,
                    reason=f"{response.status_code} from {request.url.host}",
                    paused=True,
                )
            wait = max(0.0, until - time.time())
            pacer.ctx.throttled_seconds += wait
            tracing.event("floodway.limit.wait", **{"floodway.limit": pacer.limit, "floodway.wait_seconds": wait})
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        if self.owned:
            await self.inner.aclose()


class _SyncTransport(httpx.BaseTransport):
    """``_AsyncTransport`` for ``ctx.http_sync``."""

    def __init__(self, inner: httpx.BaseTransport, pacer: _Pacer, owned: bool = True):
        self.inner = inner
        self.pacer = pacer
        self.owned = owned

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pacer = self.pacer
        _add_idempotency_key(request)
        cost = pacer.costs.estimate(request)
        while True:
            if pacer.limit is not None:
                pacer.ctx.acquire_sync(pacer.limit, key=pacer.key, cost=cost)
            pacer.ctx.ensure_owned()  # a run that lost its job sends nothing more
            token_at = pacer.token_at()
            with tracing.request(request) as span:
                sent = time.time()
                response = self.inner.handle_request(request)
                now = time.time()
                refused, info, usage = pacer.read(request, response, now)
                tracing.response(span, response.status_code, refused)
            if pacer.costs.reader is not None:
                response, probe = read_sync(response, request)
                delta, usage = pacer.settle(probe, cost, refused, usage)
                if delta:
                    pacer.ctx.app.store.settle(pacer.pair[0], pacer.pair[1], delta)
            if not refused and not pacer.needs_store(refused, info, usage, now):
                return response
            with pacer.holding(refused):
                until = pacer.decide(request, response, refused, info, usage, token_at, now, sent)
            if until is None:
                return response
            response.close()
            if pacer.too_long(until):
                raise RateLimited(
                    retry_after=until - time.time(),
                    limit=pacer.limit,
                    key=pacer.key,
                    reason=f"{response.status_code} from {request.url.host}",
                    paused=True,
                )
            wait = max(0.0, until - time.time())
            pacer.ctx.throttled_seconds += wait
            time.sleep(wait)

    def close(self) -> None:
        if self.owned:
            self.inner.close()


def _add_idempotency_key(request: httpx.Request) -> None:
    """Inside ``ctx.once``, every request carries the record's idempotency key."""
    key = current_idempotency_key.get()
    if key is not None and "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = key


def client_for(
    ctx: "Context",
    *,
    base_url: str,
    limit: str | None,
    sync: bool,
    throttled: Any = None,
    cost: Any = 1,
    actual_cost: Any = None,
    **options: Any,
) -> Any:
    """Build the httpx client ``ctx.http`` / ``ctx.http_sync`` return: a client of the job's
    own over the worker's shared connection pool for these transport options (or over the
    job's ``transport=``, used as given and closed with the client)."""
    if limit is not None and limit not in ctx.app.limits:
        known = ", ".join(sorted(ctx.app.limits)) or "none"
        raise ConfigError(f"ctx.http: unknown limit {limit!r} (declared: {known}); declare it with app.limit()")
    pacer = _Pacer(ctx, limit, throttled, cost, actual_cost)
    transport_options = {name: options.pop(name) for name in TRANSPORT_OPTIONS if name in options}
    if transport_options.get("verify") is None:
        transport_options.pop("verify", None)  # the default: the process's TLS context
    inner = options.pop("transport", None)
    owned = True
    if inner is None:
        kind = transport_kind(ctx.app.settings.http_transport, sync, transport_options)
        key = pool_key(transport_options)
        try:
            loop = ctx.loop if sync else asyncio.get_running_loop()
        except RuntimeError:  # an async client made outside any event loop: no pool to share
            key = None
        if key is None:
            inner = new_transport(sync, transport_options, kind)
        else:
            inner, owned = pools_for(loop).get(key, sync, transport_options, kind), False
    url = _base_url(base_url) if isinstance(base_url, str) else base_url
    if sync:
        return httpx.Client(base_url=url, transport=_SyncTransport(inner, pacer, owned), **options)
    return httpx.AsyncClient(base_url=url, transport=_AsyncTransport(inner, pacer, owned), **options)


@functools.lru_cache(maxsize=64)
def _base_url(base_url: str) -> httpx.URL:
    """A base URL parsed as the client keeps it (with its trailing slash), once per process:
    httpx checks each part of a URL it parses, which costs a job's client as much as the rest
    of its construction."""
    url = httpx.URL(base_url)
    return url if url.raw_path.endswith(b"/") else url.copy_with(raw_path=url.raw_path + b"/")
