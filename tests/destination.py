"""A loopback "rate-limited API" for tests and benchmarks: Starlette served by uvicorn.

    with Destination(rate=20, burst=2) as dest:          # 127.0.0.1, ephemeral port
        httpx.post(dest.url + "/orders", json={"id": 1})
        dest.accepted()                                   # every accepted request
        dest.rejected_count                               # how many got a 429

It REALLY enforces its limit. By default (``style=None``) at most ``rate * window + burst``
requests are accepted in any sliding ``window`` (default one second); the others get a 429.
How that 429 says when to come back is chosen by ``mode``:

* ``"retry-after"`` — ``Retry-After: <seconds>`` (whole seconds, rounded up, as HTTP says;
  ``retry_after_format="float"`` sends e.g. ``0.137``);
* ``"reset"`` — ``X-RateLimit-Reset: <epoch seconds>`` (rounded up);
* ``"none"`` — a bare 429 with no header at all;
* ``"garbage"`` — unreadable values (``Retry-After: soon``, ``X-RateLimit-Reset: tomorrow``,
  ``RateLimit: remaining=abc``...), several per response, cycling through ``GARBAGE_HEADERS``.

``style=`` instead answers the way a real API does (``mode``, ``quota_headers`` and
``retry_after_format`` then play no part):

* ``"leaky"`` — the sliding window above; a refusal is a bare 429 with
  ``Retry-After: <whole seconds, >= 1>``;
* ``"bare"`` — the sliding window; a refusal is a 429 with no header at all (Stripe);
* ``"bucket"`` — a leaky bucket of ``burst`` requests leaking ``rate`` per second that says
  nothing of itself: accepted responses carry no header, a full bucket answers a bare 429 with
  ``Retry-After: 1``;
* ``"fixed-window"`` (GitHub) — fixed windows of ``window`` seconds, each holding
  ``rate * window`` requests (``burst`` plays no part); EVERY response carries
  ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch seconds of
  the window's end, rounded up); an exhausted window answers ``exhausted_status`` (429, or 403
  as GitHub does) with ``X-RateLimit-Remaining: 0``;
* ``"usage"`` (Shopify REST) — a leaky bucket of ``burst`` requests leaking ``rate`` per
  second; every response carries ``X-Shopify-Shop-Api-Call-Limit: <used>/<burst>``; a full
  bucket answers 429 with ``Retry-After: 1.0``;
* ``"quota"`` — fixed windows of ``window`` seconds holding ``rate * window`` requests (a
  scaled-down per-minute quota); a refusal is a 429 with ``Retry-After: <seconds to the
  window's end, rounded up>`` and no other header; accepted responses carry nothing;
* ``"ietf"`` — fixed windows announced by the IETF draft fields on every response:
  ``RateLimit-Policy: "default";q=<limit>;w=<window>`` and
  ``RateLimit: "default";r=<remaining>;t=<seconds to reset>``; 429 when exhausted.

Fixed windows start at the first request of each budget and follow each other without gaps
(``window_start(tenant)``). ``rate_schedule=[(seconds_after_first_request, rate), ...]``
changes the rate by itself during a run (every style; ``rate_changes`` lists when);
``configure(rate=...)`` changes it by hand.

``quota_headers=True`` adds ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``RateLimit-Policy: <limit>;w=<window>`` to every response (200s and 429s).

``per_tenant=True`` gives each tenant its own budget; the tenant comes from the
``X-Tenant`` header, the path (``POST /tenants/{tenant}/orders``) or the body's ``tenant``.
``block(tenant, count, retry_after)`` makes the next ``count`` requests of that tenant get a
429 whatever its budget says (to test keyed pauses).

``idempotency=True`` honours ``Idempotency-Key``: a repeated key gets the first response
back and records no second effect (``replays`` counts them). With it off, a repeated key is
recorded again, so duplicates are visible in ``accepted()``.

Stats are read in-process (``accepted()``, ``rejected()``, ``stats()``) or over HTTP
(``GET /stats``). ``max_in_window(times)`` is the most events in any sliding window;
``per_second(times, start)`` the count in each second; ``windows_to_reach(...)`` how many
windows after a change of rate the accepted rate took to settle within a tolerance of it.

Run it by hand: ``python tests/destination.py --rate 50 --burst 5 --style leaky --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODES = ("retry-after", "reset", "none", "garbage")
STYLES = ("leaky", "bare", "bucket", "fixed-window", "usage", "quota", "ietf")
#: styles whose budget is a fixed window of ``rate * window`` requests
FIXED_WINDOW_STYLES = ("fixed-window", "quota", "ietf")

#: unreadable rate-limit headers, sent in turn by ``mode="garbage"``
GARBAGE_HEADERS: list[dict[str, str]] = [
    {"Retry-After": "soon", "X-RateLimit-Reset": "tomorrow", "RateLimit": "limit=abc, remaining=, reset=later"},
    {"Retry-After": "", "X-RateLimit-Reset": "12:30", "RateLimit-Reset": "-1x", "X-RateLimit-Remaining": "none"},
    {"Retry-After": "-3", "RateLimit": "remaining=0;reset=soon", "RateLimit-Policy": "q=abc;w=xyz"},
    {"Retry-After": "NaN", "X-RateLimit-Reset": "-5", "X-RateLimit-Limit": "lots"},
    {"Retry-After": "inf", "RateLimit-Reset": "NaN"},
    {"Retry-After": "1e3", "X-RateLimit-Reset": "1e12x"},
    {"Retry-After": "Thu, 99 Foo 2024 99:99:99 GMT"},
    {"Retry-After": "\u00e9\u00e9", "RateLimit": '"default";r=x;t=y'},
]


@dataclass(frozen=True)
class Record:
    """One request the destination saw: when (Unix time), its keys, and the outcome."""

    at: float
    idempotency_key: str | None
    id: Any
    tenant: str | None
    status: int


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most events in any half-open window ``[t, t + window)``."""
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        j = bisect.bisect_left(ordered, t + window, lo=i)
        best = max(best, j - i)
    return best


