"""Group commit: concurrent single enqueues share transactions, and each returns only once its
own job is durable (real stores; a real process killed with SIGKILL mid-burst)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import floodway
from floodway import App
from floodway.errors import EnqueueError
from floodway.store import open_store


def register(app: App) -> None:
    @app.task
    def note(ctx, n: int):  # noqa: ARG001
        return n


def burst(app: App, count: int, **options) -> list:
    """``count`` threads released at once, each enqueuing one job."""
    gate = threading.Barrier(count)

    def one(i: int):
        gate.wait()
        return app.enqueue("note", {"n": i}, **options)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_a_burst_of_concurrent_enqueues_costs_a_few_transactions(app):
    register(app)
    app.enqueue("note", {"n": -1})  # the store is open and the queue known before the burst
    before, jobs_before = app.group_commit.transactions, app.group_commit.jobs
    handles = burst(app, 100)
    spent = app.group_commit.transactions - before
    assert len({h.id for h in handles}) == 100 and all(h.created for h in handles)
    # every job is in the store, with its own args
    for i, h in enumerate(handles):
        job = app.store.get_job(h.id)
        assert job is not None and job.args == {"n": i}
    assert app.group_commit.jobs - jobs_before == 100
    assert 1 <= spent <= 34, f"100 concurrent enqueues took {spent} transactions"


def test_a_lone_enqueue_commits_at_once_and_alone(app):
    register(app)
    before = app.group_commit.transactions
    handle = app.enqueue("note", {"n": 1})
    assert app.group_commit.transactions == before + 1
    assert app.store.get_job(handle.id) is not None


def test_concurrent_enqueues_of_one_id_create_one_job(app):
    register(app)
    app.enqueue("note", {"n": -1})
    handles = burst(app, 20, id="invoice-42")
    assert {h.id for h in handles} == {"invoice-42"}
    assert sum(h.created for h in handles) == 1
    assert len(app.store.list_jobs(limit=100)) == 2


def test_a_bad_job_in_a_burst_fails_alone_and_writes_nothing_for_itself(app):
    register(app)
    app.enqueue("note", {"n": -1})
    gate = threading.Barrier(30)

    def one(i: int):
        gate.wait()
        # item 7 carries text no database can store: refused at the boundary, before any commit
        args = {"n": i, "note": "\ud800"} if i == 7 else {"n": i}
        try:
            return app.enqueue("note", args)
        except EnqueueError as exc:
            return exc

    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(one, range(30)))
    assert isinstance(outcomes[7], EnqueueError)
    made = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(made) == 29
    for h in made:
        assert app.store.get_job(h.id) is not None
    assert len(app.store.list_jobs(limit=1000)) == 30  # the 29 and the one before the burst


def test_a_job_the_store_refuses_inside_a_batch_fails_alone(app):
    """A failure inside the batch's transaction: the batch is committed again one job at a
    time, so the job at fault gets the store's error and the others are written."""
    register(app)
    app.enqueue("note", {"n": -1})
    store = app.store
    real = store.enqueue
    calls = []

    def refusing(jobs, queues=None, **kw):
        calls.append(len(jobs))
        if any(json.loads(j.args_json).get("n") == 3 for j in jobs):
            raise floodway.StoreError("refused by the database")
        return real(jobs, queues, **kw)

    # fault injection: the real store does every write, this wrapper refuses one job's
    store.enqueue = refusing
    try:
        gate = threading.Barrier(10)

        def one(i: int):
            gate.wait()
            try:
                return app.enqueue("note", {"n": i})
            except floodway.StoreError as exc:
                return exc

        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(one, range(10)))
    finally:
        store.enqueue = real
    assert isinstance(outcomes[3], floodway.StoreError)
    assert all(app.store.get_job(o.id) is not None for i, o in enumerate(outcomes) if i != 3)
    assert len(app.store.list_jobs(limit=100)) == 10


def burst_async(app: App, count: int, **options) -> list:
    """``count`` coroutines of one event loop, each enqueuing one job (``enqueue_async``)."""

    async def main():
        return await asyncio.gather(
            *(app.enqueue_async("note", {"n": i}, **options) for i in range(count)), return_exceptions=True
        )

    return asyncio.run(main())


def test_a_burst_of_coroutines_shares_a_few_transactions_and_no_thread_per_call(app):
    register(app)
    app.enqueue("note", {"n": -1})
    before = app.group_commit.transactions
    threads_before = threading.active_count()
    handles = burst_async(app, 200)
    spent = app.group_commit.transactions - before
    assert all(h.created for h in handles) and len({h.id for h in handles}) == 200
    for i, h in enumerate(handles):
        job = app.store.get_job(h.id)
        assert job is not None and job.args == {"n": i}
    # the 200 coroutines were checked in the loop and committed by one leader at a time
    assert 1 <= spent <= 20, f"200 concurrent coroutine enqueues took {spent} transactions"
    assert threading.active_count() - threads_before <= 2


