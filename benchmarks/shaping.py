#!/usr/bin/env python
"""Shaping the work to the quota: batching into one bulk call, and debounce.

    .venv/bin/python benchmarks/shaping.py                         # both parts, both backends (~1 min)
    .venv/bin/python benchmarks/shaping.py --parts batching --backends sqlite

* **batching** — ``RECORDS`` records, each enqueued as a job of its own (one bulk enqueue),
  through a loopback bulk endpoint (``tests/destination.py``, ``POST /bulk/orders``) that
  takes at most ``PER_CALL`` records a call and ``CALLS_PER_S`` calls a second (a sliding
  second holding ``CALLS_PER_S + ENDPOINT_BURST`` calls: a call over it gets a 429). The task is ``@app.task(batch=Batch(max_size=PER_CALL),
  limits=["bulk"])`` with ``app.limit("bulk", rate=CALLS_PER_S/s)``, on two ``floodway
  worker`` processes. Ideal: ``RECORDS / PER_CALL / CALLS_PER_S`` seconds (10 s); one call per
  record would need 100 x longer. Reported: the drain (enqueue to the last ``finished_at``) ÷
  ideal, calls, 429s, records delivered (each once).
* **debounce** — two processes enqueue at once, one job per call from ``THREADS`` threads
  each (as a web server's request threads do), ``ROUNDS`` rounds over ``KEYS`` keys each (``2 x ROUNDS x KEYS`` enqueues) of ``@app.task(debounce="3s",
  debounce_key="{contact}")`` while a worker process runs. Reported: how long the enqueues
  took, the runs (goal: one per key), and the runs whose arguments were the last ones their
  key received (read from the store once every enqueue returned; goal: all).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from destination import Destination  # noqa: E402
from drain import ROOT, Database, _stop_worker  # noqa: E402

RECORDS, PER_CALL, CALLS_PER_S = 10_000, 100, 10
#: calls the endpoint lets through beyond its rate in any second (a small bucket, as most
#: APIs have); the limit declares the rate with a burst of 1, so it never leans on it
ENDPOINT_BURST = 2
KEYS, ROUNDS = 1_000, 5

BATCH_APP = """
import floodway

app = floodway.App({url!r})
app.limit("bulk", rate="{rate}/s")


@app.task(batch=floodway.Batch(max_size={per_call}), limits=["bulk"], retry=0)
async def upsert(ctx: floodway.Context, items: list[dict]) -> list[bool]:
    async with ctx.http({dest!r}, limit="bulk") as client:
        response = await client.post("/bulk/orders", json={{"records": items}})
        response.raise_for_status()
    return [r.get("ok", False) for r in response.json()["results"]]
"""

DEBOUNCE_APP = """
import os
import floodway

app = floodway.App({url!r})


