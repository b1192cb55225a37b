"""The OpenAPI 3.0 document served at ``/openapi.json``, written by hand: every endpoint with
its parameters, request body, responses and error codes."""

from __future__ import annotations

import json
from typing import Any

from ..inputs import INT32_MAX, INT32_MIN, MAX_AHEAD_SECONDS, MAX_NAME_LENGTH
from ..jobs import Status
from . import forecast_openapi
from .shaping_input import SHAPING_SCHEMA

#: the job statuses, from the one list (``floodway.jobs.Status``)
STATUSES = [s.value for s in Status]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


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


NULL_STR = {"type": "string", "nullable": True}
NULL_TIME = {"type": "string", "format": "date-time", "nullable": True}
ANY: dict[str, Any] = {}
COUNTS = {
    "type": "object",
    "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
    "additionalProperties": {"type": "integer"},
}
ERROR_OBJ = {
    "type": "object",
    "nullable": True,
    "additionalProperties": True,
    "properties": {"type": NULL_STR, "message": NULL_STR, "traceback": NULL_STR},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": False,
    },
    "Job": {
        "type": "object",
        "required": ["id", "task", "args", "queue", "status", "attempt", "max_attempts", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string"},
            "task": {"type": "string"},
            "args": {"type": "object"},
            "queue": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "priority": {"type": "integer"},
            "attempt": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "tenant": NULL_STR,
            "run_at": NULL_TIME,
            "created_at": NULL_TIME,
            "updated_at": NULL_TIME,
            "started_at": NULL_TIME,
            "finished_at": NULL_TIME,
            "worker_id": NULL_STR,
            "result": ANY,
            "error": ERROR_OBJ,
            "limits": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "throttled_seconds": {"type": "number"},
            "state_key": {"type": "string"},
            "paused": {"type": "boolean"},
            "cancel_requested": {"type": "boolean"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["job_id", "at", "to", "attempt"],
        "properties": {
            "job_id": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "from": {"type": "string", "enum": STATUSES, "nullable": True},
            "to": {"type": "string", "enum": STATUSES},
            "attempt": {"type": "integer"},
            "error": ERROR_OBJ,
            "worker_id": NULL_STR,
            "reason": NULL_STR,
        },
    },
    "EnqueueRequest": {
        "type": "object",
        "required": ["task"],
        "additionalProperties": False,
        "properties": {
            "task": {"type": "string", "minLength": 1, "description": "A registered task's name."},
            "args": {"type": "object", "description": "The task's arguments by name (JSON)."},
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME_LENGTH,
                "description": "Idempotency: a job with this id is created once. Tenant tokens' ids are "
                "scoped to the tenant (`<tenant>:<id>`). No `/`, no control characters; "
                "`cron:...` is floodway's own.",
            },
            "queue": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME_LENGTH,
                "description": "A tenant token may name only the queues the app declares.",
            },
            "delay": {
                "oneOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_AHEAD_SECONDS},
                    {"type": "string", "minLength": 1},
                ],
                "description": "Seconds, or a duration such as `5m` (at most ten years).",
            },
            "priority": {
                "type": "integer",
                "minimum": INT32_MIN,
                "maximum": INT32_MAX,
                "description": "Higher runs first.",
            },
            "tenant": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME_LENGTH,
                "description": "Admin only; a tenant token's jobs always get its tenant. No `:`.",
            },
            **SHAPING_SCHEMA,
        },
    },
    "BulkEnqueueRequest": {
        "type": "object",
        "required": ["task", "items"],
        "additionalProperties": False,
        "properties": {
            "task": {"type": "string", "minLength": 1},
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object"},
                "description": "One args object per job; written in one transaction.",
            },
            "id": {"type": "string", "minLength": 1, "description": "Id prefix: jobs get `<id>-0`, `<id>-1`, …"},
            "queue": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
            "delay": {
                "oneOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_AHEAD_SECONDS},
                    {"type": "string", "minLength": 1},
                ]
            },
            "priority": {"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
            "tenant": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
            **SHAPING_SCHEMA,
        },
    },
    "Enqueued": {
        "type": "object",
        "required": ["id", "created"],
        "properties": {
            "id": {"type": "string"},
            "created": {"type": "boolean"},
            "status": {"type": "string", "enum": STATUSES, "nullable": True},
            "job": {"allOf": [_ref("Job")], "nullable": True},
        },
    },
    "BulkEnqueued": {
        "type": "object",
        "required": ["ids", "created", "existing"],
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "integer"},
            "existing": {"type": "integer"},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "count": {"type": "integer"},
        },
    },
    "Result": {
        "type": "object",
        "required": ["id", "status", "done"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "done": {"type": "boolean"},
            "result": ANY,
            "error": ERROR_OBJ,
        },
    },
    "Events": {
        "type": "object",
        "required": ["events"],
        "properties": {"id": {"type": "string"}, "events": {"type": "array", "items": _ref("Event")}},
    },
    "State": {
        "type": "object",
        "required": ["key"],
        "properties": {
            "id": {"type": "string"},
            "key": {"type": "string"},
            "cursor": ANY,
            "checkpoints": {"type": "integer"},
        },
    },
    "Flow": {
        "type": "object",
        "required": ["executionId", "totalSteps", "steps"],
        "properties": {
            "executionId": {"type": "string"},
            "status": NULL_STR,
            "totalSteps": {"type": "integer"},
            "completedSteps": {"type": "integer"},
            "failedSteps": {"type": "integer"},
            "throttlingInsights": {"type": "object"},
            "steps": {"type": "array", "items": {"type": "object"}},
        },
    },
    "JobDetail": {
        "type": "object",
        "required": ["job", "events", "attempts", "state", "flow"],
        "properties": {
            "job": _ref("Job"),
            "events": {"type": "array", "items": _ref("Event")},
            "attempts": {"type": "array", "items": {"type": "object"}},
            "state": _ref("State"),
            "flow": _ref("Flow"),
            "shaping": {
                "type": "object",
                "description": "`batch_key`: the batch an item of a batch task waits in (null: no batch item); "
                "`folded`: how many later enqueues a debounce folded into the job (null: none).",
            },
        },
    },
    "ActionResult": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "cancel_requested": {"type": "boolean"},
            "paused": {"type": "boolean"},
        },
    },
    "Queue": {
        "type": "object",
        "required": ["name", "counts", "paused"],
        "properties": {
            "name": {"type": "string"},
            "max_concurrency": {"type": "integer", "nullable": True},
            "paused": {"type": "boolean"},
            "counts": COUNTS,
        },
    },
    "Queues": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "array", "items": _ref("Queue")}, "truncated": {"type": "boolean"}},
    },
    "QueuePaused": {
        "type": "object",
        "required": ["queue", "paused"],
        "properties": {"queue": {"type": "string"}, "paused": {"type": "boolean"}},
    },
    "LimitKey": {
        "type": "object",
        "required": ["key"],
        "properties": {
            "key": {"type": "string"},
            "remaining": {"type": "integer", "nullable": True},
            "effective_rate": {
                "type": "number",
                "nullable": True,
                "description": "per second: the declared or the learned rate",
            },
            "source": {"type": "string", "enum": ["declared", "429s", "headers", "usage", "slow start"]},
            "throttled": {"type": "integer", "description": "429s (refusals), all time"},
            "throttled_last_minute": {"type": "integer"},
            "exhausted": {"type": "integer", "description": "refusals that meant an exhausted quota"},
            "cuts": {"type": "integer", "description": "rounds of refusals that cut the rate"},
            "pauses": {"type": "integer"},
            "running": {"type": "integer"},
            "admitted": {"type": "integer"},
            "rate_limited": {"type": "integer"},
            "paused_until": NULL_TIME,
            "paused_for": {"type": "number", "nullable": True},
            "pause_reason": NULL_STR,
        },
    },
    "Limit": {
        "type": "object",
        "required": ["name", "keys"],
        "properties": {
            "name": {"type": "string"},
            "rate": NULL_STR,
            "rate_count": {"type": "number", "nullable": True},
            "rate_period": {"type": "number", "nullable": True},
            "burst": {"type": "integer"},
            "concurrency": {"type": "integer", "nullable": True},
            "key": NULL_STR,
            "adaptive": {"type": "boolean"},
            "floor": NULL_STR,
            "ceiling": NULL_STR,
            "declared": {
                "type": "object",
                "nullable": True,
                "description": "the declaration in the code the server loaded",
            },
            "forgotten": {"type": "integer"},
            "keys": {"type": "array", "items": _ref("LimitKey")},
        },
    },
    "Limits": {
        "type": "object",
        "required": ["limits"],
        "properties": {"limits": {"type": "array", "items": _ref("Limit")}},
    },
    "LimitReset": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"key": {"type": "string", "description": "only this key (default: every key)"}},
    },
    "LimitChange": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "adaptive": {"type": "boolean", "description": "let the learned rate rise above the rate"},
            "rate": {"type": "string", "nullable": True, "description": "e.g. `20/s`, `100/min`"},
            "burst": {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
            "concurrency": {
                "type": "integer",
                "minimum": 0,
                "maximum": INT32_MAX,
                "nullable": True,
                "description": "null or 0 removes the cap",
            },
        },
    },
    "Workers": {
        "type": "object",
        "required": ["workers"],
        "properties": {
            "workers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "hostname": {"type": "string"},
                        "pid": {"type": "integer"},
                        "queues": {"type": "array", "items": {"type": "string"}, "nullable": True},
                        "concurrency": {"type": "integer"},
                        "running": {"type": "integer"},
                        "started_at": NULL_TIME,
                        "heartbeat_at": NULL_TIME,
                        "heartbeat_age": {"type": "number"},
                        "stopped_at": NULL_TIME,
                    },
                },
            }
        },
    },
    "Schedules": {
        "type": "object",
        "required": ["schedules"],
        "properties": {
            "schedules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "task", "cron"],
                    "properties": {
                        "name": {"type": "string"},
                        "task": {"type": "string"},
                        "cron": {"type": "string"},
                        "tz": {"type": "string"},
                        "args": {"type": "object"},
                        "options": {"type": "object"},
                        "missed": {"type": "string"},
                        "last_tick": NULL_TIME,
                        "next_tick": NULL_TIME,
                    },
                },
            }
        },
    },
    "Stats": {
        "type": "object",
        "required": ["window_seconds", "queues", "limits"],
        "properties": {
            "window_seconds": {"type": "number"},
            "queues": {"type": "object"},
            "limits": {"type": "object"},
            "workers": {"type": "integer", "nullable": True},
            "truncated": {"type": "boolean"},
        },
    },
    "Me": {
        "type": "object",
        "required": ["token_id", "admin"],
        "properties": {
            "token_id": {"type": "string"},
            "tenant": NULL_STR,
            "admin": {"type": "boolean"},
            "label": NULL_STR,
        },
    },
    "Health": {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "schema_version": {"type": "integer"}},
    },
}

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
