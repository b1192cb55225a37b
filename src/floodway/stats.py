"""``app.stats()``: what is queued, running and flowing, per queue and per limit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App


def collect(app: "App", window: float = 60.0) -> dict[str, Any]:
    now = time.time()
    activity = app.store.activity(now - window)
    queues: dict[str, Any] = {}
    for q in app.store.list_queues():
        moved = activity["queues"].get(q.name, {"created": 0, "finished": 0})
        queues[q.name] = {
            "depth": sum(q.counts.get(s, 0) for s in ("waiting", "scheduled", "retrying")),
            "running": q.counts.get("running", 0),
            "counts": q.counts,
            "max_concurrency": q.max_concurrency,
            "paused": q.paused,
            "rate_in": round(moved["created"] / window, 3),
            "rate_out": round(moved["finished"] / window, 3),
        }
    limits: dict[str, Any] = {}
    for info in app.store.list_limits():
        moved = activity["limits"].get(info.spec.name, {"waiting": 0, "created": 0, "finished": 0})
        limits[info.spec.name] = {
            "rate": str(info.spec.rate) if info.spec.rate else None,
            "concurrency": info.spec.concurrency,
            "depth": moved["waiting"],
            "running": sum(k.running for k in info.keys),
            "admitted": sum(k.admitted for k in info.keys),
            "rate_limited": sum(k.rate_limited for k in info.keys),
            "paused_keys": sorted(k.key for k in info.keys if k.paused_until),
            "rate_in": round(moved["created"] / window, 3),
            "rate_out": round(moved["finished"] / window, 3),
        }
    return {"window_seconds": window, "queues": queues, "limits": limits,
            "workers": len(app.store.list_workers())}