def count_between(times: Iterable[float], start: float, end: float) -> int:
    """Events with ``start <= t < end``."""
    return sum(1 for t in times if start <= t < end)


def per_second(times: Iterable[float], start: float, width: float = 1.0) -> list[int]:
    """Events in each ``[start + k * width, start + (k + 1) * width)``, up to the last event."""
    counts: list[int] = []
    for t in times:
        if t < start:
            continue
        k = int((t - start) // width)
        if k >= len(counts):
            counts.extend([0] * (k + 1 - len(counts)))
        counts[k] += 1
    return counts


def windows_to_reach(
    accepted: Iterable[float],
    refused: Iterable[float],
    start: float,
    rate: float,
    window: float = 1.0,
    tolerance: float = 0.05,
    end: float | None = None,
    extra: float = 0.0,
) -> int | None:
    """How many windows of ``window`` seconds after ``start`` (a change of rate) it took until a
    window accepted ``rate * window`` requests within ``tolerance`` (or up to ``extra`` more: a
    sliding window takes its rate plus its burst in any second, and a client that found that
    has found the quota) AND had at most ``tolerance * rate * window`` refusals: the 1-based
    index of that first window, or None when none did (before ``end``, if given). A client too
    slow has too few accepts; one too fast has too many refusals."""
    target = rate * window
    acc = per_second(accepted, start, window)
    ref = per_second(refused, start, window)
    last = max(len(acc), len(ref))
    if end is not None:
        last = min(last, int((end - start) // window))
    for k in range(last):
        a = acc[k] if k < len(acc) else 0
        r = ref[k] if k < len(ref) else 0
        if -tolerance * target <= a - target <= tolerance * target + extra and r <= tolerance * target:
            return k + 1
    return None


def _num(value: float) -> str:
    """``4`` for 4.0, ``0.5`` for 0.5: a window as a header shows it."""
    return str(int(value)) if value == int(value) else str(value)


class Destination:
    """The rate-limited API; a context manager that serves it in a background thread."""

    def __init__(
        self,
        rate: float = 10,
        burst: int = 0,
        *,
        window: float = 1.0,
        mode: str = "retry-after",
        per_tenant: bool = False,
        idempotency: bool = False,
        quota_headers: bool = False,
        retry_after_format: str = "int",
        enforce: bool = True,
        latency: float = 0.0,
        style: str | None = None,
        exhausted_status: int = 429,
        rate_schedule: Iterable[tuple[float, float]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self._lock = threading.Lock()
        self._schedule_next = 0
        self.configure(
            rate=rate,
            burst=burst,
            window=window,
            mode=mode,
            per_tenant=per_tenant,
            idempotency=idempotency,
            quota_headers=quota_headers,
            retry_after_format=retry_after_format,
            enforce=enforce,
            latency=latency,
            style=style,
            exhausted_status=exhausted_status,
            rate_schedule=rate_schedule,
        )
        self.host = host
        self.port = port
        self._records: list[Record] = []
        self._windows: dict[str, deque[float]] = {}
        self._fixed: dict[str, list[float]] = {}  # budget -> [window start, accepted in it]
        self._buckets: dict[str, list[float]] = {}  # budget -> [level, when last leaked]
        self.first_request: float | None = None
        #: (Unix time, rate) of every change made by ``rate_schedule``
        self.rate_changes: list[tuple[float, float]] = []
        self._blocks: dict[str, list[float]] = {}  # tenant -> [count left, retry_after]
        self._idem: dict[str, dict[str, Any]] = {}
        self.replays = 0
        #: ``POST /bulk/orders``: the most records one call may carry, and every record that
        #: an accepted call carried (its id), in order
        self.bulk_max = 100
        self.bulk_ids: list[Any] = []
        self._accepted_n = 0
        self._garbage = itertools.cycle(GARBAGE_HEADERS)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/orders", self._orders, methods=["POST"]),
                Route("/tenants/{tenant}/orders", self._orders, methods=["POST"]),
                Route("/bulk/orders", self._bulk, methods=["POST"]),
                Route("/stats", self._stats_endpoint, methods=["GET"]),
            ]
        )

    # -- configuration (thread-safe, takes effect on the next request) ----------------------
    def configure(self, **changes: Any) -> None:
        allowed = {
            "rate",
            "burst",
            "window",
            "mode",
            "per_tenant",
            "idempotency",
            "quota_headers",
            "retry_after_format",
            "enforce",
            "latency",
            "style",
            "exhausted_status",
            "rate_schedule",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"unknown option(s): {sorted(unknown)}")
        if "mode" in changes and changes["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {changes['mode']!r}")
        if "retry_after_format" in changes and changes["retry_after_format"] not in ("int", "float"):
            raise ValueError("retry_after_format must be 'int' or 'float'")
        if "style" in changes and changes["style"] not in (None, *STYLES):
            raise ValueError(f"style must be None or one of {STYLES}, got {changes['style']!r}")
        if "exhausted_status" in changes and changes["exhausted_status"] not in (429, 403):
            raise ValueError("exhausted_status must be 429 or 403")
        if "rate" in changes and not changes["rate"] > 0:
            raise ValueError(f"rate must be > 0, got {changes['rate']!r}")
        if "window" in changes and not changes["window"] > 0:
            raise ValueError(f"window must be > 0, got {changes['window']!r}")
        if "rate_schedule" in changes:
            schedule = sorted((float(t), float(r)) for t, r in (changes["rate_schedule"] or ()))
            if any(t < 0 or r <= 0 for t, r in schedule):
                raise ValueError("rate_schedule: each step is (seconds >= 0, rate > 0)")
            changes["rate_schedule"] = schedule
        with self._lock:
            style = changes.get("style", getattr(self, "style", None))
            burst = changes.get("burst", getattr(self, "burst", 0))
            if style in ("usage", "bucket") and burst < 1:
                raise ValueError(f"style {style!r} needs burst >= 1 (the size of its bucket)")
            for name, value in changes.items():
                setattr(self, name, value)
            if "rate_schedule" in changes:
                self._schedule_next = 0

    def block(self, tenant: str | None, count: int = 1, retry_after: float = 5.0) -> None:
        """The next ``count`` requests of ``tenant`` (None: requests with no tenant) get a
        429 (in the current ``mode``, with ``retry_after`` seconds as the wait)."""
        with self._lock:
            self._blocks[tenant or ""] = [count, retry_after]

    @property
    def capacity(self) -> float:
        """The most requests any window may accept: ``rate * window`` for the fixed-window
        styles, ``rate * window + burst`` for the others."""
        if self.style in FIXED_WINDOW_STYLES:
            return self._window_limit()
        return self.rate * self.window + self.burst

    def _window_limit(self) -> int:
        return max(1, int(self.rate * self.window + 1e-9))

    def window_start(self, tenant: str | None = None) -> float | None:
        """When the current fixed window of ``tenant``'s budget began (fixed-window styles)."""
        bucket = (tenant or "") if self.per_tenant else ""
        with self._lock:
            state = self._fixed.get(bucket)
            return state[0] if state else None

    # -- serving ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "Destination":
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
        # without it Nagle holds each response body (uvicorn writes head and body apart) until
        # the client's delayed ACK, ~40 ms per request
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", backlog=2048, timeout_keep_alive=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="destination", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the destination server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> "Destination":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the API ------------------------------------------------------------------------------
    async def _orders(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except Exception:
            body = None
        if not isinstance(body, dict):
            body = {}
        tenant = request.path_params.get("tenant") or request.headers.get("x-tenant") or body.get("tenant")
        tenant = str(tenant) if tenant is not None else None
        key = request.headers.get("idempotency-key")
        latency = self.latency
        if latency:
            await asyncio.sleep(latency)
        status, payload, headers = self._decide(time.time(), tenant, key, body.get("id"))
        return JSONResponse(payload, status_code=status, headers=headers)

    async def _bulk(self, request: Request) -> JSONResponse:
        """A bulk endpoint: one call carries up to ``bulk_max`` records (``{"records": [{"id":
        ...}, ...]}``) and spends one request of the rate; a record with ``"reject": true`` is
        refused alone (its result carries an error, the others are stored)."""
        try:
            body = await request.json()
        except Exception:
            body = None
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
            return JSONResponse({"error": "records must be a non-empty list of objects"}, status_code=400)
        if len(records) > self.bulk_max:
            return JSONResponse({"error": f"at most {self.bulk_max} records per call"}, status_code=413)
        tenant = request.headers.get("x-tenant") or body.get("tenant")
        if self.latency:
            await asyncio.sleep(self.latency)
        status, payload, headers = self._decide(time.time(), tenant, request.headers.get("idempotency-key"), None)
        if status != 200:
            return JSONResponse(payload, status_code=status, headers=headers)
        results = []
        with self._lock:
            for record in records:
                if record.get("reject"):
                    results.append({"id": record.get("id"), "error": "rejected"})
                else:
                    self.bulk_ids.append(record.get("id"))
                    results.append({"id": record.get("id"), "ok": True})
        return JSONResponse({"results": results}, headers=headers)

    def _decide(
        self, now: float, tenant: str | None, key: str | None, body_id: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self.first_request is None:
                self.first_request = now
            self._follow_schedule(now)
            if self.idempotency and key is not None and key in self._idem:
                self.replays += 1
                return 200, self._idem[key], {}
            bucket = (tenant or "") if self.per_tenant else ""
            block = self._blocks.get(tenant or "")
            forced: float | None = None
            if block is not None and block[0] > 0:
                block[0] -= 1
                forced = float(block[1])
            if self.style is None:
                status, headers = self._sliding_legacy(now, bucket, forced)
            elif self.style in ("leaky", "bare"):
                status, headers = self._sliding(now, bucket, forced)
            elif self.style in ("usage", "bucket"):
                status, headers = self._usage(now, bucket, forced)
            else:
                status, headers = self._fixed_window(now, bucket, forced)
            if status != 200:
                self._records.append(Record(now, key, body_id, tenant, status))
                return status, {"error": "rate limited"}, headers
            record = Record(now, key, body_id, tenant, 200)
            self._records.append(record)
            self._accepted_n += 1
            payload = {"ok": True, "id": body_id, "tenant": tenant, "seq": self._accepted_n}
            if self.idempotency and key is not None:
                self._idem[key] = payload
            return 200, payload, headers

    def _follow_schedule(self, now: float) -> None:
        schedule = self.rate_schedule
        while self._schedule_next < len(schedule):
            after, rate = schedule[self._schedule_next]
            at = self.first_request + after
            if now < at:
                break
            self._schedule_next += 1
            if rate != self.rate:
                self.rate = rate
                self.rate_changes.append((at, rate))

    def _sliding_times(self, now: float, bucket: str) -> deque[float]:
        times = self._windows.setdefault(bucket, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def _sliding_legacy(self, now: float, bucket: str, forced: float | None) -> tuple[int, dict[str, str]]:
        """``style=None``: the sliding window, the refusal's headers chosen by ``mode``."""
        times = self._sliding_times(now, bucket)
        capacity = self.rate * self.window + self.burst
        wait = forced
        if wait is None and self.enforce and len(times) >= capacity:
            wait = max(times[0] + self.window - now, 0.001)
        quota: dict[str, str] = {}
        if self.quota_headers:
            limit = int(self.rate * self.window)
            left = max(0, int(capacity - len(times) - (1 if wait is None else 0)))
            quota = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(left),
                "RateLimit-Policy": f"{limit};w={_num(self.window)}",
            }
        if wait is not None:
            return 429, {**quota, **self._reject_headers(now, wait)}
        times.append(now)
        return 200, quota

    def _sliding(self, now: float, bucket: str, forced: float | None) -> tuple[int, dict[str, str]]:
        """``leaky`` and ``bare``: the sliding window; a 429 with Retry-After, or with nothing."""
        times = self._sliding_times(now, bucket)
        wait = forced
        if wait is None and self.enforce and len(times) >= self.rate * self.window + self.burst:
            wait = max(times[0] + self.window - now, 0.001)
        if wait is not None:
            return 429, ({"Retry-After": str(max(1, math.ceil(wait)))} if self.style == "leaky" else {})
        times.append(now)
        return 200, {}

    def _usage(self, now: float, bucket: str, forced: float | None) -> tuple[int, dict[str, str]]:
        """A leaky bucket of ``burst`` requests leaking ``rate`` per second: Shopify REST's
        (``usage``), or one that says nothing but a bare 429 with ``Retry-After: 1`` (``bucket``)."""
        size = int(self.burst)
        state = self._buckets.setdefault(bucket, [0.0, now])
        state[0] = max(0.0, state[0] - (now - state[1]) * self.rate)
        state[1] = now
        full = forced is not None or (self.enforce and state[0] + 1 > size + 1e-9)
        if self.style == "bucket":
            if full:
                return 429, {"Retry-After": "1"}
            state[0] += 1
            return 200, {}
        if full:
            return 429, {"X-Shopify-Shop-Api-Call-Limit": f"{size}/{size}", "Retry-After": "1.0"}
        state[0] += 1
        used = min(size, math.ceil(state[0] - 1e-9))
        return 200, {"X-Shopify-Shop-Api-Call-Limit": f"{used}/{size}"}

    def _fixed_window(self, now: float, bucket: str, forced: float | None) -> tuple[int, dict[str, str]]:
        """``fixed-window``, ``quota`` and ``ietf``: ``rate * window`` requests per fixed window,
        the windows starting at the budget's first request and following each other."""
        state = self._fixed.get(bucket)
        if state is None:
            state = self._fixed[bucket] = [now, 0]
        elif now >= state[0] + self.window:
            state[0] += math.floor((now - state[0]) / self.window) * self.window
            state[1] = 0
        limit = self._window_limit()
        end = state[0] + self.window
        refused = forced is not None or (self.enforce and state[1] >= limit)
        if not refused:
            state[1] += 1
        remaining = max(0, limit - int(state[1]))
        if forced is not None:
            end = max(end, now + forced)
            remaining = 0
        to_reset = max(1, math.ceil(end - now))
        if self.style == "fixed-window":
            headers = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(math.ceil(end)),
            }
            return (self.exhausted_status if refused else 200), headers
        if self.style == "ietf":
            headers = {
                "RateLimit-Policy": f'"default";q={limit};w={_num(self.window)}',
                "RateLimit": f'"default";r={remaining};t={to_reset}',
            }
            return (429 if refused else 200), headers
        return (429, {"Retry-After": str(to_reset)}) if refused else (200, {})

    def _reject_headers(self, now: float, wait: float) -> dict[str, str]:
        if self.mode == "retry-after":
            value = f"{wait:.3f}" if self.retry_after_format == "float" else str(max(1, math.ceil(wait)))
            return {"Retry-After": value}
        if self.mode == "reset":
            return {"X-RateLimit-Reset": str(math.ceil(now + wait))}
        if self.mode == "garbage":
            return dict(next(self._garbage))
        return {}

    async def _stats_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats(records=request.query_params.get("records") == "1"))

    # -- stats ----------------------------------------------------------------------------------
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def accepted(self, tenant: str | None = None) -> list[Record]:
        return [r for r in self.records() if r.status == 200 and (tenant is None or r.tenant == tenant)]

    def rejected(self, tenant: str | None = None) -> list[Record]:
        return [r for r in self.records() if r.status != 200 and (tenant is None or r.tenant == tenant)]

    @property
    def accepted_count(self) -> int:
        return len(self.accepted())

    @property
    def rejected_count(self) -> int:
        return len(self.rejected())

    def accepted_times(self, tenant: str | None = None) -> list[float]:
        return [r.at for r in self.accepted(tenant)]

    def stats(self, *, records: bool = False) -> dict[str, Any]:
        """Counts, and the per-second series from the first request (``accepted_per_second``,
        ``refused_per_second``); per tenant under ``tenants`` when ``per_tenant``."""
        recs = self.records()
        ok = [r for r in recs if r.status == 200]
        refused = [r for r in recs if r.status != 200]
        start = self.first_request
        out: dict[str, Any] = {
            "rate": self.rate,
            "burst": self.burst,
            "window": self.window,
            "mode": self.mode,
            "style": self.style,
            "exhausted_status": self.exhausted_status,
            "per_tenant": self.per_tenant,
            "idempotency": self.idempotency,
            "requests": len(recs),
            "accepted": len(ok),
            "rejected": len(refused),
            "refused": len(refused),
            "refused_share": len(refused) / len(recs) if recs else 0.0,
            "refused_by_status": dict(Counter(r.status for r in refused)),
            "replays": self.replays,
            "max_accepted_in_window": max_in_window((r.at for r in ok), self.window),
            "first_request": start,
            "first_accept": ok[0].at if ok else None,
            "last_accept": ok[-1].at if ok else None,
            "accepted_per_second": per_second((r.at for r in ok), start) if start else [],
            "refused_per_second": per_second((r.at for r in refused), start) if start else [],
            "rate_schedule": [list(step) for step in self.rate_schedule],
            "rate_changes": [list(change) for change in self.rate_changes],
        }
        if self.per_tenant:
            tenants: dict[str, dict[str, Any]] = {}
            for r in recs:
                t = tenants.setdefault(r.tenant or "", {"accepted": 0, "refused": 0})
                t["accepted" if r.status == 200 else "refused"] += 1
            out["tenants"] = tenants
        if records:
            out["records"] = [asdict(r) for r in recs]
        return out


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--mode", choices=MODES, default="retry-after")
    parser.add_argument("--per-tenant", action="store_true")
    parser.add_argument("--idempotency", action="store_true")
    parser.add_argument("--quota-headers", action="store_true")
    parser.add_argument("--style", choices=STYLES, default=None)
    parser.add_argument("--exhausted-status", type=int, choices=(429, 403), default=429)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with Destination(
        args.rate,
        args.burst,
        window=args.window,
        mode=args.mode,
        per_tenant=args.per_tenant,
        idempotency=args.idempotency,
        quota_headers=args.quota_headers,
        style=args.style,
        exhausted_status=args.exhausted_status,
        port=args.port,
    ) as dest:
        print(dest.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(dest.stats())


if __name__ == "__main__":
    _main()
