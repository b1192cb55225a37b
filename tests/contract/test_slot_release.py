"""A finished job gives its concurrency slots back: racing claims and finishes never pass a
cap, and the count of running jobs comes back to zero, on every backend. On PostgreSQL the
release does not lock the key's row that every claim locks (the slots given back are counted
apart, in a row per connection), the rows of connections that are gone are summed without
changing the count, and idle workers are woken by a release only where a claim may have waited
for the slot."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from floodway.jobs import Status
from floodway.limits import LimitSpec
from floodway.store import Outcome, open_store
from floodway.store.postgres.connection import CHANNEL

from .test_limits import limited
from .test_store_contract import W1

API = [["api", ""]]


def _done(job) -> Outcome:
    return Outcome(job.id, job.attempt, Status.COMPLETE, result_json="1")


def _running(store) -> int:
    [info] = store.list_limits()
    return info.keys[0].running


def test_racing_claims_and_finishes_never_pass_a_cap(store, database_url):
    """Four claimers on their own connections claim, hold and finish jobs of a limit capped at
    3. A job counts as running here from its claim's return to just before its finish is sent,
    inside the store's own span: more than 3 at once would be an admission past the cap."""
    store.declare_limit(LimitSpec.build("api", rate="100000/s", burst=1000, concurrency=3))
    store.enqueue([limited(f"c-{i}", API) for i in range(90)])
    lock = threading.Lock()
    held, most, done = 0, 0, []
    errors: list[BaseException] = []

    def work(worker: str, seed: int) -> None:
        nonlocal held, most
        rng = random.Random(seed)
        own = open_store(database_url)
        try:
            idle = 0
            while idle < 200:
                got = own.claim(worker, queues=None, limit=2, lease=30.0, ahead=1)
                if not got:
                    idle += 1
                    threading.Event().wait(0.002)
                    continue
                idle = 0
                with lock:
                    held += len(got)
                    most = max(most, held)
                threading.Event().wait(rng.uniform(0, 0.004))
                with lock:
                    held -= len(got)
                    done.extend(j.id for j in got)
                own.finish(worker, [_done(j) for j in got])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(f"w-{i}", i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= most <= 3
    assert sorted(done) == sorted(f"c-{i}" for i in range(90))  # each once
    assert _running(store) == 0 and store.count_jobs()["running"] == 0


def test_postgres_a_finish_does_not_wait_for_the_key_row_a_claim_holds(postgres_url):
    """While another transaction holds the limit key's row (as a claim does until it commits),
    a held job still finishes, and the slot it gave back is counted once that lock is gone."""
    store = open_store(postgres_url)
    try:
        store.declare_limit(LimitSpec.build("api", rate="1000/s", burst=10, concurrency=5))
        store.enqueue([limited(f"f-{i}", API) for i in range(2)])
        jobs = store.claim(W1, queues=None, limit=2, lease=30.0)
        assert len(jobs) == 2 and _running(store) == 2
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM limit_keys WHERE limit_name = 'api' FOR UPDATE")
            finished = threading.Thread(target=store.finish, args=(W1, [_done(jobs[0])]), daemon=True)
            finished.start()
            finished.join(30)
            assert not finished.is_alive(), "the finish waited for the key row's lock"
            assert store.count_jobs()["complete"] == 1
        assert _running(store) == 1
        store.finish(W1, [_done(jobs[1])])
        assert _running(store) == 0
        # a claim after the releases takes the slots they gave back
        store.enqueue([limited(f"g-{i}", API) for i in range(6)])
        assert len(store.claim(W1, queues=None, limit=6, lease=30.0)) == 5
    finally:
        store.close()


def test_postgres_the_slots_of_connections_that_are_gone_are_summed_and_the_count_kept(postgres_url):
    """Slots given back from three connections that then close leave a row each; a later
    release sums them into one row, and the count of running jobs is the same before and after."""
    main = open_store(postgres_url)
    try:
        main.declare_limit(LimitSpec.build("api", rate="1000/s", burst=100, concurrency=50))
        main.enqueue([limited(f"s-{i}", API) for i in range(10)])
        jobs = main.claim(W1, queues=None, limit=10, lease=30.0)
        assert len(jobs) == 10
        for part in (jobs[0:2], jobs[2:4], jobs[4:6]):
            other = open_store(postgres_url)
            other._fold_stripes_at = float("inf")  # these leave their rows as they are
            other.finish(W1, [_done(j) for j in part])
            other.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute("SELECT stripe, n FROM limit_releases ORDER BY stripe").fetchall()
            assert len(rows) == 3 and sum(n for _, n in rows) == 6
            assert _running(main) == 4
            main._fold_stripes_at = 0.0  # the next release sums the rows of connections gone
            main.finish(W1, [_done(jobs[6])])
            rows = dict(conn.execute("SELECT stripe, n FROM limit_releases ORDER BY stripe").fetchall())
            own = conn.execute("SELECT n FROM limit_releases WHERE stripe NOT IN (0)").fetchall()
            assert rows[0] == 6 and own == [(1,)]
            assert _running(main) == 3
    finally:
        main.close()


@pytest.mark.parametrize(("concurrency", "running", "woken"), [(100, 2, False), (4, 2, True), (4, 4, True)])
def test_postgres_a_release_wakes_workers_only_where_a_claim_may_have_waited(postgres_url, concurrency, running, woken):
    """A finished job's slot wakes the workers of its queue when its key was at least half full
    (a claim may have been held back), not when it was far from its cap."""
    store = open_store(postgres_url)
    try:
        store.declare_limit(LimitSpec.build("api", rate="1000/s", burst=100, concurrency=concurrency))
        store.enqueue([limited(f"n-{i}", API) for i in range(running)])
        jobs = store.claim(W1, queues=None, limit=running, lease=30.0)
        assert len(jobs) == running
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            store.finish(W1, [_done(jobs[0])])
            heard = [n.payload for n in listener.notifies(timeout=1.0, stop_after=1)]
        assert heard == (["default"] if woken else [])
    finally:
        store.close()
