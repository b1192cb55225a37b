"""``ctx.http`` shares one connection pool per worker: real HTTP over loopback to a small server
started here, which records the client port of every request (one port = one TCP connection).

Jobs of one worker reuse kept-alive connections instead of opening one each; a job failing or
cancelled mid-request leaves the pool usable by the others; a 429 on the shared pool still
pauses only the limit key it belongs to; and a worker closes its pools when it stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proc_helpers import LoadedApps, wait_until  # noqa: E402

from floodway import (  # noqa: E402
    App,
    ConfigError,
    Context,
    http_pools,
)
from floodway.jobs import Status  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@dataclass
class Hit:
    path: str
    port: int
    tenant: str | None
    status: int
    at: float


class Server:
    """A loopback API: ``POST /ok`` answers 200, ``/slow`` after ``slow`` seconds, and the next
    ``refuse[tenant]`` requests of a tenant (``X-Tenant``) get ``429 Retry-After: 30``."""

    def __init__(self, slow: float = 10.0):
        self.slow = slow
        self.refuse: dict[str, int] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/ok", self._ok, methods=["POST", "GET"]),
                Route("/slow", self._slow, methods=["POST", "GET"]),
            ]
        )

    async def _ok(self, request: Request) -> JSONResponse:
        tenant = request.headers.get("x-tenant")
        with self.lock:
            refused = self.refuse.get(tenant or "", 0) > 0
            if refused:
                self.refuse[tenant or ""] -= 1
            status = 429 if refused else 200
            self.hits.append(Hit("/ok", request.client.port, tenant, status, time.time()))
        if refused:
            return JSONResponse(
                {"error": "slow down"}, status_code=429, headers={"Retry-After": "30", "X-RateLimit-Remaining": "0"}
            )
        return JSONResponse({"ok": True})

    async def _slow(self, request: Request) -> JSONResponse:
        with self.lock:
            self.hits.append(Hit("/slow", request.client.port, None, 200, time.time()))
        await asyncio.sleep(self.slow)
        return JSONResponse({"ok": True})

    def ports(self, path: str | None = None) -> set[int]:
        with self.lock:
            return {h.port for h in self.hits if path is None or h.path == path}

    def count(self, path: str = "/ok", status: int = 200, tenant: str | None = None) -> int:
        with self.lock:
            return sum(
                1 for h in self.hits if h.path == path and h.status == status and (tenant is None or h.tenant == tenant)
            )

    def start(self) -> "Server":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "the loopback server to start", timeout=10)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request) -> str:
    """Each test runs over both of ctx.http's transports (``http_transport``)."""
    return request.param


@pytest.fixture
def server():
    started = Server().start()
    try:
        yield started
    finally:
        started.stop()


def run_until(worker, done, message: str, timeout: float = 60.0) -> None:
    """Run ``worker`` on a thread until ``done()``; then stop it and wait for it to end."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(done, message, timeout=timeout, interval=0.05)
    finally:
        worker.stop(immediately=True)
        thread.join(timeout=30)
    assert not thread.is_alive(), "the worker did not stop"


# -- one pool per worker -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_jobs_of_one_worker_share_kept_alive_connections(
    tmp_path: Path, server: Server, kind: str, transport: str
) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)
    app.limit("api", rate="10000/s", burst=100)  # never binding

    @app.task(retry=0)
    async def call(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=server.url, limit="api", timeout=30) as client:
            response = await client.post("/ok", json={"n": n})
        response.raise_for_status()
        return n

    @app.task(retry=0)
    def call_sync(ctx: Context, n: int) -> int:
        with ctx.http_sync(base_url=server.url, limit="api", timeout=30) as client:
            response = client.post("/ok", json={"n": n})
        response.raise_for_status()
        return n

    jobs, concurrency = 50, 5
    app.enqueue_many("call" if kind == "async" else "call_sync", [{"n": i} for i in range(jobs)])
    app.worker(concurrency=concurrency, burst=True).run()

    assert app.store.count_jobs()["complete"] == jobs
    assert server.count() == jobs
    connections = len(server.ports())
    # a pool per job would open one connection per job; a shared one at most one per job
    # running at the same time
    assert connections <= concurrency, f"{jobs} jobs opened {connections} connections"
    # the worker closed its pools when it stopped
    assert not [loop for loop in http_pools._POOLS if loop is not None]


def test_distinct_transport_options_get_distinct_pools(tmp_path: Path, server: Server, transport: str) -> None:
    """Clients with the same transport options share a pool; other options get their own; a
    client's own ``transport=`` is used as given and closed with the client."""
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)
    import httpx

    seen: dict[str, object] = {}

    @app.task(retry=0)
    async def probe(ctx: Context) -> None:
        limits = httpx.Limits(max_connections=3)
        async with (
            ctx.http(base_url=server.url) as a,
            ctx.http(base_url=server.url) as b,
            ctx.http(base_url=server.url, limits=limits) as c,
            ctx.http(base_url=server.url, limits=httpx.Limits(max_connections=3)) as d,
        ):
            seen["same"] = a._transport.inner is b._transport.inner
            seen["other"] = a._transport.inner is not c._transport.inner
            seen["equal limits"] = c._transport.inner is d._transport.inner
            await a.post("/ok")
        own = httpx.AsyncHTTPTransport()
        async with ctx.http(base_url=server.url, transport=own) as e:
            seen["own"] = e._transport.inner is own
            await e.post("/ok")
        seen["own closed"] = own._pool.connections == []
        if not _has_h2():  # asking for HTTP/2 without its package is a clear error
            with pytest.raises(ConfigError, match="h2"):
                ctx.http(base_url=server.url, http2=True)

    app.enqueue("probe")
    app.worker(burst=True).run()
    assert app.store.count_jobs()["complete"] == 1, app.store.count_jobs()
    assert seen == {"same": True, "other": True, "equal limits": True, "own": True, "own closed": True}


