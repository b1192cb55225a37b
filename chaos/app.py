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

Each worker's jobs share its ``ctx.http`` connection pool (kept-alive connections).
"""

from __future__ import annotations

import os
from typing import Any

from floodway import App, Context, Retry

#: the limit every job holds; one budget shared by every worker process on the database
LIMIT = "destination"


def make_app(database_url: str, dest_url: str, rate: float, burst: int) -> App:
    """The chaos app: one limit, one task. The driver builds the same app to enqueue."""
    app = App(database_url)
    app.limit(LIMIT, rate=f"{rate:g}/s", burst=burst)

    # generous retries: a run cut short by the chaos (a killed worker, a restarted database)
    # spends an attempt; a 429 spends none
    @app.task(limits=[LIMIT], retry=Retry(attempts=25, initial="100ms", max="2s", jitter=True))
    async def deliver(ctx: Context, n: int) -> int:
        async with ctx.http(base_url=dest_url, limit=LIMIT, timeout=60) as client:
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
