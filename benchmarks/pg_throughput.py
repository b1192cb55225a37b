#!/usr/bin/env python
"""Throughput on PostgreSQL: floodway vs pgqueuer vs procrastinate, side by side, one server.

    .venv/bin/python benchmarks/pg_throughput.py            # default sizes (~5-10 minutes)
    .venv/bin/python benchmarks/pg_throughput.py --quick    # smaller run
    .venv/bin/python benchmarks/pg_throughput.py --json     # machine-readable results too
    .venv/bin/python benchmarks/pg_throughput.py --url postgresql://user@host/db

The server: ``--url``, else FLOODWAY_BENCH_POSTGRES_URL, else FLOODWAY_TEST_POSTGRES_URL, else
the loopback cluster of ``scripts/start-postgres.sh`` (started, or installed, when missing).
Every measurement gets a fresh database on that server (created from template0, dropped after).

The peers run in their own venv, ``benchmarks/.peers/pg-venv`` (git-ignored), created with
``python -m venv`` + ``pip install pgqueuer procrastinate asyncpg psycopg[binary]`` when missing;
floodway runs in this interpreter. Each side runs in subprocesses of its own interpreter.

Scenarios (the same for every system):

* enqueue single/s — N jobs, one call (one transaction) each, from one async/sync client:
  floodway ``app.enqueue``; pgqueuer ``Queries.enqueue(name, payload)``; procrastinate
  ``task.defer_async()``.
* the floor (``--systems ...,floor``): bare psycopg inserting one row into an unindexed table
  per transaction; no job queue commits one job per transaction faster on this server.
* the schema floor (``--systems ...,schema-floor``): floodway's own single-enqueue statement,
  made by floodway before the clock, sent by bare psycopg to a database floodway migrated,
  each its own transaction: a sequential enqueue with floodway's schema, whatever its Python does.
* enqueue single, 100 threads — the same N single enqueues from 100 threads at once, as a web
  server's request threads make them (floodway only: its group commit against its own
  sequential figure).
* enqueue single, 100 coroutines — the same from 100 coroutines of one event loop through
  ``app.enqueue_async``, as an async web server's requests make them (floodway only).
* enqueue bulk/s — N jobs in calls of 1,000: floodway ``app.enqueue_many``; pgqueuer
  ``Queries.enqueue([...], [...], [...])``; procrastinate ``task.batch_defer_async(*kwargs)``.
* no-op jobs/s and 10 ms-sleep jobs/s — a queue pre-filled with N jobs (untimed) is drained by
  1 and by 4 worker processes, each at concurrency 20: floodway
  ``app.worker(concurrency=20)``; pgqueuer ``QueueManager.run(batch_size=10,
  max_concurrent_tasks=20)`` (asyncpg driver; its batch default; it needs max >= 2 x batch);
  procrastinate ``run_worker_async(concurrency=20)``. Tasks are ``async def``.

A drain is timed from the moment every worker process has started, connected and said it is
ready (imports and start-up excluded; all are released at once) until the database shows all
N jobs finished: floodway ``status = 'complete'``, pgqueuer no row left in ``pgqueuer``
(finished jobs move to its log), procrastinate ``status = 'succeeded'``. Every job's completion
is therefore committed when the clock stops, for every system. The count is polled sparsely
while the end is far off and every 20 ms near it (``poll_interval``): each poll is a count over
a table the drain is changing, run by the server the workers need (up to 5 ms of server CPU on
floodway's table, up to 1.4 ms on pgqueuer's), so polling every 20 ms throughout took a few
per cent of the 2 cores from the systems measured, and not the same share from each.

Each worker runs on the event loop its own CLI uses: floodway and pgqueuer (``pgq run``) on
uvloop, which both install on Linux, procrastinate on asyncio's (``procrastinate worker``).
``--loop asyncio`` runs floodway's and pgqueuer's workers (and the ceiling) on asyncio's loop.

The 10 ms rows also show the "loop ceiling": the same number of 10 ms sleeps in the same
number of processes, 20 coroutines each, on a bare loop of the same kind with no queue at all. 20 slots of
10 ms jobs could do 2,000/s per process; timers, wake-ups and scheduling take a little of that,
so no worker on that loop goes past this row. (On asyncio's own loop the ceiling is lower,
about 1,880/s: its timers fire up to a millisecond late, as epoll's timeout is whole
milliseconds, rounded up.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_VENV = HERE / ".peers" / "pg-venv"
LOOP_ENV = "FLOODWAY_BENCH_LOOP"  # --loop, passed to every worker and ceiling process
PEER_PY = PEER_VENV / "bin" / "python"
PEER_PACKAGES = ["pgqueuer", "procrastinate", "asyncpg", "psycopg[binary]"]
SYSTEMS = ["floodway", "pgqueuer", "procrastinate"]
DEFAULTS = {"single": 3_000, "bulk": 50_000, "noop": 20_000, "sleep": 8_000, "hot": 20_000}
QUICK = {"single": 500, "bulk": 10_000, "noop": 4_000, "sleep": 2_000, "hot": 4_000}
CHUNK = 1_000
#: threads enqueuing at once in the "concurrent" scenario (a web server's request threads)
CONCURRENT_ENQUEUERS = 100
CONCURRENCY = 20


# ---------------------------------------------------------------------------------------------
# roles: run inside a subprocess, under floodway's interpreter or the peers' venv
# ---------------------------------------------------------------------------------------------


def _floodway_app(url: str, kind: str):
    import floodway

    app = floodway.App(url + ("&" if "?" in url else "?") + "pool_max=4")
    if kind == "hot":
        # one limit every job holds: a rate that never binds and a cap that never binds, so
        # what is measured is the cost of the shared accounting row itself
        app.limit("api", rate="1000000/s", burst=1000, concurrency=100000)

        @app.task(name="job", limits=["api"])
        async def job(n: int = 0):
            return None

        return app, job

    if kind == "sleep":

        @app.task(name="job")
        async def job(n: int = 0):
            await asyncio.sleep(0.01)
    else:

        @app.task(name="job")
        async def job(n: int = 0):
            return None

    return app, job


def _procrastinate_app(url: str, kind: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    if kind == "sleep":

        @app.task(name="job")
        async def job(n: int = 0):
            await asyncio.sleep(0.01)
    else:

        @app.task(name="job")
        async def job(n: int = 0):
            return None

    return app, job


async def _pgqueuer_setup(url: str):
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    return conn, Queries(AsyncpgDriver(conn))


#: not a job queue: bare psycopg inserting one row into an unindexed table per transaction
#: (autocommit), what any durable one-job-per-commit enqueue is bounded by on this server
FLOOR = "floor"
#: floodway's own single-enqueue statement sent by bare psycopg (see role_enqueue)
SCHEMA_FLOOR = "schema-floor"
BARE = (FLOOR, SCHEMA_FLOOR)  # enqueue single only


def role_install(system: str, url: str) -> None:
    """Create the system's schema in a fresh database (untimed)."""
    if system == FLOOR:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE jobs (id text, task text, args text, queue text, run_at float8)")
    elif system in ("floodway", SCHEMA_FLOOR):
        app, _ = _floodway_app(url, "noop")
        app.store  # migrates
        app.close()
    elif system == "pgqueuer":

        async def go():
            conn, q = await _pgqueuer_setup(url)
            await q.install()
            await conn.close()

        asyncio.run(go())
    elif system == "procrastinate":
        app, _ = _procrastinate_app(url, "noop")

        async def go():
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(go())


