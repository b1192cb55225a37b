"""huey's side of benchmarks/throughput.py; runs under the peer venv's python only.

Invoked as a subprocess by ``benchmarks/throughput.py`` (never imported by floodway), so
huey never enters floodway's virtualenv. Each mode prints one JSON object on stdout.

    python huey_bench.py enqueue-single --db PATH -n N
    python huey_bench.py enqueue-map    --db PATH -n N
    python huey_bench.py enqueue-concurrent --db PATH -n N --threads 100
    python huey_bench.py prefill        --db PATH -n N --task noop|sleepy
    python huey_bench.py drain          --db PATH -n N --task noop|sleepy --workers 20
    python huey_bench.py pragmas        --db PATH
    python huey_bench.py wal-pages      --db PATH -n N

Timings are taken inside the process (``time.perf_counter``), so interpreter start-up and
imports are excluded, exactly as on floodway's side.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import threading
import time

import huey as huey_pkg
from huey import SqliteHuey, signals


def make_huey(db: str) -> SqliteHuey:
    # SqliteHuey's defaults: journal_mode=wal, fsync=None (synchronous left at SQLite's
    # compiled-in default), cache_mb=8, timeout=5; results=True, store_none=False.
    return SqliteHuey("bench", filename=db)


def register(h: SqliteHuey):
    @h.task(name="noop")
    def noop():
        pass

    @h.task(name="sleepy")
    def sleepy():
        time.sleep(0.01)

    return {"noop": noop, "sleepy": sleepy}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def emit(**data) -> None:
    data["huey_version"] = huey_pkg.__version__
    print(json.dumps(data), flush=True)


def enqueue(args, use_map: bool) -> None:
    h = make_huey(args.db)
    tasks = register(h)
    noop = tasks["noop"]
    h.storage.conn  # open the connection before the clock starts (floodway opens its store too)
    c0, t0 = cpu_seconds(), time.perf_counter()
    if use_map:
        # huey's only multi-job call: TaskWrapper.map enqueues each item with its own commit
        noop.map([() for _ in range(args.n)])
    else:
        for _ in range(args.n):
            noop()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    count = h.pending_count()
    emit(jobs=args.n, seconds=elapsed, per_second=args.n / elapsed, cpu_seconds=cpu, queued=count)


def enqueue_concurrent(args) -> None:
    """N single enqueues from ``--threads`` threads at once (a web server's request threads);
    SqliteHuey keeps a connection per thread."""
    import threading

    h = make_huey(args.db)
    noop = register(h)["noop"]
    per = [args.n // args.threads + (1 if i < args.n % args.threads else 0) for i in range(args.threads)]
    gate = threading.Barrier(args.threads + 1)

    def run(k: int) -> None:
        h.storage.conn  # this thread's connection, opened before the clock
        gate.wait()
        for _ in range(k):
            noop()

    threads = [threading.Thread(target=run, args=(k,)) for k in per]
    for t in threads:
        t.start()
    gate.wait()
    c0, t0 = cpu_seconds(), time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    emit(
        jobs=args.n,
        seconds=elapsed,
        per_second=args.n / elapsed,
        cpu_seconds=cpu,
        queued=h.pending_count(),
        threads=args.threads,
    )


def prefill(args) -> None:
    """Fill the queue fast (one transaction); this part is not timed."""
    h = make_huey(args.db)
    tasks = register(h)
    task = tasks[args.task]
    rows = [(h.name, h.serialize_task(task.s()), 0) for _ in range(args.n)]
    with h.storage.db(commit=True) as curs:
        curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)
    emit(queued=h.pending_count())


def drain(args) -> None:
    h = make_huey(args.db)
    register(h)
    total = args.n
    counter = itertools.count(1)
    done = threading.Event()
    finished_at = [0.0]
    errors = itertools.count()

    @h.signal(signals.SIGNAL_COMPLETE)
    def _completed(signal, task, *a, **kw):
        if next(counter) == total:
            finished_at[0] = time.perf_counter()
            done.set()

    @h.signal(signals.SIGNAL_ERROR)
    def _failed(signal, task, *a, **kw):
        next(errors)

    c0, t0 = cpu_seconds(), time.perf_counter()
    # same settings as `huey_consumer bench.huey -w 20 -k thread` (its defaults otherwise)
    consumer = h.create_consumer(workers=args.workers, worker_type="thread")
    consumer.start()
    ok = done.wait(args.timeout)
    t1 = finished_at[0] if ok else time.perf_counter()
    cpu = cpu_seconds() - c0
    consumer.stop(graceful=True)
    completed = next(counter) - 1
    emit(
        jobs=completed,
        seconds=t1 - t0,
        per_second=completed / (t1 - t0),
        cpu_seconds=cpu,
        left_in_queue=h.pending_count(),
        errors=next(errors),
        timed_out=not ok,
    )
    sys.stdout.flush()
    os._exit(0)  # the consumer's threads are stopped; do not wait on anything else


def wal_pages(args) -> None:
    """WAL pages per single enqueue, measured as benchmarks/throughput.py's ``_wal_pages``
    measures floodway's (not timed)."""
    h = make_huey(args.db)
    noop = register(h)["noop"]
    for _ in range(100):
        noop()
    writer = h.storage.conn  # this thread's connection: the one the enqueues commit on
    page = writer.execute("pragma page_size").fetchone()[0]
    writer.execute("pragma wal_autocheckpoint=0")
    writer.execute("pragma wal_checkpoint(TRUNCATE)")
    for _ in range(args.n):
        noop()
    frames = (os.path.getsize(args.db + "-wal") - 32) / (page + 24)
    emit(jobs=args.n, pages_per_enqueue=frames / args.n, wal_bytes_per_enqueue=frames * (page + 24) / args.n)


def pragmas(args) -> None:
    h = make_huey(args.db)
    conn = h.storage.conn
    emit(
        journal_mode=conn.execute("pragma journal_mode").fetchone()[0],
        synchronous=conn.execute("pragma synchronous").fetchone()[0],
        cache_size=conn.execute("pragma cache_size").fetchone()[0],
        begin_sql=type(h.storage).begin_sql,
        storage_class=f"{type(h.storage).__module__}.{type(h.storage).__qualname__}",
        sqlite_version=__import__("sqlite3").sqlite_version,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "mode",
        choices=["enqueue-single", "enqueue-map", "enqueue-concurrent", "prefill", "drain", "pragmas", "wal-pages"],
    )
    p.add_argument("--threads", type=int, default=100)
    p.add_argument("--db", required=True)
    p.add_argument("-n", type=int, default=0)
    p.add_argument("--task", choices=["noop", "sleepy"], default="noop")
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    if args.mode == "enqueue-single":
        enqueue(args, use_map=False)
    elif args.mode == "enqueue-map":
        enqueue(args, use_map=True)
    elif args.mode == "enqueue-concurrent":
        enqueue_concurrent(args)
    elif args.mode == "prefill":
        prefill(args)
    elif args.mode == "drain":
        drain(args)
    elif args.mode == "wal-pages":
        wal_pages(args)
    else:
        pragmas(args)


if __name__ == "__main__":
    main()
