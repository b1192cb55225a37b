"""The chaos drain, short: real worker processes drain jobs into a rate-limited loopback API
while workers are SIGKILLed and restarted, one is SIGSTOPped past its lease and resumed, and
PostgreSQL is restarted (``chaos/run.py``; ``make chaos`` runs the long version).

Checked after the fact, from the store and from every request the destination saw (it does not
deduplicate, so every repeat is counted): every job complete, none running, nothing lost, no
record applied twice by a destination honouring Idempotency-Key, repeated deliveries within the
design's bound, no second with more accepted requests than rate + burst, and every status
change an edge of the transition table.

Also here: the bugs the chaos drain found, each reproduced deterministically.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chaos.run import Config, render, run_chaos
from floodway import App, Context, Retry
from floodway.errors import StoreError
from floodway.jobs import Status
from floodway.store import open_store

from ..conftest import BACKENDS, wait_for
from ..pg_helpers import base_url

pytestmark = pytest.mark.timeout(300)

#: the short runs: the rate is below what the workers could do, so the limit binds (and the
#: drain outlasts the chaos: 20 s at least)
SHORT = {
    "sqlite": dict(jobs=1200, workers=2, rate=60.0, burst=5),
    "postgres": dict(jobs=1600, workers=4, rate=80.0, burst=5),
}


@pytest.mark.serial
@pytest.mark.parametrize("backend", BACKENDS)
def test_chaos_drain_loses_and_duplicates_nothing(backend: str, tmp_path: Path) -> None:
    options = SHORT[backend]
    config = Config(
        backend=backend,
        concurrency=16,
        lease=2.0,
        kill_every=(1.0, 2.0),
        stop_at=0.15,
        restart_at=0.4,
        timeout=200.0,
        workdir=str(tmp_path / "chaos"),
        postgres_url=base_url() if backend == "postgres" else None,
        **options,
    )
    lines: list[str] = []
    report = run_chaos(config, out=lines.append)
    text = "\n".join(lines) + "\n" + render(report)
    assert report.ok, text
    jobs = options["jobs"]
    assert report.complete == jobs and report.statuses == {"complete": jobs}, text
    assert report.running == 0 and report.lost == 0 and report.duplicate_effects == 0, text
    assert report.unkeyed_requests == 0, text
    assert report.repeated_deliveries <= report.repeated_delivery_bound, text
    assert report.max_accepted_1s <= options["rate"] + options["burst"], text
    assert report.kills >= 2 and report.restarts == report.kills, text
    assert report.stops == 1 and report.stop_seconds > config.lease, text
    assert report.db_restarts == (1 if backend == "postgres" else 0), text
    assert not report.bad_transitions, text


# -- bugs the chaos drain found, reproduced (fixed ones stay as regression tests) ----------------


def test_a_store_error_while_loading_the_cursor_retries_the_job(tmp_path: Path) -> None:
    """A database blip while the worker loads a job's cursor costs at most an attempt. (Found by
    the chaos drain at a PostgreSQL restart: the StoreError reached Worker._run, which failed the
    job for good on its first attempt; fixed in 19de942.)"""
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.task(retry=Retry(attempts=3, initial=0))
    async def deliver(ctx: Context, n: int) -> int:
        return n

    store = open_store(app.database_url)
    app.use_store(store)
    real, real_many = store.load_state, store.load_cursors
    calls = {"n": 0, "many": 0}
    blip = "the connection broke while committing a read; it may or may not have been written"

    def flaky_load_state(key: str):
        calls["n"] += 1
        if calls["n"] == 1:  # what the PostgreSQL store raises when the server restarts
            raise StoreError(blip)
        return real(key)

    def flaky_load_cursors(keys: list[str]):
        # the claim's one read of its jobs' cursors fails too: each run then reads its own
        calls["many"] += 1
        if calls["many"] == 1:
            raise StoreError(blip)
        return real_many(keys)

    store.load_state = flaky_load_state  # type: ignore[method-assign]
    store.load_cursors = flaky_load_cursors  # type: ignore[method-assign]
    try:
        handle = app.enqueue(deliver, {"n": 7})
        app.worker(burst=True, poll_interval=0.01, lease=5).run()
        job = handle.job()
        assert calls["n"] >= 1 and calls["many"] >= 1, calls
        assert job.status is Status.COMPLETE, (job.status, job.attempt, job.error)
        assert job.result == 7
    finally:
        app.close()


def test_a_worker_starting_during_a_database_blip_waits_for_it(tmp_path: Path) -> None:
    """The chaos drain starts workers while PostgreSQL restarts; they back off as the claim loop
    does. (Found by the chaos drain: the start-up store calls had no retry and `floodway worker`
    exited 2; fixed in 19de942.)"""
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.task
    async def deliver(n: int) -> int:
        return n

    store = open_store(app.database_url)
    app.use_store(store)
    real = store.register_worker
    calls = {"n": 0}

    def flaky_register_worker(info):
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreError(
                "the connection broke while committing a register_worker; it may or may not have been written"
            )
        return real(info)

    store.register_worker = flaky_register_worker  # type: ignore[method-assign]
    try:
        handle = app.enqueue(deliver, {"n": 3})
        app.worker(burst=True, poll_interval=0.01).run()
        assert handle.job().status is Status.COMPLETE
    finally:
        app.close()


class _FrozenWorker:
    """A store (a worker) frozen inside one of its own transactions, as SIGSTOP freezes one:
    ``body(cur)`` runs in the transaction, then the thread waits until ``thaw()``. What the
    thawed store raised is in ``error``."""

    def __init__(self, url: str, body, *, pipeline: bool = True):
        self.store = open_store(url)
        self.thawed = threading.Event()
        self.error: BaseException | None = None

        def go(cur) -> None:
            body(cur)
            self.thawed.wait(90)

        def run() -> None:
            try:
                self.store._run(go, what="frozen", pipeline=pipeline)
            except BaseException as exc:  # the server ended the frozen transaction
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def thaw(self) -> None:
        self.thawed.set()
        self.thread.join(timeout=30)

    def close(self) -> None:
        self.thaw()
        self.store.close()


def _limited_app(url: str) -> App:
    """An app declaring the limit ``api`` and a task ``deliver`` that holds it."""
    app = App(url)
    app.limit("api", rate="1000/s", burst=10)

    @app.task(limits=["api"], name="deliver")
    async def deliver(n: int) -> int:
        return n

    return app


def _app_with_three_limited_jobs(url: str) -> tuple[App, list]:
    """An app whose three waiting jobs hold the limit ``api``, and that limit's key row."""
    app = _limited_app(url)
    handles = app.enqueue_many("deliver", [{"n": i} for i in range(3)])
    assert app.store.acquire("api", "", 1)[0]  # the limit's key row exists now
    return app, handles


