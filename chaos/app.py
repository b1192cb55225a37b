"""The app the chaos workers run: ``floodway --app chaos.app:app worker``.

Every job is one record delivered to the loopback destination: a POST through
``ctx.http(limit="destination")`` inside ``ctx.once``, so it carries an ``Idempotency-Key``
derived from the job and the record, and the ledger remembers it once it is accepted.

The chaos driver (``chaos/run.py``) configures the worker processes with environment
variables, so that every process declares the same limit against the same database:

- ``CHAOS_DATABASE_URL``  the store (``sqlite:////abs/path.db`` or ``postgresql://...``)
- ``CHAOS_DEST_URL``      the destination's base URL (``http://127.0.0.1:PORT``)
- ``CHAOS_RATE``          the declared rate, requests per second (the destination's own limit)
- ``CHAOS_BURST``         the declared burst
- ``CHAOS_HTTP``          ``lean`` (default: a small keep-alive HTTP/1.1 client) or ``httpx``
                          (httpx's own connection pool): the transport under ``ctx.http``
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from floodway import App, Context, Retry

#: the limit every job holds; one budget shared by every worker process on the database
LIMIT = "destination"


class SharedPool(httpx.AsyncBaseTransport):
    """One keep-alive connection pool per worker process, shared by the ``ctx.http`` client of
    every job. A client closing (at the end of each job) leaves the pool open.

    Without it each job's ``ctx.http`` builds a transport of its own: a new TLS context (tens
    of milliseconds of CPU, even for http:// URLs) and a new TCP connection per job, which
    caps a worker far below the rates the chaos drain runs at. Passing ``transport=`` is the
    public way to give ``ctx.http`` a pool.
    """

    def __init__(self) -> None:
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:  # built inside the worker's event loop
            # few connections: httpcore scans every pooled connection on each request
            self._inner = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8), retries=0
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:  # the pool outlives each job's client
        pass


class LeanPool(httpx.AsyncBaseTransport):
    """A small keep-alive HTTP/1.1 client for the loopback destination (``CHAOS_HTTP=lean``,
    the default): requests with a body, responses with Content-Length, nothing else.

    httpx's own pool (``SharedPool``) costs several milliseconds of CPU per request on a busy
    2-core machine (httpcore checks every pooled connection through anyio on each request); the
    chaos drain is about floodway, so by default its workers spend their CPU on floodway. What
    ``ctx.http`` adds around it — a token from the shared limit before each request, 429
    handling, pauses, the Idempotency-Key — is floodway's and unchanged.
    """

    #: idle connections older than this are dropped (the destination closes them after 5 s)
    MAX_IDLE = 2.0

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots: asyncio.Semaphore | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        body = await request.aread()
        url = request.url
        lines = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("content-length", "connection")]
        lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        async with self._slots:
            reader, writer = await self._connection(url.host, url.port or 80)
            try:
                writer.write(head + body)
                status_line = await reader.readline()
                parts = status_line.split(b" ", 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                    raise httpx.RemoteProtocolError(f"bad status line {status_line!r}", request=request)
                headers: list[tuple[bytes, bytes]] = []
                length, close = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.partition(b":")
                    name, value = name.strip(), value.strip()
                    headers.append((name, value))
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == b"connection" and value.lower() == b"close":
                        close = True
                content = await reader.readexactly(length) if length else b""
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
            except BaseException:
                writer.close()
                raise
            if close:
                writer.close()
            else:
                self._idle.append((reader, writer, time.monotonic()))
        return httpx.Response(int(parts[1]), headers=headers, content=content, request=request)

    async def _connection(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.MAX_IDLE and not reader.at_eof():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(host, port)
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc

    async def aclose(self) -> None:  # the pool outlives each job's client
        pass


def make_app(database_url: str, dest_url: str, rate: float, burst: int) -> App:
    """The chaos app: one limit, one task. The driver builds the same app to enqueue."""
    app = App(database_url)
    app.limit(LIMIT, rate=f"{rate:g}/s", burst=burst)
    pool: httpx.AsyncBaseTransport = SharedPool() if os.environ.get("CHAOS_HTTP") == "httpx" else LeanPool()

    # generous retries: a run cut short by the chaos (a killed worker, a restarted database)
    # spends an attempt; a 429 spends none
    @app.task(limits=[LIMIT], retry=Retry(attempts=25, initial="100ms", max="2s", jitter=True))
    async def deliver(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=dest_url, limit=LIMIT, transport=pool, timeout=60) as client:
            await ctx.once(n, client.post, "/orders", json={"id": n})
        return n

    return app


def _from_environment() -> App:
    env: dict[str, Any] = os.environ
    return make_app(
        env.get("CHAOS_DATABASE_URL", "sqlite:///chaos.db"),
        env.get("CHAOS_DEST_URL", "http://127.0.0.1:8080"),
        float(env.get("CHAOS_RATE", "2000")),
        int(env.get("CHAOS_BURST", "20")),
    )


app = _from_environment()
