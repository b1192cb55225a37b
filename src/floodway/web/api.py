"""The REST API under ``/api``, ``/metrics``, ``/healthz`` and ``/openapi.json``.

Errors are JSON ``{"error": "message"}``: 400 bad input (``EnqueueError``/``ConfigError``), 401
no or bad token, 403 not allowed for this token, 404 not found — also for another tenant's job,
so a tenant cannot learn that it exists — 409 a status change the transition table refuses
(``TransitionError``), 413 a body over the size limit or a bulk request over ``api_max_bulk``
items, 429 a token over its request rate (``api_rate``, with ``Retry-After``). Every store call runs in a thread
(``run_in_threadpool``), never on the event loop.

Tenant tokens: jobs they enqueue get their tenant; ids they choose are scoped to it (``id="x"``
becomes ``"<tenant>:x"``, unless it starts with that already). Tenant names never contain
``:`` and never are one of floodway's own id namespaces (``cron``), so two tenants never
collide on an id, and no tenant can take a schedule's; an id that exists as another's job
answers 409 and writes nothing, bulk included. Dedupe and debounce keys are scoped to the
tenant by the library, so an enqueue never answers with another tenant's job. ``args`` may not name another tenant
(``{"tenant": ...}``); a tenant token may name only the queues the app declares (its own
``app.queue()`` calls and its tasks' queues), so it cannot create queues. Lists, counts,
limits, schedules, flows and streams show only their tenant's. Workers, queue pause/resume,
limit changes and ``/metrics`` are admin only. floodway's own tasks (``floodway.*``) cannot be
enqueued here, and ids in its own namespaces (``cron:...``) cannot be chosen, by anyone.

No request answers 5xx after writing: every input is checked before the one write a request
makes, and the answer is built so that no stored value can break it (a lone surrogate written
by an older version is sent escaped, ``"\\ud800"``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import ConfigError, EnqueueError, JobIdTaken, JobNotFound, TransitionError
from ..inputs import check_name, is_reserved_id
from ..jobs import Status
from ..tokens import authenticate
from . import data
from .auth import ApiError, Principal, require, token_from
from .shaping_input import SHAPING_FIELDS, shaping_options
from .wire import (
    _delay,
    _integer,
    _query_int,
    _query_number,
    _query_text,
    _string,
    call,
    error,
    fw,
    ok,
    parse_statuses,
    read_body,
    read_object,
)

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("floodway.web")

DEFAULT_MAX_BODY = 1_000_000
MAX_WAIT = 60.0
MAX_LIST = 1000
#: the largest ``offset`` of a job list (the dashboard's too)
MAX_OFFSET = 10**9
ENQUEUE_FIELDS = {"task", "args", "id", "queue", "delay", "priority", "tenant", *SHAPING_FIELDS}
BULK_FIELDS = (ENQUEUE_FIELDS - {"args"}) | {"items"}
LIMIT_FIELDS = {"rate", "burst", "concurrency", "adaptive"}


# -- tenant rules ------------------------------------------------------------------------------------
def scoped_id(principal: Principal, job_id: str | None) -> str | None:
    if job_id is None or principal.admin:
        return job_id
    prefix = f"{principal.tenant}:"
    return job_id if job_id.startswith(prefix) else prefix + job_id


def enqueue_tenant(principal: Principal, body: dict[str, Any], items: list[Any]) -> str | None:
    tenant = _string(body, "tenant")
    if principal.admin:
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise ApiError(403, f"this token enqueues only for tenant {principal.tenant!r}, not {tenant!r}")
    for args in items:
        if isinstance(args, dict) and "tenant" in args and args["tenant"] != principal.tenant:
            raise ApiError(403, f"args name tenant {args['tenant']!r}; this token acts only for {principal.tenant!r}")
    return principal.tenant


def enqueue_options(app: "App", principal: Principal, body: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    """What an enqueue request asks for, checked before anything is written: the task (none of
    floodway's own), the id (scoped to a tenant token's tenant; none in floodway's namespaces),
    the queue (a tenant token names only declared ones), delay, priority, tenant, and the
    shaping options (``shaping_input``). The library checks the rest (``App.enqueue``) before
    its one write."""
    name = _string(body, "task", required=True) or ""
    tenant = enqueue_tenant(principal, body, items)
    task = app.get_task(name, internal=False)
    job_id = _string(body, "id")
    if job_id is not None and is_reserved_id(job_id):
        raise ApiError(400, f"job id {job_id!r} is in a namespace floodway keeps for its own jobs; choose another id")
    queue = _string(body, "queue")
    if queue is not None and not principal.admin:
        declared = set(app.queues) | {t.queue_name for t in app.tasks.values()}
        if queue not in declared:
            raise ApiError(
                400,
                f"unknown queue {queue!r}; this token may enqueue only to the queues the app "
                f"declares: {', '.join(sorted(declared))}",
            )
    return {
        "task": task,
        "id": scoped_id(principal, job_id),
        "queue": queue,
        "delay": _delay(body),
        "priority": _integer(body, "priority"),
        "tenant": tenant,
        "owner": None if principal.admin else principal.tenant,
        **shaping_options(body),
    }


def check_bulk_size(count: int, cap: int) -> None:
    """One bulk request carries at most ``cap`` jobs (``api_max_bulk``): one huge insert would
    hold the store's write lock, and every other enqueue, for seconds."""
    if count > cap:
        raise ApiError(
            413,
            f"'items' has {count} jobs, over the limit of {cap} per request (api_max_bulk); "
            "split them into several requests",
        )


# -- jobs ---------------------------------------------------------------------------------------
async def enqueue(request: Request) -> Response:
    principal = await require(request)
    body = await read_object(request, ENQUEUE_FIELDS)
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ApiError(400, f"'args' must be a JSON object of argument names to values, got {type(args).__name__}")
    app = fw(request)
    options = enqueue_options(app, principal, body, [args])
    task = options.pop("task")

    # nothing is written before this call, and only once it returns is anything written;
    # concurrent requests' jobs share transactions (the group commit, from the event loop)
    handle = (await app._enqueue_async(task, [args], single=True, start_at=None, retry=None, limits=None, **options))[0]

    def read_back() -> Any:
        try:
            return app.store.get_job(handle.id)
        except Exception:  # the job is written: answer that, without its details
            log.warning("web: job %s was enqueued but could not be read back", handle.id, exc_info=True)
            return None

    job = await call(read_back)
    return ok(
        {
            "id": handle.id,
            "created": handle.created,
            "status": job.status.value if job else None,
            "job": data.job_dict(job) if job else None,
        },
        201 if handle.created else 200,
    )


async def enqueue_bulk(request: Request) -> Response:
    principal = await require(request)
    body = await read_object(request, BULK_FIELDS)
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise ApiError(400, "'items' must be a non-empty list of argument objects")
    check_bulk_size(len(items), request.app.state.max_bulk)
    for index, args in enumerate(items):
        if args is not None and not isinstance(args, dict):
            raise ApiError(400, f"items[{index}] must be a JSON object of argument names to values")
    app = fw(request)
    options = enqueue_options(app, principal, body, items)
    task = options.pop("task")

    def run() -> list[Any]:
        # one transaction: an id taken by another tenant's job (409) writes none of the items
        return app._enqueue(task, list(items), single=False, start_at=None, retry=None, limits=None, **options)

    handles = await call(run)
    created = sum(h.created for h in handles)
    return ok(
        {"ids": [h.id for h in handles], "created": created, "existing": len(handles) - created},
        201 if created else 200,
    )


async def list_jobs(request: Request) -> Response:
    principal = await require(request)
    statuses = parse_statuses(request.query_params.getlist("status"))
    limit = _query_int(request, "limit", 50, 1, MAX_LIST)
    offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
    tenant = _query_text(request, "tenant")
    if not principal.admin:
        if tenant is not None and tenant != principal.tenant:
            return ok({"jobs": [], "limit": limit, "offset": offset, "count": 0})
        tenant = principal.tenant
    found = await call(
        fw(request).store.list_jobs,
        status=statuses,
        queue=_query_text(request, "queue"),
        task=_query_text(request, "task"),
        tenant=tenant,
        text=_search_text(request),
        limit=limit,
        offset=offset,
    )
    return ok({"jobs": [data.job_dict(j) for j in found], "limit": limit, "offset": offset, "count": len(found)})


def _search_text(request: Request) -> str | None:
    """``text``: what a job's arguments or error hold (any case), at most 255 characters."""
    text = _query_text(request, "text")
    if text is not None and len(text) > 255:
        raise ApiError(400, f"query parameter 'text' is {len(text)} characters, over 255")
    return text


def _job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not job_id:
        raise ApiError(404, "no job id given")
    return job_id


async def get_job(request: Request) -> Response:
    principal = await require(request)
    job = await call(data.visible_job, fw(request), principal, _job_id(request))
    return ok(data.job_dict(job))


async def job_detail(request: Request) -> Response:
    principal = await require(request)
    return ok(await call(data.job_detail, fw(request), principal, _job_id(request)))


async def job_result(request: Request) -> Response:
    principal = await require(request)
    wait = _query_number(request, "wait", 0.0, 0.0, request.app.state.max_wait)
    app, job_id = fw(request), _job_id(request)
    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        job = await call(data.visible_job, app, principal, job_id)
        left = deadline - time.monotonic()
        if job.status.is_final or left <= 0:
            break
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)
    return ok(
        {
            "id": job.id,
            "status": job.status.value,
            "done": job.status.is_final,
            "result": job.result if job.status is Status.COMPLETE else None,
            "error": job.error,
        }
    )


