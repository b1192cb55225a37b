#!/usr/bin/env python
"""Reserved lanes under a saturating backlog: how long an interactive job waits while a
backfill drains through the same API, and what the backfill keeps of the rest of the rate.

    .venv/bin/python benchmarks/lanes.py                        # sqlite and postgres, ~1.5 min
    .venv/bin/python benchmarks/lanes.py --backends sqlite --backfill 2000 --seconds 10

The destination (``tests/destination.py``, in this process) enforces ``RATE`` requests per
second (``style="leaky"``: a sliding second plus a burst of ``BURST``, 429 + ``Retry-After``).
The app declares the same rate with two lanes::

    app.limit("api", rate="100/s", burst=5, lanes={"interactive": 0.2, "backfill": 0.8})

and every job makes one POST through ``ctx.http(limit="api")`` (its admission token is the
request's). Two ``floodway worker`` processes of 50 slots each start idle; then ``--backfill``
jobs of the backfill lane are enqueued at once (enough to saturate the key for the whole run),
and ``--warmup`` seconds later interactive jobs arrive one by one at ``--interactive-rate`` per
second for ``--seconds`` seconds (single enqueues, as a web request would make them).

Reported, from the store's ``created_at`` / ``started_at`` (a job's claim is its admission):

* the interactive wait (enqueue to start): p50, p95, max, against the lane's admission
  interval 1 / (share x rate) = 50 ms; goal p95 <= 2 intervals;
* the backfill's rate while interactive jobs arrive, against the rest of the key's rate
  (rate - the interactive lane's measured rate); goal >= 95 %;
* the destination's 429s, and the duplicated / lost requests (both must be 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from destination import Destination, max_in_window  # noqa: E402
from drain import Database, _pct, _start_worker, _stop_worker  # noqa: E402

RATE = 100
BURST = 5
SHARE = 0.2
WORKERS = 2
GOAL_WAIT_INTERVALS = 2.0
GOAL_BACKFILL = 0.95

APP = """
import floodway

app = floodway.App({url!r})
app.limit("api", rate="{rate}/s", burst={burst}, lanes={{"interactive": {share}, "backfill": {rest}}})
DEST = {dest!r}


async def post(ctx, n):
    async with ctx.http(base_url=DEST, limit="api", timeout=60) as client:
        response = await client.post("/orders", json={{"id": n}}, headers={{"Idempotency-Key": ctx.job_id}})
    if response.status_code != 200:
        raise RuntimeError(f"destination answered {{response.status_code}}")


@app.task(limits=["api"], lane="backfill")
async def backfill(ctx: floodway.Context, n: int):
    await post(ctx, n)


@app.task(limits=["api"], lane="interactive")
async def interactive(ctx: floodway.Context, n: int):
    await post(ctx, n)