LOCK_THE_LIMIT = "SELECT tat FROM limit_keys WHERE limit_name = 'api' FOR UPDATE"


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(False, id="between-statements"),
        pytest.param(True, id="inside-a-pipeline"),
    ],
)
def test_postgres_a_worker_frozen_mid_transaction_does_not_stall_the_others(postgres_url: str, pipeline: bool) -> None:
    """What the chaos drain's SIGSTOP hits on PostgreSQL, made deterministic: one store (a
    worker) is frozen inside one of its own transactions, holding the limit's row lock; another
    worker's claim must still get through, well within the default lease of 30 s. (Found by the
    chaos drain: a result read inside a pipeline was asked for with a Flush, after which the
    server waits on the client without arming idle_in_transaction_session_timeout, so the frozen
    worker's locks stalled the fleet until it thawed; fixed by reading with a Sync,
    store/postgres/connection.py ``_SyncingCursor``.)"""
    app, _ = _app_with_three_limited_jobs(postgres_url)
    locked = threading.Event()

    def lock_and_read(cur) -> None:
        cur.execute(LOCK_THE_LIMIT)
        cur.fetchall()
        locked.set()

    frozen = _FrozenWorker(postgres_url, lock_and_read, pipeline=pipeline)
    claimed: dict[str, object] = {}
    claimer = threading.Thread(
        target=lambda: claimed.update(jobs=app.store.claim("w2", queues=None, limit=10, lease=30.0)), daemon=True
    )
    try:
        assert locked.wait(10)
        claimer.start()
        claimer.join(timeout=15)
        assert not claimer.is_alive(), "another worker's claim waited 15s behind a frozen worker's transaction"
        assert len(claimed["jobs"]) == 3  # type: ignore[arg-type]
        frozen.thaw()
        # the frozen worker, thawed, learns its transaction is gone, in floodway's terms
        assert isinstance(frozen.error, StoreError), frozen.error
    finally:
        frozen.close()
        claimer.join(timeout=30)
        app.close()


