"""PostgreSQL at scale: real worker processes sharing one database.

- 4 worker processes drain 20,000 no-op jobs, each run exactly once;
- limits hold across processes: a rate limit (admissions per second <= rate + burst, from the
  admission instants the store recorded) and a concurrency cap (max in flight <= cap);
- a worker SIGKILLed mid-job loses the job to a rescue by another worker;
- the server restarted mid-drain: workers reconnect, nothing is lost, nothing stays running;
- pool exhaustion waits, or fails with a clear error after pool_timeout — never a crash;
plus the PostgreSQL-only parts of the store: migrations under a lock, a schema newer than the
code, URL options, NOTIFY wake-ups and the server's clock.

Nothing sleeps and hopes: every wait polls a condition with a bounded timeout. These tests need
FLOODWAY_TEST_POSTGRES_URL (``make test`` provides it) and fail without it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floodway import App
from floodway.errors import ConfigError, SchemaTooNewError, StoreError
from floodway.jobs import Status
from floodway.store import open_store
from floodway.store.sqlite import load_migrations

from .. import pg_helpers
from ..proc_helpers import Workers, load_app_module, read_lines, wait_until

APP_SOURCE = """
import asyncio
import fcntl
import os
import time

import floodway

HERE = {here!r}
app = floodway.App({url!r})
app.limit("api", rate="{rate}/s", burst={burst})
app.limit("slots", concurrency={slots})