def _verify_mode(client) -> object:
    """The certificate check of the TLS context a client's shared pool connects with."""
    inner = client._transport.inner
    if hasattr(inner, "lanes"):  # httpx's own transport, in lanes
        return inner.lanes[0]._pool._ssl_context.verify_mode
    return inner.ssl_context.verify_mode  # the aiohttp-backed transport


def test_verify_false_turns_certificate_checks_off(tmp_path: Path, transport: str) -> None:
    """``verify=False`` reaches the transport (it was replaced by the default TLS context)."""
    import ssl

    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)
    modes: dict[str, object] = {}

    @app.task(retry=0)
    async def probe(ctx: Context) -> None:
        async with ctx.http(verify=False) as off, ctx.http() as on:
            modes["off"] = _verify_mode(off)
            modes["on"] = _verify_mode(on)
            modes["kind"] = type(on._transport.inner).__name__

    @app.task(retry=0)
    def probe_sync(ctx: Context) -> None:
        with ctx.http_sync(verify=False) as off:
            modes["sync off"] = _verify_mode(off)

    app.enqueue("probe")
    app.enqueue("probe_sync")
    app.worker(burst=True).run()
    kind = "AiohttpTransport" if transport == "aiohttp" else "_SharedPool"
    assert modes == {"off": ssl.CERT_NONE, "on": ssl.CERT_REQUIRED, "sync off": ssl.CERT_NONE, "kind": kind}


def _has_h2() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


# -- a job's trouble stays its own ---------------------------------------------------------------


def test_a_failed_or_cancelled_job_does_not_break_the_shared_pool(
    tmp_path: Path, server: Server, transport: str
) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)

    @app.task(retry=0)
    async def ok(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=server.url, timeout=30) as client:
            response = await client.post("/ok", json={"n": n})
        response.raise_for_status()
        return n

    @app.task(retry=0)
    async def boom(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=server.url, timeout=30) as client:
            await client.post("/ok", json={"n": n})
            raise RuntimeError("the job failed inside its client")

    @app.task(retry=0, timeout="300ms")
    async def hang(ctx: Context, n: int) -> int:
        # cancelled by its timeout while its request is in flight on the shared pool
        async with ctx.http(base_url=server.url, timeout=30) as client:
            await client.post("/slow", json={"n": n})
        return n

    oks = []
    for i in range(10):
        app.enqueue("boom", {"n": i})
        app.enqueue("hang", {"n": i})
        oks += [app.enqueue("ok", {"n": i * 10 + k}) for k in range(3)]
    app.worker(concurrency=4, burst=True).run()

    statuses = {job.id: app.store.get_job(job.id).status for job in oks}
    assert set(statuses.values()) == {Status.COMPLETE}, statuses
    counts = app.store.count_jobs()
    assert counts["complete"] == 30 and counts["failed"] == 20, counts
    assert server.count() == 40  # 30 ok + 10 boom
    assert server.count("/slow") == 10


# -- a 429 on the shared pool ---------------------------------------------------------------------


