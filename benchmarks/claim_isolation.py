#!/usr/bin/env python
"""A worker's claim beside another queue's backlog: how long a job of queue ``live`` waits while
``-n`` jobs of queue ``bulk`` wait for no worker at all.

    .venv/bin/python benchmarks/claim_isolation.py                      # both backends (~2 min)
    .venv/bin/python benchmarks/claim_isolation.py --backends postgres -n 20000 --seconds 5

Each case gets a fresh store holding ``-n`` waiting jobs of queue ``bulk``: ``tenant`` (the
backlog is another tenant's, so its own fairness group), ``shared`` (the backlog shares the
fairness group of the ``live`` jobs) and ``none`` (no backlog: the peer each case is read
against). One worker process limited to ``live`` runs while a job is enqueued on ``live`` every
10 ms for ``--seconds``; reported: the median, p95 and max of each ``live`` job's wait
(started_at - run_at), and how fast the backlog was bulk-enqueued (jobs/s: the cost of the
indexes a waiting job enters).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from drain import Database, _stop_worker  # noqa: E402

import floodway  # noqa: E402

SRC = HERE.parent / "src"

APP = """
import floodway

app = floodway.App({url!r})


@app.task(queue="bulk")
def backfill(n: int) -> None:
    return None


@app.task(queue="live")
def ping(n: int) -> None:
    return None
"""


def _start_worker(tmp: Path) -> object:
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), str(SRC)])
    env.pop("FLOODWAY_DATABASE_URL", None)
    env.pop("FLOODWAY_APP", None)
    with open(tmp / "worker.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "floodway", "--app", "isolation_app:app", "worker", "--queues", "live"]
            + ["--concurrency", "4", "--poll-interval", "50ms"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(backend: str, case: str, n: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db = Database(backend, tmp)
        (tmp / "isolation_app.py").write_text(APP.format(url=db.url))
        sys.path.insert(0, str(tmp))
        sys.modules.pop("isolation_app", None)
        import isolation_app as mod  # type: ignore[import-not-found]

        sys.path.remove(str(tmp))
        app: floodway.App = mod.app
        worker = None
        try:
            enqueued = time.perf_counter()
            if case != "none":
                tenant = "archive" if case == "tenant" else None
                for start in range(0, n, 10_000):
                    rows = [{"n": i} for i in range(start, min(n, start + 10_000))]
                    mod.backfill.enqueue_many(rows, tenant=tenant)
            enqueued = time.perf_counter() - enqueued
            worker = _start_worker(tmp)
            mod.ping.enqueue({"n": -1}).result(timeout=120)  # the worker is up
            count = int(seconds / 0.01)
            began = time.monotonic()
            for i in range(count):
                mod.ping.enqueue({"n": i})
                time.sleep(max(0.0, began + (i + 1) * 0.01 - time.monotonic()))
            deadline = time.monotonic() + 300
            while app.store.count_jobs(queue="live").get("complete", 0) < count + 1:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{backend}/{case}: the live jobs did not finish")
                time.sleep(0.2)
            jobs = [j for j in app.store.list_jobs(task="ping", limit=1_000_000) if j.args["n"] >= 0]
            waits = [(j.started_at or 0) - j.run_at for j in jobs]
            left = app.store.count_jobs(queue="bulk").get("waiting", 0)
            assert left == (n if case != "none" else 0), left
            return {
                "jobs": len(waits),
                "median": statistics.median(waits),
                "p95": _pct(waits, 0.95),
                "max": max(waits),
                "enqueue": n / enqueued if case != "none" else float("nan"),
            }
        finally:
            if worker is not None:
                _stop_worker(worker)  # type: ignore[arg-type]
            app.close()
            db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--cases", default="none,tenant,shared")
    parser.add_argument("-n", type=int, default=100_000, help="waiting jobs of queue bulk (default 100,000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long live jobs are enqueued")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}, n={args.n}, {args.seconds:g} s")
    print(f"{'backend':9} {'backlog':8} {'jobs':>5} {'median s':>9} {'p95 s':>8} {'max s':>8} {'enqueue/s':>10}")
    for backend in args.backends.split(","):
        for case in args.cases.split(","):
            r = run(backend, case, args.n, args.seconds)
            print(
                f"{backend:9} {case:8} {r['jobs']:5d} {r['median']:9.3f} {r['p95']:8.3f} {r['max']:8.3f} "
                f"{r['enqueue']:10.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