def record(name, line):
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def gauge(name, delta):
    fd = os.open(os.path.join(HERE, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 100, 0).decode().split()
        current, highest = (int(raw[0]), int(raw[1])) if raw else (0, 0)
        current += delta
        os.pwrite(fd, f"{{current}} {{max(highest, current)}}".ljust(40).encode(), 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@app.task
async def noop(n: int):
    record("runs", f"{{n}} {{os.getpid()}}")


@app.task
async def nap(n: int):
    await asyncio.sleep(0.002)
    record("runs", f"{{n}} {{os.getpid()}}")


@app.task(limits=["api"])
async def limited(n: int):
    record("limited", f"{{n}} {{os.getpid()}}")


@app.task(limits=["slots"])
async def slotted(n: int):
    gauge("slots", +1)
    await asyncio.sleep(0.03)
    gauge("slots", -1)
    record("slotted", str(n))


@app.task(retry=3)
async def stubborn(n: int):
    record("stubborn", f"{{n}} {{os.getpid()}}")
    if not os.path.exists(os.path.join(HERE, "release")):
        while not os.path.exists(os.path.join(HERE, "release")):  # held until the test lets go
            await asyncio.sleep(0.02)
"""


def make_app(tmp_path: Path, url: str, *, rate: int = 40, burst: int = 4, slots: int = 3):
    name = f"fw_pg_app_{os.getpid()}_{len(list(tmp_path.iterdir()))}"
    (tmp_path / f"{name}.py").write_text(
        APP_SOURCE.format(here=str(tmp_path), url=url, rate=rate, burst=burst, slots=slots)
    )
    return name, load_app_module(tmp_path, name)


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.close()


def counts(app: App) -> dict[str, int]:
    return app.store.count_jobs()


def assert_exactly_once(tmp_path: Path, name: str, n: int) -> Counter:
    runs = Counter(line.split()[0] for line in read_lines(tmp_path, name))
    missing = [str(i) for i in range(n) if str(i) not in runs]
    twice = {k: v for k, v in runs.items() if v > 1}
    assert not missing, f"{len(missing)} job(s) never ran, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} job(s) ran more than once, e.g. {list(twice.items())[:5]}"
    return runs


# -- many processes --------------------------------------------------------------------------


def test_four_processes_drain_20000_jobs_each_exactly_once(tmp_path, postgres_url, workers):
    name, mod = make_app(tmp_path, postgres_url)
    n = 20_000
    for start in range(0, n, 5000):
        mod.app.enqueue_many(mod.noop, [{"n": i} for i in range(start, start + 5000)])
    assert counts(mod.app)["waiting"] == n
    started = time.monotonic()
    for i in range(4):
        workers.start(name, "--concurrency", "50", label=f"w{i}")
    wait_until(
        lambda: counts(mod.app)["complete"] == n,
        lambda: f"drain: {counts(mod.app)}",
        timeout=150,
        interval=0.25,
        workers=workers,
    )
    elapsed = time.monotonic() - started
    runs = assert_exactly_once(tmp_path, "runs", n)
    per_pid = Counter(line.split()[1] for line in read_lines(tmp_path, "runs"))
    assert len(per_pid) == 4, f"every worker process took part: {dict(per_pid)}"
    assert sum(runs.values()) == n
    final = counts(mod.app)
    assert final["complete"] == n and final["running"] == 0 and final["waiting"] == 0
    print(f"\n4 processes drained {n} jobs in {elapsed:.1f}s ({n / elapsed:.0f} jobs/s); per process {dict(per_pid)}")


@pytest.mark.parametrize(
    "rate, burst, slots, n_limited, n_slotted",
    [
        pytest.param(40, 4, 3, 200, 60, id="tight"),
        # roomy enough that jobs holding the limits are claimed ahead too (half the burst and
        # half the cap free): four processes still never admit past the rate, nor run past the cap
        pytest.param(400, 40, 16, 800, 300, id="roomy-claimed-ahead"),
    ],
)
def test_limits_hold_across_processes(tmp_path, postgres_url, workers, rate, burst, slots, n_limited, n_slotted):
    name, mod = make_app(tmp_path, postgres_url, rate=rate, burst=burst, slots=slots)
    mod.app.enqueue_many(mod.limited, [{"n": i} for i in range(n_limited)])
    mod.app.enqueue_many(mod.slotted, [{"n": i} for i in range(n_slotted)])
    for i in range(4):
        workers.start(name, "--concurrency", "20", label=f"w{i}")
    total = n_limited + n_slotted
    wait_until(
        lambda: counts(mod.app)["complete"] == total,
        lambda: f"limited drain: {counts(mod.app)}",
        timeout=60,
        interval=0.2,
        workers=workers,
    )
    assert_exactly_once(tmp_path, "limited", n_limited)
    assert_exactly_once(tmp_path, "slotted", n_slotted)
    # the rate: the store's admission instants (started_at is the `now` GCRA admitted at)
    admitted = sorted(j.started_at for j in mod.app.store.list_jobs(task="limited", limit=n_limited))
    assert len(admitted) == n_limited
    worst, j = 0, 0
    for i, start in enumerate(admitted):
        while j < len(admitted) and admitted[j] < start + 1.0:
            j += 1
        worst = max(worst, j - i)
    assert worst <= rate + burst, f"{worst} admissions in one second (limit {rate}/s, burst {burst})"
    if n_limited / rate > 2:  # long enough a drain to be paced, and to be shared
        span = admitted[-1] - admitted[0]
        assert span >= (n_limited - burst) / rate - 0.1, f"{n_limited} admissions in {span:.2f}s: faster than the rate"
        pids = Counter(line.split()[1] for line in read_lines(tmp_path, "limited"))
        assert len(pids) >= 2, f"one limit shared by several processes: {dict(pids)}"
    # the concurrency cap: the most slotted jobs that ever ran at once, over every process
    current, highest = (int(x) for x in (tmp_path / "slots").read_text().split())
    assert current == 0 and 1 <= highest <= slots, f"{highest} ran at once (cap {slots})"
    info = {i.spec.name: i for i in mod.app.store.list_limits()}
    assert [k.running for k in info["slots"].keys] == [0]
    assert info["api"].keys[0].admitted == n_limited


def test_a_worker_killed_mid_job_loses_it_to_a_rescue(tmp_path, postgres_url, workers):
    name, mod = make_app(tmp_path, postgres_url)
    handle = mod.app.enqueue(mod.stubborn, {"n": 1})
    victim = workers.start(name, "--lease", "1.5s", label="victim")
    wait_until(lambda: read_lines(tmp_path, "stubborn"), "the first run to start", workers=workers)
    assert handle.status() is Status.RUNNING
    victim.signal(signal.SIGKILL)
    victim.wait()
    (tmp_path / "release").touch()
    workers.start(name, "--lease", "1.5s", label="rescuer")
    wait_until(lambda: handle.status() is Status.COMPLETE, lambda: f"rescue: {handle.job()}", workers=workers)
    job = handle.job()
    assert job.attempt == 1  # its worker was seen dead: no attempt spent
    assert any(e.reason and "rescued" in e.reason for e in handle.events())
    assert len(read_lines(tmp_path, "stubborn")) == 2


@pytest.mark.serial
def test_server_restart_mid_drain_loses_nothing(tmp_path, postgres_url, workers):
    name, mod = make_app(tmp_path, postgres_url)
    n = 4000
    mod.app.enqueue_many(mod.nap, [{"n": i} for i in range(n)])
    for i in range(4):
        workers.start(name, "--concurrency", "20", "--lease", "5s", label=f"w{i}")
    # every worker past its start-up (a process still opening its store when the server goes
    # down exits with a clear error: that is start-up, not what this test is about)
    wait_until(
        lambda: len(mod.app.store.list_workers()) == 4,
        lambda: f"the four workers to register: {mod.app.store.list_workers()}",
        timeout=60,
        workers=workers,
    )
    wait_until(
        lambda: counts(mod.app)["complete"] >= 600,
        lambda: f"the drain to get going: {counts(mod.app)}",
        timeout=60,
        workers=workers,
    )
    mod.app.store.close()  # the test's own pool would only see dead connections
    pg_helpers.restart_server()
    pg_helpers.wait_for_server(postgres_url)
    mod.app.close()
    app = App(postgres_url)
    try:
        wait_until(
            lambda: app.store.count_jobs()["complete"] == n,
            lambda: f"the drain after the restart: {app.store.count_jobs()}",
            timeout=90,
            interval=0.25,
            workers=workers,
        )
        final = app.store.count_jobs()
        assert final["running"] == 0 and final["waiting"] == 0 and final["failed"] == 0, final
        runs = Counter(line.split()[0] for line in read_lines(tmp_path, "runs"))
        assert all(str(i) in runs for i in range(n)), "every job ran"
        for w in workers.procs:
            assert w.alive(), f"{w.label} survived the restart\n{w.log_tail()}"
        logs = "".join(w.log() for w in workers.procs)
        assert "Traceback" not in logs or "could not" in logs  # reconnects are warnings, not crashes
        print(f"\nrestart: {sum(v > 1 for v in runs.values())} of {n} jobs ran twice (at least once is the guarantee)")
    finally:
        app.close()


# -- the pool ---------------------------------------------------------------------------------


def test_pool_exhaustion_waits_then_fails_clearly(postgres_url):
    store = open_store(postgres_url + "?pool_max=1&pool_timeout=0.5")
    try:
        held = threading.Event()
        release = threading.Event()

        def hog(cur):
            held.set()
            release.wait(10)

        hogger = threading.Thread(target=store._run, args=(hog,))
        hogger.start()
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"no connection free within 0.5s \(pool_max=1\)"):
            store.count_jobs()
        assert time.monotonic() - started < 5
        release.set()
        hogger.join()
        assert store.count_jobs()["waiting"] == 0  # usable again
    finally:
        store.close()


def test_a_small_pool_makes_callers_wait_not_crash(postgres_url):
    app = App(postgres_url + "?pool_max=2&pool_timeout=30")
    try:

        @app.task
        async def job(n: int):
            return n

        errors: list[BaseException] = []

        def enqueue_some(k):
            try:
                for i in range(15):
                    app.enqueue(job, {"n": k * 100 + i})
            except BaseException as exc:  # pragma: no cover - the failure we test against
                errors.append(exc)

        threads = [threading.Thread(target=enqueue_some, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert app.store.count_jobs()["waiting"] == 120
        app.worker(concurrency=40, burst=True).run()  # 40 jobs at once over 2 connections
        assert app.store.count_jobs()["complete"] == 120
    finally:
        app.close()


# -- PostgreSQL-only parts of the store -------------------------------------------------------


def test_concurrent_first_use_migrates_once(postgres_url):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(open_store(postgres_url))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        import psycopg

        with psycopg.connect(postgres_url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM floodway_schema ORDER BY version")]
        assert versions == sorted(set(versions)) and versions[-1] == stores[0].schema_version()
        assert all(s.migrate() == [] for s in stores)
    finally:
        for s in stores:
            s.close()


def test_migrate_false_and_a_schema_newer_than_the_code(postgres_url):
    fresh = open_store(postgres_url, migrate=False)
    try:
        assert fresh.schema_version() == 0
        latest = len(load_migrations("postgres"))
        assert fresh.migrate() == list(range(1, latest + 1))
        assert fresh.schema_version() == latest
    finally:
        fresh.close()
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO floodway_schema VALUES (999, 'future', 0)")
    with pytest.raises(SchemaTooNewError, match="999"):
        App(postgres_url).store
    with pytest.raises(SchemaTooNewError, match="999"):
        open_store(postgres_url, migrate=False)


@pytest.mark.parametrize(
    "suffix, error, message",
    [
        ("?pool_max=zero", ConfigError, "pool_max"),
        ("?pool_max=0", ConfigError, "pool_max"),
        ("?pool_timeout=-1", ConfigError, "pool_timeout"),
        ("?pool_min=5&pool_max=2", ConfigError, "pool_max must be >= pool_min"),
    ],
)
def test_bad_postgres_url_options(postgres_url, suffix, error, message):
    with pytest.raises(error, match=message):
        open_store(postgres_url + suffix)


def test_unreachable_or_missing_database_is_a_clear_store_error(postgres_url):
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    missing = pg_helpers.with_database(postgres_url, "fw_no_such_database")
    with pytest.raises(StoreError, match="fw_no_such_database"):
        App(missing).store
    with pytest.raises(ConfigError):
        open_store("postgresql://")


def test_enqueue_notifies_an_idle_worker(postgres_url):
    listener = open_store(postgres_url)
    producer = App(postgres_url)
    try:

        @producer.task(queue="mail")
        async def send(n: int): ...

        assert listener.wait_for_jobs(0.05) is False
        got: list[float] = []
        ready = threading.Event()

        def wait():
            ready.set()
            if listener.wait_for_jobs(10, queues=["mail"]):
                got.append(time.monotonic())

        # the listener connects on its first wait: prime it, then measure a real wake-up
        listener.wait_for_jobs(0.01)
        thread = threading.Thread(target=wait)
        thread.start()
        ready.wait()
        time.sleep(0.05)  # let the thread block in LISTEN (the result does not depend on it)
        sent = time.monotonic()
        producer.enqueue(send, {"n": 1})
        thread.join(15)
        assert got and got[0] - sent < 2.0, "the enqueue woke the waiting store"
        # another queue's work does not wake a worker that does not take it
        assert listener.wait_for_jobs(0.3, queues=["other"]) is False
    finally:
        producer.close()
        listener.close()


def test_idle_worker_wakes_on_notify_not_on_the_poll(postgres_url):
    app = App(postgres_url)
    try:
        done: list[float] = []

        @app.task
        async def ping():
            done.append(time.monotonic())

        worker = app.worker(concurrency=2, poll_interval="30s")
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_until(lambda: app.store.list_workers(), "the worker to register")
            time.sleep(0.3)  # the worker is idle on its (30 s) poll now
            sent = time.monotonic()
            app.enqueue(ping)
            wait_until(lambda: done, "the notified worker to run the job", timeout=10)
            assert done[0] - sent < 2.5, f"woke after {done[0] - sent:.2f}s"
        finally:
            worker.stop()
            thread.join(30)
    finally:
        app.close()


def test_large_bulk_enqueue_is_one_statement_and_idempotent(postgres_url):
    app = App(postgres_url)
    try:

        @app.task
        async def item(n: int): ...

        handles = app.enqueue_many(item, [{"n": i} for i in range(10_000)], id="bulk")
        assert all(h.created for h in handles)
        again = app.enqueue_many(item, [{"n": i} for i in range(10_005)], id="bulk")
        assert sum(h.created for h in again) == 5
        assert app.store.count_jobs()["waiting"] == 10_005
        jobs = app.store.claim("w", queues=None, limit=3, lease=30)
        assert [j.id for j in jobs] == ["bulk-0", "bulk-1", "bulk-2"]
    finally:
        app.close()


def test_store_uses_the_server_clock(postgres_url):
    store = open_store(postgres_url)
    try:
        store._offset = 3600.0  # as if this machine's clock were an hour behind the server's
        from floodway.limits import LimitSpec

        store.declare_limit(LimitSpec.build("api", rate="1/min", burst=1))
        ok, _ = store.acquire("api", "")
        assert ok
        ok, retry_at = store.acquire("api", "")
        # the answer is in this machine's time: about a minute from now here
        assert not ok and 30 < retry_at - time.time() < 90
        until = store.pause_limit("api", "", time.time() + 120, "429")
        assert 100 < until - time.time() < 140
        [info] = store.list_limits()
        assert info.keys[0].paused_until is not None
    finally:
        store.close()


def test_claims_from_many_threads_never_share_a_job(postgres_url):
    """8 claimers with their own stores race over 3,000 jobs in one fairness group, a
    concurrency-capped queue and a rate limit: no job is claimed twice, caps hold."""
    from floodway.limits import LimitSpec

    from ..contract.test_limits import limited

    seed = open_store(postgres_url)
    seed.declare_limit(LimitSpec.build("api", rate="1000/s", burst=50))
    seed.enqueue([limited(f"j-{i}", [["api", ""]] if i % 3 == 0 else [], tenant=f"t{i % 4}") for i in range(3000)])
    seed.enqueue([limited(f"c-{i}", [], queue="narrow") for i in range(50)], {"narrow": 2})
    claimed: list[str] = []
    narrow_peak = [0]
    lock = threading.Lock()

    def claimer(k):
        store = open_store(postgres_url)
        try:
            idle = 0
            while idle < 20:
                jobs = store.claim(f"w{k}", queues=None, limit=25, lease=30)
                with lock:
                    claimed.extend(j.id for j in jobs)
                running_narrow = [j for j in jobs if j.queue == "narrow"]
                if running_narrow:
                    with lock:
                        narrow_peak[0] = max(narrow_peak[0], store.count_jobs(queue="narrow")["running"])
                from floodway.store import Outcome

                store.finish(
                    f"w{k}",
                    [
                        Outcome(j.id, j.attempt, Status.COMPLETE, result_json="null")
                        for j in jobs
                        if j.queue != "narrow"
                    ],
                )
                store.finish(
                    f"w{k}", [Outcome(j.id, j.attempt, Status.COMPLETE, result_json="null") for j in running_narrow]
                )
                idle = idle + 1 if not jobs else 0
                if not jobs:
                    time.sleep(0.01)
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        dupes = [k for k, v in Counter(claimed).items() if v > 1]
        assert not dupes, f"claimed twice: {dupes[:5]}"
        assert len(claimed) == 3050, seed.count_jobs()
        assert narrow_peak[0] <= 2
        assert seed.count_jobs()["complete"] == 3050
        [info] = seed.list_limits()
        assert info.keys[0].admitted == 1000
    finally:
        seed.close()


# -- how lists are sent ---------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_SCALAR = {
    "text": st.one_of(st.none(), _TEXT, st.sampled_from(['"', "\\", "NULL", "", " ", "{}", ",", '\\"'])),
    "int8": st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    "float8": st.one_of(st.none(), st.floats(allow_nan=False), st.integers(min_value=-(2**53), max_value=2**53)),
    "bool": st.one_of(st.none(), st.booleans()),
}


def test_lists_sent_as_array_literals_come_back_exactly(postgres_url):
    """Every list floodway sends is written as an array literal (``_array_literal``): whatever
    the values (quotes, backslashes, "NULL" as text, NULLs, the extremes of each type, lists of
    one kind or mixed), the server reads back the same list."""
    import psycopg

    from floodway.store.postgres.connection import _ADAPTERS

    with psycopg.connect(postgres_url, autocommit=True, context=_ADAPTERS) as conn:

        def round_trip_of(sql_type, element):
            @settings(max_examples=150, deadline=None, database=None)
            @given(values=st.lists(element, max_size=8))
            def round_trip(values):
                [back] = conn.execute(f"SELECT %t::{sql_type}[]", (values,)).fetchone()
                assert back == values

            return round_trip

        for sql_type, element in _SCALAR.items():
            round_trip_of(sql_type, element)()
        assert conn.execute("SELECT %t::float8[]", ([float("inf"), float("-inf"), 5e-324],)).fetchone()[0] == [
            float("inf"),
            float("-inf"),
            5e-324,
        ]
        assert conn.execute("SELECT %t::text[]", ([Status.WAITING, "x", None],)).fetchone()[0] == ["waiting", "x", None]
        # a NUL is refused by the server, never split into two elements
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT %t::text[]", (["a\x00b", "c"],))
