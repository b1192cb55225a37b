"""``app.stats()``: what is queued, running and flowing, per queue and per limit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .units import iso

if TYPE_CHECKING:
    from .app import App
    from .store.base import LimitInfo


def limit_dict(info: Any, now: float, declared: Any = None) -> dict[str, Any]:
    """One limit as the CLI, the API and the dashboard show it: the stored declaration, the one
    in the code that was loaded (``declared``: it reaches the store when a worker starts or a
    job is enqueued), and per key the effective rate and where it came from, 429s by kind, and
    the pause."""
    return {
        **info.spec.to_dict(),
        "declared": declared.to_dict() if declared is not None else None,
        "keys": [
            {
                "key": k.key,
                "effective_rate": None if k.effective_rate is None else round(k.effective_rate, 3),
                "source": k.source,
                "remaining": k.remaining,
                "running": k.running,
                "admitted": k.admitted,
                "throttled": k.throttled,
                "throttled_last_minute": k.throttled_last_minute,
                "exhausted": k.exhausted,
                "cuts": k.cuts,
                "window_end": None
                if k.window_end is None
                else {"after": k.window_end[0], "by": k.window_end[1], "length": k.window_end[2]},
                "pauses": k.rate_limited,
                "rate_limited": k.rate_limited,
                "paused_until": iso(k.paused_until),
                "paused_for": round(k.paused_until - now, 3) if k.paused_until else None,
                "pause_reason": k.pause_reason,
                "lanes": [
                    {
                        "lane": lane.lane,
                        "share": lane.share,
                        "active": lane.active,
                        "effective_rate": None if lane.effective_rate is None else round(lane.effective_rate, 3),
                        "concurrency": lane.concurrency,
                        "running": lane.running,
                        "admitted": lane.admitted,
                    }
                    for lane in k.lanes
                ],
            }
            for k in info.keys
        ],
    }


def observed_rate(count: int, since: float | None, now: float, window: float) -> float:
    """Jobs per second over the part of the window that saw them: ``count`` since the first of
    them (at least a second), so a 40 s drain at 50/s reads 50/s in a 60 s window, not 33/s."""
    if not count or since is None:
        return 0.0
    return round(count / max(min(now - since, window), 1.0), 3)


def collect(
    app: "App", window: float = 60.0, *, tenant: str | None = None, limits: "list[LimitInfo] | None" = None
) -> dict[str, Any]:
    """Depth, running and rates per queue and per limit. With ``tenant``: of that tenant's jobs
    only (the queues it has jobs in; the store aggregates them), over ``limits`` (the limits it
    may see), and no worker count."""
    now = time.time()
    activity = app.store.activity(now - window, tenant=tenant)
    queues: dict[str, Any] = {}
    for q in app.store.list_queues(tenant=tenant):
        if tenant is not None and not any(q.counts.values()):
            continue
        moved = activity["queues"].get(
            q.name, {"created": 0, "finished": 0, "created_since": None, "finished_since": None}
        )
        queues[q.name] = {
            "depth": sum(q.counts.get(s, 0) for s in ("waiting", "scheduled", "retrying")),
            "running": q.counts.get("running", 0),
            "counts": q.counts,
            "max_concurrency": q.max_concurrency,
            "paused": q.paused,
            "rate_in": observed_rate(moved["created"], moved["created_since"], now, window),
            "rate_out": observed_rate(moved["finished"], moved["finished_since"], now, window),
        }
    by_limit: dict[str, Any] = {}
    for info in app.store.list_limits() if limits is None else limits:
        moved = activity["limits"].get(
            info.spec.name, {"waiting": 0, "created": 0, "finished": 0, "created_since": None, "finished_since": None}
        )
        by_limit[info.spec.name] = {
            "rate": str(info.spec.rate) if info.spec.rate else None,
            "concurrency": info.spec.concurrency,
            "depth": moved["waiting"],
            "running": sum(k.running for k in info.keys),
            "admitted": sum(k.admitted for k in info.keys),
            "rate_limited": sum(k.rate_limited for k in info.keys),
            "throttled": sum(k.throttled for k in info.keys),
            "effective_rates": {k.key: k.effective_rate for k in info.keys},
            "paused_keys": sorted(k.key for k in info.keys if k.paused_until),
            "rate_in": observed_rate(moved["created"], moved["created_since"], now, window),
            "rate_out": observed_rate(moved["finished"], moved["finished_since"], now, window),
        }
    return {
        "window_seconds": window,
        "queues": queues,
        "limits": by_limit,
        "workers": len(app.store.list_workers()) if tenant is None else None,
    }
