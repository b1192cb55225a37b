#!/usr/bin/env python
"""Throughput of floodway vs huey (SqliteHuey), side by side, on SQLite.

    .venv/bin/python benchmarks/throughput.py            # default sizes, ~1-3 minutes
    .venv/bin/python benchmarks/throughput.py --quick    # smaller run
    .venv/bin/python benchmarks/throughput.py --json     # machine-readable results
    .venv/bin/python benchmarks/throughput.py --profile  # cProfile floodway's no-op worker

Scenarios (a fresh database file per scenario and per system, in a temp dir):

* enqueue single/s: N jobs, one enqueue call (one transaction) each;
* enqueue single/s, 100 threads: the same N single enqueues from 100 threads at once, as a web
  server's request threads make them (floodway group-commits them; SqliteHuey, a connection
  per thread, commits each);
* enqueue single/s, 100 coroutines (floodway only: huey has no coroutine enqueue): the same N
  from 100 coroutines of one event loop through ``app.enqueue_async``, as an async web
  server's requests make them;
* floor (bare ``sqlite3``, no floodway): one row into an unindexed table per transaction, with
  the column's ``synchronous``: what any durable one-job-per-commit enqueue is bounded by on
  this disk;
* schema floor (bare ``sqlite3``, floodway's statements): a single enqueue's statements as
  floodway's store runs them, on a database it migrated (every index a job enters), the rows
  made before the clock: what a sequential enqueue costs with floodway's schema, whatever
  its Python does;
* enqueue bulk/s: floodway ``app.enqueue_many`` in chunks; huey has no bulk enqueue, its
  only multi-job call ``TaskWrapper.map`` is a loop of single enqueues (one commit each),
  which is what is measured for it;
* no-op jobs/s and 10 ms-sleep jobs/s: ONE worker process at concurrency 20 drains a
  pre-filled queue (``hot``, floodway only, with ``--whatif base --only noop,hot``: no-op
  jobs that all hold one limit that never binds, beside plain no-op jobs). floodway: ``app.worker(concurrency=20, burst=True).run()`` with
  ``async def`` tasks; huey: its consumer with ``workers=20, worker_type='thread'`` (the
  same as ``huey_consumer -w 20 -k thread``) and plain functions.

Every measurement runs in a fresh subprocess and is timed inside that process with
``time.perf_counter`` (interpreter start-up, imports and the untimed pre-fill excluded).
A drain is timed from just before the worker/consumer is created to: floodway, ``run()``
returning (every outcome committed, worker deregistered); huey, the N-th
``SIGNAL_COMPLETE``. huey runs under its own venv (``benchmarks/.peers/venv``, created
with ``python -m venv`` + ``pip install huey`` when missing), never in floodway's.

floodway's SQLite default is ``synchronous=full`` (every commit fsynced: a returned enqueue
is durable); it is also run with ``?synchronous=normal``. SqliteHuey opens WAL and leaves
``synchronous`` at SQLite's default, FULL (2) with this SQLite; the script reads the
pragmas from a live SqliteHuey connection and prints them. So both fsync every commit
(``strace -c -e fdatasync`` counts one per enqueue on each side), and an enqueue returns durable
on both. With ``enqueue_single`` among the scenarios, the WAL pages one single enqueue writes are
measured for each side too (untimed, the checkpoint held off: ``_wal_pages``).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import io
import json
import os
import platform
import pstats
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
PEER_VENV = PEERS / "venv"
PEER_PY = PEER_VENV / "bin" / "python"
HUEY_SCRIPT = HERE / "peers" / "huey_bench.py"

DEFAULTS = {"single": 5_000, "bulk": 100_000, "noop": 20_000, "sleep": 10_000}
QUICK = {"single": 1_000, "bulk": 20_000, "noop": 4_000, "sleep": 2_000}
CONCURRENCY = 20
#: threads enqueuing at once in the "enqueue single, 100 threads" scenario
CONCURRENT_ENQUEUERS = 100
BULK_CHUNK = 1_000
GOAL = 2.0  # floodway >= 2x huey on no-op and 10 ms jobs


# ------------------------------------------------------------------------------------------
# floodway's side: runs in a child process of floodway's own interpreter
# ------------------------------------------------------------------------------------------
def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _make_app(url: str):
    import asyncio

    from floodway import App

    app = App(url)

    @app.task(name="noop")
    async def noop():
        pass

    @app.task(name="sleepy")
    async def sleepy():
        await asyncio.sleep(0.01)

    # one limit every job holds: a rate and a cap that never bind, so what is measured is the
    # cost of the shared accounting row itself (pg_throughput.py's ``hot``)
    app.limit("api", rate="1000000/s", burst=1000, concurrency=100000)

    @app.task(name="hot", limits=["api"])
    async def hot():
        pass

    return app


def _wal_pages(path: str, writer: sqlite3.Connection, enqueue, n: int) -> dict:
    """WAL pages one sequential single enqueue writes: after a warm-up the WAL is emptied and
    the automatic checkpoint of ``writer`` (the connection the enqueues commit on) turned off,
    then ``n`` enqueues run and the frames they appended are counted (a page plus a 24-byte
    header each, after the file's 32-byte header). Not timed. huey_bench.py's ``wal-pages``
    mode measures huey the same way."""
    for _ in range(100):
        enqueue()
    page = writer.execute("PRAGMA page_size").fetchone()[0]
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(n):
        enqueue()
    frames = (os.path.getsize(path + "-wal") - 32) / (page + 24)
    return {"jobs": n, "pages_per_enqueue": frames / n, "wal_bytes_per_enqueue": frames * (page + 24) / n}


def _timed(n: int, seconds: float, cpu: float, **extra) -> dict:
    """One measurement's result: n jobs in ``seconds`` of wall time and ``cpu`` of CPU time."""
    return {"jobs": n, "seconds": seconds, "per_second": n / seconds, "cpu_seconds": cpu, **extra}


def _waiting(store) -> int:
    return store.count_jobs()["waiting"]


async def _warm_async(app) -> None:
    """One enqueue before the clock (the store open, the queue written), as the other modes."""
    await app.enqueue_async("noop")


def _schema_floor(url: str, n: int) -> dict:
    """floodway's own single enqueue with no floodway code on the clock: bare ``sqlite3`` runs
    the statements its store runs for one job (the row, its ``ON CONFLICT (id)`` check and its
    fairness group, in one ``BEGIN IMMEDIATE`` transaction) on a database floodway migrated,
    so the job enters every index it enters, with floodway's pragmas. The rows' values are made
    by floodway before the clock. What floodway's schema costs a sequential enqueue, whatever
    its Python does."""
    import dataclasses

    from floodway.store.keyed import JOB_INSERT, job_values

    app = _make_app(url)
    store = app.store
    made: list = []
    write = store.enqueue
    store.enqueue = lambda jobs, *args, **kw: made.extend(jobs) or write(jobs, *args, **kw)  # type: ignore[method-assign]
    app.enqueue("noop")  # the queue's row written, and the job whose values are copied
    app.close()
    job, now = made[0], time.time()
    rows = [job_values(dataclasses.replace(job, id=f"{job.id[:-8]}{k:08x}"), now) for k in range(n + 100)]
    path, _, query = url.removeprefix("sqlite:///").partition("?")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute(f"PRAGMA synchronous={query.partition('=')[2] or 'full'}")
    insert, group = JOB_INSERT + " ON CONFLICT (id) DO NOTHING", "INSERT OR IGNORE INTO fair_keys (key) VALUES (?)"

    def one(values: tuple) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, values)
        conn.execute(group, (job.fair_key,))
        conn.execute("COMMIT")

    for values in rows[n:]:
        one(values)
    c0, t0 = _cpu(), time.perf_counter()
    for values in rows[:n]:
        one(values)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"jobs": n, "seconds": dt, "per_second": n / dt, "cpu_seconds": cpu}