async def job_events(request: Request) -> Response:
    principal = await require(request)
    app, job_id = fw(request), _job_id(request)

    def run() -> list[dict[str, Any]]:
        data.visible_job(app, principal, job_id)
        return [e.to_dict() for e in app.store.events(job_id)]

    return ok({"id": job_id, "events": await call(run)})


async def job_state(request: Request) -> Response:
    principal = await require(request)
    app, job_id = fw(request), _job_id(request)

    def run() -> dict[str, Any]:
        job = data.visible_job(app, principal, job_id)
        state = app.store.load_state(job.state_key)
        return {"id": job_id, "key": state.key, "cursor": state.cursor, "checkpoints": state.checkpoints}

    return ok(await call(run))


async def job_flow(request: Request) -> Response:
    principal = await require(request)
    app, job_id = fw(request), _job_id(request)

    def run() -> dict[str, Any]:
        data.visible_job(app, principal, job_id)
        return app.flow_insights(job_id)

    return ok(await call(run))


async def job_action(request: Request, action: str) -> Response:
    principal = await require(request)
    app, job_id = fw(request), _job_id(request)
    await read_body(request)  # enforce the size limit; the body is not used

    def run() -> dict[str, Any]:
        data.visible_job(app, principal, job_id)
        if action == "cancel":
            status = app.handle(job_id).cancel()
            return {"id": job_id, "status": status.value, "cancel_requested": status is Status.RUNNING}
        if action == "retry":
            return {"id": job_id, "status": app.handle(job_id).retry().value}
        app.store.set_paused(job_id=job_id, paused=action == "pause")
        job = data.visible_job(app, principal, job_id)
        return {"id": job_id, "status": job.status.value, "paused": job.paused}

    return ok(await call(run))


