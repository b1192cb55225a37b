"""``GET /api/forecast``: the drain forecast (``floodway.forecasting``) over the REST API, with
the CLI's what-if parameters. A tenant's token sees its own jobs and the limit keys it may see
(``web/data.py`` scopes them); nothing is written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ConfigError
from ..forecasting import forecast_view
from .api import _query_number, call, fw, ok
from .auth import Principal, require
from .data import scoped_limits

if TYPE_CHECKING:
    from ..app import App

#: the query parameters taken as text, and those that must be whole numbers
TEXT_PARAMS = ("queue", "limit", "key", "rate", "tenant")
INT_PARAMS = ("add", "workers")


def _whole(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"query parameter {name!r} must be a whole number, got {raw!r}") from None


def view(app: "App", principal: Principal, window: float, params: dict[str, Any]) -> dict[str, Any]:
    if principal.admin:
        return forecast_view(app, window=window, **params)
    if params.get("tenant") not in (None, principal.tenant):
        raise ConfigError("tenant: a tenant's token forecasts its own jobs only")
    return forecast_view(
        app,
        window=window,
        scope_tenant=principal.tenant or "",
        limits=scoped_limits(app, principal),
        **{**params, "tenant": principal.tenant if params.get("add") else params.get("tenant")},
    )


async def forecast(request: Request) -> Response:
    principal = await require(request)
    window = _query_number(request, "window", 60.0, 1.0, 86400.0)
    params: dict[str, Any] = {name: request.query_params.get(name) or None for name in TEXT_PARAMS}
    params["add"] = _whole(request, "add") or 0
    params["workers"] = _whole(request, "workers")
    return ok(await call(view, fw(request), principal, window, params))


def etas(app: "App", principal: Principal) -> dict[str, Any]:
    """The forecast the dashboard's overview shows beside each queue and limit key."""
    data = view(app, principal, 60.0, {})
    return {
        "queues": {row["queue"]: row for row in data["queues"]},
        "keys": {(row["limit"], row["key"]): row for row in data["limits"]},
        "by_limit": {
            name: [row for row in data["limits"] if row["limit"] == name]
            for name in {r["limit"] for r in data["limits"]}
        },
    }


routes = [Route("/api/forecast", forecast, methods=["GET"])]
