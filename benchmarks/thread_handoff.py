#!/usr/bin/env python
"""What 100 threads cost a group-committed enqueue, with no database at all.

    .venv/bin/python benchmarks/thread_handoff.py                 # commit = a 160 us sleep
    .venv/bin/python benchmarks/thread_handoff.py --commit-us 250 --repeat 5
    .venv/bin/python benchmarks/thread_handoff.py --commit-us 0    # no commit: what making a job costs

floodway's single enqueue runs as it does on SQLite: the job is checked and made, joins the
group commit, and its caller blocks until a leader has committed it. The store's write is
replaced by a sleep that lets go of the GIL as an fsync does (``--commit-us``, the fsync
this disk takes per commit), and returns every job as created. Nothing is written.

Two figures, in one process, each the best of ``--repeat``:
* sequential: one thread, N enqueues one after the other (each waits for its own "commit");
* 100 threads: the same N from 100 threads at once (each "commit" takes every job pending).

Their ratio is what the thread path can reach with SQLite's insert costing nothing: the 100
threads are bound by handing each job between threads (a wake-up and a GIL hand-over per
job), not by the commit. The CPU per job is the process's user + system time ÷ N.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time

import floodway
from floodway.store.base import EnqueueResult

THREADS = 100


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30_000, help="enqueues per measurement")
    parser.add_argument("--commit-us", type=float, default=160.0, help="how long one commit sleeps")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.n < THREADS or args.commit_us < 0 or args.repeat < 1:
        parser.error("-n must be at least 100, --commit-us at least 0, --repeat at least 1")
    pause = args.commit_us / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        app = floodway.App(f"sqlite:///{os.path.join(tmp, 'handoff.db')}")

        @app.task
        def noop() -> None:
            pass

        app.enqueue(noop)  # the store opened and the queue written before the store is left out

        def commit(jobs: list, queues: dict) -> list[EnqueueResult]:
            if pause:  # (0: no sleep at all, so the sequential row is the cost of making a job)
                time.sleep(pause)
            return [EnqueueResult(job.id, True) for job in jobs]

        app.group_commit._write = commit  # the write left out: only the path to it is measured

        def sequential() -> tuple[float, float]:
            c0, t0 = _cpu(), time.perf_counter()
            for _ in range(args.n):
                app.enqueue(noop)
            return args.n / (time.perf_counter() - t0), (_cpu() - c0) / args.n

        def threaded() -> tuple[float, float]:
            gate = threading.Barrier(THREADS + 1)

            def run(count: int) -> None:
                gate.wait()
                for _ in range(count):
                    app.enqueue(noop)

            share = args.n // THREADS
            workers = [threading.Thread(target=run, args=(share,)) for _ in range(THREADS)]
            for w in workers:
                w.start()
            gate.wait()
            c0, t0 = _cpu(), time.perf_counter()
            for w in workers:
                w.join()
            return share * THREADS / (time.perf_counter() - t0), (_cpu() - c0) / (share * THREADS)

        seq = max((sequential() for _ in range(args.repeat)), key=lambda r: r[0])
        thr = max((threaded() for _ in range(args.repeat)), key=lambda r: r[0])
        app.close()

    print(f"# floodway {floodway.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"# a commit sleeps {args.commit_us:g} us; N = {args.n:,}; best of {args.repeat}")
    print("| enqueuers | enqueues/s | CPU per enqueue |")
    print("|---|---|---|")
    print(f"| 1 thread, sequential | {seq[0]:,.0f} | {seq[1] * 1e6:.0f} us |")
    print(f"| {THREADS} threads | {thr[0]:,.0f} ({thr[0] / seq[0]:.1f} x sequential) | {thr[1] * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