# -- queues, limits, workers, schedules, stats -----------------------------------------------------
async def list_queues(request: Request) -> Response:
    principal = await require(request)
    return ok(await call(data.queues_view, fw(request), principal))


async def queue_action(request: Request, action: str) -> Response:
    principal = await require(request)
    name = request.path_params["name"]
    principal.require_admin(f"{action} of a queue")
    await read_body(request)
    check_name(name, "queue name")  # ConfigError -> 400
    await call(fw(request).store.set_paused, queue=name, paused=action == "pause")
    return ok({"queue": name, "paused": action == "pause"})


async def list_limits(request: Request) -> Response:
    principal = await require(request)
    return ok(await call(data.limits_view, fw(request), principal))


async def patch_limit(request: Request) -> Response:
    principal = await require(request)
    principal.require_admin("changing a limit")
    name = request.path_params["name"]
    body = await read_object(request, LIMIT_FIELDS)
    if not body:
        raise ApiError(400, "give at least one of 'rate', 'burst', 'concurrency', 'adaptive'")
    changes: dict[str, Any] = {}
    if "rate" in body:
        if body["rate"] is not None and not isinstance(body["rate"], str):
            raise ApiError(400, f"'rate' must be a string such as '20/s' or null, got {body['rate']!r}")
        changes["rate"] = body["rate"]
    if "burst" in body:
        burst = _integer(body, "burst")
        if burst is None:
            raise ApiError(400, "'burst' must be an integer >= 1")
        changes["burst"] = _at_most(burst, "burst")
    if "concurrency" in body:
        concurrency = _integer(body, "concurrency")
        changes["concurrency"] = _at_most(concurrency, "concurrency") or None  # null or 0 removes the cap
    if "adaptive" in body:
        if not isinstance(body["adaptive"], bool):
            raise ApiError(400, f"'adaptive' must be true or false, got {body['adaptive']!r}")
        changes["adaptive"] = body["adaptive"]
    app = fw(request)

    def run() -> dict[str, Any]:
        _known_limit(app, name)
        app.set_limit(name, **changes)
        return _one_limit(app, principal, name)

    return ok(await call(run))


