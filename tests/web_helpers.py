"""Helpers for the web tests: an app with a few tasks, a real uvicorn server on a free loopback
port in a background thread, an in-process worker, and a small SSE reader."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn

from floodway import App, Context, Fail
from floodway.tokens import create_token
from floodway.web import create_app

from . import conftest

#: flaky(key) fails until GATES[key] is True (the worker runs in this process)
GATES: dict[str, bool] = {}
#: hold(key) waits until RELEASE[key] is set
RELEASE: dict[str, threading.Event] = {}


def make_app(db_path: Path) -> App:
    app = App(f"sqlite:///{db_path}")
    app.limit("per-tenant", rate="50/s", burst=5, key="{tenant}")
    app.limit("partner-api", rate="20/s", burst=4)
    app.queue("web", max_concurrency=None)

    @app.task(retry=0, queue="web")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(retry=0, queue="web", limits=["per-tenant"])
    async def echo(ctx: Context, value: Any = None) -> dict:
        return {"value": value, "tenant": ctx.job.tenant}

    @app.task(retry=0, queue="web")
    def flaky(key: str) -> str:
        if not GATES.get(key):
            raise RuntimeError(f"gate {key} is closed")
        return f"gate {key} opened"

    @app.task(retry=0, queue="web")
    def doomed(reason: str = "no") -> None:
        raise Fail(reason)

    @app.task(retry=0, queue="web")
    async def hold(key: str) -> str:
        event = RELEASE.setdefault(key, threading.Event())
        while not event.is_set():
            await asyncio.sleep(0.02)
        return key

    @app.task(retry=0, queue="web", retain_state=True)
    async def stepped(ctx: Context, n: int = 3) -> int:
        total = 0
        for i in range(n):
            total += await ctx.step(f"part-{i}", lambda v=i: v * 10, kind="data_transform")
            await ctx.checkpoint({"done": i})
        return total

    app.schedule(add, cron="0 3 * * *", args={"x": 1, "y": 2}, name="acme-nightly", tenant="acme")
    app.schedule(add, cron="*/30 * * * *", args={"x": 2, "y": 2}, name="housekeeping")
    return app


def free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it; without it keep-alive requests wait ~40 ms on delayed ACKs
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Server:
    """uvicorn serving ``create_app(app)`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app: App, **options: Any):
        self.app = app
        self.asgi = create_app(app, **options)
        self.sock = free_port()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.asgi, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="uvicorn"
        )

    def start(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the web server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "the web server did not stop"


@contextmanager
def serving(app: App, **options: Any) -> Iterator[Server]:
    server = Server(app, **options).start()
    try:
        yield server
    finally:
        server.stop()


def running_worker(app: App, **options: Any) -> Any:
    """The shared in-process worker, stopped at once at the end (a web test never waits for
    its jobs to finish), with a short lease."""
    options.setdefault("concurrency", 8)
    options.setdefault("lease", "5s")
    return conftest.running_worker(app, immediately=True, **options)


def tokens(app: App) -> dict[str, str]:
    """Fresh tokens: admin, tenants acme and globex."""
    return {
        "admin": create_token(app.store, admin=True, label="tests")[0],
        "acme": create_token(app.store, tenant="acme")[0],
        "globex": create_token(app.store, tenant="globex")[0],
    }


_SSL: list[Any] = []


def client(server: Server, token: str | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client for ``server`` (with ``token`` as bearer); the TLS context, unused on
    plain HTTP but costly to build, is made once."""
    if not _SSL:
        _SSL.append(ssl.create_default_context())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=20, verify=_SSL[0], **kwargs)


def login_csrf(c: httpx.Client) -> str:
    """Open the login form with ``c`` (which keeps its anti-forgery cookie) and return the
    form's anti-forgery value, to post back with the token."""
    page = c.get("/login")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "the login form has no anti-forgery field"
    return found.group(1)


def wait_for(predicate: Any, timeout: float = 15.0, message: str = "condition") -> Any:
    return conftest.wait_for(predicate, timeout, message)


def read_sse(
    response: httpx.Response, *, until: str | None = None, count: int | None = None, timeout: float = 15.0
) -> list[tuple[str, Any]]:
    """Read ``(event, data)`` pairs from a streaming SSE response, until event ``until`` arrives,
    ``count`` events were read, or the stream ends."""
    out: list[tuple[str, Any]] = []
    event, lines = "message", []
    deadline = time.monotonic() + timeout
    if not hasattr(response, "_sse_lines"):  # one line iterator per response, so reads can resume
        response._sse_lines = response.iter_lines()  # type: ignore[attr-defined]
    for line in response._sse_lines:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"SSE: timed out after {timeout}s; got {[e for e, _ in out]}")
        if line == "":
            if lines:
                out.append((event, json.loads("\n".join(lines))))
                if (until is not None and event == until) or (count is not None and len(out) >= count):
                    return out
            event, lines = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].lstrip())
    return out