@app.task(debounce="3s", debounce_key="{{contact}}")
async def refresh(contact: int, value: str) -> str:
    fd = os.open({runs!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{{contact}} {{value}}\\n".encode())
    os.close(fd)
    return value
"""

ENQUEUER = """
import sys, time, threading
sys.path.insert(0, {here!r})
from {module} import app, refresh

def part(t):
    for r in range({rounds}):
        for k in range(t, {keys}, {threads}):
            refresh.enqueue({{"contact": k, "value": "{tag}-" + str(r)}})

start = time.time()
threads = [threading.Thread(target=part, args=(t,)) for t in range({threads})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(time.time() - start)
app.close()
"""
#: threads enqueueing in each process, as a web server's request threads do (concurrent single
#: enqueues of one process share a transaction: group commit)
THREADS = 32


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.pop("FLOODWAY_DATABASE_URL", None)
    return env


def _worker(tmp: Path, module: str, label: str, concurrency: int = 4) -> subprocess.Popen:
    with open(tmp / f"{label}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "floodway", "--app", f"{module}:app", "worker", "--concurrency", str(concurrency)],
            cwd=tmp,
            env=_env(tmp),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _load(tmp: Path, source: str) -> tuple[str, object]:
    module = f"shape_app_{uuid.uuid4().hex[:8]}"
    (tmp / f"{module}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp))
    return module, __import__(module)


def batching(backend: str) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="fw-batch-") as name,
        Destination(rate=CALLS_PER_S, burst=ENDPOINT_BURST, style="leaky") as api,
    ):
        tmp = Path(name)
        api.bulk_max = PER_CALL
        db = Database(backend, tmp)
        module, mod = _load(tmp, BATCH_APP.format(url=db.url, rate=CALLS_PER_S, per_call=PER_CALL, dest=api.url))
        app = mod.app  # type: ignore[attr-defined]
        procs = [_worker(tmp, module, f"w{i}") for i in range(2)]
        try:
            time.sleep(2.0)  # the workers are up and idle before the clock starts
            start = time.time()
            app.enqueue_many("upsert", [{"id": i} for i in range(RECORDS)])
            deadline = time.monotonic() + 120
            while sum(app.store.count_jobs().get(s, 0) for s in ("complete", "failed")) < RECORDS:
                if time.monotonic() > deadline:
                    raise SystemExit(f"batching on {backend}: not drained in 120 s")
                time.sleep(0.05)
            end = float(db.rows("SELECT MAX(finished_at) FROM jobs")[0][0])
            failed = app.store.count_jobs().get("failed", 0)
        finally:
            for proc in procs:
                _stop_worker(proc)
            app.close()
            db.drop()
        ideal = RECORDS / PER_CALL / CALLS_PER_S
        return {
            "backend": backend,
            "drain_s": end - start,
            "ideal_s": ideal,
            "ratio": (end - start) / ideal,
            "calls": api.accepted_count,
            "refused": api.rejected_count,
            "delivered": len(api.bulk_ids),
            "duplicates": len(api.bulk_ids) - len(set(api.bulk_ids)),
            "failed": failed,
        }


def debounce(backend: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="fw-debounce-") as name:
        tmp = Path(name)
        runs_file = tmp / "runs"
        db = Database(backend, tmp)
        module, mod = _load(tmp, DEBOUNCE_APP.format(url=db.url, runs=str(runs_file)))
        app = mod.app  # type: ignore[attr-defined]
        worker = _worker(tmp, module, "w0", concurrency=50)
        try:
            time.sleep(2.0)
            scripts = []
            for tag in ("a", "b"):
                script = tmp / f"enqueue_{tag}.py"
                script.write_text(
                    ENQUEUER.format(here=str(tmp), module=module, rounds=ROUNDS, keys=KEYS, tag=tag, threads=THREADS)
                )
                scripts.append(script)
            start = time.time()
            procs = [
                subprocess.Popen([sys.executable, str(s)], cwd=tmp, env=_env(tmp), stdout=subprocess.PIPE, text=True)
                for s in scripts
            ]
            outputs = [proc.communicate(timeout=300)[0] for proc in procs]
            enqueue_s = time.time() - start
            # the last arguments each key received: its pending job's, once every enqueue returned
            last = {
                job.args["contact"]: job.args["value"]
                for job in app.store.list_jobs(status=["scheduled", "waiting"], limit=100_000)
            }
            deadline = time.monotonic() + 60
            while sum(app.store.count_jobs().get(s, 0) for s in ("scheduled", "waiting", "running")) > 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"debounce on {backend}: not drained in 60 s")
                time.sleep(0.1)
            time.sleep(0.5)
            runs = [line.split() for line in runs_file.read_text().splitlines()]
        finally:
            _stop_worker(worker)
            app.close()
            db.drop()
        ran = {int(contact): value for contact, value in runs}
        return {
            "backend": backend,
            "enqueues": 2 * ROUNDS * KEYS,
            "enqueue_s": enqueue_s,
            "per_process_s": [float(o.strip().splitlines()[-1]) for o in outputs],
            "runs": len(runs),
            "keys": len(ran),
            "pending_keys_after_enqueue": len(last),
            "last_args": sum(1 for k, v in last.items() if ran.get(k) == v),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--parts", default="batching,debounce")
    args = parser.parse_args()
    backends = args.backends.split(",")
    parts = args.parts.split(",")
    print(f"# {platform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.2f} · {time.strftime('%F %T')}")
    if "batching" in parts:
        print(f"\nbatching: {RECORDS} records, {PER_CALL} per call, {CALLS_PER_S} calls/s")
        print(
            f"{'backend':9} {'drain s':>8} {'ideal s':>8} {'ratio':>6} {'calls':>6} {'429s':>5} {'records':>8} {'dup':>4}"
        )
        for backend in backends:
            r = batching(backend)
            print(
                f"{r['backend']:9} {r['drain_s']:>8.2f} {r['ideal_s']:>8.2f} {r['ratio']:>6.2f} {r['calls']:>6} "
                f"{r['refused']:>5} {r['delivered']:>8} {r['duplicates']:>4}"
            )
    if "debounce" in parts:
        print(f"\ndebounce: 2 processes x {ROUNDS} rounds x {KEYS} keys, debounce 3s")
        print(f"{'backend':9} {'enqueues':>8} {'enqueue s':>9} {'runs':>6} {'keys':>6} {'last args':>9}")
        for backend in backends:
            r = debounce(backend)
            print(
                f"{r['backend']:9} {r['enqueues']:>8} {r['enqueue_s']:>9.2f} {r['runs']:>6} {r['keys']:>6} "
                f"{r['last_args']:>9}"
            )


if __name__ == "__main__":
    main()
