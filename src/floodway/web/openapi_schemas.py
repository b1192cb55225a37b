"""The component schemas of the OpenAPI document (``web/openapi.py``): the shapes of the
jobs, queues, limits, workers, schedules, flows and stats the API answers with, and of the
requests it takes."""

from __future__ import annotations

from typing import Any

from ..inputs import INT32_MAX, INT32_MIN, MAX_AHEAD_SECONDS, MAX_NAME_LENGTH
from ..jobs import Status
from .shaping_input import SHAPING_SCHEMA

#: the job statuses, from the one list (``floodway.jobs.Status``)
STATUSES = [s.value for s in Status]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


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
    "BulkActionRequest": {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {
            "action": {"type": "string", "enum": ["retry", "cancel", "pause", "resume", "purge"]},
            "filter": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "status": {
                        "oneOf": [
                            {"type": "string", "enum": STATUSES},
                            {"type": "array", "items": {"type": "string", "enum": STATUSES}},
                        ]
                    },
                    "task": {"type": "string", "minLength": 1},
                    "queue": {"type": "string", "minLength": 1},
                    "tenant": {"type": "string", "minLength": 1},
                    "created_after": {"type": "string", "format": "date-time"},
                    "created_before": {"type": "string", "format": "date-time"},
                    "error": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            },
            "all": {"type": "boolean", "description": "Needed when the filter is empty"},
            "dry_run": {"type": "boolean", "description": "Only count"},
        },
    },
    "BulkActionResult": {
        "type": "object",
        "properties": {"action": {"type": "string"}, "count": {"type": "integer"}, "dry_run": {"type": "boolean"}},
    },
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
            "source": {"type": "string", "enum": ["declared", "429s", "headers", "usage", "window", "slow start"]},
            "throttled": {"type": "integer", "description": "429s (refusals), all time"},
            "throttled_last_minute": {"type": "integer"},
            "exhausted": {"type": "integer", "description": "refusals that meant an exhausted quota"},
            "cuts": {"type": "integer", "description": "rounds of refusals that cut the rate"},
            "window_end": {
                "type": "object",
                "nullable": True,
                "description": "where a stated budget's last fixed window really ended, as learned: "
                "after `after`, by `by` (Unix seconds); `length`: the windows' length (0: not known yet)",
                "properties": {"after": {"type": "number"}, "by": {"type": "number"}, "length": {"type": "number"}},
            },
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
