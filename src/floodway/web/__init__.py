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
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .api import DEFAULT_MAX_BODY, EXCEPTION_HANDLERS, MAX_WAIT

if TYPE_CHECKING:
    from ..app import App

__all__ = ["create_app", "serve", "DEFAULT_MAX_BODY"]

log = logging.getLogger("floodway.web")
HERE = Path(__file__).parent


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.url.path!r}", 405: f"method {request.method} not allowed here"}
    return JSONResponse({"error": messages.get(exc.status_code, exc.detail)}, status_code=exc.status_code,
                        headers=exc.headers)


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(app: "App", *, max_body: int = DEFAULT_MAX_BODY, max_wait: float = MAX_WAIT) -> Starlette:
    """The ASGI app serving ``app``: API under ``/api``, dashboard at ``/``, ``/metrics``,
    ``/healthz`` and ``/openapi.json``. Request bodies over ``max_body`` bytes get 413;
    ``GET /api/jobs/{id}/result?wait=`` waits at most ``max_wait`` seconds."""
    from . import api, dashboard

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # open (and migrate) the store and write the declared queues, limits and schedules, so the
        # dashboard shows them before the first enqueue
        await run_in_threadpool(app.sync_queues)
        await run_in_threadpool(app.sync_limits)
        if app.schedules:
            from ..schedule import sync_schedules

            await run_in_threadpool(sync_schedules, app)
        yield

    handlers: dict[Any, Any] = {**EXCEPTION_HANDLERS, HTTPException: _on_http, Exception: _on_crash}
    web = Starlette(
        routes=[*api.routes, *dashboard.routes,
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    web.state.floodway = app
    web.state.max_body = int(max_body)
    web.state.max_wait = float(max_wait)
    return web


def serve(app: "App", *, host: str = "127.0.0.1", port: int = 8000, max_body: int = DEFAULT_MAX_BODY,
          log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(app, max_body=max_body), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=3, proxy_headers=False)