def _floor(url: str, n: int) -> dict:
    """The floor under any durable single enqueue on this disk: bare ``sqlite3`` inserting one
    row into a table with no index, one transaction each, with floodway's pragmas (WAL and
    the URL's ``synchronous``). No job queue can commit one job per transaction faster."""
    path, _, query = url.removeprefix("sqlite:///").partition("?")
    sync = query.partition("=")[2] or "full"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE jobs (id TEXT, task TEXT, args TEXT, queue TEXT, run_at REAL)")

    def insert() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO jobs VALUES (?, 'noop', '{}', 'default', ?)", (os.urandom(16).hex(), time.time()))
        conn.execute("COMMIT")

    for _ in range(100):
        insert()
    c0, t0 = _cpu(), time.perf_counter()
    for _ in range(n):
        insert()
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "jobs": n,
        "seconds": dt,
        "per_second": n / dt,
        "cpu_seconds": cpu,
        "sqlite_version": sqlite3.sqlite_version,
    }


def _child(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="throughput.py --child")
    p.add_argument(
        "mode",
        choices=[
            "enqueue-single",
            "enqueue-concurrent",
            "enqueue-coroutines",
            "enqueue-bulk",
            "prefill",
            "drain",
            "profile",
            "wal-pages",
            "floor",
            "schema-floor",
        ],
    )
    p.add_argument("--threads", type=int, default=CONCURRENT_ENQUEUERS)
    p.add_argument("--url", required=True)
    p.add_argument("-n", type=int, default=0)
    p.add_argument("--task", choices=["noop", "sleepy", "hot"], default="noop")
    p.add_argument("--chunk", type=int, default=BULK_CHUNK)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument("--out", default=None)
    p.add_argument("--patch", default="", help="what-if prototypes, '+'-separated (see WHATIFS)")
    a = p.parse_args(argv)
    if a.mode == "floor":
        print(json.dumps(_floor(a.url, a.n)), flush=True)
        return
    if a.mode == "schema-floor":
        print(json.dumps(_schema_floor(a.url, a.n)), flush=True)
        return
    if a.patch:
        _apply_whatifs(a.patch.split("+"))
    app = _make_app(a.url)
    store = app.store  # open (and migrate) before the clock, as SqliteHuey does in __init__
    if a.mode == "enqueue-single":
        c0, t0 = _cpu(), time.perf_counter()
        for _ in range(a.n):
            app.enqueue("noop")
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        out = {
            "jobs": a.n,
            "seconds": dt,
            "per_second": a.n / dt,
            "cpu_seconds": cpu,
            "queued": store.count_jobs()["waiting"],
        }
    elif a.mode == "wal-pages":
        path = a.url.split("?", 1)[0].removeprefix("sqlite:///")
        out = _wal_pages(path, store._conn(), lambda: app.enqueue("noop"), a.n)
    elif a.mode == "enqueue-concurrent":
        # a web server: many request threads, one enqueue each (group-committed)
        per = [a.n // a.threads + (1 if i < a.n % a.threads else 0) for i in range(a.threads)]
        gate = threading.Barrier(a.threads + 1)

        def run(k: int) -> None:
            gate.wait()
            for _ in range(k):
                app.enqueue("noop")

        threads = [threading.Thread(target=run, args=(k,)) for k in per]
        for t in threads:
            t.start()
        gate.wait()
        tx0 = app.group_commit.transactions
        c0, t0 = _cpu(), time.perf_counter()
        for t in threads:
            t.join()
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        out = _timed(
            a.n, dt, cpu, threads=a.threads, transactions=app.group_commit.transactions - tx0, queued=_waiting(store)
        )
    elif a.mode == "enqueue-coroutines":
        # an async web server: many request coroutines of one event loop, one enqueue each
        import asyncio

        per = [a.n // a.threads + (1 if i < a.n % a.threads else 0) for i in range(a.threads)]

        async def coroutines() -> None:
            async def run(k: int) -> None:
                for _ in range(k):
                    await app.enqueue_async("noop")

            await asyncio.gather(*(run(k) for k in per))

        asyncio.run(_warm_async(app))
        tx0 = app.group_commit.transactions
        c0, t0 = _cpu(), time.perf_counter()
        asyncio.run(coroutines())
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        out = _timed(
            a.n, dt, cpu, coroutines=a.threads, transactions=app.group_commit.transactions - tx0, queued=_waiting(store)
        )
    elif a.mode == "enqueue-bulk":
        args = [{}] * a.chunk
        c0, t0 = _cpu(), time.perf_counter()
        done = 0
        while done < a.n:
            k = min(a.chunk, a.n - done)
            app.enqueue_many("noop", args[:k])
            done += k
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        out = {
            "jobs": a.n,
            "seconds": dt,
            "per_second": a.n / dt,
            "cpu_seconds": cpu,
            "chunk": a.chunk,
            "queued": store.count_jobs()["waiting"],
        }
    elif a.mode == "prefill":
        for start in range(0, a.n, 5_000):
            app.enqueue_many(a.task, [{}] * min(5_000, a.n - start))
        out = {"queued": store.count_jobs()["waiting"]}
    elif a.mode == "drain":
        if "fewidx" in a.patch.split("+"):
            for index in ("jobs_task", "jobs_tenant", "jobs_finished"):  # before the clock
                store._conn().execute(f"DROP INDEX IF EXISTS {index}")
        c0, t0 = _cpu(), time.perf_counter()
        worker = app.worker(concurrency=a.concurrency, burst=True)
        worker.run()
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        counts = store.count_jobs()
        out = {
            "jobs": worker.processed,
            "seconds": dt,
            "per_second": worker.processed / dt,
            "cpu_seconds": cpu,
            "complete": counts["complete"],
            "left": sum(v for k, v in counts.items() if k != "complete"),
        }
    else:
        out = _profile_drain(app, a)
    out["sqlite_version"] = sqlite3.sqlite_version
    print(json.dumps(out), flush=True)


WHATIFS = {
    "base": "floodway as it is",
    "writelock": "SQLiteStore._write takes a process-wide threading.Lock before BEGIN IMMEDIATE",
    "onestorethread": "the worker's store thread pool has 1 thread instead of 2",
    "noevents": "no job_events rows are written (the timeline is skipped)",
    "fewidx": "indexes jobs_task, jobs_tenant, jobs_finished dropped",
    "prefetch": "the claim loop keeps up to `concurrency` claimed jobs ready in memory",
}


def _apply_whatifs(names: list[str]) -> None:
    """Monkeypatch floodway's internals in this child process only, to estimate what a change
    would bring before anyone writes it. Prototypes against the worker/store of the revision
    under test: they may need updating when src/ changes; nothing here is floodway's API."""
    import asyncio
    import collections
    import concurrent.futures
    import contextlib

    import floodway.store.sqlite as fs
    import floodway.worker as fw

    unknown = set(names) - set(WHATIFS)
    if unknown:
        raise SystemExit(f"unknown what-if(s): {sorted(unknown)}")
    if "writelock" in names:
        original_write = fs.SQLiteStore._write
        locks: dict[int, threading.Lock] = {}

        @contextlib.contextmanager
        def _write(self):
            lock = locks.setdefault(id(self), threading.Lock())
            with lock:
                with original_write(self) as conn:
                    yield conn

        fs.SQLiteStore._write = _write
    if "onestorethread" in names:

        class OneStoreThread(concurrent.futures.ThreadPoolExecutor):
            def __init__(self, max_workers=None, thread_name_prefix="", **kwargs):
                if thread_name_prefix == "floodway-store":
                    max_workers = 1
                super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix, **kwargs)

        fw.ThreadPoolExecutor = OneStoreThread
    if "noevents" in names:
        fs.SQLiteStore._insert_events = staticmethod(lambda conn, rows: None)
    if "prefetch" in names:

        async def _claim_loop(self) -> None:
            ready: collections.deque = collections.deque()
            while not self._stopping:
                free = self.concurrency - len(self._running)
                while free > 0 and ready:
                    self._start(ready.popleft())
                    free -= 1
                want = 2 * self.concurrency - len(self._running) - len(ready)
                timeout = self.poll_interval
                if want >= max(1, self.concurrency // 2) or (want > 0 and not ready):
                    due = await self._store(self.app.store.next_due, self.queues)
                    if due is not None and due <= time.time():
                        jobs = await self._store(
                            self.app.store.claim, self.id, queues=self.queues, limit=want, lease=self.lease
                        )
                        ready.extend(jobs)
                        if jobs:
                            continue
                    elif self.burst and not self._running and not ready:
                        return
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

        fw.Worker._claim_loop = _claim_loop


def _profile_drain(app, a) -> dict:
    """Drain under cProfile in every thread (event loop + store threads) and time store calls."""
    import concurrent.futures

    import floodway.worker as fw

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_profiler():
        prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
        prof.enable()  # per-thread in CPython 3.11

    class ProfiledPool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("initializer", start_profiler)
            super().__init__(*args, **kwargs)

    fw.ThreadPoolExecutor = ProfiledPool  # only in this child process

    # wall time spent inside each store method, measured in the store thread
    timings: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {"claim": [], "finish": []}
    store = app.store
    for name in ("claim", "finish", "next_due", "heartbeat", "register_worker", "set_queue"):
        original = getattr(store, name)

        def timed(*args, _orig=original, _name=name, **kwargs):
            t = time.perf_counter()
            result = _orig(*args, **kwargs)
            timings.setdefault(_name, []).append(time.perf_counter() - t)
            if _name == "claim":
                sizes["claim"].append(len(result))
            elif _name == "finish":
                sizes["finish"].append(len(args[1]))
            return result

        setattr(store, name, timed)

    # wall time per SQL statement (BEGIN IMMEDIATE = waiting for the write lock, COMMIT = fsync)
    sql_times: dict[str, list[float]] = {}
    sql_lock = threading.Lock()

    class TimedConnection:
        def __init__(self, conn):
            self._c = conn

        def __getattr__(self, name):
            return getattr(self._c, name)

        def _timed(self, method, sql, *args):
            t = time.perf_counter()
            try:
                return method(sql, *args)
            finally:
                key = " ".join(sql.split())[:90]
                with sql_lock:
                    sql_times.setdefault(key, []).append(time.perf_counter() - t)

        def execute(self, sql, *args):
            return self._timed(self._c.execute, sql, *args)

        def executemany(self, sql, *args):
            return self._timed(self._c.executemany, sql, *args)

    original_conn = type(store)._conn
    wrapped: dict[int, TimedConnection] = {}

    def timed_conn(self=store):
        conn = original_conn(self)
        proxy = wrapped.get(id(conn))
        if proxy is None:
            proxy = wrapped[id(conn)] = TimedConnection(conn)
        return proxy

    store._conn = timed_conn

    main = cProfile.Profile()
    c0, t0 = _cpu(), time.perf_counter()
    worker = app.worker(concurrency=a.concurrency, burst=True)
    main.enable()
    worker.run()
    main.disable()
    dt, cpu = time.perf_counter() - t0, _cpu() - c0

    stats = pstats.Stats(main)
    for prof in profiles:
        prof.disable()
        stats.add(prof)
    if a.out:
        stats.dump_stats(a.out)
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(35)
    store_calls = {
        name: {"calls": len(ts), "total_s": sum(ts), "mean_ms": 1000 * sum(ts) / len(ts)}
        for name, ts in timings.items()
        if ts
    }
    for name, ns in sizes.items():
        if ns:
            store_calls[name]["mean_batch"] = sum(ns) / len(ns)
    statements = sorted(
        (
            {"sql": sql, "calls": len(ts), "total_s": sum(ts), "mean_ms": 1000 * sum(ts) / len(ts)}
            for sql, ts in sql_times.items()
        ),
        key=lambda d: -d["total_s"],
    )
    return {
        "jobs": worker.processed,
        "seconds": dt,
        "per_second": worker.processed / dt,
        "cpu_seconds": cpu,
        "store_calls": store_calls,
        "sql": statements[:20],
        "report": buf.getvalue(),
    }


# ------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------
def ensure_peer_venv(log) -> None:
    if PEER_PY.exists():
        probe = subprocess.run([str(PEER_PY), "-c", "import huey"], capture_output=True)
        if probe.returncode == 0:
            return
    log(f"creating the peers' venv in {PEER_VENV} (python -m venv + pip install huey) ...")
    PEERS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "--quiet", "huey"], check=True)