def _schema_floor(url: str, n: int) -> float:
    """floodway's single enqueue with no floodway code on the clock: bare psycopg sends the one
    statement floodway's store sends for a job (the row into every index it enters, its
    fairness group under its lock, the queue's notification), each its own transaction, to a
    database floodway migrated. The statements are made by floodway before the clock (its
    own text and values, a fresh id each); psycopg prepares the repeated text as floodway's
    connections do. What floodway's schema and statement cost, whatever its Python does."""
    import dataclasses

    import psycopg

    app, job = _floodway_app(url, "noop")
    store = app.store
    made: list = []
    write = store.enqueue
    store.enqueue = lambda jobs, *args, **kw: made.extend(jobs) or write(jobs, *args, **kw)
    app.enqueue(job, {"n": -1})  # the queue's row written, and the job whose statement is copied
    app.close()
    first = made[0]
    statements = [
        store._enqueue_statement([dataclasses.replace(first, id=f"{first.id[:-8]}{k:08x}")], {}, time.time())
        for k in range(n + 100)
    ]
    with psycopg.connect(url, autocommit=True, prepare_threshold=5) as conn:
        for sql, params in statements[n:]:
            conn.execute(sql, params).fetchone()
        start = time.perf_counter()
        for sql, params in statements[:n]:
            conn.execute(sql, params).fetchone()
        return time.perf_counter() - start


