"""The rate-limit-aware HTTP client behind ``ctx.http``.

Before each request it takes a token from its limit (shared by every worker); after each
response it reads what the server says about its quota:

- ``Retry-After`` (delta-seconds or an HTTP-date), ``X-RateLimit-Reset`` (epoch seconds, epoch
  milliseconds or delta seconds), ``RateLimit-Reset`` (delta seconds), and the IETF
  ``RateLimit`` / ``RateLimit-Policy`` fields (``limit=10, remaining=0, reset=5`` and the
  structured ``"default";r=0;t=5`` / ``"default";q=100;w=60`` forms);
- on 429 (or 503 with a reset time) it pauses the limit's key for every worker until the
  reset. A short wait (up to the app's ``wait_in_place``) is slept here and the request
  repeated; a longer one raises ``RateLimited`` so the job is rescheduled for the reset
  without spending an attempt;
- ``X-RateLimit-Remaining: 0`` (or ``remaining=0``) pauses the key before the 429 happens.

Unreadable header values are ignored (and logged), never fatal: the job's retry backoff
decides the wait instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Mapping

import httpx

from .errors import RateLimited
from .resumable import current_idempotency_key

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger("floodway.http")

__all__ = ["QuotaInfo", "parse_quota_headers", "client_for"]

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
#: a larger X-RateLimit-Reset is an epoch timestamp, not a delta
_EPOCH_THRESHOLD = 10**9
#: no server can pause a limit for longer than this (an absurd Retry-After is a bug, not a plan)
MAX_RESET_SECONDS = 24 * 3600.0
#: adaptive limits: at most one cut per this many seconds per process, and a ceiling
ADAPT_COOLDOWN = 1.0
ADAPT_CEILING = 10.0


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


class _Pacer:
    """The shared logic of the async and sync transports."""

    def __init__(self, ctx: "Context", limit: str | None):
        self.ctx = ctx
        self.limit = limit
        self.key = ctx.limit_key(limit) if limit is not None else None

    def decide(self, request: httpx.Request, response: httpx.Response) -> float | None:
        """After a response: None to return it, else the Unix time to wait until.
        (At the transport level the response is not yet bound to its request.)"""
        now = time.time()
        info = parse_quota_headers(response.headers, now)
        throttled = response.status_code == 429 or (response.status_code == 503 and info.reset_at is not None)
        store = self.ctx.app.store
        if throttled:
            until = info.reset_at
            if until is None:
                log.warning("%s %s answered %d without a usable reset header (%s); backing off",
                            request.method, request.url, response.status_code,
                            {k: v for k, v in response.headers.items() if "rate" in k.lower() or k.lower() == "retry-after"})
                until = now + self._fallback_wait()
            if self.limit is not None:
                reason = f"{response.status_code} from {request.url.host}"
                until = store.pause_limit(self.limit, self.key or "", until, reason)
                self._adapt(info, throttled=True)
            return until
        if self.limit is not None:
            if info.remaining == 0 and info.reset_at is not None and info.reset_at > now:
                store.pause_limit(self.limit, self.key or "", info.reset_at,
                                  f"no budget left at {request.url.host}")
            self._adapt(info, throttled=False)
        return None

    def _fallback_wait(self) -> float:
        from .retry import Retry

        job = self.ctx.job
        policy = Retry.from_dict(job.retry) if job.retry else Retry()
        return policy.delay(max(job.attempt, 1))

    def _adapt(self, info: QuotaInfo, *, throttled: bool) -> None:
        """Adaptive limits learn the destination's quota: from its headers when it states
        them, else by cutting the rate on a 429 (at most once per ``ADAPT_COOLDOWN`` per process,
        so one overloaded second is one cut, not twenty) and raising it slowly while none come
        (never above ``ADAPT_CEILING`` times the declared rate)."""
        spec = self.ctx.app.limits.get(self.limit or "")
        if spec is None or not spec.adaptive or spec.rate is None:
            return
        state = self.ctx.app.__dict__.setdefault("_adaptive", {}).setdefault(
            spec.name, {"successes": 0, "last_change": 0.0})
        now = time.monotonic()
        if info.limit and info.window:
            target = info.limit / info.window
        elif throttled:
            if now - state["last_change"] < ADAPT_COOLDOWN:
                return
            target = None  # computed from the stored rate below
        else:
            state["successes"] += 1
            if state["successes"] % 20:
                return
            target = None
        current = {i.spec.name: i.spec for i in self.ctx.app.store.list_limits()}.get(spec.name, spec)
        per_second = (current.rate or spec.rate).per_second
        if target is None:
            target = per_second * (0.7 if throttled else 1.05)
        target = min(target, spec.rate.per_second * ADAPT_CEILING)
        if abs(target - per_second) / per_second < 0.01:
            return
        state["last_change"] = now
        from .limits import LimitSpec, Rate

        period = 1.0 if target >= 1 else 60.0
        new_rate = Rate(round(target * period, 3), period)
        self.ctx.app.store.update_limit(
            LimitSpec(current.name, new_rate, current.burst, current.concurrency, current.key, True)
        )
        log.info("adaptive limit %s: %.3f/s -> %.3f/s", spec.name, per_second, new_rate.per_second)

    def too_long(self, until: float) -> bool:
        return until - time.time() > self.ctx.app.wait_in_place


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, pacer: _Pacer):
        self.inner = inner
        self.pacer = pacer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pacer = self.pacer
        _add_idempotency_key(request)
        while True:
            if pacer.limit is not None:
                await pacer.ctx.acquire(pacer.limit, key=pacer.key)
            await pacer.ctx.owned()  # a run that lost its job sends nothing more
            response = await self.inner.handle_async_request(request)
            until = await asyncio.to_thread(pacer.decide, request, response) if pacer.limit else pacer.decide(request, response)
            if until is None:
                return response
            await response.aclose()
            if pacer.too_long(until):
                raise RateLimited(retry_after=until - time.time(), limit=pacer.limit, key=pacer.key,
                                  reason=f"{response.status_code} from {request.url.host}", paused=True)
            wait = max(0.0, until - time.time())
            pacer.ctx.throttled_seconds += wait
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, pacer: _Pacer):
        self.inner = inner
        self.pacer = pacer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pacer = self.pacer
        _add_idempotency_key(request)
        while True:
            if pacer.limit is not None:
                pacer.ctx.acquire_sync(pacer.limit, key=pacer.key)
            pacer.ctx.ensure_owned()  # a run that lost its job sends nothing more
            response = self.inner.handle_request(request)
            until = pacer.decide(request, response)
            if until is None:
                return response
            response.close()
            if pacer.too_long(until):
                raise RateLimited(retry_after=until - time.time(), limit=pacer.limit, key=pacer.key,
                                  reason=f"{response.status_code} from {request.url.host}", paused=True)
            wait = max(0.0, until - time.time())
            pacer.ctx.throttled_seconds += wait
            time.sleep(wait)

    def close(self) -> None:
        self.inner.close()


def _add_idempotency_key(request: httpx.Request) -> None:
    """Inside ``ctx.once``, every request carries the record's idempotency key."""
    key = current_idempotency_key.get()
    if key is not None and "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = key