def run_json(cmd: list[str], timeout: float = 900, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


FW_ENV: dict[str, str] | None = None  # set by --floodway-src / --floodway-rev


def fw_run(*args: str) -> dict:
    return run_json(fw_cmd(*args), env=FW_ENV)


def fw_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


def use_floodway_source(workdir: Path, src: str | None, rev: str | None, log) -> dict:
    """Point floodway's child processes at another copy of ``src/`` (PYTHONPATH wins over the
    editable install's .pth). ``rev`` exports that git revision of this repository read-only
    (``git archive``), so a benchmark is not disturbed by edits in the working tree."""
    global FW_ENV
    repo = HERE.parent
    info: dict[str, str] = {}
    if rev:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dest = workdir / f"floodway-{sha[:12]}"
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", sha, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        src = str(dest / "src")
        info = {"floodway_rev": rev, "floodway_commit": sha}
    if src:
        FW_ENV = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(Path(src).resolve())] + [x for x in [os.environ.get("PYTHONPATH")] if x]),
        )
        info["floodway_src"] = str(Path(src).resolve())
    else:
        proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"], capture_output=True, text=True
        ).stdout.strip()
        info = {
            "floodway_src": "installed (working tree)",
            "floodway_commit": proc.stdout.strip(),
            "src_dirty": bool(dirty),
        }
    probe = subprocess.run(
        [sys.executable, "-c", "import floodway; print(floodway.__file__)"], capture_output=True, text=True, env=FW_ENV
    )
    info["floodway_module"] = probe.stdout.strip()
    log(f"floodway under test: {info}")
    return info


