"""``app.forecast()``: the drain forecast of each queue and each limit key, read from the store
and worked out by ``floodway.forecast`` (pure), with an optional what-if; and the alert raised
when a queue's forecast passes ``alert_drain_deadline``."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .alerts import raise_alert
from .errors import ConfigError
from .forecast import Forecast, Observed, WhatIf, check_what_if, forecast, format_eta
from .limits import resolve_key
from .store.drain import BACKLOG_STATUSES, BUCKETS
from .units import iso

if TYPE_CHECKING:
    from .app import App
    from .store.base import LimitInfo


def _backlog(entry: dict[str, Any]) -> int:
    return sum(int(entry["backlog"].get(s, 0)) for s in BACKLOG_STATUSES)


def _queue_cap(holds: list[Any], rates: dict[tuple[str, str], float | None]) -> float | None:
    """The most a queue's backlog can be served at by its limits: each distinct list of keys is
    bound by its slowest key, and those keys pace in parallel. None when part of the backlog
    holds no rated limit (then only the workers bound it)."""
    binding: set[tuple[str, str]] = set()
    for pairs in holds:
        rated = [(rates[tuple(p)], tuple(p)) for p in pairs or [] if rates.get(tuple(p))]
        if not rated:
            return None
        binding.add(min(rated)[1])
    return sum(rates[p] or 0.0 for p in binding) if binding else None


def _queue_pause(holds: list[Any], pauses: dict[tuple[str, str], float]) -> float:
    """How long a queue's whole backlog waits on paused keys: 0 when some of it holds no paused
    key; else the soonest time one of its (limit, key) lists is free again."""
    waits = []
    for pairs in holds:
        wait = max((pauses.get(tuple(p), 0.0) for p in pairs or []), default=0.0)
        if not wait:
            return 0.0
        waits.append(wait)
    return min(waits, default=0.0)


def forecast_view(
    app: "App",
    *,
    window: float = 60.0,
    queue: str | None = None,
    limit: str | None = None,
    key: str | None = None,
    rate: Any = None,
    add: Any = 0,
    tenant: str | None = None,
    workers: Any = None,
    scope_tenant: str | None = None,
    limits: "list[LimitInfo] | None" = None,
) -> dict[str, Any]:
    """Per queue and per limit key: backlog, served and arrival rates, the limit's rate, the
    ETA with its range and why. ``rate`` (for ``limit``, or its ``key``), ``add`` (jobs, to
    ``queue`` and to ``key`` or ``tenant``'s key of ``limit``) and ``workers`` ask what if;
    nothing is written. ``scope_tenant``: that tenant's jobs only, over ``limits``."""
    new_rate, add, new_workers = check_what_if(rate, add, workers)
    infos = app.store.list_limits() if limits is None else limits
    # the stored declarations, and (for everyone but a tenant) those of the code loaded
    specs = {name: spec for name, spec in app.limits.items()} if limits is None else {}
    specs.update({info.spec.name: info.spec for info in infos})
    if limit is not None and limit not in specs:
        raise ConfigError(f"unknown limit {limit!r}" + (f"; known: {', '.join(sorted(specs))}" if specs else ""))
    if new_rate is not None and limit is None:
        raise ConfigError("rate: name the limit it is for (limit=...)")
    if key is not None and limit is None:
        raise ConfigError("key: name its limit (limit=...)")
    queue_infos = app.store.list_queues(tenant=scope_tenant)
    queue_names = {q.name for q in queue_infos}
    if queue is not None and queue not in queue_names and queue not in app.queues:
        raise ConfigError(f"unknown queue {queue!r}")
    added_keys: set[tuple[str, str]] = set()
    if add and limit is not None:
        if key is not None:
            added_keys.add((limit, key))
        elif tenant is not None:
            added_keys.add((limit, resolve_key(specs[limit].key, {}, tenant)))
        else:
            raise ConfigError("add: with a limit, say which key the jobs hold (key=... or tenant=...)")
    add_queue = (queue or "default") if add else None

    now = time.time()
    width = window / BUCKETS
    counts = app.store.drain_counts(now - window, width, tenant=scope_tenant)
    workers_now = len(app.store.list_workers()) if scope_tenant is None else None
    rates = {(info.spec.name, k.key): k.effective_rate for info in infos for k in info.keys}
    # a key no job has been admitted under yet: its declared rate
    for name, k in [*counts["keys"], *added_keys]:
        spec = specs.get(name)
        if (name, k) not in rates and spec is not None and spec.rate is not None:
            rates[(name, k)] = spec.rate.per_second
    sources = {(info.spec.name, k.key): k.source for info in infos for k in info.keys}
    # keys paused until a reset (a destination's exhausted quota, or by hand), and paused queues
    pauses = {
        (info.spec.name, k.key): k.paused_until - now
        for info in infos
        for k in info.keys
        if k.paused_until is not None and k.paused_until > now
    }
    paused_queues = {q.name for q in queue_infos if q.paused}
    # a tenant's counts are of its own jobs: the keys they hold of the limits it may see are its
    visible = {info.spec.name for info in infos} if limits is not None else None

    def observed(entry: dict[str, Any], limit_rate: float | None, paused_for: float = 0.0) -> Observed:
        return Observed(_backlog(entry), entry["created"], entry["finished"], width, window, limit_rate, paused_for)

    def changes(subject_rate: bool, adds: bool) -> WhatIf:
        return WhatIf(
            rate=new_rate if subject_rate else None,
            add=add if adds else 0,
            workers=new_workers,
            workers_now=workers_now,
        )

    keys_out: list[dict[str, Any]] = []
    entries = dict(counts["keys"])
    for pair in added_keys:
        entries.setdefault(pair, {"backlog": {}, "created": [0] * BUCKETS, "finished": [0] * BUCKETS, "holds": []})
    served: dict[str, float] = {}
    active: dict[str, int] = {}
    plain: dict[tuple[str, str], Forecast] = {}
    for (name, k), entry in entries.items():
        if visible is not None and name not in visible:
            continue
        plain[(name, k)] = forecast(observed(entry, rates.get((name, k)), pauses.get((name, k), 0.0)))
        served[name] = served.get(name, 0.0) + plain[(name, k)].served_rate
        active[name] = active.get(name, 0) + (1 if plain[(name, k)].backlog or (name, k) in added_keys else 0)
    for (name, k), entry in sorted(entries.items()):
        if (name, k) not in plain or (limit is not None and name != limit) or (key is not None and k != key):
            continue
        share = served[name] / active[name] if active.get(name) and served[name] else None
        result = forecast(
            observed(entry, rates.get((name, k)), pauses.get((name, k), 0.0)),
            changes(new_rate is not None and name == limit, (name, k) in added_keys),
            fair_share=share,
        )
        keys_out.append(
            {
                "limit": name,
                "key": k,
                "source": sources.get((name, k)),
                "active_keys": active.get(name, 0),
                "fair_share": None if share is None else round(share, 3),
                **_out(result, now),
            }
        )

    new_rates = dict(rates)
    if new_rate is not None:
        for pair in new_rates:
            if pair[0] == limit and (key is None or pair[1] == key):
                new_rates[pair] = new_rate
    queues_out: list[dict[str, Any]] = []
    queue_entries = dict(counts["queues"])
    if add_queue is not None:
        queue_entries.setdefault(
            add_queue, {"backlog": {}, "created": [0] * BUCKETS, "finished": [0] * BUCKETS, "holds": []}
        )
    for name, entry in sorted(queue_entries.items()):
        if queue is not None and name != queue:
            continue
        cap, new_cap = _queue_cap(entry["holds"], rates), _queue_cap(entry["holds"], new_rates)
        what_if = changes(False, name == add_queue)
        if new_cap != cap:
            what_if.rate = new_cap
        pause = math.inf if name in paused_queues else _queue_pause(entry["holds"], pauses)
        queues_out.append({"queue": name, **_out(forecast(observed(entry, cap, pause), what_if), now)})

    asked = {"rate": new_rate, "add": add or None, "workers": new_workers}
    return {
        "at": iso(now),
        "window_seconds": window,
        "workers": workers_now,
        "what_if": {k: v for k, v in asked.items() if v is not None} or None,
        "queues": queues_out,
        "limits": keys_out,
    }


def _out(result: Forecast, now: float) -> dict[str, Any]:
    data = result.to_dict()
    data["eta"] = format_eta(result.eta_seconds) if result.drains else "will not drain"
    data["eta_at"] = iso(now + result.eta_seconds) if result.eta_seconds is not None else None
    return data


#: per app, the queues whose forecast is past the deadline now: an alert fires once per episode
_late: dict[int, set[str]] = {}


def check_drain(app: "App") -> None:
    """Raise ``drain_deadline`` once when a queue's forecast passes ``alert_drain_deadline``
    (or it will not drain); the episode ends when its forecast is back within it."""
    deadline = app.settings.alert_drain_deadline
    if not deadline:
        return
    late = _late.setdefault(id(app), set())
    for q in forecast_view(app)["queues"]:
        over = q["backlog"] > 0 and (
            (not q["drains"] and q["rate_used"] is not None)
            or (q["eta_seconds"] is not None and q["eta_seconds"] > deadline)
        )
        if not over:
            late.discard(q["queue"])
            continue
        if q["queue"] in late:
            continue
        late.add(q["queue"])
        raise_alert(
            app,
            "drain_deadline",
            "warning",
            f"Queue {q['queue']} will not drain within {format_eta(deadline)}: {q['eta']}",
            queue=q["queue"],
            backlog=q["backlog"],
            eta_seconds=q["eta_seconds"],
            deadline_seconds=deadline,
            shortfall_per_second=q["shortfall_per_second"],
        )
