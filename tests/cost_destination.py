"""A loopback GraphQL-style API that charges each call a **variable** cost, like Shopify's:

    with CostDestination(size=100, restore=200) as dest:     # a bucket of 100 points, +200/s
        httpx.post(dest.url + "/graphql", json={"cost": 7})  # this call costs 7 points
        dest.accepted_count, dest.rejected_count, dest.points_accepted

It REALLY enforces its bucket: ``size`` points restoring ``restore`` points per second; a call
whose cost (the JSON body's ``cost``, else the ``?cost=`` query, else 1) is more than what is
available is refused with a 429 whose body says ``THROTTLED`` and spends nothing. Every answer
carries Shopify's ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost`` — null on a
refusal — and ``throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}``).
``lowest_available`` is the least the bucket ever held after a call (never below 0: a call that
does not fit is refused, so a refusal is the only sign of an overdrawn budget).
"""

from __future__ import annotations

import time
from typing import Any

from destination import Destination, Record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class CostDestination(Destination):
    def __init__(self, size: float = 100, restore: float = 200, *, latency: float = 0.0, **options: Any):
        super().__init__(rate=restore, burst=int(size), latency=latency, **options)
        self.size = float(size)
        self.restore = float(restore)
        self._available = self.size
        self._at: float | None = None
        self.points_accepted = 0.0
        self.lowest_available = self.size
        self.app = Starlette(
            routes=[
                Route("/graphql", self._graphql, methods=["POST"]),
                Route("/stats", self._stats_endpoint, methods=["GET"]),
            ]
        )

    async def _graphql(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except Exception:
            body = None
        body = body if isinstance(body, dict) else {}
        cost = float(body.get("cost", request.query_params.get("cost", 1)))
        if self.latency:
            import asyncio

            await asyncio.sleep(self.latency)
        status, payload = self._charge(time.time(), cost, request.headers.get("idempotency-key"), body.get("id"))
        return JSONResponse(payload, status_code=status)

    def _charge(self, now: float, cost: float, key: str | None, body_id: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self.first_request is None:
                self.first_request = now
            if self._at is not None:
                self._available = min(self.size, self._available + (now - self._at) * self.restore)
            self._at = now
            refused = cost > self._available + 1e-9
            if not refused:
                self._available -= cost
                self.points_accepted += cost
                self.lowest_available = min(self.lowest_available, self._available)
            self._records.append(Record(now, key, body_id, None, 429 if refused else 200))
            extensions = {
                "cost": {
                    "requestedQueryCost": cost,
                    "actualQueryCost": None if refused else cost,
                    "throttleStatus": {
                        "maximumAvailable": self.size,
                        "currentlyAvailable": max(0.0, self._available),
                        "restoreRate": self.restore,
                    },
                }
            }
            if refused:
                errors = [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
                return 429, {"errors": errors, "extensions": extensions}
            return 200, {"data": {"id": body_id}, "extensions": extensions}
