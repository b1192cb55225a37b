"""Celery's side of benchmarks/drain.py; runs under the Celery venv's python only.

Invoked as a subprocess by ``benchmarks/drain.py`` (never imported by floodway), so Celery
never enters floodway's virtualenv. The drain done the documented Celery way: one task per
request, Celery's per-worker ``rate_limit`` (each of the two worker processes gets R / 2), a
429 raised as an exception that ``autoretry_for`` retries with ``retry_backoff``, one
``httpx`` client per worker process. The broker needs no server: kombu's SQLAlchemy transport
on a SQLite file; results go to a SQLite file through the SQLAlchemy result backend, which is
how the driver counts what finished and when.

    python celery_drain.py worker  --dir DIR --dest URL --rate-limit 25/s --name w0 [--pool ...]
    python celery_drain.py enqueue --dir DIR --dest URL --rate-limit 25/s -n N   # prints JSON
    python celery_drain.py results --dir DIR                                      # prints JSON

Every mode must get the same ``--dest`` and ``--rate-limit``: they define the task.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone

import celery
import httpx
from celery import Celery


class RateLimitedError(Exception):
    """The destination answered 429: Celery's autoretry retries it with backoff."""


def make_app(workdir: str, dest: str, rate_limit: str, max_retries: int) -> Celery:
    app = Celery(
        "drain",
        broker=f"sqla+sqlite:///{os.path.join(workdir, 'broker.db')}",
        backend=f"db+sqlite:///{os.path.join(workdir, 'results.db')}",
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_extended=False,
    )
    client: dict[str, httpx.Client] = {}

    def http() -> httpx.Client:
        # one client per process (prefork children are forked after import)
        pid = os.getpid()
        if client.get("pid") is not pid:
            client.clear()
            client["pid"] = pid
            client["c"] = httpx.Client(base_url=dest, timeout=60)
        return client["c"]

    @app.task(
        name="order",
        bind=True,
        rate_limit=rate_limit,
        autoretry_for=(RateLimitedError,),
        retry_backoff=True,
        retry_jitter=True,
        retry_kwargs={"max_retries": max_retries},
    )
    def order(self, n: int) -> int:
        response = http().post("/orders", json={"id": n}, headers={"Idempotency-Key": str(n)})
        if response.status_code == 429:
            raise RateLimitedError(f"429 (attempt {self.request.retries + 1})")
        response.raise_for_status()
        return n

    return app


def _results(workdir: str) -> dict:
    path = os.path.join(workdir, "results.db")
    if not os.path.exists(path):
        return {"success": 0, "failure": 0, "other": 0, "last_done": None}
    conn = sqlite3.connect(path, timeout=30)
    try:
        try:
            rows = conn.execute(
                "SELECT status, COUNT(*), MAX(date_done) FROM celery_taskmeta GROUP BY status"
            ).fetchall()
        except sqlite3.OperationalError:  # the table is made on the first result
            rows = []
    finally:
        conn.close()
    out = {"success": 0, "failure": 0, "other": 0, "last_done": None}
    for status, count, last in rows:
        key = status.lower() if status in ("SUCCESS", "FAILURE") else "other"
        out[key] += count
        if last:
            stamp = datetime.fromisoformat(str(last)).replace(tzinfo=timezone.utc).timestamp()
            out["last_done"] = max(out["last_done"] or 0.0, stamp)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["worker", "enqueue", "results"])
    p.add_argument("--dir", required=True)
    p.add_argument("--dest", default="http://127.0.0.1:9")
    p.add_argument("--rate-limit", default="10/s")
    p.add_argument("--max-retries", type=int, default=10)
    p.add_argument("-n", type=int, default=0)
    p.add_argument("--name", default="w0")
    p.add_argument("--pool", default="prefork")
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()
    if a.mode == "results":
        print(json.dumps(_results(a.dir)), flush=True)
        return
    app = make_app(a.dir, a.dest, a.rate_limit, a.max_retries)
    if a.mode == "enqueue":
        t0 = time.time()
        task = app.tasks["order"]
        with app.producer_or_acquire() as producer:
            for i in range(a.n):
                task.apply_async((i,), producer=producer)
        print(
            json.dumps({"enqueued": a.n, "seconds": time.time() - t0, "celery_version": celery.__version__}), flush=True
        )
        return
    from celery.signals import worker_ready

    @worker_ready.connect
    def _ready(**_: object) -> None:  # the driver starts its clock once every worker is ready
        open(os.path.join(a.dir, f"ready-{a.name}"), "w").close()

    app.worker_main(
        [
            "worker",
            "--loglevel",
            "WARNING",
            "--pool",
            a.pool,
            "--concurrency",
            str(a.concurrency),
            "--hostname",
            f"{a.name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