def role_enqueue(system: str, url: str, n: int, mode: str, kind: str) -> float:
    """Enqueue n jobs; return the seconds it took (single calls, chunks of CHUNK, or single
    calls from CONCURRENT_ENQUEUERS threads at once)."""
    bulk = mode == "bulk"
    if system == FLOOR:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            insert = "INSERT INTO jobs VALUES (%s, 'noop', '{}', 'default', %s)"
            for _ in range(100):
                conn.execute(insert, (os.urandom(16).hex(), time.time()))
            start = time.perf_counter()
            for _ in range(n):
                conn.execute(insert, (os.urandom(16).hex(), time.time()))
            return time.perf_counter() - start
    if system == SCHEMA_FLOOR:
        return _schema_floor(url, n)
    if system == "floodway":
        app, job = _floodway_app(url, kind)
        app.store
        app.enqueue(job, {"n": -1})  # warm: first-use work (limits/queues sync) is not measured
        start = time.perf_counter()
        if mode == "concurrent":
            threads = CONCURRENT_ENQUEUERS
            gate = threading.Barrier(threads + 1)

            def run(part: range) -> None:
                gate.wait()
                for k in part:
                    app.enqueue(job, {"n": k})

            workers = [threading.Thread(target=run, args=(range(t, n, threads),)) for t in range(threads)]
            for w in workers:
                w.start()
            gate.wait()
            start = time.perf_counter()
            for w in workers:
                w.join()
        elif mode == "coroutines":  # an async web server's requests, one event loop

            async def coroutines() -> float:
                async def run(part: range) -> None:
                    for k in part:
                        await app.enqueue_async(job, {"n": k})

                begin = time.perf_counter()
                await asyncio.gather(*(run(range(t, n, CONCURRENT_ENQUEUERS)) for t in range(CONCURRENT_ENQUEUERS)))
                return time.perf_counter() - begin

            took = asyncio.run(coroutines())
        elif bulk:
            for i in range(0, n, CHUNK):
                app.enqueue_many(job, [{"n": k} for k in range(i, min(i + CHUNK, n))])
        else:
            for k in range(n):
                app.enqueue(job, {"n": k})
        if mode != "coroutines":
            took = time.perf_counter() - start
        app.store.cancel(app.store.list_jobs(limit=1, offset=n)[0].id)  # the warm-up job runs not
        app.close()
        return took
    if system == "pgqueuer":

        async def go():
            conn, q = await _pgqueuer_setup(url)
            start = time.perf_counter()
            if bulk:
                for i in range(0, n, CHUNK):
                    m = min(CHUNK, n - i)
                    await q.enqueue(["job"] * m, [str(k).encode() for k in range(i, i + m)], [0] * m)
            else:
                for k in range(n):
                    await q.enqueue("job", str(k).encode())
            took = time.perf_counter() - start
            await conn.close()
            return took

        return asyncio.run(go())
    if system == "procrastinate":
        app, job = _procrastinate_app(url, kind)

        async def go():
            async with app.open_async():
                start = time.perf_counter()
                if bulk:
                    for i in range(0, n, CHUNK):
                        await job.batch_defer_async(*[{"n": k} for k in range(i, min(i + CHUNK, n))])
                else:
                    for k in range(n):
                        await job.defer_async(n=k)
                return time.perf_counter() - start

        return asyncio.run(go())
    raise SystemExit(f"unknown system {system}")


def _worker_loop() -> str:
    """The loop chosen with ``--loop``, as the driver passed it down."""
    return "asyncio" if os.environ.get(LOOP_ENV) == "asyncio" else "uvloop"


def _run_on_worker_loop(coro) -> None:
    """Run a pgqueuer worker or the ceiling on the loop chosen with ``--loop``."""
    if _worker_loop() == "asyncio":
        asyncio.run(coro)
    else:
        import uvloop  # a dependency of floodway and of pgqueuer on Linux; `pgq run` uses it

        uvloop.run(coro)


