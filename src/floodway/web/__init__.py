"""floodway's web server: the REST API, the live dashboard and Prometheus metrics, in one
Starlette app served by uvicorn (``floodway --app module:app web``).

    from floodway.web import create_app
    asgi = create_app(app)            # mount it anywhere, or:
    serve(app, host="127.0.0.1", port=8000)

Everything but ``/healthz`` (and the login page) needs a token made by ``floodway token create``
— see ``floodway.web.auth``. The API is described by ``/openapi.json``.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..schedule import sync_schedules
from ..tokens import PREFIX
from .api import DEFAULT_MAX_BODY, EXCEPTION_HANDLERS, MAX_WAIT

if TYPE_CHECKING:
    from ..app import App

__all__ = ["create_app", "serve", "DEFAULT_MAX_BODY", "SECURITY_HEADERS"]

log = logging.getLogger("floodway.web")
HERE = Path(__file__).parent


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.url.path!r}", 405: f"method {request.method} not allowed here"}
    return JSONResponse(
        {"error": messages.get(exc.status_code, exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


#: sent with every response: no inline script or style, no framing, no MIME sniffing, no referrer
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every HTTP response (streams included)."""

    def __init__(self, app: Any):
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *[(k, v) for k, v in self.headers if k not in present],
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


_UNSET: Any = object()


def prepare(app: "App") -> None:
    """Open (and migrate) the store and write the declared queues, limits and schedules, so the
    dashboard shows them before the first enqueue."""
    app.sync_queues()
    app.sync_limits()
    if app.schedules:
        sync_schedules(app)


def create_app(
    app: "App",
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_wait: float = MAX_WAIT,
    max_bulk: int | None = None,
    api_rate: str | None = _UNSET,
    api_burst: int | None = None,
) -> Starlette:
    """The ASGI app serving ``app``: API under ``/api``, dashboard at ``/``, ``/metrics``,
    ``/healthz`` and ``/openapi.json``. Request bodies over ``max_body`` bytes get 413, and so
    does a bulk enqueue of more than ``max_bulk`` jobs; ``GET /api/jobs/{id}/result?wait=``
    waits at most ``max_wait`` seconds. Each token may make ``api_rate`` requests (``"50/s"``;
    ``None`` for no limit) with bursts of ``api_burst``; past that it gets 429 with
    ``Retry-After``. The last three default to the app's settings (``api_max_bulk``,
    ``api_rate``, ``api_burst``)."""
    from . import api, dashboard, forecast_api
    from .auth import api_limit, declare_api_limit

    settings = app.settings
    limit = api_limit(
        settings.api_rate if api_rate is _UNSET else _rate_or_off(api_rate),
        settings.api_burst if api_burst is None else api_burst,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(prepare, app)
        await run_in_threadpool(declare_api_limit, app, limit)
        yield

    handlers: dict[Any, Any] = {**EXCEPTION_HANDLERS, HTTPException: _on_http, Exception: _on_crash}
    web = Starlette(
        routes=[
            *api.routes,
            *forecast_api.routes,
            *dashboard.routes,
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers=handlers,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    web.state.floodway = app
    web.state.max_body = int(max_body)
    web.state.max_wait = float(max_wait)
    web.state.max_bulk = int(settings.api_max_bulk if max_bulk is None else max_bulk)
    web.state.api_limit = limit
    return web


def _rate_or_off(value: str | None) -> str | None:
    from ..config import _rate_or_off as parse

    return parse(value, "api_rate")


class HideSecrets(logging.Filter):
    """Keeps tokens out of uvicorn's access log: a request line's query parameters that carry a
    token (named like one, or a value shaped ``fw_...``) are logged as ``[hidden]``."""

    NAMES = frozenset({"token", "access_token", "api_key", "apikey", "authorization", "password", "secret"})

    @classmethod
    def clean(cls, target: str) -> str:
        path, sep, query = target.partition("?")
        if not sep:
            return target
        parts = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            plain = urllib.parse.unquote_plus(name).lower()
            if eq and (plain in cls.NAMES or urllib.parse.unquote_plus(value).startswith(PREFIX)):
                item = f"{name}=[hidden]"
            elif not eq and urllib.parse.unquote_plus(name).startswith(PREFIX):
                item = "[hidden]"
            parts.append(item)
        return f"{path}?{'&'.join(parts)}"

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: args = (client, method, path with query, http version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], self.clean(args[2]), *args[3:])
        return True


def serve(
    app: "App",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body: int = DEFAULT_MAX_BODY,
    log_level: str = "info",
    max_bulk: int | None = None,
    api_rate: str | None = _UNSET,
    api_burst: int | None = None,
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
) -> None:
    """Serve ``app`` with uvicorn until interrupted. With ``proxy_headers``, ``X-Forwarded-Proto``
    and ``X-Forwarded-For`` are believed from the addresses in ``forwarded_allow_ips`` (a
    comma-separated list; uvicorn's default is 127.0.0.1), so behind a TLS-terminating proxy the
    request is https and the session cookie is ``Secure``."""
    import uvicorn

    asgi = create_app(app, max_body=max_body, max_bulk=max_bulk, api_rate=api_rate, api_burst=api_burst)
    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    access = logging.getLogger("uvicorn.access")  # configured by uvicorn.Config above
    if not any(isinstance(f, HideSecrets) for f in access.filters):
        access.addFilter(HideSecrets())
    uvicorn.Server(config).run()
