"""The OpenAPI 3.0 document served at ``/openapi.json``, written by hand: every endpoint with
its parameters, request body, responses and error codes."""

from __future__ import annotations

import json
from typing import Any

from . import forecast_openapi
from .openapi_schemas import SCHEMAS, STATUSES, _ref


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


ERRORS = {
    "400": "Bad input: the message says what is wrong.",
    "401": "No token, a malformed Authorization header, or an invalid or revoked token.",
    "403": "This token may not do this (admin only, or another tenant).",
    "404": "Not found (also answered for another tenant's job).",
    "409": "The job's status does not allow this change.",
    "413": "The request body is over the size limit (or a bulk request has too many items).",
    "429": "Too many requests for this token: `Retry-After` says in how many seconds to try again.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before the next request",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _errors(*codes: str) -> dict[str, Any]:
    out = {code: {"description": ERRORS[code], "content": _json(_ref("Error"))} for code in ("401", *codes, "429")}
    out["429"]["headers"] = RETRY_AFTER
    return out


def _op(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = (),
    description: str | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": {**responses, **_errors(*errors)},
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The job's id.",
    "schema": {"type": "string", "minLength": 1},
}
QUEUE = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
LIMIT = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def document(
    *, max_body: int = 1_000_000, max_wait: float = 60.0, tasks: list[str] | None = None, max_bulk: int = 10_000
) -> dict[str, Any]:
    """The document; ``tasks`` (the app's registered task names) become the enum of ``task``."""
    job = [JOB_ID]
    schemas = json.loads(json.dumps({**SCHEMAS, **forecast_openapi.SCHEMAS}))
    schemas["BulkEnqueueRequest"]["properties"]["items"]["maxItems"] = max_bulk
    if tasks:
        for name in ("EnqueueRequest", "BulkEnqueueRequest"):
            schemas[name]["properties"]["task"]["enum"] = sorted(tasks)
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                **_op(
                    "healthz",
                    "Is the store answering? (no token needed)",
                    "meta",
                    {
                        "200": _ok("Healthy", _ref("Health")),
                        "503": {"description": "The store does not answer", "content": _json(_ref("Error"))},
                    },
                ),
                "security": [],
            }
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus exposition (admin)",
                "meta",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                errors=("403",),
            )
        },
        "/openapi.json": {
            "get": _op("openapi", "This document", "meta", {"200": _ok("The OpenAPI document", {"type": "object"})})
        },
        "/api/me": {"get": _op("me", "Who this token is", "meta", {"200": _ok("The token's scope", _ref("Me"))})},
        "/api/jobs": {
            "get": _op(
                "listJobs",
                "List jobs, newest first",
                "jobs",
                {"200": _ok("Jobs", _ref("JobList"))},
                params=[
                    _query("status", {"type": "string"}, f"Comma-separated statuses: {', '.join(STATUSES)}"),
                    _query("queue", {"type": "string"}, "Only this queue"),
                    _query("task", {"type": "string"}, "Only this task"),
                    _query(
                        "text", {"type": "string", "maxLength": 255}, "Only jobs whose args or error hold this text"
                    ),
                    _query("tenant", {"type": "string"}, "Only this tenant (a tenant token sees only its own)"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "At most this many"
                    ),
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Skip this many"),
                ],
                errors=("400",),
            ),
            "post": _op(
                "enqueue",
                "Enqueue one job",
                "jobs",
                {
                    "201": _ok("Created", _ref("Enqueued")),
                    "200": _ok(
                        "A job with this id or dedupe key existed already, or the enqueue folded into a "
                        "debounced job; nothing created",
                        _ref("Enqueued"),
                    ),
                },
                body=_ref("EnqueueRequest"),
                errors=("400", "403", "409", "413"),
                description=f"Bodies over {max_body} bytes get 413.",
            ),
        },
        "/api/jobs/bulk": {
            "post": _op(
                "enqueueBulk",
                "Enqueue many jobs of one task in one transaction",
                "jobs",
                {
                    "201": _ok("Created", _ref("BulkEnqueued")),
                    "200": _ok("All existed already (by id or key) or folded", _ref("BulkEnqueued")),
                },
                body=_ref("BulkEnqueueRequest"),
                errors=("400", "403", "409", "413"),
                description=f"At most {max_bulk} items per request (more get 413).",
            )
        },
        "/api/jobs/{job_id}": {
            "get": _op("getJob", "A job", "jobs", {"200": _ok("The job", _ref("Job"))}, params=job, errors=("404",))
        },
        "/api/jobs/{job_id}/detail": {
            "get": _op(
                "getJobDetail",
                "A job with timeline, runs, cursor and steps",
                "jobs",
                {"200": _ok("Everything the job page shows", _ref("JobDetail"))},
                params=job,
                errors=("404",),
            )
        },
        "/api/jobs/{job_id}/result": {
            "get": _op(
                "getResult",
                "A job's result, waiting up to `wait` seconds for it to finish",
                "jobs",
                {"200": _ok("`done` tells whether the job is final", _ref("Result"))},
                params=[
                    JOB_ID,
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": max_wait, "default": 0},
                        "Seconds to wait for the job to finish",
                    ),
                ],
                errors=("400", "404"),
            )
        },
        "/api/jobs/{job_id}/events": {
            "get": _op(
                "getEvents",
                "A job's timeline, oldest first",
                "jobs",
                {"200": _ok("Events", _ref("Events"))},
                params=job,
                errors=("404",),
            )
        },
        "/api/jobs/{job_id}/state": {
            "get": _op(
                "getState",
                "A job's cursor (its state key's)",
                "jobs",
                {"200": _ok("The cursor", _ref("State"))},
                params=job,
                errors=("404",),
            )
        },
        "/api/jobs/{job_id}/flow": {
            "get": _op(
                "getFlow",
                "A flow's steps and throttling insights",
                "flows",
                {"200": _ok("Flow insights", _ref("Flow"))},
                params=job,
                errors=("404",),
            )
        },
        "/api/jobs/{job_id}/stream": {
            "get": _op(
                "streamJob",
                "A job's timeline live (Server-Sent Events)",
                "live",
                {"200": {"description": "`event` per transition, `job` on change, `end` when final", "content": SSE}},
                params=[
                    JOB_ID,
                    _query("interval", {"type": "number", "minimum": 0.25, "maximum": 10}, "Poll interval"),
                ],
                errors=("400", "404"),
            )
        },
        "/api/queues": {
            "get": _op(
                "listQueues", "Queues with job counts per status", "queues", {"200": _ok("Queues", _ref("Queues"))}
            )
        },
        "/api/limits": {
            "get": _op(
                "listLimits",
                "Limits with each key's live budget, running jobs and pause",
                "limits",
                {"200": _ok("Limits", _ref("Limits"))},
            )
        },
        "/api/limits/{name}": {
            "patch": _op(
                "changeLimit",
                "Change a limit for every worker, now (admin)",
                "limits",
                {"200": _ok("The limit as changed", _ref("Limit"))},
                params=[LIMIT],
                body=_ref("LimitChange"),
                errors=("400", "403", "404", "413"),
            ),
            "get": _op(
                "getLimit",
                "One limit with each key's effective rate and 429s",
                "limits",
                {"200": _ok("The limit", _ref("Limit"))},
                params=[LIMIT],
                errors=("404",),
            ),
        },
        "/api/limits/{name}/reset": {
            "post": _op(
                "resetLimit",
                "Forget what was learned about a limit (admin)",
                "limits",
                {"200": _ok("The limit, the declared rate holding again", _ref("Limit"))},
                params=[LIMIT],
                body=_ref("LimitReset"),
                errors=("400", "403", "404", "413"),
            )
        },
        "/api/workers": {
            "get": _op(
                "listWorkers",
                "Live workers with heartbeats (admin)",
                "workers",
                {"200": _ok("Workers", _ref("Workers"))},
                params=[_query("all", {"type": "boolean"}, "Include stopped workers")],
                errors=("403",),
            )
        },
        "/api/schedules": {
            "get": _op("listSchedules", "Cron schedules", "schedules", {"200": _ok("Schedules", _ref("Schedules"))})
        },
        "/api/stats": {
            "get": _op(
                "stats",
                "Depth, running and rates per queue and limit",
                "stats",
                {"200": _ok("Stats", _ref("Stats"))},
                params=[
                    _query(
                        "window",
                        {"type": "number", "minimum": 1, "maximum": 86400},
                        "Seconds that rates are averaged over",
                    )
                ],
                errors=("400",),
            )
        },
        "/api/jobs/bulk-actions": {
            "post": _op(
                "bulkAction",
                "Retry, cancel, pause, resume or purge every job a filter matches (a tenant token: its own)",
                "jobs",
                {"200": _ok("How many jobs it acted on (or would, with dry_run)", _ref("BulkActionResult"))},
                body=_ref("BulkActionRequest"),
                errors=("400", "403", "413"),
            )
        },
        "/api/stats/history": {
            "get": _op(
                "statsHistory",
                "Jobs enqueued and done in each of the last seconds, oldest first",
                "stats",
                {"200": _ok("Per-second counts", {"type": "object"})},
                params=[_query("seconds", {"type": "number", "minimum": 1, "maximum": 3600}, "How far back")],
                errors=("400",),
            )
        },
        "/api/stream": {
            "get": _op(
                "stream",
                "Queue counts and limit counters live (Server-Sent Events, `stats` each interval)",
                "live",
                {"200": {"description": "A `stats` event per interval", "content": SSE}},
                params=[
                    _query("interval", {"type": "number", "minimum": 1, "maximum": 60}, "Seconds between events"),
                    _query("ticks", {"type": "integer", "minimum": 0}, "End after this many events (0: never)"),
                ],
                errors=("400",),
            )
        },
    }
    for action, summary in (
        ("cancel", "Cancel a job (a running one stops at its worker's next heartbeat)"),
        ("retry", "Run a failed, cancelled or retrying job again, with fresh attempts"),
        ("pause", "Pause an unfinished job"),
        ("resume", "Resume a paused job"),
    ):
        paths[f"/api/jobs/{{job_id}}/{action}"] = {
            "post": _op(
                f"{action}Job",
                summary,
                "jobs",
                {"200": _ok("The job's status after the change", _ref("ActionResult"))},
                params=job,
                errors=("404", "409", "413"),
            )
        }
    for action in ("pause", "resume"):
        paths[f"/api/queues/{{name}}/{action}"] = {
            "post": _op(
                f"{action}Queue",
                f"{action.capitalize()} a whole queue (admin)",
                "queues",
                {"200": _ok("Done", _ref("QueuePaused"))},
                params=[QUEUE],
                errors=("400", "403", "404", "413"),
            )
        }
    paths.update(forecast_openapi.paths(_op, _ok, _query))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "floodway",
            "version": "1",
            "description": (
                "Durable background jobs for rate-limited APIs. Every route but /healthz needs "
                "`Authorization: Bearer <token>` (`floodway token create`). A tenant token sees and touches only "
                "its tenant's jobs: another tenant's job answers 404. Errors are `{\"error\": message}`."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
