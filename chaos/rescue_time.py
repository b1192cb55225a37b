#!/usr/bin/env python
"""How long a job held by a worker killed with SIGKILL takes to run again on another worker.

    python chaos/rescue_time.py --backend sqlite --rounds 5
    python chaos/rescue_time.py --backend postgres --rounds 5   # FLOODWAY_TEST_POSTGRES_URL

Each round: two ``floodway worker`` processes (the default 30 s lease), one job that starts on
the first and then waits; the first is SIGKILLed, and the time from the kill until the job is
``running`` on the second (read from the store, polled every 10 ms) is recorded. Two cases:

* ``same host``: the survivor sees that the dead worker's process is gone (pid + start time);
* ``another host``: the dead worker recorded another host (its process cannot be checked),
  so only its heartbeat going stale tells (``floodway.liveness.STALE_AFTER``).

A measurement, not a test: RELIABILITY.md quotes its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

APP = """
import asyncio
import os

import floodway

app = floodway.App({url!r})


@app.task
async def hold(ctx: floodway.Context, round: int):
    first = ctx.cursor is None  # a rescued run resumes from the checkpoint below and returns
    await ctx.checkpoint({{"started_by": os.getpid()}})
    if first:
        await asyncio.sleep(3600)  # until killed
    return os.getpid()
"""

#: runs ``floodway`` with the process table it records replaced, as on another machine
ANOTHER_HOST = (
    "import floodway.liveness as l; l.host_key = lambda: 'another-host/boot/pid:[0]'; "
    "from floodway.cli import main; main()"
)


def start_worker(workdir: Path, module: str, *, another_host: bool, label: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(workdir), str(SRC)]), PYTHONUNBUFFERED="1")
    entry = ["-c", ANOTHER_HOST] if another_host else ["-m", "floodway"]
    log = open(workdir / f"{label}.log", "ab")
    return subprocess.Popen(
        [sys.executable, *entry, "--app", f"{module}:app", "worker", "--poll-interval", "50ms"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait(condition, what: str, timeout: float = 60.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def one_round(url: str, workdir: Path, n: int, *, another_host: bool) -> float:
    import importlib.util

    module = f"rescue_app_{uuid.uuid4().hex[:8]}"
    (workdir / f"{module}.py").write_text(textwrap.dedent(APP.format(url=url)))
    spec = importlib.util.spec_from_file_location(module, workdir / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    store = mod.app.store
    store.migrate()
    doomed = start_worker(workdir, module, another_host=another_host, label=f"doomed-{n}")
    handle = mod.app.enqueue("hold", {"round": n})
    wait(lambda: store.load_state(f"job:{handle.id}").cursor, "the first run to start")
    survivor = start_worker(workdir, module, another_host=False, label=f"survivor-{n}")
    wait(lambda: any(w.pid == survivor.pid for w in store.list_workers()), "the survivor to register")
    # the survivor judges silence only once its own heartbeats have got through for a while
    # (a worker that just started may itself have been the one cut off)
    from floodway.liveness import STALE_AFTER

    # (a random phase: the kill lands anywhere between the survivor's heartbeats)
    time.sleep((STALE_AFTER + 1.0 if another_host else 1.0) + random.uniform(0.0, 1.0))
    killed = time.time()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()

    def on_survivor():
        job = store.get_job(handle.id)
        return (
            job.worker_id is not None
            and f":{survivor.pid}:" in job.worker_id
            and job.status.value in ("running", "complete")
        )

    wait(on_survivor, "the job to run on the survivor")
    took = time.time() - killed
    wait(lambda: store.get_job(handle.id).status.value == "complete", "the job to complete")
    survivor.send_signal(signal.SIGTERM)
    survivor.wait(timeout=30)
    mod.app.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="floodway-rescue-") as tmp:
        workdir = Path(tmp)
        for case, another in (("same host", False), ("another host", True)):
            times = []
            for n in range(args.rounds):
                with contextlib.ExitStack() as stack:
                    if args.backend == "sqlite":
                        url = f"sqlite:///{workdir / f'jobs-{case[0]}-{n}.db'}"
                    else:
                        sys.path.insert(0, str(ROOT / "tests"))
                        import pg_helpers  # type: ignore[import-not-found]

                        url = stack.enter_context(pg_helpers.throwaway_database())
                    times.append(one_round(url, workdir, n, another_host=another))
                print(f"{case}: round {n + 1}: {times[-1]:.2f}s", flush=True)
            figures[case] = {
                "rounds": len(times),
                "min": min(times),
                "median": statistics.median(times),
                "max": max(times),
            }
            print(f"{case}: min {min(times):.2f}s, median {statistics.median(times):.2f}s, max {max(times):.2f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
