#!/usr/bin/env python
"""Run ``python -m floodway ARGS...`` under cProfile and write its stats to OUT on exit.

    python benchmarks/profile_worker.py OUT.prof --app mod:app worker --concurrency 50

``drain.py`` starts its first worker this way when ``FLOODWAY_BENCH_PROFILE`` names a
directory (the stats land in ``w0.prof`` there, each thread's in ``w0.prof.<n>``: the store's
calls run on threads), each thread timed by its own CPU time; read them with ``python -m
pstats``. The profiler slows the process it profiles: a profiled run's rates are no figures.
"""

from __future__ import annotations

import cProfile
import itertools
import sys
import threading
import time


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["floodway", *args]
    numbers = itertools.count(1)
    run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            run(thread)
        finally:
            profile.disable()
            profile.dump_stats(f"{out}.{next(numbers)}")

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    from floodway.cli import main as floodway_main

    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        floodway_main()
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
