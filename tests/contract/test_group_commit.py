"""Group commit: concurrent single enqueues share transactions, and each returns only once its
own job is durable (real stores; a real process killed with SIGKILL mid-burst)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


for t in range(16):
    threading.Thread(target=loop, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_every_enqueue_that_returned_before_a_kill_is_in_the_store(tmp_path, database_url):
    script = tmp_path / "burst.py"
    script.write_text(KILLED_APP)
    proc = subprocess.Popen(
        [sys.executable, str(script), database_url],
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
