#!/usr/bin/env python
"""Run ``python -m floodway ARGS...`` under cProfile and write its stats to OUT on exit.

    python benchmarks/profile_worker.py OUT.prof --app mod:app worker --concurrency 50

``drain.py`` starts its first worker this way when ``FLOODWAY_BENCH_PROFILE`` names a
directory (the stats land in ``w0.prof`` there); read them with ``python -m pstats``. The
profiler slows the process it profiles, so a profiled run's rates are not figures to record.
"""

from __future__ import annotations

import cProfile
import sys


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["floodway", *args]
    from floodway.cli import main as floodway_main

    profile = cProfile.Profile()
    profile.enable()
    try:
        floodway_main()
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