def _known_limit(app: "App", name: str) -> None:
    known = {info.spec.name for info in app.store.list_limits()} | set(app.limits)
    if name not in known:
        raise ApiError(404, f"no limit named {name!r}")


def _one_limit(app: "App", principal: Principal, name: str) -> dict[str, Any]:
    for limit in data.limits_view(app, principal)["limits"]:
        if limit["name"] == name:
            return limit
    raise ApiError(404, f"no limit named {name!r}")


async def get_limit(request: Request) -> Response:
    principal = await require(request)
    return ok(await call(_one_limit, fw(request), principal, request.path_params["name"]))


async def reset_limit(request: Request) -> Response:
    """Forget what was learned about a limit (every key, or ``{"key": ...}``)."""
    principal = await require(request)
    principal.require_admin("resetting a learned limit")
    name = request.path_params["name"]
    empty = request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers
    body = {} if empty else await read_object(request, {"key"})
    key = _string(body, "key")
    app = fw(request)

    def run() -> dict[str, Any]:
        _known_limit(app, name)
        forgotten = app.reset_learned(name, key)
        return {**_one_limit(app, principal, name), "forgotten": forgotten}

    return ok(await call(run))


#: the largest burst or concurrency a limit can hold (the stores keep them as 32-bit integers)
MAX_LIMIT_NUMBER = 2**31 - 1


def _at_most(value: int | None, name: str) -> int | None:
    if value is not None and value > MAX_LIMIT_NUMBER:
        raise ApiError(400, f"{name!r} must be at most {MAX_LIMIT_NUMBER}, got {value}")
    return value


async def list_workers(request: Request) -> Response:
    principal = await require(request)
    principal.require_admin("the worker list")
    include = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    return ok(await call(data.workers_view, fw(request), include))


async def list_schedules(request: Request) -> Response:
    principal = await require(request)
    return ok(await call(data.schedules_view, fw(request), principal))


async def stats(request: Request) -> Response:
    principal = await require(request)
    window = _query_number(request, "window", 60.0, 1.0, 86400.0)
    return ok(await call(data.stats_view, fw(request), principal, window))


BULK_ACTION_FIELDS = {"action", "filter", "all", "dry_run"}
FILTER_FIELDS = {"status", "task", "queue", "tenant", "created_after", "created_before", "error"}