def huey_cmd(*args: str) -> list[str]:
    return [str(PEER_PY), str(HUEY_SCRIPT), *args]


class Bench:
    def __init__(self, workdir: Path, sizes: dict[str, int], log, concurrency: int = CONCURRENCY):
        self.concurrency = concurrency
        self.workdir = workdir
        self.sizes = sizes
        self.log = log
        self.serial = 0

    def db(self, label: str) -> Path:
        self.serial += 1
        return self.workdir / f"{self.serial:03d}-{label}.db"

    @staticmethod
    def url(path: Path, sync: str) -> str:
        base = f"sqlite:///{path}"  # path is absolute: sqlite:////tmp/...
        return base if sync == "full" else f"{base}?synchronous={sync}"

    # one measurement = one fresh database file
    def floodway(self, scenario: str, sync: str, patch: str = "") -> dict:
        path = self.db(f"floodway-{sync}-{scenario}")
        url = self.url(path, sync)
        s = self.sizes
        if scenario == "enqueue_single":
            return fw_run("enqueue-single", "--url", url, "-n", str(s["single"]))
        if scenario == "enqueue_concurrent":
            return fw_run("enqueue-concurrent", "--url", url, "-n", str(s["single"]))
        if scenario == "enqueue_coroutines":
            return fw_run("enqueue-coroutines", "--url", url, "-n", str(s["single"]))
        if scenario == "floor":
            return fw_run("floor", "--url", url, "-n", str(s["single"]))
        if scenario == "schema_floor":
            return fw_run("schema-floor", "--url", url, "-n", str(s["single"]))
        if scenario == "enqueue_bulk":
            return fw_run("enqueue-bulk", "--url", url, "-n", str(s["bulk"]))
        task, n = ("sleepy", s["sleep"]) if scenario == "sleep10ms" else (scenario, s["noop"])
        fw_run("prefill", "--url", url, "-n", str(n), "--task", task)
        result = fw_run(
            "drain",
            "--url",
            url,
            "-n",
            str(n),
            "--task",
            task,
            "--concurrency",
            str(self.concurrency),
            *(["--patch", patch] if patch else []),
        )
        if result["complete"] != n or result["left"]:
            raise RuntimeError(f"floodway {scenario}: {result}")
        return result

    def huey(self, scenario: str) -> dict:
        path = str(self.db(f"huey-{scenario}"))
        s = self.sizes
        if scenario == "enqueue_single":
            return run_json(huey_cmd("enqueue-single", "--db", path, "-n", str(s["single"])))
        if scenario == "enqueue_concurrent":
            return run_json(
                huey_cmd(
                    "enqueue-concurrent", "--db", path, "-n", str(s["single"]), "--threads", str(CONCURRENT_ENQUEUERS)
                )
            )
        if scenario == "enqueue_bulk":
            # TaskWrapper.map == a loop of single enqueues; sized like the single run
            return run_json(huey_cmd("enqueue-map", "--db", path, "-n", str(s["single"])))
        task, n = ("noop", s["noop"]) if scenario == "noop" else ("sleepy", s["sleep"])
        run_json(huey_cmd("prefill", "--db", path, "-n", str(n), "--task", task))
        result = run_json(
            huey_cmd("drain", "--db", path, "-n", str(n), "--task", task, "--workers", str(self.concurrency))
        )
        if result["jobs"] != n or result["left_in_queue"] or result["errors"] or result["timed_out"]:
            raise RuntimeError(f"huey {scenario}: {result}")
        return result


