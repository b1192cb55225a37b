"""The worker in-process: outcomes, retries, final failures, timeouts, cancellation, release."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from floodway import Context, Fail, JobCancelled, JobFailed, Retry, Status
from floodway.errors import ConfigError

from ..conftest import running_worker, wait_for


def test_async_and_sync_tasks_complete(app):
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @app.task
    def shout(ctx: Context, word: str) -> dict:
        return {"word": word.upper(), "thread": threading.current_thread().name, "attempt": ctx.attempt}

    handles = app.enqueue_many(double, [{"x": i} for i in range(50)])
    h = app.enqueue(shout, {"word": "hey"})
    app.worker(concurrency=10, burst=True).run()
    assert [x.result(timeout=5) for x in handles] == [i * 2 for i in range(50)]
    res = h.result(timeout=5)
    assert res["word"] == "HEY" and res["attempt"] == 1 and res["thread"].startswith("floodway-task")
    assert [e.to_status for e in h.events()] == [Status.WAITING, Status.RUNNING, Status.COMPLETE]


def test_context_by_name(app):
    @app.task
    async def named(ctx, n: int):
        return [ctx.job_id, n, ctx.args]

    h = app.enqueue(named, {"n": 4})
    app.worker(burst=True).run()
    assert h.result(timeout=5) == [h.id, 4, {"n": 4}]


def test_context_logger_is_the_tasks_logger(app, caplog):
    @app.task(name="chatty")
    async def chatty(ctx, n: int):
        ctx.logger.warning("item %d of job %s", n, ctx.job_id)
        return ctx.logger.name

    h = app.enqueue(chatty, {"n": 7})
    with caplog.at_level("WARNING", logger="floodway.task.chatty"):
        app.worker(burst=True).run()
    assert h.result(timeout=5) == "floodway.task.chatty"
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("floodway.task")] == [
        ("floodway.task.chatty", f"item 7 of job {h.id}")
    ]


def test_flaky_job_is_retried_then_completes(app):
    @app.task(retry=Retry(attempts=3, initial="10ms"))
    async def flaky(ctx: Context):
        if ctx.attempt < 3:
            raise ConnectionError(f"try {ctx.attempt}")
        return "ok"

    h = app.enqueue(flaky)
    with running_worker(app):
        assert h.result(timeout=20) == "ok"
    job = h.job()
    assert job.attempt == 3
    timeline = [(e.from_status, e.to_status) for e in h.events()]
    assert timeline.count((Status.RUNNING, Status.RETRYING)) == 2
    retry_events = [e for e in h.events() if e.to_status is Status.RETRYING]
    assert retry_events[0].error["type"] == "ConnectionError" and "try 1" in retry_events[0].error["message"]
    assert "Traceback" in retry_events[0].error["traceback"]


def test_retry_delay_comes_from_the_policy(app):
    @app.task(retry=Retry(attempts=5, initial="1h", backoff="fixed"))
    def broken():
        raise RuntimeError("no")

    h = app.enqueue(broken)
    before = time.time()
    app.worker(burst=True).run()
    job = h.job()
    assert job.status is Status.RETRYING and job.attempt == 1
    assert before + 3600 <= job.run_at <= time.time() + 3600


def test_enqueue_retry_override_is_used(app):
    @app.task(retry=Retry(attempts=5, initial="1h"))
    def broken():
        raise RuntimeError("no")

    h = app.enqueue(broken, retry=0)
    app.worker(burst=True).run()
    assert h.status() is Status.FAILED


def test_attempts_exhausted_fails_with_the_stored_error(app):
    @app.task(retry=Retry(attempts=1, initial="10ms"))
    async def always():
        raise ValueError("bad input 42")

    h = app.enqueue(always)
    with running_worker(app):
        with pytest.raises(JobFailed) as info:
            h.result(timeout=20)
    assert info.value.type == "ValueError" and info.value.message == "bad input 42"
    assert "bad input 42" in info.value.traceback
    assert h.job().attempt == 2


def test_fail_is_final(app):
    @app.task(retry=5)
    def refuse():
        raise Fail("account closed")

    h = app.enqueue(refuse)
    app.worker(burst=True).run()
    assert h.status() is Status.FAILED and h.job().attempt == 1
    assert h.job().error["message"] == "account closed"


def test_give_up_on(app):
    @app.task(retry=5, give_up_on=(KeyError,))
    def lookup():
        raise KeyError("missing")

    @app.task(retry=Retry(attempts=5, initial="1h", give_up_on=(LookupError,)))
    def lookup2():
        raise IndexError("subclass of LookupError")

    h1, h2 = app.enqueue(lookup), app.enqueue(lookup2)
    app.worker(burst=True).run()
    assert h1.status() is Status.FAILED and h2.status() is Status.FAILED


def test_non_json_result_is_a_failed_attempt(app):
    @app.task(retry=0)
    def weird():
        return {1, 2, 3}

    h = app.enqueue(weird)
    app.worker(burst=True).run()
    with pytest.raises(JobFailed, match="not JSON-serialisable"):
        h.result(timeout=5)


def test_timeout_is_a_failed_attempt(app):
    @app.task(timeout="50ms", retry=0)
    async def slow():
        await asyncio.sleep(30)

    h = app.enqueue(slow)
    app.worker(burst=True).run()
    with pytest.raises(JobFailed, match="timed out"):
        h.result(timeout=5)


def test_cancel_a_running_job(app):
    started = threading.Event()

    @app.task
    async def forever():
        started.set()
        await asyncio.sleep(300)

    h = app.enqueue(forever)
    with running_worker(app, lease="300ms"):
        assert started.wait(20)
        assert h.cancel() is Status.RUNNING  # requested; the worker stops it at its heartbeat
        with pytest.raises(JobCancelled):
            h.result(timeout=20)
    assert h.events()[-1].reason == "cancelled by user while running"


def test_cancelled_waiting_job_never_runs(app):
    ran = []

    @app.task
    def record():
        ran.append(1)

    h = app.enqueue(record)
    assert h.cancel() is Status.CANCELLED
    app.worker(burst=True).run()
    assert ran == [] and h.status() is Status.CANCELLED
    with pytest.raises(JobCancelled):
        h.result()


def test_manual_retry_of_failed_job(app):
    calls = []

    @app.task(retry=0)
    def once_broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first")
        return len(calls)

    h = app.enqueue(once_broken)
    app.worker(burst=True).run()
    assert h.status() is Status.FAILED
    assert h.retry() is Status.WAITING
    app.worker(burst=True).run()
    assert h.result(timeout=5) == 2


def test_result_timeout(app):
    @app.task
    def idle(): ...

    h = app.enqueue(idle)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)

    async def main():
        return await h.result_async(timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_result_async_waits(app):
    @app.task
    async def quick():
        return 7

    h = app.enqueue(quick)

    async def main():
        waiter = asyncio.create_task(h.result_async(timeout=20))
        await asyncio.to_thread(app.worker(burst=True).run)
        return await waiter

    assert asyncio.run(main()) == 7


def test_unknown_task_in_worker_fails_the_job(app, database_url):
    from floodway import App

    producer = App(database_url)

    @producer.task
    def only_here(): ...

    h = producer.enqueue(only_here)
    producer.close()
    app.worker(burst=True).run()
    job = app.handle(h.id).job()
    assert job.status is Status.FAILED and job.error["type"] == "UnknownTask"


def test_stopping_worker_releases_running_jobs_without_spending_an_attempt(app):
    started = threading.Event()

    @app.task
    async def long():
        started.set()
        await asyncio.sleep(300)

    h = app.enqueue(long)
    worker = app.worker(grace="50ms", poll_interval="20ms")
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(20)
    worker.stop()
    thread.join(20)
    job = h.job()
    assert job.status is Status.WAITING and job.attempt == 0
    last = h.events()[-1]
    assert (last.from_status, last.to_status) == (Status.RUNNING, Status.WAITING)
    assert "released" in last.reason


def test_stopping_worker_lets_short_jobs_finish_within_grace(app):
    started = threading.Event()

    @app.task
    async def short():
        started.set()
        await asyncio.sleep(0.2)
        return "done"

    h = app.enqueue(short)
    worker = app.worker(grace="20s", poll_interval="20ms")
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(20)
    worker.stop()
    thread.join(30)
    assert h.result(timeout=1) == "done"


def test_scheduled_job_runs_when_due(app):
    @app.task
    def later():
        return time.time()

    h = app.enqueue(later, delay="200ms")
    due = h.job().run_at
    with running_worker(app):
        ran_at = h.result(timeout=20)
    assert ran_at >= due
    assert [e.to_status for e in h.events()][:3] == [Status.SCHEDULED, Status.WAITING, Status.RUNNING]


def test_priority_runs_first(app):
    order = []

    @app.task
    def mark(n: int):
        order.append(n)

    app.enqueue_many(mark, [{"n": i} for i in range(5)])
    app.enqueue(mark, {"n": 99}, priority=10)
    app.worker(concurrency=1, burst=True).run()
    assert order[0] == 99 and order[1:] == [0, 1, 2, 3, 4]


def test_queue_filter(app):
    @app.task(queue="a")
    def in_a(): ...

    @app.task
    def in_default(): ...

    ha, hd = app.enqueue(in_a), app.enqueue(in_default)
    app.worker(queues=["default"], burst=True).run()
    assert ha.status() is Status.WAITING and hd.status() is Status.COMPLETE


def test_many_jobs_concurrently_in_one_process(app):
    seen = set()
    gate = {"running": 0, "max": 0}

    @app.task
    async def tick(i: int):
        gate["running"] += 1
        gate["max"] = max(gate["max"], gate["running"])
        await asyncio.sleep(0.001)
        gate["running"] -= 1
        seen.add(i)

    app.enqueue_many(tick, [{"i": i} for i in range(500)])
    app.worker(concurrency=20, burst=True).run()
    assert seen == set(range(500))
    assert gate["max"] <= 20
    assert app.store.count_jobs()["complete"] == 500


# -- prefetch: jobs claimed ahead while every slot is busy --------------------------------------


def _statuses(app, handles):
    return {h.id: h.status() for h in handles}


def _blocker_and_quick(app):
    """A ``blocker`` task that holds its slot until released, and a ``quick`` task that
    records its argument: with one slot, the quick jobs can only be claimed ahead."""
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    @app.task
    async def blocker():
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    @app.task
    def quick(n: int):
        ran.append(n)

    return blocker, quick, started, release, ran


def test_a_backlog_of_short_jobs_is_claimed_with_the_prefetch_in_one_claim(app):
    """Draining a backlog, the worker may ask for its free slots plus the prefetch in one claim
    (``ahead``; the store's side is tested in test_limits). The jobs beyond the free slots wait
    in the worker and start as slots free: every job runs exactly once, never more at a time
    than the concurrency."""
    from floodway.store.postgres import PostgresStore

    running, most, ran = [0], [0], []

    @app.task
    async def short(n: int):
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0)
        ran.append(n)
        running[0] -= 1

    claims: list[tuple[int, int, int]] = []
    claim = app.store.claim

    def recording_claim(*args, **kwargs):
        got = claim(*args, **kwargs)
        claims.append((kwargs["limit"], kwargs.get("ahead", 0), len(got)))
        return got

    app.store.claim = recording_claim
    app.enqueue_many(short, [{"n": i} for i in range(200)])
    app.worker(concurrency=4, prefetch=4, burst=True).run()
    assert sorted(ran) == list(range(200)) and most[0] <= 4
    assert all(got <= limit + ahead for limit, ahead, got in claims)
    if not isinstance(app.store, PostgresStore):  # SQLite takes jobs ahead only in a prefetch claim
        assert all(got <= limit for limit, _, got in claims if limit > 0)
    assert {k: v for k, v in app.store.count_jobs().items() if v} == {"complete": 200}


def test_prefetched_jobs_go_back_unspent_when_the_worker_stops(app):
    blocker, quick, started, release, ran = _blocker_and_quick(app)

    first = app.enqueue(blocker)
    ahead = app.enqueue_many(quick, [{"n": 1}, {"n": 2}])
    worker = app.worker(concurrency=1, prefetch=2, grace="50ms", poll_interval="20ms")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(20)
        # the two quick jobs are claimed ahead (running in the store) but cannot start
        wait_for(lambda: all(s is Status.RUNNING for s in _statuses(app, ahead).values()))
        assert ran == []
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert ran == []
    assert first.job().status is Status.WAITING
    for h in ahead:
        job = h.job()
        assert job.status is Status.WAITING and job.attempt == 0, job
        assert "released unstarted" in h.events()[-1].reason


def test_a_prefetched_job_cancelled_before_it_starts_never_runs(app):
    blocker, quick, started, release, ran = _blocker_and_quick(app)

    app.enqueue(blocker)
    [doomed, kept] = app.enqueue_many(quick, [{"n": 1}, {"n": 2}])
    with running_worker(app, concurrency=1, prefetch=2, lease="300ms"):
        assert started.wait(20)
        wait_for(lambda: doomed.status() is Status.RUNNING and kept.status() is Status.RUNNING)
        assert doomed.cancel() is Status.RUNNING  # requested; the heartbeat ends it
        wait_for(lambda: doomed.status() is Status.CANCELLED)
        release.set()
        assert kept.result(timeout=20) is None
    assert ran == [2]
    assert doomed.events()[-1].reason == "cancelled by user before it started"


def test_prefetch_claims_a_limited_job_only_while_its_limit_has_headroom(app):
    app.limit("api", concurrency=4)
    app.limit("tight", rate="10/s")  # a burst of 1: no headroom ever
    blocker, _, started, release, _ = _blocker_and_quick(app)

    @app.task(limits=["api"])
    def limited(n: int):
        return n

    @app.task(limits=["tight"])
    def paced(n: int):
        return n

    @app.task
    def plain(n: int):
        return n

    app.enqueue(blocker)
    held = app.enqueue_many(limited, [{"n": i} for i in range(3)])
    slow = app.enqueue_many(paced, [{"n": i} for i in range(2)])
    ahead = app.enqueue_many(plain, [{"n": i} for i in range(2)])
    with running_worker(app, concurrency=1, prefetch=10, batch_size=10):
        assert started.wait(20)
        wait_for(lambda: all(s is Status.RUNNING for s in _statuses(app, ahead).values()))
        wait_for(lambda: list(_statuses(app, held).values()).count(Status.RUNNING) == 2)
        time.sleep(0.2)  # more claims ahead would take no more of them
        # half of the concurrency cap at most; a job whose rate has no headroom is admitted
        # only when it can run at once
        assert sorted(_statuses(app, held).values()) == [Status.RUNNING, Status.RUNNING, Status.WAITING]
        assert set(_statuses(app, slow).values()) == {Status.WAITING}
        release.set()
        assert [h.result(timeout=20) for h in held + slow + ahead] == [0, 1, 2, 0, 1, 0, 1]


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": "4"},
        {"queues": []},
        {"queues": [""]},
        {"lease": "0s"},
        {"grace": "-1s"},
        {"poll_interval": "fast"},
        {"prefetch": -1},
        {"prefetch": "2"},
        {"prefetch": True},
        {"batch_size": 0},
        {"batch_size": -3},
        {"batch_size": "8"},
        {"batch_size": True},
        {"loop": "trio"},
        {"loop": None},
        {"book_ahead": "-1s"},
        {"book_ahead": "2s"},
        {"book_ahead": "soon"},
    ],
)
def test_bad_worker_options(app, options):
    with pytest.raises(ConfigError):
        app.worker(**options)


def _loop_of_each_job(app, **options) -> set[str]:
    @app.task
    async def where() -> str:
        await asyncio.sleep(0.001)  # a timer, so the loop's clock is used, not only its ready queue
        return type(asyncio.get_running_loop()).__module__

    handles = app.enqueue_many(where, [{} for _ in range(30)])
    app.worker(concurrency=5, burst=True, **options).run()
    return {h.result(timeout=5) for h in handles}


def test_run_uses_uvloop_by_default_when_it_is_installed(app):
    pytest.importorskip("uvloop")  # a dependency on every platform floodway's tests run on
    assert _loop_of_each_job(app) == {"uvloop"}


def test_run_uses_the_loop_asked_for(app):
    assert _loop_of_each_job(app, loop="asyncio") == {"asyncio.unix_events"}


def test_asking_for_uvloop_without_it_installed_is_a_clear_error(app, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    with pytest.raises(ConfigError, match="needs the uvloop package"):
        app.worker(loop="uvloop")
    assert app.worker(loop="auto").loop_factory is None  # auto falls back to asyncio's loop


def test_a_worker_held_by_a_binding_rate_asks_the_store_nothing_until_its_admission(app):
    # every outcome written wakes the claim loop; while a binding rate holds the ready jobs
    # back until a moment the last claim named, a look at what is due costs the store a
    # statement and tells the worker nothing new
    app.limit("paced", rate="40/s", burst=1)

    @app.task(limits=["paced"])
    def quick(n: int):
        return n

    handles = app.enqueue_many(quick, [{"n": i} for i in range(40)])
    store = app.store
    looks = []
    look = store.next_due
    store.next_due = lambda queues: looks.append(queues) or look(queues)
    try:
        app.worker(concurrency=10, burst=True).run()
    finally:
        del store.next_due
    assert [h.result(timeout=5) for h in handles] == list(range(40))
    # the first look, and the burst's last ones once nothing is left (a few more when a loaded
    # machine runs a claim late); not one per outcome, which made 74 looks here
    assert len(looks) <= len(handles) // 4, len(looks)
