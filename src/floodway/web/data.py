"""What a principal may see, read from the store: the scoped views behind the API, the
dashboard and the live streams.

Every function here is synchronous (the store is); the web layer calls them through
``run_in_threadpool``. They speak only the ``Store`` interface and ``App``/``Handle`` methods.

Tenant scoping: a tenant's job list is filtered by tenant in the store; its per-queue counts
and rates are aggregated by the store over its own jobs (``list_queues(tenant=)``,
``activity(tenant=)``, read through the ``jobs_tenant*`` indexes), so a tenant's view costs
what an admin's does, however many jobs it has. Its limits are the limits whose key template
uses ``{tenant}``, showing only the keys its tenant resolves to.
"""

from __future__ import annotations

import re
import string
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, JobNotFound
from ..jobs import Job, Status
from ..limits import resolve_key
from ..schedule import next_fire
from ..stats import collect, limit_dict
from ..store.keyed import folds_in
from ..units import format_duration, iso
from .auth import Principal

if TYPE_CHECKING:
    from ..app import App
    from ..store.base import LimitInfo
    from ..tasks import Task

STATUS_NAMES = [s.value for s in Status]


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job with id {job_id!r}")


def visible_job(app: "App", principal: Principal, job_id: str) -> Job:
    """The job, if it exists and the principal may see it; else ``JobNotFound`` — the same
    answer for another tenant's job as for no job at all."""
    job = app.store.get_job(job_id)
    if job is None or not principal.owns(job):
        raise not_found(job_id)
    return job


def job_dict(job: Job) -> dict[str, Any]:
    data = job.to_dict()
    data["cancel_requested"] = job.cancel_requested
    return data


# -- tenants ----------------------------------------------------------------------------------
def _empty_counts() -> dict[str, int]:
    return {s: 0 for s in STATUS_NAMES}


def key_pattern(template: str, tenant: str) -> re.Pattern[str] | None:
    """A regex matching the keys ``template`` gives jobs of ``tenant`` (None when the template
    does not use ``{tenant}``, so its keys belong to nobody in particular)."""
    parts = list(string.Formatter().parse(template))
    if not any(f == "tenant" for _, f, _, _ in parts):
        return None
    out = []
    for literal, f, _, _ in parts:
        out.append(re.escape(literal))
        if f is not None:
            out.append(re.escape(tenant) if f == "tenant" else ".*?")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def scoped_limits(app: "App", principal: Principal) -> list["LimitInfo"]:
    infos = app.store.list_limits()
    if principal.admin:
        return infos
    out = []
    for info in infos:
        pattern = key_pattern(info.spec.key, principal.tenant or "") if info.spec.key else None
        if pattern is None:
            continue
        info.keys = [k for k in info.keys if pattern.match(k.key)]
        out.append(info)
    return out


# -- views ---------------------------------------------------------------------------------------
def queues_view(app: "App", principal: Principal) -> dict[str, Any]:
    if principal.admin:
        return {
            "queues": [
                {
                    "name": q.name,
                    "max_concurrency": q.max_concurrency,
                    "paused": q.paused,
                    "counts": {**_empty_counts(), **q.counts},
                }
                for q in app.store.list_queues()
            ],
            "truncated": False,
        }
    queues = []
    for q in app.store.list_queues(tenant=principal.tenant or ""):
        if any(q.counts.values()):  # the queues this tenant has jobs in
            queues.append(
                {
                    "name": q.name,
                    "max_concurrency": q.max_concurrency,
                    "paused": q.paused,
                    "counts": {**_empty_counts(), **q.counts},
                }
            )
    return {"queues": queues, "truncated": False}


def limits_view(app: "App", principal: Principal) -> dict[str, Any]:
    now = time.time()
    return {"limits": [limit_dict(info, now, app.limits.get(info.spec.name)) for info in scoped_limits(app, principal)]}


def workers_view(app: "App", include_stopped: bool = False) -> dict[str, Any]:
    now = time.time()
    return {"workers": [w.to_dict(now) for w in app.store.list_workers(include_stopped=include_stopped)]}


def schedules_view(app: "App", principal: Principal) -> dict[str, Any]:
    now = time.time()
    out = []
    for info in app.store.list_schedules():
        if not principal.admin and info.options.get("tenant") != principal.tenant:
            continue
        next_tick = iso(next_fire(info, now)[0])  # None for a stored schedule that cannot fire
        out.append(
            {
                "name": info.name,
                "task": info.task,
                "cron": info.cron,
                "tz": info.tz,
                "args": info.args,
                "options": info.options,
                "missed": info.missed,
                "last_tick": iso(info.last_tick),
                "next_tick": next_tick,
            }
        )
    return {"schedules": out}


def stats_view(app: "App", principal: Principal, window: float = 60.0) -> dict[str, Any]:
    """``app.stats()`` for admin; for a tenant, the same computed by the store over its own jobs
    and the limits it may see."""
    if principal.admin:
        data = app.stats(window)
    else:
        data = collect(app, window, tenant=principal.tenant or "", limits=scoped_limits(app, principal))
    data["truncated"] = False
    return data