_SSL_CONTEXT: Any = None


def _shared_ssl_context() -> Any:
    """One TLS context per process: building one loads the CA bundle (tens of ms of CPU), which
    would otherwise happen for every client, on the worker's event loop."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


def client_for(ctx: "Context", *, base_url: str, limit: str | None, sync: bool, **options: Any) -> Any:
    """Build the httpx client ``ctx.http`` / ``ctx.http_sync`` return."""
    if limit is not None and limit not in ctx.app.limits:
        from .errors import ConfigError

        raise ConfigError(f"ctx.http: unknown limit {limit!r}; declare it with app.limit()")
    pacer = _Pacer(ctx, limit)
    transport_options = {"verify": options.pop("verify", None) or _shared_ssl_context()}
    for name in ("cert", "trust_env", "http1", "http2", "limits", "proxy"):
        if name in options:
            transport_options[name] = options.pop(name)
    if sync:
        inner = options.pop("transport", None) or httpx.HTTPTransport(**transport_options)
        return httpx.Client(base_url=base_url, transport=_SyncTransport(inner, pacer), **options)
    inner = options.pop("transport", None) or httpx.AsyncHTTPTransport(**transport_options)
    return httpx.AsyncClient(base_url=base_url, transport=_AsyncTransport(inner, pacer), **options)
