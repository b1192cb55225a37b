#!/usr/bin/env python
"""Bulk actions by filter on 100,000 jobs, beside the same action taken one job at a time.

    .venv/bin/python benchmarks/bulk.py                       # both backends (~1-2 min)
    .venv/bin/python benchmarks/bulk.py --backends sqlite -n 20000

Each backend gets a fresh store holding ``-n`` jobs of one task (bulk-enqueued, 10,000 a call).
Timed, in order, each on every one of those jobs (the action's filter is ``task=...``):
a dry-run count, ``cancel``, ``retry`` (of the cancelled jobs), ``pause``, ``resume``, then
``cancel`` and ``purge``. The baseline, in the same run: ``Handle.cancel()`` / ``.retry()``
one job at a time on ``--single`` jobs, the way a script without bulk actions does it
(reported as jobs/s, so the ratio is per job).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from drain import Database  # noqa: E402

import floodway  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(backend: str, n: int, single: int) -> list[tuple[str, int, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(backend, Path(tmp))
        app = floodway.App(db.url)
        try:

            @app.task(queue="archive")
            def sync_order(n: int) -> None:
                return None

            @app.task(queue="archive")
            def one_by_one(n: int) -> None:
                return None

            for start in range(0, n, 10_000):
                app.enqueue_many(sync_order, [{"n": i} for i in range(start, min(n, start + 10_000))])
            handles = app.enqueue_many(one_by_one, [{"n": i} for i in range(single)])
            rows: list[tuple[str, int, float]] = []
            steps = [
                ("count (dry run)", lambda: app.bulk("cancel", task="sync_order", dry_run=True)),
                ("cancel", lambda: app.bulk("cancel", task="sync_order")),
                ("retry", lambda: app.bulk("retry", task="sync_order")),
                ("pause", lambda: app.bulk("pause", task="sync_order")),
                ("resume", lambda: app.bulk("resume", task="sync_order")),
                ("cancel again", lambda: app.bulk("cancel", task="sync_order")),
                ("purge", lambda: app.bulk("purge", task="sync_order")),
            ]
            for name, step in steps:
                seconds, count = timed(step)
                assert count == n, (name, count)
                rows.append((name, n, seconds))
            seconds, _ = timed(lambda: [h.cancel() for h in handles])
            rows.append(("one by one: cancel", single, seconds))
            seconds, _ = timed(lambda: [h.retry() for h in handles])
            rows.append(("one by one: retry", single, seconds))
            return rows
        finally:
            app.close()
            db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("-n", type=int, default=100_000, help="jobs each bulk action acts on")
    parser.add_argument("--single", type=int, default=2_000, help="jobs of the one-at-a-time baseline")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    print("| backend | action | jobs | seconds | jobs/s |")
    print("|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for name, count, seconds in run(backend, args.n, args.single):
            print(f"| {backend} | {name} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