def role_work(system: str, url: str, kind: str) -> None:
    """Start a worker, say "ready", wait for "go" on stdin, run until SIGTERM/SIGKILL."""
    go_line = None

    def wait_for_go():
        nonlocal go_line
        print("ready", flush=True)
        go_line = sys.stdin.readline()

    if system == "floodway":
        app, _ = _floodway_app(url, kind)
        app.store
        wait_for_go()
        app.worker(concurrency=CONCURRENCY, grace="0s", loop=_worker_loop()).run()
        return
    if system == "pgqueuer":

        async def go():
            from pgqueuer.qm import QueueManager

            conn, queries = await _pgqueuer_setup(url)
            qm = QueueManager(queries)
            if kind == "sleep":

                @qm.entrypoint("job")
                async def job(j):
                    await asyncio.sleep(0.01)
            else:

                @qm.entrypoint("job")
                async def job(j):
                    return None

            await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
            await qm.run(batch_size=10, max_concurrent_tasks=CONCURRENCY)

        _run_on_worker_loop(go())
        return
    if system == "procrastinate":
        app, _ = _procrastinate_app(url, kind)

        async def go():
            async with app.open_async():
                await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
                await app.run_worker_async(concurrency=CONCURRENCY, wait=True)

        asyncio.run(go())
        return
    raise SystemExit(f"unknown system {system}")


def role_ceiling(n: int) -> None:
    """The 10 ms drain without any queue: CONCURRENCY coroutines of a bare loop (the one
    floodway's and pgqueuer's workers run on) sleep 10 ms each, n times in all."""
    print("ready", flush=True)
    sys.stdin.readline()

    async def go():
        left = [n]

        async def slot():
            while left[0] > 0:
                left[0] -= 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(slot() for _ in range(CONCURRENCY)))

    _run_on_worker_loop(go())


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

DONE_SQL = {
    "floodway": "SELECT count(*) FROM jobs WHERE status = 'complete'",
    "pgqueuer": "SELECT %(n)s - count(*) FROM pgqueuer",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
}


def interpreter(system: str) -> str:
    return sys.executable if system in ("floodway", *BARE) else str(PEER_PY)


def ensure_peers() -> None:
    if PEER_PY.exists():
        probe = subprocess.run(
            [str(PEER_PY), "-c", "import pgqueuer, procrastinate, asyncpg, psycopg"], capture_output=True
        )
        if probe.returncode == 0:
            return
    print(f"installing the peers into {PEER_VENV} ...", file=sys.stderr)
    PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
    if not PEER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)


def server_url(given: str | None) -> str:
    url = given or os.environ.get("FLOODWAY_BENCH_POSTGRES_URL") or os.environ.get("FLOODWAY_TEST_POSTGRES_URL")
    if url:
        return url
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-postgres.sh")], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export FLOODWAY_TEST_POSTGRES_URL="):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise SystemExit("scripts/start-postgres.sh printed no URL")