def history_view(app: "App", principal: Principal, seconds: float) -> dict[str, Any]:
    """Jobs enqueued and done in each of the last ``seconds`` whole seconds (a tenant's own),
    oldest first: what the dashboard's throughput chart starts from."""
    now = time.time()
    start = int(now - seconds)
    found = app.store.history(start, tenant=None if principal.admin else (principal.tenant or ""))
    span = list(range(start, int(now) + 1))
    return {
        "seconds": span,
        "enqueued": [found["created"].get(s, 0) for s in span],
        "done": [found["finished"].get(s, 0) for s in span],
    }


def live_view(app: "App", principal: Principal) -> dict[str, Any]:
    """One tick of ``/api/stream``: queue counts, totals per status and limit counters."""
    queues = queues_view(app, principal)
    totals = _empty_counts()
    for q in queues["queues"]:
        for status, n in q["counts"].items():
            totals[status] = totals.get(status, 0) + n
    data: dict[str, Any] = {
        "at": iso(time.time()),
        "queues": queues["queues"],
        "totals": totals,
        "limits": limits_view(app, principal)["limits"],
        "truncated": queues["truncated"],
    }
    data["workers"] = len(app.store.list_workers()) if principal.admin else None
    return data


def attempts_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of a job, read from its timeline: each ``-> running`` starts one."""
    runs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for e in events:
        if e["to"] == "running":
            current = {
                "attempt": e["attempt"],
                "started_at": e["at"],
                "worker_id": e["worker_id"],
                "ended_at": None,
                "outcome": "running",
                "error": None,
                "reason": None,
            }
            runs.append(current)
        elif current is not None and e["from"] == "running":
            current.update(ended_at=e["at"], outcome=e["to"], error=e["error"], reason=e["reason"])
            current = None
    return runs


def job_detail(app: "App", principal: Principal, job_id: str) -> dict[str, Any]:
    """Everything the job page shows: the job, timeline, runs, cursor, steps."""
    job = visible_job(app, principal, job_id)
    events = [e.to_dict() for e in app.store.events(job.id)]
    state = app.store.load_state(job.state_key)
    flow = app.flow_insights(job.id)
    return {
        "job": job_dict(job),
        "events": events,
        "attempts": attempts_of(events),
        "state": {"key": state.key, "cursor": state.cursor, "checkpoints": state.checkpoints},
        "flow": flow,
        "shaping": job_shaping(app.tasks.get(job.task), job, events),
    }


def job_shaping(task: "Task | None", job: Job, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the job page says of how the job was shaped: ``batch_key``, the value of its batch
    task's ``Batch.key`` for its arguments ("" when the task's items share one batch per
    tenant; None when it is no batch item), and ``folded``, how many later enqueues a debounce
    folded into it (None when none did), read from its timeline."""
    batch_key = None
    if task is not None and task.batch is not None:
        try:
            batch_key = resolve_key(task.batch.key, job.args, job.tenant) if task.batch.key else ""
        except ConfigError:  # the task's key was changed since: these arguments make none
            batch_key = None
    folds = [n for e in events if (n := folds_in(e["reason"])) is not None]
    return {"batch_key": batch_key, "folded": folds[-1] if folds else None}


def _said(value: Any) -> str:
    """A declared duration as it was written (``"1h"``), or in short form when it was a number."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value or 0)
    return format_duration(seconds)


def task_shaping(task: "Task") -> dict[str, Any]:
    """A task as the overview lists it: its queue, limits and lane, and its dedupe, debounce
    and batch options in words (None where it has none)."""
    policy, batch, given = task.key_policy, task.batch, task.key_options
    dedupe = debounce = batched = None
    if policy is not None and policy.kind == "unique":
        window = "while unfinished" if policy.while_unfinished else f"for {_said(given.get('unique_for'))}"
        dedupe = f"{window}, key {policy.template or '(all the args)'}"
    elif policy is not None:
        most = f", at most {_said(given.get('debounce_max'))}" if policy.max_wait is not None else ""
        debounce = f"{_said(given.get('debounce'))}{most}, key {policy.template or '(the task)'}"
    if batch is not None:
        batched = (
            f"up to {batch.max_size} items, waits {_said(batch.max_wait)}, "
            f"key {batch.key or '(the tenant)'}, charged per {batch.charge}"
        )
    return {
        "name": task.name,
        "queue": task.queue_name,
        "limits": list(task.limits),
        "lane": task.lane,
        "dedupe": dedupe,
        "debounce": debounce,
        "batch": batched,
    }


def tasks_view(app: "App") -> dict[str, Any]:
    """The tasks callers may enqueue (floodway's own are left out), with their shaping."""
    return {"tasks": [task_shaping(app.tasks[name]) for name in sorted(app.public_tasks())]}