async def bulk_actions(request: Request) -> Response:
    """Retry, cancel, pause, resume or purge every job a filter matches: one request, a count
    back (``dry_run``: only the count). A tenant token acts on its own tenant's jobs only."""
    principal = await require(request)
    body = await read_object(request, BULK_ACTION_FIELDS)
    action = _string(body, "action", required=True)
    flt = body.get("filter") or {}
    if not isinstance(flt, dict):
        raise ApiError(400, "'filter' must be a JSON object")
    unknown = sorted(set(flt) - FILTER_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown filter field(s) {unknown}; expected some of {sorted(FILTER_FIELDS)}")
    for key, value in flt.items():
        texts = value if key == "status" and isinstance(value, list) else [value]
        if not all(isinstance(text, str) and text for text in texts):
            raise ApiError(
                400, f"filter {key!r} must be a non-empty string{' or a list of them' if key == 'status' else ''}"
            )
    for flag in ("all", "dry_run"):
        if not isinstance(body.get(flag, False), bool):
            raise ApiError(400, f"{flag!r} must be true or false")
    if not principal.admin:
        if flt.get("tenant") not in (None, principal.tenant):
            raise ApiError(403, f"this token acts only on tenant {principal.tenant!r}'s jobs")
        flt = {**flt, "tenant": principal.tenant}
        if not body.get("all") and set(flt) == {"tenant"}:
            raise ApiError(400, f"bulk {action}: give a filter (status, task, queue, created, error) or all=true")
    dry_run = bool(body.get("dry_run", False))
    count = await call(fw(request).bulk, action, **flt, all=bool(body.get("all", False)), dry_run=dry_run)
    return ok({"action": action, "count": count, "dry_run": dry_run})


async def stats_history(request: Request) -> Response:
    principal = await require(request)
    seconds = _query_number(request, "seconds", 120.0, 1.0, 3600.0)
    return ok(await call(data.history_view, fw(request), principal, seconds))


async def me(request: Request) -> Response:
    principal = await require(request)
    return ok(
        {"token_id": principal.token_id, "tenant": principal.tenant, "admin": principal.admin, "label": principal.label}
    )


# -- live streams (Server-Sent Events) -------------------------------------------------------------
def sse(event: str, payload: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in json.dumps(payload, default=str).splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


def stream_response(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


#: the shortest interval between two ticks of a live stream (each tick reads the store)
MIN_STREAM_INTERVAL = 1.0
#: the shortest interval between two reads of one job's stream (a job and its timeline, by id)
MIN_JOB_STREAM_INTERVAL = 0.25


async def _still_valid(request: Request) -> bool:
    """Whether the stream's token still works: checked before every tick, so a revoked token's
    streams end within one tick."""
    token, _, _ = token_from(request)
    return await call(authenticate, fw(request).store, token) is not None


async def stream_all(request: Request) -> Response:
    """Queue counts, totals and limit counters every ``interval`` seconds (``ticks`` ends it)."""
    principal = await require(request)
    interval = _query_number(request, "interval", 1.0, MIN_STREAM_INTERVAL, 60.0)
    ticks = _query_int(request, "ticks", 0, 0, 10**6)
    app = fw(request)

    async def gen() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        sent = 0
        while True:
            if sent and not await _still_valid(request):  # a revoked token ends its streams too
                yield sse("revoked", {"error": "invalid or revoked token"})
                return
            yield sse("stats", await call(data.live_view, app, principal))
            sent += 1
            if ticks and sent >= ticks:
                return
            await asyncio.sleep(interval)

    return stream_response(gen())


async def stream_job(request: Request) -> Response:
    """The job's timeline as it grows: ``event`` per transition, ``job`` when the job changes,
    ``end`` when it is final (then the stream closes)."""
    principal = await require(request)
    app, job_id = fw(request), _job_id(request)
    await call(data.visible_job, app, principal, job_id)  # 404 before the stream starts
    interval = _query_number(request, "interval", 0.25, MIN_JOB_STREAM_INTERVAL, 10.0)

    def read() -> tuple[Any, list[Any]]:
        job = app.store.get_job(job_id)
        return job, app.store.events(job_id) if job is not None else []

    async def gen() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        seen, last = 0, None
        first = True
        while True:
            if not first and not await _still_valid(request):  # a revoked token ends its streams too
                yield sse("revoked", {"error": "invalid or revoked token"})
                return
            first = False
            job, events = await call(read)
            if job is None:
                yield sse("end", {"id": job_id, "status": None, "deleted": True})
                return
            for index, event in enumerate(events[seen:], start=seen):
                yield sse("event", event.to_dict(), str(index))
            seen = max(seen, len(events))
            if job.updated_at != last:
                last = job.updated_at
                yield sse("job", data.job_dict(job))
            if job.status.is_final:
                yield sse("end", data.job_dict(job))
                return
            await asyncio.sleep(interval)

    return stream_response(gen())


# -- metrics, health, schema -----------------------------------------------------------------------
async def metrics(request: Request) -> Response:
    principal = await require(request)
    principal.require_admin("/metrics")
    from prometheus_client import CONTENT_TYPE_LATEST

    from ..metrics import exposition

    return Response(await call(exposition, fw(request)), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    try:
        version = await call(fw(request).store.schema_version)
    except Exception as exc:  # the store does not answer: not healthy
        return error(503, f"store unavailable: {type(exc).__name__}: {exc}")
    return ok({"ok": True, "schema_version": version})


async def openapi(request: Request) -> Response:
    await require(request)
    from .openapi import document

    return ok(
        document(
            max_body=request.app.state.max_body,
            max_wait=request.app.state.max_wait,
            tasks=fw(request).public_tasks(),
            max_bulk=request.app.state.max_bulk,
        )
    )


# -- errors -----------------------------------------------------------------------------------------
async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error(exc.status, exc.message)
    response.headers.update(exc.headers)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="floodway"'
    return response


async def on_bad_input(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


async def on_not_found(request: Request, exc: Exception) -> Response:
    return error(404, str(exc) or "not found")


async def on_transition(request: Request, exc: Exception) -> Response:
    return error(409, str(exc))


async def on_id_taken(request: Request, exc: Exception) -> Response:
    return error(409, str(exc))


EXCEPTION_HANDLERS: dict[Any, Callable[..., Any]] = {
    ApiError: on_api_error,
    EnqueueError: on_bad_input,
    ConfigError: on_bad_input,
    JobNotFound: on_not_found,
    TransitionError: on_transition,
    JobIdTaken: on_id_taken,
}

JOB = "/api/jobs/{job_id:path}"
JOB_ACTIONS = ("cancel", "retry", "pause", "resume")

routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs", enqueue, methods=["POST"]),
    Route("/api/jobs/bulk", enqueue_bulk, methods=["POST"]),
    Route("/api/jobs/bulk-actions", bulk_actions, methods=["POST"]),
    Route(JOB + "/result", job_result, methods=["GET"]),
    Route(JOB + "/events", job_events, methods=["GET"]),
    Route(JOB + "/state", job_state, methods=["GET"]),
    Route(JOB + "/flow", job_flow, methods=["GET"]),
    Route(JOB + "/detail", job_detail, methods=["GET"]),
    Route(JOB + "/stream", stream_job, methods=["GET"]),
    *[
        Route(f"{JOB}/{action}", functools.partial(job_action, action=action), methods=["POST"], name=f"job_{action}")
        for action in JOB_ACTIONS
    ],
    Route(JOB, get_job, methods=["GET"]),
    Route("/api/queues", list_queues, methods=["GET"]),
    Route("/api/limits", list_limits, methods=["GET"]),
    *[
        Route(
            f"/api/queues/{{name:path}}/{action}",
            functools.partial(queue_action, action=action),
            methods=["POST"],
            name=f"queue_{action}",
        )
        for action in ("pause", "resume")
    ],
    Route("/api/limits/{name:path}/reset", reset_limit, methods=["POST"]),
    Route("/api/limits/{name:path}", patch_limit, methods=["PATCH"]),
    Route("/api/limits/{name:path}", get_limit, methods=["GET"]),
    Route("/api/workers", list_workers, methods=["GET"]),
    Route("/api/schedules", list_schedules, methods=["GET"]),
    Route("/api/stats", stats, methods=["GET"]),
    Route("/api/stats/history", stats_history, methods=["GET"]),
    Route("/api/stream", stream_all, methods=["GET"]),
]