def test_a_bad_job_among_coroutines_fails_alone_with_its_own_error(app):
    register(app)
    app.enqueue("note", {"n": -1})

    async def main():
        calls = [app.enqueue_async("note", {"n": i, "note": "\ud800"} if i == 7 else {"n": i}) for i in range(30)]
        calls.append(app.enqueue_async("nope", {"n": 0}))  # an unknown task, refused in the loop
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[7], EnqueueError) and isinstance(outcomes[30], EnqueueError)
    assert "unknown task 'nope'" in str(outcomes[30])
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(made) == 29 and all(app.store.get_job(h.id) is not None for h in made)
    assert len(app.store.list_jobs(limit=1000)) == 30


def test_a_job_the_store_refuses_among_coroutines_fails_alone(app):
    register(app)
    app.enqueue("note", {"n": -1})
    store = app.store
    real = store.enqueue

    def refusing(jobs, queues=None, **kw):
        if any(json.loads(j.args_json).get("n") == 3 for j in jobs):
            raise floodway.StoreError("refused by the database")
        return real(jobs, queues, **kw)

    store.enqueue = refusing  # fault injection: the real store does every other write
    try:
        outcomes = burst_async(app, 40)
    finally:
        store.enqueue = real
    assert isinstance(outcomes[3], floodway.StoreError)
    assert all(app.store.get_job(o.id) is not None for i, o in enumerate(outcomes) if i != 3)
    assert len(app.store.list_jobs(limit=100)) == 40


def test_threads_and_coroutines_enqueuing_at_once_all_commit(app):
    """Both kinds of caller in one group commit: a thread takes the lead from a coroutines'
    leader and hands it back; nobody waits forever."""
    register(app)
    app.enqueue("note", {"n": -1})
    from_threads: list = []

    def threads():
        from_threads.extend(burst(app, 40))

    runner = threading.Thread(target=threads)
    runner.start()
    from_coroutines = burst_async(app, 300)
    runner.join(timeout=60)
    assert not runner.is_alive()
    handles = from_threads + from_coroutines
    assert len(handles) == 340 and all(h.created for h in handles)
    assert len(app.store.list_jobs(limit=1000)) == 341


def test_a_cancelled_coroutine_leaves_the_others_and_later_enqueues_unharmed(app):
    register(app)
    app.enqueue("note", {"n": -1})

    async def main():
        calls = [asyncio.ensure_future(app.enqueue_async("note", {"n": i})) for i in range(50)]
        await asyncio.sleep(0)
        calls[0].cancel()  # a client gone mid-request: its job may or may not be written
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        later = await asyncio.wait_for(app.enqueue_async("note", {"n": 99}), timeout=30)
        return outcomes, later

    outcomes, later = asyncio.run(main())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert all(app.store.get_job(h.id) is not None for h in outcomes[1:])
    assert app.store.get_job(later.id) is not None


def test_a_first_coroutine_enqueue_to_a_declared_queue_writes_it_first(app):
    """A queue the store has not been told about yet is written before the job (on a thread):
    the job and the queue's declared cap are both in the store."""
    register(app)
    app.queue("mail", max_concurrency=3)

    async def main():
        return await app.enqueue_async("note", {"n": 1}, queue="mail")

    handle = asyncio.run(main())
    job = app.store.get_job(handle.id)
    assert job is not None and job.queue == "mail"
    assert {q.name: q.max_concurrency for q in app.store.list_queues()}["mail"] == 3


KILLED_APP = """
import sys, threading
import floodway

app = floodway.App(sys.argv[1])


@app.task
def note(ctx, n: int):
    return n


app.enqueue("note", {"n": -1})
out = sys.stdout
lock = threading.Lock()


def loop(t):
    i = 0
    while True:
        h = app.enqueue("note", {"n": t * 1_000_000 + i})
        with lock:
            out.write(h.id + "\\n")
            out.flush()
        i += 1


if sys.argv[2] == "threads":
    for t in range(16):
        threading.Thread(target=loop, args=(t,), daemon=True).start()
    threading.Event().wait()
else:
    import asyncio

    async def coroutine(t):
        i = 0
        while True:
            h = await app.enqueue_async("note", {"n": t * 1_000_000 + i})
            out.write(h.id + "\\n")
            out.flush()
            i += 1

    async def main():
        await asyncio.gather(*(coroutine(t) for t in range(50)))

    asyncio.run(main())
"""


@pytest.mark.parametrize("callers", ["threads", "coroutines"])
def test_every_enqueue_that_returned_before_a_kill_is_in_the_store(tmp_path, database_url, callers):
    script = tmp_path / "burst.py"
    script.write_text(KILLED_APP)
    proc = subprocess.Popen(
        [sys.executable, str(script), database_url, callers],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    returned: list[str] = []
    try:
        deadline = time.time() + 60
        while len(returned) < 400 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            returned.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        returned += [line for line in rest.splitlines() if line]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(returned) >= 400, "the burst did not get going"
    store = open_store(database_url)
    try:
        missing = [job_id for job_id in returned if store.get_job(job_id) is None]
    finally:
        store.close()
    assert not missing, f"{len(missing)} enqueues returned but their jobs are not in the store"


def test_group_commit_keeps_a_lone_callers_latency_unchanged_in_shape(app):
    """A caller alone never waits for company: sequential enqueues each take one transaction."""
    register(app)
    app.enqueue("note", {"n": -1})
    before = app.group_commit.transactions
    for i in range(20):
        app.enqueue("note", {"n": i})
    assert app.group_commit.transactions - before == 20