SCENARIOS = [
    ("enqueue_single", "enqueue single/s"),
    ("enqueue_concurrent", "enqueue single/s, 100 threads"),
    ("enqueue_coroutines", "enqueue single/s, 100 coroutines"),
    ("floor", "floor: bare sqlite3, 1 row per commit"),
    ("schema_floor", "floodway's statements, bare sqlite3"),
    ("enqueue_bulk", "enqueue bulk/s"),
    ("noop", "no-op jobs/s (1 proc x {c})"),
    ("sleep10ms", "10 ms jobs/s (1 proc x {c})"),
]
SYSTEMS = ["floodway_full", "floodway_normal", "huey"]
#: huey has no coroutine enqueue, and the floor is bare sqlite3 (in the floodway columns: at
#: each column's ``synchronous``)
FLOODWAY_ONLY = {"enqueue_coroutines", "floor", "schema_floor"}


def machine_info(workdir: Path) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    fs = "unknown"
    try:
        out = subprocess.run(["df", "-T", str(workdir)], capture_output=True, text=True).stdout.splitlines()
        if len(out) > 1:
            fs = out[1].split()[1]
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "db_dir": str(workdir),
        "db_filesystem": fs,
    }


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smaller run (~20-40 s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON results to FILE")
    p.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"slots of the one worker process, both systems (default {CONCURRENCY})",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is reported")
    p.add_argument("--dir", help="where the temp databases go (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp databases")
    p.add_argument("--only", help="comma-separated scenarios: " + ",".join(k for k, _ in SCENARIOS))
    p.add_argument("--no-huey", action="store_true", help="floodway only (no peer venv needed)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the comparison: cProfile floodway's worker on the no-op drain",
    )
    p.add_argument("--profile-out", help="with --profile: write the merged pstats here")
    p.add_argument(
        "--whatif",
        metavar="VARIANTS",
        help="instead of the comparison: floodway's drains with monkeypatched prototypes, "
        "comma-separated, each '+'-combinable: " + ", ".join(WHATIFS),
    )
    p.add_argument(
        "--profile-task",
        choices=["noop", "sleepy"],
        default="noop",
        help="with --profile: the task to drain (default noop)",
    )
    p.add_argument(
        "--floodway-rev",
        metavar="REV",
        help="benchmark this git revision of floodway (exported with git archive) "
        "instead of the installed working tree, e.g. HEAD",
    )
    p.add_argument("--floodway-src", metavar="DIR", help="benchmark the floodway package under DIR (a src/ dir)")
    for key in DEFAULTS:
        p.add_argument(f"--{key}", type=int, help=f"jobs for the {key} scenario")
    args = p.parse_args(argv)

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    sizes = dict(QUICK if args.quick else DEFAULTS)
    for key in DEFAULTS:
        if getattr(args, key):
            sizes[key] = getattr(args, key)

    parent = args.dir or tempfile.gettempdir()
    workdir = Path(tempfile.mkdtemp(prefix="floodway-bench-", dir=parent)).resolve()
    try:
        source = use_floodway_source(workdir, args.floodway_src, args.floodway_rev, log)
        if args.profile:
            return profile(workdir, sizes, args, log, source)
        if args.whatif:
            return whatif(workdir, sizes, args, log, source)
        return compare(workdir, sizes, args, log, source)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def profile(workdir: Path, sizes: dict[str, int], args, log, source: dict) -> int:
    task = args.profile_task
    n = sizes["noop"] if task == "noop" else sizes["sleep"]
    path = workdir / "profile.db"
    url = f"sqlite:///{path}"
    fw_run("prefill", "--url", url, "-n", str(n), "--task", task)
    cmd = fw_cmd("profile", "--url", url, "-n", str(n), "--task", task)
    if args.profile_out:
        cmd += ["--out", str(Path(args.profile_out).resolve())]
    result = run_json(cmd, env=FW_ENV)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    log(
        f"floodway {task} drain under cProfile: {result['jobs']} jobs in {result['seconds']:.2f}s "
        f"= {result['per_second']:,.0f}/s (profiler overhead included), "
        f"CPU {result['cpu_seconds']:.2f}s"
    )
    log("store calls (wall time inside the store thread):")
    for name, info in sorted(result["store_calls"].items(), key=lambda kv: -kv[1]["total_s"]):
        extra = f", mean batch {info['mean_batch']:.1f}" if "mean_batch" in info else ""
        log(f"  {name:16} {info['calls']:6d} calls  {info['total_s']:7.2f}s  {info['mean_ms']:7.2f} ms/call{extra}")
    log("SQL statements by wall time (BEGIN IMMEDIATE includes waiting for the write lock, COMMIT the WAL fsync):")
    for st in result["sql"]:
        log(f"  {st['total_s']:7.2f}s {st['calls']:7d} x {st['mean_ms']:6.3f} ms  {st['sql']}")
    log(result["report"])
    return 0


def whatif(workdir: Path, sizes: dict[str, int], args, log, source: dict) -> int:
    variants = [v.strip() for v in args.whatif.split(",") if v.strip()]
    if "base" not in variants:
        variants.insert(0, "base")
    scenarios = [s.strip() for s in (args.only or "noop,sleep10ms").split(",")]
    bench = Bench(workdir, sizes, log, args.concurrency)
    runs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeat):
        for scenario in scenarios:
            for variant in variants[rep % len(variants) :] + variants[: rep % len(variants)]:
                patch = "" if variant == "base" else variant
                r = bench.floodway(scenario, "full", patch)
                runs.setdefault((scenario, variant), []).append(r["per_second"])
                log(f"  [{rep + 1}/{args.repeat}] {scenario:10} {variant:28} {r['per_second']:8,.0f}/s")
    results = []
    for scenario in scenarios:
        base = statistics.median(runs[(scenario, "base")])
        for variant in variants:
            xs = runs[(scenario, variant)]
            results.append(
                {
                    "scenario": scenario,
                    "variant": variant,
                    "median": statistics.median(xs),
                    "best": max(xs),
                    "runs": [round(x) for x in xs],
                    "vs_base": statistics.median(xs) / base,
                }
            )
    if args.json:
        print(
            json.dumps(
                {
                    "source": source,
                    "sizes": sizes,
                    "repeat": args.repeat,
                    "results": results,
                    "whatifs": {v: WHATIFS.get(v, "combination") for v in variants},
                },
                indent=2,
            )
        )
        return 0
    print()
    print(f"floodway what-ifs (synchronous=full, 1 proc x {args.concurrency}, median of {args.repeat}):")
    print("| scenario | variant | jobs/s (median) | best | vs base |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['scenario']} | {r['variant']} | {r['median']:,.0f} | {r['best']:,.0f} | {r['vs_base']:.2f}x |")
    return 0


