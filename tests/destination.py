"""A loopback "rate-limited API" for tests and benchmarks: Starlette served by uvicorn.

    with Destination(rate=20, burst=2) as dest:          # 127.0.0.1, ephemeral port
        httpx.post(dest.url + "/orders", json={"id": 1})
        dest.accepted()                                   # every accepted request
        dest.rejected_count                               # how many got a 429

It REALLY enforces its limit: at most ``rate * window + burst`` requests are accepted in any
sliding ``window`` (default one second); the others get a 429. How the 429 says when to come
back is chosen by ``mode``:

* ``"retry-after"`` — ``Retry-After: <seconds>`` (whole seconds, rounded up, as HTTP says;
  ``retry_after_format="float"`` sends e.g. ``0.137``);
* ``"reset"`` — ``X-RateLimit-Reset: <epoch seconds>`` (rounded up);
* ``"none"`` — a bare 429 with no header at all;
* ``"garbage"`` — unreadable values (``Retry-After: soon``, ``X-RateLimit-Reset: tomorrow``,
  ``RateLimit: remaining=abc``...), several per response, cycling through ``GARBAGE_HEADERS``.

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
(``GET /stats``). ``max_in_window(times)`` is the most events in any sliding window.

Run it by hand: ``python tests/destination.py --rate 50 --burst 5 --port 8080``.
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
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODES = ("retry-after", "reset", "none", "garbage")

#: unreadable rate-limit headers, sent in turn by ``mode="garbage"``
GARBAGE_HEADERS: list[dict[str, str]] = [
    {"Retry-After": "soon", "X-RateLimit-Reset": "tomorrow", "RateLimit": "limit=abc, remaining=, reset=later"},
    {"Retry-After": "", "X-RateLimit-Reset": "12:30", "RateLimit-Reset": "-1x", "X-RateLimit-Remaining": "none"},
    {"Retry-After": "-3", "RateLimit": "remaining=0;reset=soon", "RateLimit-Policy": "q=abc;w=xyz"},
    {"Retry-After": "NaN", "X-RateLimit-Reset": "-5", "X-RateLimit-Limit": "lots"},
    {"Retry-After": "inf", "RateLimit-Reset": "NaN"},
    {"Retry-After": "1e3", "X-RateLimit-Reset": "1e12x"},
    {"Retry-After": "Thu, 99 Foo 2024 99:99:99 GMT"},
    {"Retry-After": "\u00e9\u00e9", "RateLimit": "\"default\";r=x;t=y"},
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
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self._lock = threading.Lock()
        self.configure(rate=rate, burst=burst, window=window, mode=mode, per_tenant=per_tenant,
                       idempotency=idempotency, quota_headers=quota_headers,
                       retry_after_format=retry_after_format, enforce=enforce, latency=latency)
        self.host = host
        self.port = port
        self._records: list[Record] = []
        self._windows: dict[str, deque[float]] = {}
        self._blocks: dict[str, list[float]] = {}  # tenant -> [count left, retry_after]
        self._idem: dict[str, dict[str, Any]] = {}
        self.replays = 0
        self._accepted_n = 0
        self._garbage = itertools.cycle(GARBAGE_HEADERS)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[
            Route("/orders", self._orders, methods=["POST"]),
            Route("/tenants/{tenant}/orders", self._orders, methods=["POST"]),
            Route("/stats", self._stats_endpoint, methods=["GET"]),
        ])

    # -- configuration (thread-safe, takes effect on the next request) ----------------------
    def configure(self, **changes: Any) -> None:
        allowed = {"rate", "burst", "window", "mode", "per_tenant", "idempotency", "quota_headers",
                   "retry_after_format", "enforce", "latency"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"unknown option(s): {sorted(unknown)}")
        if "mode" in changes and changes["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {changes['mode']!r}")
        if "retry_after_format" in changes and changes["retry_after_format"] not in ("int", "float"):
            raise ValueError("retry_after_format must be 'int' or 'float'")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def block(self, tenant: str | None, count: int = 1, retry_after: float = 5.0) -> None:
        """The next ``count`` requests of ``tenant`` (None: requests with no tenant) get a
        429 (in the current ``mode``, with ``retry_after`` seconds as the wait)."""
        with self._lock:
            self._blocks[tenant or ""] = [count, retry_after]

    @property
    def capacity(self) -> float:
        return self.rate * self.window + self.burst

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
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                backlog=2048, timeout_keep_alive=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="destination", daemon=True)
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

    def _decide(self, now: float, tenant: str | None, key: str | None, body_id: Any
                ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self.idempotency and key is not None and key in self._idem:
                self.replays += 1
                return 200, self._idem[key], {}
            bucket = (tenant or "") if self.per_tenant else ""
            times = self._windows.setdefault(bucket, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            capacity = self.rate * self.window + self.burst
            wait: float | None = None
            block = self._blocks.get(tenant or "")
            if block is not None and block[0] > 0:
                block[0] -= 1
                wait = float(block[1])
            elif self.enforce and len(times) >= capacity:
                wait = max(times[0] + self.window - now, 0.001)
            quota: dict[str, str] = {}
            if self.quota_headers:
                limit = int(self.rate * self.window)
                left = max(0, int(capacity - len(times) - (1 if wait is None else 0)))
                window = int(self.window) if self.window == int(self.window) else self.window
                quota = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(left),
                         "RateLimit-Policy": f"{limit};w={window}"}
            if wait is not None:
                self._records.append(Record(now, key, body_id, tenant, 429))
                return 429, {"error": "rate limited"}, {**quota, **self._reject_headers(now, wait)}
            times.append(now)
            record = Record(now, key, body_id, tenant, 200)
            self._records.append(record)
            self._accepted_n += 1
            payload = {"ok": True, "id": body_id, "tenant": tenant, "seq": self._accepted_n}
            if self.idempotency and key is not None:
                self._idem[key] = payload
            return 200, payload, quota

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
        recs = self.records()
        ok = [r for r in recs if r.status == 200]
        out: dict[str, Any] = {
            "rate": self.rate, "burst": self.burst, "window": self.window, "mode": self.mode,
            "per_tenant": self.per_tenant, "idempotency": self.idempotency,
            "accepted": len(ok), "rejected": len(recs) - len(ok), "replays": self.replays,
            "max_accepted_in_window": max_in_window((r.at for r in ok), self.window),
            "first_accept": ok[0].at if ok else None, "last_accept": ok[-1].at if ok else None,
        }
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
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with Destination(args.rate, args.burst, window=args.window, mode=args.mode, per_tenant=args.per_tenant,
                     idempotency=args.idempotency, quota_headers=args.quota_headers, port=args.port) as dest:
        print(dest.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(dest.stats())


if __name__ == "__main__":
    _main()