"""


def run(backend: str, backfill: int, warmup: float, seconds: float, interactive_rate: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="fw-lanes-") as tmp_name:
        tmp = Path(tmp_name)
        db = Database(backend, tmp)
        dest = Destination(rate=RATE, burst=BURST, style="leaky").start()
        module = f"lanes_app_{uuid.uuid4().hex[:8]}"
        source = APP.format(url=db.url, rate=RATE, burst=BURST, share=SHARE, rest=round(1 - SHARE, 6), dest=dest.url)
        (tmp / f"{module}.py").write_text(textwrap.dedent(source))
        sys.path.insert(0, str(tmp))
        app = __import__(module).app
        app.store  # create and migrate the database before anything is timed
        procs = [_start_worker(tmp, module, f"w{i}") for i in range(WORKERS)]
        try:
            deadline = time.monotonic() + 60
            while len([w for w in app.store.list_workers() if w.stopped_at is None]) < WORKERS:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise SystemExit("workers did not start: " + (tmp / "w0.log").read_text()[-2000:])
                time.sleep(0.05)
            load_before = os.getloadavg()[0]
            app.enqueue_many("backfill", [{"n": i} for i in range(backfill)])
            time.sleep(warmup)
            count = int(seconds * interactive_rate)
            phase_start = time.time()
            for i in range(count):
                # paced by the clock, not by sleeps added up: an enqueue's own time is not drift
                pause = phase_start + i / interactive_rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                app.enqueue("interactive", {"n": i})
            phase_end = phase_start + count / interactive_rate
            total = backfill + count
            deadline = time.monotonic() + 3 * total / RATE + 60
            while (done := app.store.count_jobs()["complete"] + app.store.count_jobs()["failed"]) < total:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{backend}: {done} of {total} jobs done in time")
                time.sleep(0.25)
            load_after = os.getloadavg()[0]
        finally:
            for proc in procs:
                _stop_worker(proc)
            dest.stop()
            app.close()
            sys.path.remove(str(tmp))
        rows = db.rows("SELECT id, task, created_at, started_at, status FROM jobs")
        db.drop()

    started = {task: sorted(float(r[3]) for r in rows if r[1] == task) for task in ("backfill", "interactive")}
    waits = [float(r[3]) - float(r[2]) for r in rows if r[1] == "interactive"]
    in_phase = {task: sum(1 for t in times if phase_start <= t < phase_end) for task, times in started.items()}
    duration = phase_end - phase_start
    interactive_rate_seen = in_phase["interactive"] / duration
    backfill_rate = in_phase["backfill"] / duration
    records = dest.records()
    accepted = Counter(r.idempotency_key for r in records if r.status == 200)
    ids = {r[0] for r in rows}
    return {
        "backend": backend,
        "jobs": len(rows),
        "failed": sum(1 for r in rows if r[4] != "complete"),
        "wait_p50_ms": 1000 * _pct(waits, 0.5),
        "wait_p95_ms": 1000 * _pct(waits, 0.95),
        "wait_max_ms": 1000 * max(waits),
        "interval_ms": 1000 / (SHARE * RATE),
        "interactive_rate": interactive_rate_seen,
        "backfill_rate": backfill_rate,
        "backfill_share_of_rest": backfill_rate / (RATE - interactive_rate_seen),
        "max_admitted_in_second": max_in_window(started["backfill"] + started["interactive"], 1.0),
        "requests": len(records),
        "refused": sum(1 for r in records if r.status != 200),
        "duplicated": sum(1 for c in accepted.values() if c > 1),
        "lost": len(ids - set(accepted)),
        "load": (load_before, load_after),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--backfill", type=int, default=3000, help="backfill jobs, enqueued at once (default 3000)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of backfill alone first (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of interactive arrivals (default 20)")
    parser.add_argument("--interactive-rate", type=float, default=10.0, help="interactive jobs per second (10)")
    args = parser.parse_args()
    results = [
        run(b, args.backfill, args.warmup, args.seconds, args.interactive_rate) for b in args.backends.split(",")
    ]
    print(
        f"{'backend':9} {'jobs':>5} {'wait p50':>9} {'p95':>7} {'max':>7} {'goal p95':>9} {'inter/s':>8} "
        f"{'backfill/s':>10} {'of rest':>8} {'max/s':>6} {'429s':>5} {'dup':>4} {'lost':>5} {'load':>9}"
    )
    for r in results:
        goal = GOAL_WAIT_INTERVALS * r["interval_ms"]
        print(
            f"{r['backend']:9} {r['jobs']:>5} {r['wait_p50_ms']:>7.1f}ms {r['wait_p95_ms']:>5.1f}ms "
            f"{r['wait_max_ms']:>5.0f}ms {goal:>7.0f}ms {r['interactive_rate']:>8.2f} {r['backfill_rate']:>10.2f} "
            f"{100 * r['backfill_share_of_rest']:>7.1f}% {r['max_admitted_in_second']:>6} {r['refused']:>5} "
            f"{r['duplicated']:>4} {r['lost']:>5} {r['load'][0]:>4.1f}-{r['load'][1]:<4.1f}"
        )
        met = r["wait_p95_ms"] <= goal and r["backfill_share_of_rest"] >= GOAL_BACKFILL
        print(
            f"  goals (p95 <= {goal:.0f} ms, backfill >= {100 * GOAL_BACKFILL:.0f} % of the rest): {'met' if met else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