def compare(workdir: Path, sizes: dict[str, int], args, log, source: dict) -> int:
    info = machine_info(workdir)
    info.update(source)
    wanted = [k for k, _ in SCENARIOS]
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(wanted) - {k for k, _ in SCENARIOS}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {sorted(unknown)}")
    huey_pragmas = None
    if not args.no_huey:
        ensure_peer_venv(log)
        huey_pragmas = run_json(huey_cmd("pragmas", "--db", str(workdir / "pragmas.db")))
        info["huey"] = huey_pragmas["huey_version"]
    log(
        f"floodway vs huey on SQLite {info['sqlite']}, Python {info['python']}, {info['nproc']} CPU(s) "
        f"({info['cpu']}), databases in {workdir} ({info['db_filesystem']})"
    )
    log(f"sizes: {sizes}, repeat {args.repeat}, load average {info['loadavg_start']}")
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        log("warning: the machine is busy (load average above half the CPUs); expect noisy figures")
    if huey_pragmas:
        log(
            f"SqliteHuey {huey_pragmas['huey_version']} connection: journal_mode={huey_pragmas['journal_mode']}, "
            f"synchronous={huey_pragmas['synchronous']} (2=FULL), writes use "
            f"'{huey_pragmas['begin_sql'].upper()}'"
        )

    bench = Bench(workdir, sizes, log, args.concurrency)
    raw: dict[str, dict[str, list[dict]]] = {}
    started = time.perf_counter()
    for rep in range(args.repeat):
        for scenario in wanted:
            cells = raw.setdefault(scenario, {})
            # rotate the order on each repeat so no system always runs first (warm page cache)
            for system in SYSTEMS[rep % 3 :] + SYSTEMS[: rep % 3]:
                if system == "huey" and (args.no_huey or scenario in FLOODWAY_ONLY):
                    continue
                t = time.perf_counter()
                if system == "huey":
                    result = bench.huey(scenario)
                else:
                    result = bench.floodway(scenario, system.split("_", 1)[1])
                cells.setdefault(system, []).append(result)
                log(
                    f"  [{rep + 1}/{args.repeat}] {scenario:15} {system:16} "
                    f"{result['per_second']:9,.0f}/s  ({result['jobs']} jobs in {result['seconds']:.2f}s, "
                    f"cpu {result['cpu_seconds']:.2f}s; cell took {time.perf_counter() - t:.1f}s)"
                )

    table = []
    for scenario, label in SCENARIOS:
        if scenario not in raw:
            continue
        row = {"scenario": scenario, "label": label.format(c=args.concurrency)}
        for system in SYSTEMS:
            runs = raw[scenario].get(system)
            row[system] = statistics.median(r["per_second"] for r in runs) if runs else None
            row[system + "_best"] = max(r["per_second"] for r in runs) if runs else None
            row[system + "_runs"] = [round(r["per_second"], 1) for r in runs] if runs else []
            row[system + "_cpu_share"] = (
                statistics.median(r["cpu_seconds"] / r["seconds"] for r in runs) if runs else None
            )
        row["ratio_full"] = row["floodway_full"] / row["huey"] if row.get("huey") else None
        row["ratio_normal"] = row["floodway_normal"] / row["huey"] if row.get("huey") else None
        row["ratio_full_best"] = row["floodway_full_best"] / row["huey_best"] if row.get("huey_best") else None
        row["ratio_normal_best"] = row["floodway_normal_best"] / row["huey_best"] if row.get("huey_best") else None
        table.append(row)

    goal = {}
    for scenario in ("noop", "sleep10ms"):
        row = next((r for r in table if r["scenario"] == scenario), None)
        if row and row["ratio_full"] is not None:
            goal[scenario] = {
                "ratio_full": row["ratio_full"],
                "ratio_normal": row["ratio_normal"],
                "met_full": row["ratio_full"] >= GOAL,
                "met_normal": row["ratio_normal"] >= GOAL,
            }
    wal = {}
    if "enqueue_single" in wanted:
        # what each commit of a single enqueue writes (and fsyncs), measured apart, untimed
        wal["floodway"] = run_json(
            fw_cmd("wal-pages", "--url", f"sqlite:///{bench.db('floodway-wal')}", "-n", "1000"), env=FW_ENV
        )
        if not args.no_huey:
            wal["huey"] = run_json(huey_cmd("wal-pages", "--db", str(bench.db("huey-wal")), "-n", "1000"))
    total = time.perf_counter() - started
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    document = {
        "machine": info,
        "sizes": sizes,
        "repeat": args.repeat,
        "concurrency": args.concurrency,
        "huey_pragmas": huey_pragmas,
        "results": table,
        "goal": goal,
        "wal_pages_per_enqueue": {k: v["pages_per_enqueue"] for k, v in wal.items()},
        "seconds": total,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
        return 0

    stats = [("", "median of %d run(s)" % args.repeat)]
    if args.repeat > 1:
        stats.append(
            ("_best", "best of %d runs (interference from other processes only slows a run down)" % args.repeat)
        )
    for suffix, title in stats:
        head = ["scenario", "floodway/s", "floodway/s sync=normal", "huey/s", "floodway÷huey", "normal÷huey"]
        rows = [
            [
                r["label"],
                fmt(r["floodway_full" + suffix]),
                fmt(r["floodway_normal" + suffix]),
                fmt(r.get("huey" + suffix)),
                ratio(r["floodway_full" + suffix], r.get("huey" + suffix)),
                ratio(r["floodway_normal" + suffix], r.get("huey" + suffix)),
            ]
            for r in table
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        print()
        print(f"{title}:")
        print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print(
                "| " + r[0].ljust(widths[0]) + " | " + " | ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:])) + " |"
            )
    print()
    print(
        "floodway/s: default synchronous=full (every commit fsynced). huey: SqliteHuey defaults "
        "(WAL, synchronous=FULL). huey's bulk figure is TaskWrapper.map (one commit per job, "
        f"{sizes['single']} jobs); floodway's is enqueue_many in chunks of {BULK_CHUNK}."
    )
    for scenario, g in goal.items():
        print(
            f"goal floodway >= {GOAL:.0f}x huey on {scenario}: "
            f"{'MET' if g['met_full'] else 'NOT met'} at synchronous=full ({g['ratio_full']:.2f}x), "
            f"{'MET' if g['met_normal'] else 'NOT met'} at synchronous=normal ({g['ratio_normal']:.2f}x)"
        )
    for system, w in wal.items():
        print(
            f"WAL written per single enqueue, {system}: {w['pages_per_enqueue']:.2f} pages "
            f"({w['wal_bytes_per_enqueue'] / 1024:.1f} KiB)"
        )
    if any(s == "sleep10ms" for s in wanted):
        print(f"note: {args.concurrency} slots x 10 ms caps either system at {args.concurrency / 0.01:,.0f} jobs/s.")
    print(f"total {total:.0f}s; load average at start {info['loadavg_start']}, at end {info['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
