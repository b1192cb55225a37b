#!/usr/bin/env python
"""Drain through a rate-limited API: how close floodway gets to the API's own limit.

    .venv/bin/python benchmarks/drain.py                 # N=5,000 per scenario, ~10-20 minutes
    .venv/bin/python benchmarks/drain.py --quick         # N=1,000
    .venv/bin/python benchmarks/drain.py --rates 50 --modes declared -n 2000   # one scenario
    .venv/bin/python benchmarks/drain.py --json out.json # machine-readable results too

Each scenario: a fresh SQLite file, a loopback destination (``tests/destination.py``:
Starlette + uvicorn in a thread of this process) that really allows R requests per second
(any sliding second holds at most R + 5 accepted requests; the rest get ``429`` with a
``Retry-After`` in whole seconds, as HTTP says), two ``floodway worker`` processes, and N jobs
that each make ONE POST with the idiomatic

    async with ctx.http(base_url=..., limit="api") as client:
        await client.post("/orders", json=..., headers={"Idempotency-Key": ctx.job_id})

Limits, for R = 50 and 200:

* ``declared``: ``app.limit("api", rate=f"{R}/s", burst=5)``, held by the task (taken at claim);
* ``adaptive``: ``app.limit("api", rate=f"{4R}/s", burst=5, adaptive=True)``, which must learn R
  from the 429s (the destination sends no quota headers).

The workers are started and idle before the clock starts; the clock runs from just before
``enqueue_many`` of the N jobs to the last job's ``finished_at`` in the store. Reported:

* drain ÷ (N / R): 1.00 is the API's own limit (goal: <= 1.03 declared, <= 1.10 adaptive);
* 429 share: refused ÷ all requests the destination saw (goal: <= 1 % declared);
* lost / duplicated: finished jobs whose request the destination never accepted (failed ones
  included) / job ids accepted more than once (both must be 0; the destination does not
  deduplicate Idempotency-Keys here, so a duplicate would show). A scenario still running after
  ``--max-ratio`` x N/R (default 3) is stopped and reported with its progress and accept rate;
  ``≈`` is then R ÷ the accept rate, the ratio it was heading for;
* the load average of the machine (1 min) before and after: the figures are wall-clock
  figures, and on a shared machine other work slows the workers down;
* where the time goes: achieved accept rate, claim-to-request lag (p50/p95, from the job's
  ``running`` event to the destination's timestamp), how long 429s kept the limit paused (the
  union of one second after each refusal: every 429 here says ``Retry-After: 1``), the workers'
  CPU milliseconds per finished job, and the adaptive limit's final rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(SRC))

from destination import Destination, max_in_window  # noqa: E402

DEST_BURST = 5
DECLARED_BURST = 5
CONCURRENCY = 50  # per worker process
WORKERS = 2
GOALS = {"declared": 1.03, "adaptive": 1.10}
GOAL_429 = 0.01

APP_TEMPLATE = '''
import floodway

app = floodway.App({url!r})
app.limit("api", rate={rate!r}, burst={burst}, adaptive={adaptive})
DEST = {dest!r}


@app.task(limits=["api"])
async def order(ctx: floodway.Context, n: int):
    async with ctx.http(base_url=DEST, limit="api", timeout=60) as client:
        response = await client.post("/orders", json={{"id": n}}, headers={{"Idempotency-Key": ctx.job_id}})
    if response.status_code != 200:
        raise RuntimeError(f"destination answered {{response.status_code}}")
    return n
'''


def _start_worker(tmp: Path, module: str, label: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), str(SRC), env.get("PYTHONPATH", "")) if p)
    env.pop("FLOODWAY_DATABASE_URL", None)
    env.pop("FLOODWAY_APP", None)
    log = open(tmp / f"{label}.log", "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "floodway", "--app", f"{module}:app", "worker",
             "--concurrency", str(CONCURRENCY), "--poll-interval", "50ms"],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _stop_worker(proc: subprocess.Popen) -> float:
    """SIGTERM, wait, and return the process's CPU seconds (user + system)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        return usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        return float("nan")


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_scenario(n: int, rate: int, mode: str, keep: bool, max_ratio: float, burst: int = DECLARED_BURST) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="floodway-drain-"))
    db = tmp / "jobs.db"
    url = f"sqlite:///{db}"
    dest = Destination(rate=rate, burst=DEST_BURST, mode="retry-after").start()
    start_rate = rate * 4 if mode == "adaptive" else rate
    module = f"drain_app_{mode}_{rate}"
    (tmp / f"{module}.py").write_text(textwrap.dedent(APP_TEMPLATE.format(
        url=url, rate=f"{start_rate}/s", burst=burst, adaptive=mode == "adaptive",
        dest=dest.url)))
    sys.path.insert(0, str(tmp))
    mod = __import__(module)
    app = mod.app
    app.store  # create and migrate the database before anything is timed
    procs = [_start_worker(tmp, module, f"w{i}") for i in range(WORKERS)]
    result: dict = {"n": n, "rate": rate, "mode": mode, "burst": burst,
                    "start_rate": start_rate, "ideal_seconds": n / rate}
    cpu = [float("nan")] * WORKERS
    try:
        deadline = time.monotonic() + 60
        while len([w for w in app.store.list_workers() if w.stopped_at is None]) < WORKERS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("workers did not start: " + (tmp / "w0.log").read_text()[-2000:])
            time.sleep(0.05)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        handles = app.enqueue_many("order", [{"n": i} for i in range(n)])
        result["enqueue_seconds"] = time.time() - t0
        ids = {h.id for h in handles}
        assert len(ids) == n
        give_up = t0 + max(60.0, max_ratio * n / rate)
        while True:
            counts = app.store.count_jobs()
            if counts["complete"] + counts["failed"] + counts["cancelled"] >= n:
                break
            if time.time() > give_up:
                result["stopped_after"] = time.time() - t0
                break
            time.sleep(0.25)
        result["load_avg"] = (load_before, os.getloadavg()[0])
    finally:
        for i, p in enumerate(procs):
            cpu[i] = _stop_worker(p)
        dest.stop()

    conn = sqlite3.connect(db)
    try:
        finished = conn.execute("SELECT MAX(finished_at) FROM jobs WHERE status = 'complete'").fetchone()[0]
        # the last claim of each job: its row's started_at (a claim stores no event)
        claims = dict(conn.execute("SELECT id, started_at FROM jobs WHERE started_at IS NOT NULL"))
        attempts = dict(conn.execute("SELECT attempt, COUNT(*) FROM jobs GROUP BY attempt"))
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        final_ids = {row[0] for row in conn.execute(
            "SELECT id FROM jobs WHERE status IN ('complete', 'failed', 'cancelled')")}
        rescheduled = conn.execute(
            "SELECT COUNT(*) FROM job_events WHERE from_status = 'running' AND to_status = 'scheduled'").fetchone()[0]
    finally:
        conn.close()
    final_spec = {i.spec.name: i.spec for i in app.store.list_limits()}["api"]
    app.close()
    sys.modules.pop(module, None)
    sys.path.remove(str(tmp))

    records = dest.records()
    accepted = [r for r in records if r.status == 200]
    seen = Counter(r.idempotency_key for r in accepted)
    lags = [r.at - claims[r.idempotency_key] for r in accepted if r.idempotency_key in claims]
    accept_times = sorted(r.at for r in accepted)
    stopped = "stopped_after" in result
    drain = result["stopped_after"] if stopped else (finished - t0)
    result.update({
        "drain_seconds": drain,
        "ratio": drain / (n / rate),
        "requests": len(records),
        "refused": len(records) - len(accepted),
        "share_429": (len(records) - len(accepted)) / len(records) if records else float("nan"),
        "done": len(final_ids),
        "unfinished": n - len(final_ids),
        "lost": len(final_ids - set(seen)),
        "duplicated": sum(1 for c in seen.values() if c > 1),
        "unknown_keys": len(set(seen) - ids),
        "statuses": statuses,
        "attempts": attempts,
        "rescheduled": rescheduled,
        "accept_rate": (len(accept_times) - 1) / (accept_times[-1] - accept_times[0]) if len(accept_times) > 1 else 0,
        "max_accepted_in_1s": max_in_window(accept_times),
        "first_accept_after": accept_times[0] - t0 if accept_times else float("nan"),
        # every 429 here says Retry-After: 1, and pauses the limit for every worker about that long
        "paused_seconds": _union_seconds([(r.at, r.at + 1.0) for r in records if r.status != 200]),
        "lag_p50": _pct(lags, 0.5),
        "lag_p95": _pct(lags, 0.95),
        "worker_cpu_seconds": sum(cpu),
        "cpu_ms_per_job": 1000 * sum(cpu) / max(len(final_ids), 1),
        "final_rate_per_s": final_spec.rate.per_second if final_spec.rate else None,
    })
    if keep:
        result["dir"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _fmt(r: dict) -> str:
    goal = GOALS[r["mode"]]
    ok_ratio = r["ratio"] <= goal and not r["unfinished"]
    verdict = f"ratio {'met' if ok_ratio else 'not met'} (≤ {goal:.2f})"
    if r["mode"] == "declared":
        verdict += f"; 429s {'met' if r['share_429'] <= GOAL_429 else 'not met'} (≤ 1 %)"
    if r["lost"] or r["duplicated"]:
        verdict += "; RECORDS LOST OR DUPLICATED"
    adaptive = f"; limit ended at {r['final_rate_per_s']:.1f}/s" if r["mode"] == "adaptive" else ""
    if r["unfinished"]:
        drain = f"stopped at {r['drain_seconds']:.0f} s / {r['ideal_seconds']:.0f} s, {r['done']} of {r['n']} done"
        ratio = f"> {r['ratio']:.1f} (≈ {r['rate'] / r['accept_rate']:.1f})" if r["accept_rate"] else f"> {r['ratio']:.1f}"
    else:
        drain = f"{r['drain_seconds']:.1f} s / {r['ideal_seconds']:.0f} s"
        ratio = f"{r['ratio']:.2f}"
    burst = "" if r["burst"] == DECLARED_BURST else f", burst {r['burst']}"
    return (f"| {r['rate']}/s | {r['mode']}{burst} | {drain} | **{ratio}** "
            f"| {100 * r['share_429']:.2f} % ({r['refused']}) | {r['lost']} / {r['duplicated']} "
            f"| {r['accept_rate']:.1f}/s{adaptive} | {r['lag_p50'] * 1000:.0f} / {r['lag_p95'] * 1000:.0f} ms "
            f"| {r['paused_seconds']:.1f} s | {r['cpu_ms_per_job']:.1f} "
            f"| {r['load_avg'][0]:.0f} → {r['load_avg'][1]:.0f} | {verdict} |")


HEADER = ("| API limit R | floodway limit | drain / ideal (N/R) | ratio | 429 share (count) | lost / dup "
          "| accept rate | claim→request p50 / p95 | paused by 429s | worker CPU ms/job | load avg | goals |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="jobs per scenario (default 5,000; --quick 1,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", default="50,200")
    parser.add_argument("--modes", default="declared,adaptive")
    parser.add_argument("--burst", type=int, default=DECLARED_BURST,
                        help=f"the floodway limit's burst (default {DECLARED_BURST}, the destination's)")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory (db, logs)")
    parser.add_argument("--max-ratio", type=float, default=3.0,
                        help="stop a scenario once it has taken this many times N/R (default 3)")
    parser.add_argument("--json", metavar="PATH", default=None)
    args = parser.parse_args()
    n = args.n or (1_000 if args.quick else 5_000)
    rates = [int(r) for r in args.rates.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]

    print(f"floodway drain benchmark: N={n}, {WORKERS} worker processes x concurrency {CONCURRENCY}, "
          f"destination burst {DEST_BURST}, floodway limit burst {args.burst}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, load average at start {os.getloadavg()[0]:.2f}")
    results = []
    for rate in rates:
        for mode in modes:
            r = run_scenario(n, rate, mode, args.keep, args.max_ratio, args.burst)
            results.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    print()
    print(HEADER)
    for r in results:
        print(_fmt(r))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