def test_a_429_on_the_shared_pool_pauses_only_its_key(tmp_path: Path, server: Server, transport: str) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)
    app.limit("per-tenant", rate="1000/s", burst=50, key="{tenant}")

    @app.task(retry=0, limits=["per-tenant"])
    async def order(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=server.url, limit="per-tenant", timeout=30) as client:
            response = await client.post("/ok", json={"n": n}, headers={"X-Tenant": ctx.tenant})
        response.raise_for_status()
        return n

    server.refuse["A"] = 1
    app.enqueue_many("order", [{"n": i} for i in range(5)], tenant="A")
    app.enqueue_many("order", [{"n": i} for i in range(30)], tenant="B")
    worker = app.worker(concurrency=6)

    def keys():
        return {k.key: k for info in app.store.list_limits() if info.spec.name == "per-tenant" for k in info.keys}

    def b_done_a_paused_and_settled():
        # settled: a request the server has answered may not be recorded as complete yet, so wait
        # until no job is running (A's others step back to waiting for the pause to end)
        a = keys().get("A")
        counts = app.store.count_jobs()
        return (
            server.count(tenant="B") >= 30
            and a is not None
            and a.paused_until is not None
            and counts.get("running", 0) == 0
        )

    run_until(worker, b_done_a_paused_and_settled, "B's jobs to finish while A is paused")
    a, b = keys()["A"], keys().get("B")
    assert a.paused_until is not None and a.paused_until > time.time() + 20, a
    assert a.rate_limited == 1, a
    assert b is None or (b.paused_until is None and b.rate_limited == 0), b
    assert server.count(status=429) == 1 and server.count(status=429, tenant="A") == 1
    # the refused job (and A's others not already in flight) wait for the reset; none failed
    a_jobs = app.store.list_jobs(tenant="A")
    waiting = [j for j in a_jobs if j.status in (Status.SCHEDULED, Status.WAITING)]
    assert len(waiting) >= 1 and len(waiting) + server.count(tenant="A") == 5, [j.status for j in a_jobs]
    assert app.store.count_jobs()["complete"] == 30 + server.count(tenant="A")
    # the jobs shared kept-alive connections (a refused response may cost its connection)
    assert len(server.ports()) <= 6 + server.count(status=429)


# -- shutdown ------------------------------------------------------------------------------------

SHUTDOWN_APP = """
import floodway

app = floodway.App("sqlite:///@DB@", http_transport="@TRANSPORT@")


@app.task(retry=0)
async def call(ctx: floodway.Context, n: int):
    async with ctx.http(base_url="@URL@", timeout=30) as client:
        response = await client.post("/ok", json={"n": n})
    response.raise_for_status()
    return n


@app.task(retry=0)
def call_sync(ctx: floodway.Context, n: int):
    with ctx.http_sync(base_url="@URL@", timeout=30) as client:
        response = client.post("/ok", json={"n": n})
    response.raise_for_status()
    return n
"""


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
def test_a_stopping_worker_closes_its_pools_without_warnings(
    tmp_path: Path, server: Server, workers, monkeypatch, loop: str, transport: str
) -> None:
    apps = LoadedApps(tmp_path)
    try:
        source = SHUTDOWN_APP.replace("@DB@", str(tmp_path / "jobs.db")).replace("@URL@", server.url)
        name, mod = apps.load(source.replace("@TRANSPORT@", transport))
        mod.app.enqueue_many("call", [{"n": i} for i in range(10)])
        mod.app.enqueue_many("call_sync", [{"n": i} for i in range(10)])
        monkeypatch.setenv("PYTHONWARNINGS", "always")
        monkeypatch.setenv("PYTHONTRACEMALLOC", "1")
        proc = workers.start(name, "--concurrency", "4", "--poll-interval", "50ms", "--loop", loop)
        wait_until(lambda: mod.app.store.count_jobs()["complete"] == 20, "20 jobs to complete", workers=workers)
        # the connections are still open (kept alive) when the worker is told to stop
        assert len(server.ports()) <= 8
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.log()
        log = proc.log()
        assert "ResourceWarning" not in log and "nclosed" not in log, log
    finally:
        apps.close()


READY_APP = """
import sys

import floodway
from floodway import http_pools

app = floodway.App("sqlite:///@DB@", http_transport="@TRANSPORT@")


@app.task(retry=0)
async def first(ctx: floodway.Context):
    # what was ready before this job's own ctx.http: no stall of the worker's loop is left for it
    ready = {"tls": http_pools._SSL_CONTEXT is not None, "aiohttp": "httpx_aiohttp" in sys.modules}
    async with ctx.http(base_url="@URL@", timeout=30) as client:
        (await client.post("/ok", json={})).raise_for_status()
    return ready
"""


