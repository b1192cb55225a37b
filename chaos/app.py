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
"""

from __future__ import annotations

import os
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
    caps a worker far below the thousands of requests per second the chaos drain runs at.
    Passing ``transport=`` is the public way to give ``ctx.http`` a pool.
    """

    def __init__(self) -> None:
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:  # built inside the worker's event loop
            self._inner = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=200), retries=0
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:  # the pool outlives each job's client
        pass


def make_app(database_url: str, dest_url: str, rate: float, burst: int) -> App:
    """The chaos app: one limit, one task. The driver builds the same app to enqueue."""
    app = App(database_url)
    app.limit(LIMIT, rate=f"{rate:g}/s", burst=burst)
    pool = SharedPool()

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
