"""The OpenAPI description of ``GET /api/forecast`` (``web/forecast_api.py``), built with the
document's own helpers (``web/openapi.py`` hands them in)."""

from __future__ import annotations

from typing import Any, Callable

NUMBER = {"type": "number", "nullable": True}
FORECAST_ROW = {
    "type": "object",
    "required": ["backlog", "drains", "eta", "why"],
    "properties": {
        "queue": {"type": "string"},
        "limit": {"type": "string"},
        "key": {"type": "string"},
        "backlog": {"type": "integer", "minimum": 0},
        "served_rate": {"type": "number", "description": "Jobs finished per second over the window"},
        "arrival_rate": {"type": "number", "description": "Jobs created per second, as a stream"},
        "limit_rate": {**NUMBER, "description": "The key's effective rate (a queue's: its limits' cap)"},
        "rate_used": {**NUMBER, "description": "The rate the ETA was worked out with"},
        "binds": {"type": "string", "nullable": True, "enum": ["limit", "workers", "assumed", None]},
        "eta_seconds": NUMBER,
        "eta_low": NUMBER,
        "eta_high": NUMBER,
        "eta": {"type": "string", "description": "'3m 20s', or 'will not drain'"},
        "eta_at": {"type": "string", "format": "date-time", "nullable": True},
        "drains": {"type": "boolean"},
        "shortfall_per_second": {"type": "number", "description": "How far service falls behind arrivals"},
        "fair_share": NUMBER,
        "active_keys": {"type": "integer"},
        "source": {"type": "string", "nullable": True},
        "why": {"type": "array", "items": {"type": "string"}},
    },
}
SCHEMAS: dict[str, Any] = {
    "ForecastRow": FORECAST_ROW,
    "Forecast": {
        "type": "object",
        "required": ["at", "window_seconds", "queues", "limits"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "window_seconds": {"type": "number"},
            "workers": {"type": "integer", "nullable": True},
            "what_if": {"type": "object", "nullable": True},
            "queues": {"type": "array", "items": {"$ref": "#/components/schemas/ForecastRow"}},
            "limits": {"type": "array", "items": {"$ref": "#/components/schemas/ForecastRow"}},
        },
    },
}
PARAMS = [
    ("window", {"type": "number", "minimum": 1, "maximum": 86400}, "Seconds that rates are measured over"),
    ("queue", {"type": "string"}, "Only this queue (and where `add` puts its jobs)"),
    ("limit", {"type": "string"}, "Only this limit's keys (and the limit `rate` is for)"),
    ("key", {"type": "string"}, "Only this key of `limit`"),
    ("rate", {"type": "string", "example": "20/s"}, "What if `limit` were paced at this rate"),
    ("add", {"type": "integer", "minimum": 0}, "What if this many jobs were added"),
    ("tenant", {"type": "string"}, "The tenant `add`'s jobs are for (a tenant token: its own)"),
    ("workers", {"type": "integer", "minimum": 1}, "What if this many workers ran"),
]


def paths(op: Callable[..., Any], ok: Callable[..., Any], query: Callable[..., Any]) -> dict[str, Any]:
    return {
        "/api/forecast": {
            "get": op(
                "forecast",
                "When each queue and limit key will drain (ETA with a range, and why), and what if",
                "stats",
                {"200": ok("Forecast", {"$ref": "#/components/schemas/Forecast"})},
                params=[query(name, schema, text) for name, schema, text in PARAMS],
                errors=("400",),
                description="Nothing is changed by a what-if. A tenant's token sees its own jobs only.",
            )
        }
    }
