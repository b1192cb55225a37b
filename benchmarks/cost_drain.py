#!/usr/bin/env python
"""Drain jobs of variable cost through a GraphQL-style API: what settling the real cost buys.

    .venv/bin/python benchmarks/cost_drain.py                          # sqlite and postgres, ~1.5 min
    .venv/bin/python benchmarks/cost_drain.py --backends sqlite -n 600

The destination (``tests/cost_destination.py``, in this process) is a Shopify-like bucket of
``SIZE`` points restoring ``RESTORE`` points per second; each call costs what its body says,
and a call that does not fit is refused (429, THROTTLED) and spends nothing. N jobs each make
one call whose real cost is random in 1..10 (seeded), with a fixed estimate of ``ESTIMATE``,
through ``app.limit("shop", rate=RESTORE/s, burst=LIMIT_BURST)`` on two ``floodway worker``
processes of ``CONCURRENCY`` slots each:

* settle on — ``ctx.http(limit="shop", cost=ESTIMATE, actual_cost=floodway.graphql_cost)``;
* settle off — ``ctx.http(limit="shop", cost=ESTIMATE)``: the estimate only.

Reported: the drain (enqueue to the last ``finished_at``) beside the ideal (the points spent ÷
the restore rate), the 429s the destination answered, and the points it accepted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from cost_destination import CostDestination  # noqa: E402
from drain import ROOT, Database, _stop_worker  # noqa: E402

SIZE, RESTORE = 100, 200
ESTIMATE = 5
#: 8 calls in flight, each up to 5 over its estimate, plus our burst, fit in the bucket
LIMIT_BURST = 20
CONCURRENCY = 4
WORKERS = 2

APP = """
import floodway

app = floodway.App({url!r})
app.limit("shop", rate="{rate}/s", burst={burst})


@app.task(retry=0)
async def query(ctx: floodway.Context, n: int, cost: int):
    async with ctx.http({dest!r}, limit="shop", cost={estimate}{reader}) as client:
        response = await client.post("/graphql", json={{"id": n, "cost": cost}})
    return response.status_code
"""


def start_worker(tmp: Path, module: str, label: str):
    import os
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.pop("FLOODWAY_DATABASE_URL", None)
    with open(tmp / f"{label}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "floodway", "--app", f"{module}:app", "worker"]
            + ["--concurrency", str(CONCURRENCY), "--poll-interval", "50ms"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def run(backend: str, settle: bool, n: int) -> dict:
    rng = random.Random(42)
    costs = [rng.randint(1, 10) for _ in range(n)]
    with tempfile.TemporaryDirectory(prefix="fw-cost-") as tmp_name, CostDestination(SIZE, RESTORE) as dest:
        tmp = Path(tmp_name)
        db = Database(backend, tmp)
        module = f"cost_app_{uuid.uuid4().hex[:8]}"
        reader = ", actual_cost=floodway.graphql_cost" if settle else ""
        source = APP.format(
            url=db.url, rate=RESTORE, burst=LIMIT_BURST, dest=dest.url, estimate=ESTIMATE, reader=reader
        )
        (tmp / f"{module}.py").write_text(textwrap.dedent(source))
        sys.path.insert(0, str(tmp))
        app = __import__(module).app
        procs = [start_worker(tmp, module, f"w{i}") for i in range(WORKERS)]
        try:
            time.sleep(2.0)  # the workers are up and idle before the clock starts
            start = time.time()
            app.enqueue_many("query", [{"n": i, "cost": c} for i, c in enumerate(costs)])
            deadline = time.monotonic() + 120
            while app.store.count_jobs()["complete"] + app.store.count_jobs()["failed"] < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{backend}, settle {'on' if settle else 'off'}: not drained in 120 s")
                time.sleep(0.05)
            end = float(db.rows("SELECT MAX(finished_at) FROM jobs")[0][0])
        finally:
            for proc in procs:
                _stop_worker(proc)
            app.close()
            sys.path.remove(str(tmp))
            db.drop()
        ideal = sum(costs) / RESTORE
        return {
            "backend": backend,
            "settle": "on" if settle else "off",
            "jobs": n,
            "points": sum(costs),
            "drain_s": end - start,
            "ideal_s": ideal,
            "ratio": (end - start) / ideal,
            "throttled": dest.rejected_count,
            "accepted_points": dest.points_accepted,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("-n", type=int, default=300, help="jobs per run (default 300)")
    args = parser.parse_args()
    rows = [run(b, settle, args.n) for b in args.backends.split(",") for settle in (True, False)]
    print(
        f"{'backend':9} {'settle':6} {'jobs':>5} {'points':>6} {'drain s':>8} {'ideal s':>8} {'ratio':>6} {'429s':>5}"
    )
    for r in rows:
        print(
            f"{r['backend']:9} {r['settle']:6} {r['jobs']:>5} {r['points']:>6} {r['drain_s']:>8.2f} "
            f"{r['ideal_s']:>8.2f} {r['ratio']:>6.2f} {r['throttled']:>5}"
        )


if __name__ == "__main__":
    main()