def _a_frozen_statement_is_ended_and_the_jobs_run(url: str, lock: str, *, fresh_app: bool) -> None:
    """A worker frozen right after sending ``lock`` (a lock-taking statement, sent and never
    read: the server is still reading that client's pipeline, so no server timeout applies)
    while three limited jobs wait. A worker started then (``fresh_app``: of a new app, which
    declares its limits again at start-up) must end the frozen transaction and run the jobs;
    the thawed worker finds its transaction gone, in floodway's terms."""
    app, handles = _app_with_three_limited_jobs(url)
    frozen = _FrozenWorker(url, lambda cur: cur.execute(lock))  # sent, not read
    runs = _limited_app(url) if fresh_app else app
    worker = runs.worker(concurrency=4, poll_interval="50ms")
    runner = threading.Thread(target=worker.run, daemon=True)
    try:
        # the statement has reached the server and holds the row
        wait_for(
            lambda: (
                app.store._read(  # type: ignore[attr-defined]
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE a.query = %s AND l.locktype = 'transactionid'",
                    (lock,),
                )[0][0]
                > 0
            ),
            timeout=20,
            message="the frozen session to hold its lock",
        )
        runner.start()
        wait_for(
            lambda: all(h.status() is Status.COMPLETE for h in handles),
            timeout=60,
            message="the worker to get past the frozen session's lock",
        )
        frozen.thaw()
        assert isinstance(frozen.error, StoreError), frozen.error  # its transaction is gone
    finally:
        frozen.close()
        worker.stop()
        runner.join(timeout=30)
        if runs is not app:
            runs.close()
        app.close()


def test_postgres_a_worker_frozen_right_after_sending_a_statement_is_ended_by_the_others(postgres_url: str) -> None:
    """Another worker's listener ends the transaction of a worker frozen after it sent a
    lock-taking statement, and its claim goes through. (Found by the chaos drain after the Sync
    fix: two sessions sat 14 s in such a state.)"""
    _a_frozen_statement_is_ended_and_the_jobs_run(postgres_url, LOCK_THE_LIMIT, fresh_app=False)


def test_postgres_a_worker_starting_behind_a_frozen_transaction_ends_it(postgres_url: str) -> None:
    """A worker whose own start-up (declaring its limits) waits on a row that a frozen worker's
    transaction holds, with no other worker running, still ends that transaction and starts.
    (Found by the chaos drain: workers restarted during a freeze all waited at start-up behind
    the frozen session's locks, before their listener, which ends frozen transactions, had
    started, so nobody ended it and the fleet stood still until the frozen worker thawed.)"""
    _a_frozen_statement_is_ended_and_the_jobs_run(
        postgres_url, "SELECT declared FROM limits WHERE name = 'api' FOR UPDATE", fresh_app=True
    )


def test_postgres_libpq_options_with_a_space_reach_the_server(postgres_url: str) -> None:
    """libpq parameters pass through the URL, spaces included. (Found while trying a frozen-
    transaction timeout: the libpq part was re-encoded with urlencode, a space became '+', and
    the server refused '+statement_timeout'; fixed in 19de942.)"""
    store = open_store(postgres_url + "?options=-c%20statement_timeout%3D4321")
    try:
        found = store._read("SHOW statement_timeout")[0][0]  # type: ignore[attr-defined]
        assert found == "4321ms"
    finally:
        store.close()
