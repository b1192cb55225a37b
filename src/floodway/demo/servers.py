"""The two loopback APIs of the Black Friday demo, on the stdlib ``ThreadingHTTPServer``.

* ``OrderSource`` — OrderPlacementPavillion: ``GET /orders?after=<id>&limit=<n>`` returns
  ``{"orders": [...]}``, the orders with an id above ``after``, ascending by id.
* ``FulfillmentAPI`` — FulfillmentsRUs: ``POST /fulfillments``. It really enforces its rate
  limit (at most ``rate`` accepted requests in any sliding one-second window; the others get a
  429 with ``Retry-After``), honours ``Idempotency-Key`` (a repeated key gets the first response
  back and records nothing new), and counts every accepted order id, so a duplicate — the same
  order accepted twice under different keys, or without one — shows up in ``stats()``.

Both serve on 127.0.0.1 at an ephemeral port from a daemon thread::

    with OrderSource(5000) as source, FulfillmentAPI(rate=200) as dest:
        httpx.get(source.url + "/orders", params={"after": 0, "limit": 50})
        dest.stats()["accepted"]
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["OrderSource", "FulfillmentAPI", "make_order"]

_PRODUCTS = [
    "TV 55in",
    "headphones",
    "coffee grinder",
    "air fryer",
    "sneakers",
    "board game",
    "desk lamp",
    "robot vacuum",
    "e-reader",
    "smart watch",
    "blender",
    "backpack",
]
_CITIES = ["Austin", "Leeds", "Lyon", "Osaka", "Porto", "Toronto", "Tallinn", "Cork"]


def make_order(order_id: int) -> dict[str, Any]:
    """Order ``order_id`` of OrderPlacementPavillion: the same every time it is asked for."""
    lines: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{(order_id * 7 + n * 13) % 997:03d}",
            "name": _PRODUCTS[(order_id + n * 5) % len(_PRODUCTS)],
            "quantity": 1 + (order_id + n) % 3,
        }
        for n in range(1 + order_id % 3)
    ]
    return {
        "id": order_id,
        "placed_at": f"2024-11-29T{(order_id // 3600) % 24:02d}:{(order_id // 60) % 60:02d}:{order_id % 60:02d}Z",
        "customer": {"name": f"Customer {order_id % 1777}", "city": _CITIES[order_id % len(_CITIES)]},
        "lines": lines,
        "total_cents": sum(1999 * line["quantity"] for line in lines),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a worker killed or closing its pool) is not news."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    api: "_LoopbackAPI"

    def log_message(self, format: str, *args: Any) -> None:  # no access log on the terminal
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        try:
            status, payload, headers = self.api.handle(method, url.path, parse_qs(url.query), self.headers, body)
        except Exception as exc:  # a bug here must answer, not hang the client
            status, payload, headers = 500, {"error": f"{type(exc).__name__}: {exc}"}, {}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _LoopbackAPI:
    """A JSON API served by ``ThreadingHTTPServer`` from a daemon thread."""

    name = "api"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "_LoopbackAPI":
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"api": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


class OrderSource(_LoopbackAPI):
    """OrderPlacementPavillion: ``count`` orders, ids 1..count, served page by page."""

    name = "order-source"
    max_page = 500

    def __init__(self, count: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.count = count
        self.pages_served = 0

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if path != "/orders":
            return 404, {"error": f"no such path {path}"}, {}
        if method != "GET":
            return 405, {"error": "use GET"}, {}
        try:
            after = int((query.get("after") or ["0"])[0] or 0)
            limit = int((query.get("limit") or ["100"])[0])
        except ValueError:
            return 400, {"error": "after and limit must be integers"}, {}
        if limit < 1 or limit > self.max_page:
            return 400, {"error": f"limit must be 1..{self.max_page}"}, {}
        first = max(after, 0) + 1
        orders = [make_order(i) for i in range(first, min(first + limit, self.count + 1))]
        with self._lock:
            self.pages_served += 1
        return 200, {"orders": orders}, {}


class FulfillmentAPI(_LoopbackAPI):
    """FulfillmentsRUs: a rate-limited, idempotent ``POST /fulfillments``."""

    name = "fulfillment-api"

    def __init__(self, rate: float = 100, *, window: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = rate
        self.window = window
        self._accepted_at: deque[float] = deque()  # the sliding window of accepted requests
        self._responses: dict[str, tuple[int, dict[str, Any]]] = {}  # Idempotency-Key -> first response
        self.orders: Counter[Any] = Counter()  # order id -> times accepted (more than 1: a duplicate)
        self.accepted = 0
        self.rejected = 0  # 429s sent
        self.replays = 0  # repeated keys answered from the first response
        self.without_key = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    @property
    def capacity(self) -> int:
        return max(1, int(self.rate * self.window))

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/stats" and method == "GET":
            return 200, self.stats(), {}
        if path != "/fulfillments":
            return 404, {"error": f"no such path {path}"}, {}
        if method != "POST":
            return 405, {"error": "use POST"}, {}
        try:
            fulfillment = json.loads(body or b"null")
        except ValueError:
            return 400, {"error": "the body is not JSON"}, {}
        if not isinstance(fulfillment, dict) or "order_id" not in fulfillment:
            return 400, {"error": "expected a JSON object with an order_id"}, {}
        key = headers.get("Idempotency-Key")
        now = time.time()
        with self._lock:
            if key is not None and key in self._responses:
                self.replays += 1
                status, response = self._responses[key]
                return status, response, {"Idempotent-Replayed": "true"}
            times = self._accepted_at
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.capacity:
                self.rejected += 1
                wait = times[0] + self.window - now
                return 429, {"error": "rate limit exceeded"}, {"Retry-After": str(max(1, math.ceil(wait)))}
            times.append(now)
            self.accepted += 1
            self.orders[fulfillment["order_id"]] += 1
            if key is None:
                self.without_key += 1
            self.first_at = self.first_at or now
            self.last_at = now
            response = {
                "fulfillment_id": f"F-{self.accepted:06d}",
                "order_id": fulfillment["order_id"],
                "status": "queued",
            }
            if key is not None:
                self._responses[key] = (201, response)
            return 201, response, {}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            unique = len(self.orders)
            return {
                "accepted": self.accepted,
                "unique_orders": unique,
                "duplicates": self.accepted - unique,
                "rejected_429": self.rejected,
                "replays": self.replays,
                "without_key": self.without_key,
                "first_at": self.first_at,
                "last_at": self.last_at,
            }

    def order_ids(self) -> set[Any]:
        with self._lock:
            return set(self.orders)
