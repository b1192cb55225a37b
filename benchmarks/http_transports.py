#!/usr/bin/env python
"""One bare client over httpx's own transport beside the same client over ``httpx-aiohttp``'s
(what ``ctx.http`` sends through by default), against one loopback destination that never
refuses, alternated, in one run:

    .venv/bin/python benchmarks/http_transports.py [--requests 5000] [--inflight 50] [--repeat 3]

Each run is ``peers/bare_httpx.py`` in a process of its own (N POSTs with a JSON body and an
``Idempotency-Key``, INFLIGHT at a time over one keep-alive pool). Prints requests/s and CPU
per request (the client process's user + system time) of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from destination import Destination  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--inflight", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with Destination(rate=1_000_000, burst=1_000_000) as dest:
        for _ in range(a.repeat):
            for transport in ("httpx", "aiohttp"):
                out = subprocess.run(
                    [
                        sys.executable,
                        str(HERE / "peers" / "bare_httpx.py"),
                        dest.url,
                        str(a.requests),
                        str(a.inflight),
                        transport,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                seconds = r["end"] - r["start"]
                print(
                    f"{transport:8} {r['requests'] / seconds:8,.0f} requests/s  "
                    f"{r['cpu_seconds'] / r['requests'] * 1e3:.2f} ms CPU per request  ({r['ok']} answered 200)",
                    flush=True,
                )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