def test_a_worker_readies_its_transport_before_its_first_job(
    tmp_path: Path, server: Server, workers, transport: str
) -> None:
    # the first ctx.http of a worker would otherwise load the TLS context and import aiohttp's
    # transport on the loop: the first jobs would start late, and the jobs booked after them
    # would keep that lag for seconds (see floodway.worker_pacing)
    apps = LoadedApps(tmp_path)
    try:
        source = READY_APP.replace("@DB@", str(tmp_path / "jobs.db")).replace("@URL@", server.url)
        name, mod = apps.load(source.replace("@TRANSPORT@", transport))
        handle = mod.app.enqueue("first")
        workers.start(name, "--concurrency", "1", "--poll-interval", "50ms")
        wait_until(lambda: mod.app.store.count_jobs()["complete"] == 1, "the job to complete", workers=workers)
        assert handle.result(timeout=10) == {"tls": True, "aiohttp": transport == "aiohttp"}
    finally:
        apps.close()


def test_a_shared_pool_keeps_to_its_max_connections(tmp_path: Path, server: Server, transport: str) -> None:
    """``limits=`` bounds the connections of the shared pool as a whole (its lanes together),
    streamed responses included."""
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport=transport)
    import httpx

    @app.task(retry=0)
    async def call(ctx: Context, n: int) -> int:
        limits = httpx.Limits(max_connections=6)
        async with ctx.http(base_url=server.url, limits=limits, timeout=30) as client:
            if n % 2:
                async with client.stream("POST", "/ok", json={"n": n}) as response:
                    await response.aread()
            else:
                response = await client.post("/ok", json={"n": n})
        response.raise_for_status()
        return n

    app.enqueue_many("call", [{"n": i} for i in range(60)])
    app.worker(concurrency=12, burst=True).run()
    assert app.store.count_jobs()["complete"] == 60, app.store.count_jobs()
    assert server.count() == 60
    assert len(server.ports()) <= 6, server.ports()


# -- choosing the transport ----------------------------------------------------------------------


def test_the_transport_setting_is_checked_where_it_is_given(tmp_path: Path, monkeypatch) -> None:
    from floodway.config import load_settings

    assert load_settings(env={}, pyproject=False).http_transport == "aiohttp"
    with pytest.raises(ConfigError, match=r"http_transport='curl' must be one of 'aiohttp', 'httpx'"):
        App(f"sqlite:///{tmp_path / 'jobs.db'}", http_transport="curl")
    with pytest.raises(ConfigError, match="FLOODWAY_HTTP_TRANSPORT"):
        load_settings(env={"FLOODWAY_HTTP_TRANSPORT": "requests"}, pyproject=False)
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.floodway]\nhttp_transport = 3\n")
    with pytest.raises(ConfigError, match="http_transport"):
        load_settings(env={}, pyproject=bad)
    assert load_settings(env={"FLOODWAY_HTTP_TRANSPORT": "httpx"}, pyproject=False).http_transport == "httpx"


def test_http2_and_sync_clients_use_httpx_whatever_the_setting() -> None:
    """aiohttp speaks neither HTTP/2 nor blocking calls: those clients get httpx's transport."""
    assert http_pools.transport_kind("aiohttp", False, {}) == "aiohttp"
    assert http_pools.transport_kind("aiohttp", False, {"http2": True}) == "httpx"
    assert http_pools.transport_kind("aiohttp", True, {}) == "httpx"
    assert http_pools.transport_kind("httpx", False, {}) == "httpx"


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_the_shared_pools_drop_an_idle_connection_before_a_server_closes_it(kind: str) -> None:
    """uvicorn and Node close a connection idle for 5 s: a pool that kept it as long could send
    a POST into the server's close ("connection reset by peer"), and the job would fail."""
    import httpx

    from floodway.http_pools import _aiohttp_transport, _SharedPool

    def expiry(options: dict) -> float | None:
        if kind == "aiohttp":
            return _aiohttp_transport(options).limits.keepalive_expiry
        return _SharedPool(False, options).keepalive_expiry

    default = expiry({})
    assert default is not None and 0 < default < 5.0
    assert expiry({"limits": httpx.Limits(keepalive_expiry=30.0)}) == 30.0  # a client's own, as given