def with_database(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


class Database:
    def __init__(self, server: str):
        import psycopg

        self.server = server
        self.name = f"fw_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE template0')
        self.url = with_database(server, self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def run_role(system: str, *args: str) -> str:
    cmd = [interpreter(system), str(Path(__file__).resolve()), "--role", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{system} {' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def measure_enqueue(system: str, server: str, n: int, mode: str) -> float:
    db = Database(server)
    try:
        run_role(system, "install", system, db.url)
        out = run_role(system, "enqueue", system, db.url, str(n), mode, "noop")
        seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
        return n / seconds
    finally:
        db.drop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads) so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def server_cpu() -> float | None:
    """CPU time of every PostgreSQL process on this machine (backends, WAL writer,
    checkpointer...); None when the server is elsewhere. A backend that exits during a drain
    takes its share with it, so this is a lower bound."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return cpu_seconds(pids) if pids else None


class Drain(float):
    """A drain's jobs/s, carrying the CPU it cost per job (µs): ``cpu["workers"]`` for the
    worker processes, ``cpu["server"]`` for PostgreSQL."""

    cpu: dict[str, float | None]

    def __new__(cls, rate: float, cpu: dict[str, float | None]):
        self = super().__new__(cls, rate)
        self.cpu = cpu
        return self


POLL_MIN, POLL_MAX = 0.02, 0.2


def speed_probe() -> float:
    """Milliseconds of CPU a fixed pure-Python loop takes, printed next to each measurement.
    On a shared virtual machine this varies by half from one minute to the next with nothing
    else running, and a measurement taken in a slow minute is slow for that reason alone: this
    is why each one is repeated, interleaved, and the best kept."""
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i * i
    return (time.process_time() - start) * 1000


def poll_interval(left: int, done: int, elapsed: float) -> float:
    """How long to wait before counting again: a quarter of the time the rate so far says is
    left, between 20 and 200 ms. The clock stops late only if the rate more than quadruples
    between two polls, and by at most 200 ms; near the end it polls every 20 ms as before."""
    if done <= 0:
        return POLL_MIN
    return min(max(left * elapsed / done / 4, POLL_MIN), POLL_MAX)


def measure_drain(system: str, server: str, n: int, kind: str, processes: int, timeout: float) -> "Drain":
    import psycopg

    db = Database(server)
    procs: list[subprocess.Popen] = []
    try:
        run_role(system, "install", system, db.url)
        run_role(system, "enqueue", system, db.url, str(n), "bulk", kind)
        n_done = n
        for _ in range(processes):
            procs.append(
                subprocess.Popen(
                    [interpreter(system), str(Path(__file__).resolve()), "--role", "work", system, db.url, kind],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{system} worker did not start: {line!r} {p.stderr.read()[-3000:]}")
        with psycopg.connect(db.url, autocommit=True) as conn:
            workers = [p.pid for p in procs]
            server0, workers0 = server_cpu(), cpu_seconds(workers)
            start = time.perf_counter()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            while True:
                done = conn.execute(DONE_SQL[system], {"n": n}).fetchone()[0]
                if done >= n_done:
                    break
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"{system}: only {done} of {n} done after {timeout}s")
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{system} worker exited early: {p.stderr.read()[-3000:]}")
                time.sleep(poll_interval(n - done, done, time.perf_counter() - start))
            took = time.perf_counter() - start
            server1, workers1 = server_cpu(), cpu_seconds(workers)
        cpu = {
            "workers": (workers1 - workers0) / n * 1e6,
            "server": (server1 - server0) / n * 1e6 if server0 is not None else None,
        }
        return Drain(n / took, cpu)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        db.drop()


CEILING = "loop ceiling"


def measure_ceiling(n: int, processes: int) -> float:
    """``role_ceiling`` in ``processes`` processes at once (n in all), timed like a drain."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--role", "ceiling", "-", "-", str(n // processes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("the ceiling process did not start")
    start = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait(timeout=600) != 0:
            raise RuntimeError("the ceiling process failed")
    return (n // processes) * processes / (time.perf_counter() - start)


def server_info(server: str) -> str:
    import psycopg

    with psycopg.connect(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = {
            k: conn.execute(f"SHOW {k}").fetchone()[0]
            for k in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
    return f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())})"


def versions() -> dict[str, str]:
    out = {"floodway": __import__("floodway").__version__ if hasattr(__import__("floodway"), "__version__") else "dev"}
    if not PEER_PY.exists():
        return out  # floodway alone: the peers are not installed
    probe = subprocess.run(
        [
            str(PEER_PY),
            "-c",
            "import importlib.metadata as m; print(m.version('pgqueuer'), m.version('procrastinate'))",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        out["pgqueuer"], out["procrastinate"] = probe.stdout.split()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--url")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop of floodway's and pgqueuer's workers (default: uvloop, as their CLIs)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scenarios", default="single,concurrent,coroutines,bulk,noop,sleep,hot")
    parser.add_argument("--processes", default="1,4")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each measurement this many times (interleaved) and keep the best"
    )
    args = parser.parse_args()
    if not args.role:
        os.environ[LOOP_ENV] = args.loop  # every role process inherits the driver's choice

    if args.role:
        role, system, url, *rest = args.role
        if role == "install":
            role_install(system, url)
        elif role == "enqueue":
            seconds = role_enqueue(system, url, int(rest[0]), rest[1], rest[2])
            print(json.dumps({"seconds": seconds}))
        elif role == "work":
            role_work(system, url, rest[0])
        elif role == "ceiling":
            role_ceiling(int(rest[0]))
        return

    sizes = QUICK if args.quick else DEFAULTS
    systems = [s for s in args.systems.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    process_counts = [int(p) for p in args.processes.split(",")]
    if any(s not in ("floodway", *BARE) for s in systems):
        ensure_peers()
    server = server_url(args.url)
    info = server_info(server)
    print(
        f"# {info}; {os.cpu_count()} CPUs; Python {platform.python_version()}; {versions()}; "
        f"floodway and pgqueuer workers on {args.loop}",
        flush=True,
    )

    rows: list[tuple[str, dict[str, float]]] = []

    def record(label: str, system: str, value: float) -> None:
        for name, values in rows:
            if name == label:
                values[system] = value
                break
        else:
            rows.append((label, {system: value}))
        print(f"{label:<34} {system:<14} {value:>10,.0f}/s", flush=True)

    best: dict[tuple[str, str], float] = {}

    def keep(label: str, system: str, value: float) -> None:
        if value > best.get((label, system), 0.0):
            best[(label, system)] = value
        cpu = getattr(value, "cpu", None)
        spent = ""
        if cpu:  # a drain: what each job cost the worker processes and the server
            server = f"{cpu['server']:,.0f}" if cpu["server"] is not None else "?"
            spent = f"   CPU per job: workers {cpu['workers']:,.0f} us, server {server} us"
        print(
            f"  {label:<52} {system:<14} {value:>10,.0f}/s{spent}   probe {speed_probe():.0f} ms",
            file=sys.stderr,
            flush=True,
        )

    for scenario in scenarios:
        for _ in range(args.repeat):
            for system in systems:  # interleaved, so load from elsewhere hits every system alike
                if system in BARE and scenario != "single":
                    continue
                if scenario == "single":
                    keep(
                        f"enqueue single (n={sizes['single']})",
                        system,
                        measure_enqueue(system, server, sizes["single"], "single"),
                    )
                elif scenario == "concurrent":
                    if system != "floodway":
                        continue  # floodway's group commit against its own sequential figure
                    keep(
                        f"enqueue single, {CONCURRENT_ENQUEUERS} threads (n={sizes['single']})",
                        system,
                        measure_enqueue(system, server, sizes["single"], "concurrent"),
                    )
                elif scenario == "coroutines":
                    if system != "floodway":
                        continue  # floodway's group commit from one event loop, beside its sequential figure
                    keep(
                        f"enqueue single, {CONCURRENT_ENQUEUERS} coroutines (n={sizes['single']})",
                        system,
                        measure_enqueue(system, server, sizes["single"], "coroutines"),
                    )
                elif scenario == "bulk":
                    keep(
                        f"enqueue bulk (n={sizes['bulk']}, {CHUNK}/call)",
                        system,
                        measure_enqueue(system, server, sizes["bulk"], "bulk"),
                    )
                elif scenario in ("noop", "sleep", "hot"):
                    if scenario == "hot" and system != "floodway":
                        continue  # floodway only: the peers have no shared rate limits to compare
                    for procs in process_counts:
                        what = {"noop": "no-op", "sleep": "10 ms sleep", "hot": "no-op, one shared limit"}[scenario]
                        label = f"{what} jobs, {procs} proc x {CONCURRENCY} (n={sizes[scenario]})"
                        keep(label, system, measure_drain(system, server, sizes[scenario], scenario, procs, 600))
            if scenario == "sleep":
                for procs in process_counts:
                    label = f"10 ms sleep jobs, {procs} proc x {CONCURRENCY} (n={sizes[scenario]})"
                    keep(label, CEILING, measure_ceiling(sizes[scenario], procs))
    for (label, system), value in best.items():
        record(label, system, value)

    print()
    if "sleep" in scenarios:
        systems = [*systems, CEILING]
    header = (
        "| scenario | "
        + " | ".join(systems)
        + " | "
        + " | ".join(f"floodway / {s}" for s in systems if s != "floodway")
        + " |"
    )
    print(header)
    print("|" + "---|" * (1 + len(systems) + len([s for s in systems if s != "floodway"])))
    for label, values in rows:
        cells = [f"{values[s]:,.0f}/s" if s in values else "-" for s in systems]
        ratios = [
            f"{values['floodway'] / values[s]:.2f}x" if "floodway" in values and s in values and values[s] else "-"
            for s in systems
            if s != "floodway"
        ]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    drains = [(label, system, value.cpu) for (label, system), value in best.items() if getattr(value, "cpu", None)]
    if drains:
        print()
        print("| scenario (the best run's) | system | worker CPU per job | server CPU per job | both |")
        print("|---|---|---|---|---|")
        for label, system, cpu in drains:
            server = cpu["server"]
            both = f"{cpu['workers'] + server:,.0f} µs" if server is not None else "-"
            print(
                f"| {label} | {system} | {cpu['workers']:,.0f} µs | "
                f"{f'{server:,.0f} µs' if server is not None else '-'} | {both} |"
            )
    if args.json:
        print(json.dumps({"server": info, "rows": [{"scenario": label, **values} for label, values in rows]}))


if __name__ == "__main__":
    main()
