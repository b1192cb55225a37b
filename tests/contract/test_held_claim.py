"""Jobs that hold limits, claimed while their limits do not bind: claims racing from many
connections never over-admit, on every backend; and PostgreSQL's one-statement claim of the
only fairness group's jobs decides by the same rule as ``rules.Admission`` (property-tested
against it on random key states), deciding nothing where the limit is near binding."""

from __future__ import annotations

import math
import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodway.jobs import Status
from floodway.limits import MAX_HORIZON, LimitSpec
from floodway.store import Outcome, open_store
from floodway.store.rules import Admission

from .test_limits import limited
from .test_store_contract import W1

API = [["api", ""]]


def _race(database_url: str, claimers: int, rounds: int, limit: int, ahead: int, finish: bool) -> list:
    """Claimers, each on its own connection, claim (and optionally finish what they claimed)
    for ``rounds`` claims each; returns the jobs claimed."""
    claimed: list = []
    lock, start = threading.Lock(), threading.Event()

    def claim(worker: str) -> None:
        own = open_store(database_url)
        start.wait()
        for _ in range(rounds):
            got = own.claim(worker, queues=None, limit=limit, lease=30.0, ahead=ahead)
            with lock:
                claimed.extend(got)
            if finish and got:
                own.finish(worker, [Outcome(j.id, j.attempt, Status.COMPLETE, result_json="1") for j in got])
        own.close()

    threads = [threading.Thread(target=claim, args=(f"w-{i}",)) for i in range(claimers)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    return claimed


def _key(store):
    [info] = store.list_limits()
    return info.keys[0]


def test_racing_claims_never_pass_a_limits_burst(store, database_url):
    """Claims racing for jobs of one group take them while the burst has room, then only as
    the rate allows: exactly the burst is admitted, and no job twice."""
    store.declare_limit(LimitSpec.build("api", rate="1/h", burst=60))
    store.enqueue([limited(f"r-{i}", API) for i in range(150)])
    claimed = {j.id for j in _race(database_url, claimers=4, rounds=12, limit=7, ahead=7, finish=False)}
    assert len(claimed) == 60
    assert _key(store).admitted == 60 and _key(store).running == 60
    assert store.count_jobs()["waiting"] == 90


def test_racing_claims_never_pass_a_limits_cap(store, database_url):
    """Claims racing with finishes: the running count never passes the cap, and the key's
    count of running jobs matches the jobs running once the race is over."""
    store.declare_limit(LimitSpec.build("api", rate="100000/s", burst=1000, concurrency=30))
    store.enqueue([limited(f"c-{i}", API) for i in range(200)])
    claimed = _race(database_url, claimers=4, rounds=15, limit=10, ahead=10, finish=False)
    assert len({j.id for j in claimed}) == len(claimed) == 30
    assert _key(store).running == 30 == store.count_jobs()["running"]
    for job in claimed:
        store.finish(job.worker_id, [Outcome(job.id, job.attempt, Status.COMPLETE, result_json="1")])
    done = {j.id for j in _race(database_url, claimers=4, rounds=40, limit=10, ahead=10, finish=True)}
    assert len(done) == 170  # all the rest, the slots freed as jobs finished
    assert _key(store).running == 0 and _key(store).admitted == 200


def test_racing_claims_with_skewed_clocks_book_within_the_rate(store, database_url):
    """Claimers whose clocks differ by more than the burst's time, booking a horizon ahead:
    no job twice, the key counts every job claimed, and the moments the jobs may start (now,
    or the moment booked) never hold more than the burst plus the rate's share of any window
    (give or take the clocks' spread)."""
    spec = LimitSpec.build("api", rate="2000/s", burst=4)
    store.declare_limit(spec)
    store.enqueue([limited(f"s-{i}", API) for i in range(300)])
    interval, spread = 1.0 / 2000, 0.004
    moments: list[float] = []
    claimed: list[str] = []
    lock, start = threading.Lock(), threading.Event()

    def claim(skew: float) -> None:
        own = open_store(database_url)
        own._now = lambda: time.time() + skew
        start.wait()
        for _ in range(25):
            before = own._now()
            got = own.claim(f"w-{skew}", queues=None, limit=6, lease=30.0, horizon=0.05)
            with lock:
                claimed.extend(j.id for j in got)
                moments.extend(got.start_at.get(j.id, before) - skew for j in got)
        own.close()

    threads = [threading.Thread(target=claim, args=(skew,)) for skew in (-spread / 2, -0.001, 0.001, spread / 2)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    assert claimed and len(set(claimed)) == len(claimed)
    assert _key(store).admitted == len(claimed)
    moments.sort()
    for i in range(len(moments)):
        for j in range(i, min(len(moments), i + 200)):
            window = moments[j] - moments[i]
            assert j - i + 1 <= spec.burst + (window + 2 * spread) / interval + 1


# -- PostgreSQL's one-statement claim against the rule ---------------------------------------


@pytest.fixture
def pg_store(postgres_url):
    s = open_store(postgres_url)
    yield s, postgres_url
    s.close()


def _one_statement(store, n: int):
    return store._run(lambda cur: store._held_claim(cur, W1, None, n, 30.0, 0), what="claim")


def _reset(url: str, tat: float, running: int, admitted: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("job_events", "jobs", "fair_keys", "limit_keys"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute(
            "INSERT INTO limit_keys (limit_name, key, tat, running, admitted) VALUES ('api', '', %s, %s, %s)",
            (tat, running, admitted),
        )


def _row(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT tat, running, admitted FROM limit_keys").fetchone()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    per_second=st.floats(0.1, 5000),
    burst=st.integers(1, 200),
    concurrency=st.none() | st.integers(1, 300),
    running=st.integers(0, 150),
    admitted=st.integers(0, 10_000),
    backlog=st.floats(-50, 250),  # the key's GCRA time, in intervals from now
    n=st.integers(1, 40),
    ahead=st.integers(0, 40),
    reach=st.just(0.0) | st.floats(0, 60),  # the claim's horizon, in intervals
    near=st.booleans(),  # the key's time near the burst's edge, where booking ahead begins
)
def test_the_one_statement_claim_decides_by_the_admission_rule(
    pg_store, per_second, burst, concurrency, running, admitted, backlog, n, ahead, reach, near
):
    """``n`` jobs for free slots and ``ahead`` more to claim ahead, within a horizon: the
    statement claims the first jobs the rule admits, one by one as the full claim's walk admits
    them, books the key as the rule does, and gives each job booked ahead the moment the rule
    gives it; it may stop one job short of the rule (a margin for rounding)."""
    store, url = pg_store
    now = time.time()
    store._now = lambda: now  # one clock for both sides
    spec = LimitSpec.build("api", rate=f"{per_second}/s", burst=burst, concurrency=concurrency)
    store.declare_limit(spec)
    interval = 1.0 / spec.rate.per_second
    tat = now + (burst - 1 + backlog / 10 if near else backlog) * interval
    horizon = min(reach * interval, MAX_HORIZON)
    _reset(url, tat, running, admitted)
    ids = [f"j-{i:02}" for i in range(n + ahead)]
    store.enqueue([limited(job_id, API) for job_id in ids])

    def rule(count: int | None = None) -> tuple[int, Admission]:
        """How many jobs the rule admits in turn (up to ``count``), and its state after them."""
        admission = Admission({"api": spec}, now, horizon)
        admission.states[("api", "")] = [tat, 0.0, running, admitted, None]
        taken = 0
        for i, job_id in enumerate(ids[:count]):
            if not admission.admit(job_id, API, ahead=i >= n):
                break
            taken += 1
        return taken, admission

    jobs, ok, absent = store._run(lambda cur: store._held_claim(cur, W1, None, n, 30.0, ahead, horizon), what="claim")
    assert not absent
    admits, walked = rule()
    if jobs and len(jobs) == admits < n:
        # a job of the first n held back: looked at again when the rule looks again (its
        # rate's token, less half the horizon), never for a cap (a finishing job frees it)
        if walked.wake_at is None:
            assert jobs.wake_at is None
        else:
            assert jobs.wake_at == pytest.approx(
                walked.wake_at, abs=(admits + burst + 2) * math.ulp(max(now, tat)) + 1e-9
            )
    elif len(jobs) >= n or len(jobs) == admits == n + ahead:
        assert jobs.wake_at is None  # nothing held back among the jobs wanted now
    assert ok == bool(jobs)
    assert admits - 1 <= len(jobs) <= admits, "the statement admitted jobs the rule holds back"
    assert sorted(j.id for j in jobs) == ids[: len(jobs)]
    _, booked = rule(len(jobs))
    new_tat, new_running, new_admitted = _row(url)
    state = booked.states[("api", "")]
    assert (new_running, new_admitted) == (state[2], state[3])
    # (the rule adds the interval job by job, the statement once times their number)
    assert new_tat == pytest.approx(state[0], abs=(len(jobs) + 1) * math.ulp(max(now, tat)))
    # the same jobs booked ahead, for the same moments (the rule's own rounding aside)
    slack = (len(jobs) + burst + 2) * math.ulp(max(now, tat)) + 1e-9
    for job_id in {*jobs.start_at, *booked.start_at}:
        assert jobs.start_at.get(job_id, now) == pytest.approx(booked.start_at.get(job_id, now), abs=slack)
    started = {j.id: j.started_at for j in jobs}
    for job_id, at in jobs.start_at.items():
        assert started[job_id] == pytest.approx(at, abs=1e-6)
    assert store.count_jobs()["waiting"] == n + ahead - len(jobs)


@pytest.mark.parametrize(
    ("per_second", "burst", "concurrency", "horizon", "held_by"),
    [
        # horizons between two tokens: on a token's exact moment the statement may stop one
        # job short of the rule (its margin for rounding), and then looks again that much sooner
        (100.0, 2, None, 0.055, "rate"),  # 2 now and 5 booked ahead, the 8th held by the rate
        (200.0, 4, None, 0.0125, "rate"),
        (1000.0, 3, 200, 0.0105, "rate"),  # a cap that does not bind
        (1000.0, 50, 3, 0.05, "cap"),  # the cap holds the 4th: no moment to look again
    ],
)
def test_the_one_statement_claim_names_when_a_job_its_rate_holds_back_is_looked_at_again(
    pg_store, per_second, burst, concurrency, horizon, held_by
):
    """Claimed from a fresh key, a backlog leaves jobs held back among those wanted now: the
    statement says when to look again as the rule does, so a worker sleeps until the rate's
    next batch instead of claiming again at once."""
    store, url = pg_store
    now = time.time()
    store._now = lambda: now
    spec = LimitSpec.build("api", rate=f"{per_second}/s", burst=burst, concurrency=concurrency)
    store.declare_limit(spec)
    _reset(url, now, 0, 0)
    ids = [f"j-{i:02}" for i in range(20)]
    store.enqueue([limited(job_id, API) for job_id in ids])
    jobs, ok, _ = store._run(lambda cur: store._held_claim(cur, W1, None, 20, 30.0, 0, horizon), what="claim")
    rule = Admission({"api": spec}, now, horizon)
    rule.states[("api", "")] = [now, 0.0, 0, 0, None]
    admitted = 0
    while rule.admit(ids[admitted], API):
        admitted += 1
    assert ok and len(jobs) == admitted < 20
    if held_by == "cap":
        assert rule.wake_at is None and jobs.wake_at is None
    else:
        interval = 1.0 / per_second
        assert rule.wake_at == pytest.approx(now + interval * (admitted + 1 - burst) - horizon / 2, abs=1e-6)
        assert jobs.wake_at == pytest.approx(rule.wake_at, abs=1e-6)


def test_the_one_statement_claim_leaves_learned_paused_and_shared_keys_to_the_full_claim(pg_store):
    store, url = pg_store
    store.declare_limit(LimitSpec.build("api", rate="1000/s", burst=100, concurrency=100))
    _reset(url, 0.0, 0, 0)
    store.enqueue([limited(f"p-{i}", API) for i in range(5)])
    store.pause_limit("api", "", time.time() + 60, "429")
    jobs, ok, absent = _one_statement(store, 5)
    assert (jobs, ok, absent) == ([], False, False)
    store.resume_limit("api", "")
    store.enqueue([limited("t-0", API, tenant="acme")])  # a second fairness group
    assert _one_statement(store, 5) == ([], False, False)
    got = store.claim(W1, queues=None, limit=10, lease=30.0)  # the full claim takes them
    assert sorted(j.id for j in got) == ["p-0", "p-1", "p-2", "p-3", "p-4", "t-0"]
    assert _key(store).running == 6


def test_claims_of_held_jobs_for_some_queues_take_only_theirs_in_order(store):
    """A worker of some queues: jobs of one group holding a limit, in several queues, are
    claimed from its queues only, by priority then age, and booked once each."""
    store.declare_limit(LimitSpec.build("api", rate="1000/s", burst=100, concurrency=50))
    store.enqueue([limited(f"a-{i}", API, queue="a") for i in range(4)])
    store.enqueue([limited(f"b-{i}", API, queue="b", priority=i % 2) for i in range(4)])
    store.enqueue([limited(f"c-{i}", API, queue="c") for i in range(4)])
    got = [j.id for j in store.claim(W1, queues=["b", "a"], limit=3, lease=30.0, ahead=3)]
    # (a backend may take none ahead: SQLite has no round trip to save)
    assert len(got) >= 3 and got == ["b-1", "b-3", "a-0", "a-1", "a-2", "a-3"][: len(got)]
    assert _key(store).running == _key(store).admitted == len(got)
    assert [j.id for j in store.claim(W1, queues=["c"], limit=10, lease=30.0)] == [f"c-{i}" for i in range(4)]
    assert _key(store).running == len(got) + 4


def test_floodways_sessions_never_jit_compile_a_statement(postgres_url):
    """The planner's estimate for a claim over a large backlog can pass the server's
    ``jit_above_cost``, and compiling the statement then costs 10-15 ms a claim (ten times
    running it). Even on a server set to compile everything, floodway's sessions do not."""
    open_store(postgres_url).close()  # the schema
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if not conn.execute("SELECT pg_jit_available()").fetchone()[0]:
            pytest.skip("this PostgreSQL has no JIT")
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET jit_above_cost = 0')
    explain = "EXPLAIN (ANALYZE) SELECT count(*) FROM jobs"
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a session of its own compiles it
        assert any("JIT" in row[0] for row in conn.execute(explain))
    store = open_store(postgres_url)
    try:
        plan = store._run(lambda cur: [row[0] for row in cur.execute(explain).fetchall()], pipeline=False)
        assert plan and not any("JIT" in line for line in plan)
    finally:
        store.close()
