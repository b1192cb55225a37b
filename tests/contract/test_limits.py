"""Limits: parsing, GCRA arithmetic (property-tested), key templates, and the store's side of
admission, pauses, concurrency and fairness (run against every backend)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floodway import concurrency_for
from floodway.errors import ConfigError, EnqueueError
from floodway.jobs import Status
from floodway.limits import MAX_HORIZON, LimitSpec, Rate, gcra, gcra_within, remaining, resolve_key
from floodway.quota import HUSH, HUSH_AFTER, Observation
from floodway.store import Outcome
from floodway.store.base import HOLD_REASON, WINDOW_REASON

from .test_store_contract import W1, W2, claim_all, new_job

# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, count, period",
    [
        ("50/s", 50, 1),
        ("100/min", 100, 60),
        ("10/10s", 10, 10),
        ("5 / 2m", 5, 120),
        ("1/h", 1, 3600),
        ("0.5/s", 0.5, 1),
        ("1000/d", 1000, 86400),
        ("3/500ms", 3, 0.5),
    ],
)
def test_rates(text, count, period):
    rate = Rate.parse(text)
    assert (rate.count, rate.period) == (count, period)


@pytest.mark.parametrize("text", ["fast", "50", "/s", "50/", "-5/s", "0/s", "5/0s", "5/fortnight", "", None, 5])
def test_bad_rates(text):
    with pytest.raises(ConfigError):
        Rate.parse(text)


@given(st.text(max_size=20))
def test_rate_parser_never_crashes(text):
    try:
        assert Rate.parse(text).per_second > 0
    except ConfigError:
        pass


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give a rate, a concurrency"),
        ({"rate": "5/s", "burst": 0}, "burst"),
        ({"rate": "5/s", "burst": 1.5}, "burst"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"rate": "5/s", "key": "{tenant"}, "malformed"),
        ({"rate": "5/s", "key": "{}"}, "invalid field"),
        ({"rate": "5/s", "key": "{a-b}"}, "invalid field"),
        ({"rate": "0/s", "adaptive": True}, "at least some requests"),
        ({"adaptive": True, "floor": "10/s", "ceiling": "5/s"}, "ceiling 5/s is below the floor 10/s"),
        ({"rate": "5/s", "floor": "10/s"}, "floor 10/s is above the declared rate"),
        ({"adaptive": "yes"}, "adaptive must be True or False"),
        ({"adaptive": True, "ceiling": "lots"}, "ceiling: cannot parse"),
    ],
)
def test_bad_limit_specs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LimitSpec.build("x", **kwargs)


def test_bad_limit_name():
    with pytest.raises(ConfigError):
        LimitSpec.build("", rate="1/s")


def test_concurrency_for_is_rate_times_job_time():
    assert concurrency_for(rate="5/s", avg="500ms") == 2
    assert concurrency_for(rate="5/s", avg="1s") == 5
    assert concurrency_for(rate="1/min", avg="1s") == 1
    assert concurrency_for(rate="100/s", avg="250ms") == 25
    with pytest.raises(ConfigError):
        concurrency_for(rate="5/s", avg="0s")


def test_key_templates():
    assert resolve_key(None, {}, None) == ""
    assert resolve_key("{tenant}", {"tenant": "acme"}, None) == "acme"
    assert resolve_key("{tenant}", {}, "from-option") == "from-option"
    assert resolve_key("{account.id}:{region}", {"account": {"id": 42}, "region": "eu"}, None) == "42:eu"
    with pytest.raises(ConfigError, match="no value"):
        resolve_key("{account.id}", {"account": {}}, None)
    with pytest.raises(ConfigError, match="scalar"):
        resolve_key("{account}", {"account": {"id": 1}}, None)


# -- GCRA --------------------------------------------------------------------------------------


def simulate(rate: Rate, burst: int, arrivals: list[float]) -> list[float]:
    tat, admitted = 0.0, []
    for t in arrivals:
        ok, new_tat, retry_at = gcra(tat, t, rate, burst)
        if ok:
            tat = new_tat
            admitted.append(t)
        else:
            assert retry_at > t
    return admitted


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=50),
    period=st.sampled_from([0.5, 1.0, 10.0]),
    burst=st.integers(min_value=1, max_value=10),
    gaps=st.lists(st.floats(min_value=0, max_value=0.2), min_size=1, max_size=300),
    window=st.floats(min_value=0.1, max_value=5),
)
def test_gcra_never_admits_more_than_burst_plus_rate_in_any_window(count, period, burst, gaps, window):
    rate = Rate(count, period)
    arrivals, t = [], 1000.0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    admitted = simulate(rate, burst, arrivals)
    bound = burst + window / rate.interval + 1e-6
    j = 0
    for i, start in enumerate(admitted):
        while j < len(admitted) and admitted[j] < start + window:
            j += 1
        assert j - i <= bound


def booked(rate: Rate, burst: int, horizon: float, claims: list[float], per_claim: int) -> list[tuple[float, float]]:
    """(claim time, booked moment) of each request a claimer booking ``horizon`` ahead takes,
    at most ``per_claim`` requests at each of ``claims``."""
    tat, out = 0.0, []
    for t in claims:
        for _ in range(per_claim):
            ok, new_tat, at = gcra_within(tat, t, rate, burst, horizon)
            if not ok:
                assert at > t + horizon
                break
            assert t <= at <= t + horizon + 1e-9
            tat = new_tat
            out.append((t, at))
    return out


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=2000),
    burst=st.integers(min_value=1, max_value=10),
    horizon=st.floats(min_value=0, max_value=MAX_HORIZON),
    gaps=st.lists(st.floats(min_value=0, max_value=0.2), min_size=1, max_size=200),
    per_claim=st.integers(min_value=1, max_value=100),
    window=st.floats(min_value=0.01, max_value=3),
)
def test_booked_moments_never_exceed_burst_plus_rate_in_any_window(count, burst, horizon, gaps, per_claim, window):
    # a binding limit claimed in batches booked ahead: the requests, made at their booked
    # moments, keep GCRA's bound in every window, whatever the claims' timing and size
    rate = Rate(count, 1.0)
    claims, t = [], 1000.0
    for gap in gaps:
        t += gap
        claims.append(t)
    moments = sorted(at for _, at in booked(rate, burst, horizon, claims, per_claim))
    bound = burst + window / rate.interval + 1e-6
    j = 0
    for i, start in enumerate(moments):
        while j < len(moments) and moments[j] < start + window:
            j += 1
        assert j - i <= bound


@pytest.mark.parametrize("rate_per_s", [200, 500, 1000])
def test_claims_every_half_horizon_lose_no_tokens_to_their_gaps(rate_per_s):
    # claims 25 ms apart, a burst of 5: unbooked, a claim takes at most 5 tokens, so 200/s at
    # most whatever the rate; booking 50 ms ahead, the limit's whole rate is taken
    rate, horizon, seconds = Rate(rate_per_s, 1.0), 0.05, 5.0
    claims = [1000.0 + 0.025 * i for i in range(int(seconds / 0.025))]
    plain = booked(rate, 5, 0.0, claims, 10_000)
    ahead = booked(rate, 5, horizon, claims, 10_000)
    assert len(plain) <= 5 * len(claims)
    assert len(ahead) >= rate_per_s * seconds  # every token of the claims' span, and the horizon's
    assert len(ahead) <= rate_per_s * (seconds + horizon) + 5


def test_gcra_admits_exactly_burst_at_once_then_the_rate():
    rate = Rate.parse("10/s")
    assert len(simulate(rate, 5, [100.0] * 50)) == 5
    steady = simulate(rate, 1, [100 + i * 0.01 for i in range(1000)])  # 10 s of arrivals at 100/s
    assert 99 <= len(steady) <= 101


def test_gcra_retry_at_is_exact():
    rate = Rate.parse("2/s")
    ok, tat, _ = gcra(0.0, 10.0, rate, 1)
    assert ok
    ok, _, retry_at = gcra(tat, 10.1, rate, 1)
    assert not ok and retry_at == pytest.approx(10.5)
    assert gcra(tat, retry_at, rate, 1)[0]


def test_remaining():
    rate = Rate.parse("10/s")
    assert remaining(0.0, 100.0, rate, 5) == 5
    _, tat, _ = gcra(0.0, 100.0, rate, 5)
    assert remaining(tat, 100.0, rate, 5) == 4


# -- the store's side --------------------------------------------------------------------------


def limited(job_id, limits, **kw):
    """A job holding ``limits``, grouped for fairness the way App.enqueue groups it."""
    job = new_job(job_id, **kw)
    job.limits_json = json.dumps(limits) if limits else None
    tenant = kw.get("tenant")
    job.fair_key = "|".join(([f"tenant={tenant}"] if tenant else []) + [f"{n}={k}" for n, k in limits])
    return job


def test_declare_update_and_list(store):
    spec = LimitSpec.build("api", rate="10/s", burst=3)
    store.declare_limit(spec)
    [info] = store.list_limits()
    assert info.spec == spec and info.keys == []
    store.update_limit(LimitSpec.build("api", rate="2/s", burst=3))
    store.declare_limit(spec)  # the same declaration again (a worker restart) keeps the change
    assert store.list_limits()[0].spec.rate == Rate(2, 1)
    store.declare_limit(LimitSpec.build("api", rate="7/s"))  # a new declaration wins
    assert store.list_limits()[0].spec.rate == Rate(7, 1)


def test_a_claim_with_a_horizon_books_tokens_ahead_and_the_jobs_start_at_them(store):
    store.declare_limit(LimitSpec.build("api", rate="10/s", burst=1))
    store.enqueue([limited(f"h-{i}", [["api", ""]]) for i in range(20)])
    before = time.time()
    claimed = store.claim(W1, queues=None, limit=100, lease=30.0, horizon=0.45)
    after = time.time()
    # one token now, then one each 0.1 s within the horizon: 5 jobs in all
    assert len(claimed) == 5
    moments = sorted(job.started_at for job in claimed)
    assert moments[0] == pytest.approx(before, abs=after - before + 0.01)
    assert [b - a for a, b in zip(moments, moments[1:])] == pytest.approx([0.1] * 4, abs=1e-6)
    assert sorted(claimed.start_at.values()) == pytest.approx(moments[1:])
    # the store reads them as started at their moments; the rest wait, woken for half the horizon
    assert sorted(store.get_job(job.id).started_at for job in claimed) == pytest.approx(moments)
    assert store.count_jobs()["waiting"] == 15
    assert claimed.wake_at == pytest.approx(moments[-1] + 0.1 - 0.45 / 2, abs=1e-6)
    # booked tokens are spent: another claim now books nothing before them
    again = store.claim(W2, queues=None, limit=100, lease=30.0, horizon=0.45)
    assert len(again) == 0 and again.wake_at == pytest.approx(claimed.wake_at, abs=0.05)


@pytest.mark.parametrize("horizon", [-0.1, MAX_HORIZON + 0.5, "50ms", True, float("nan")])
def test_a_claims_horizon_must_be_seconds_within_the_maximum(store, horizon):
    with pytest.raises(ConfigError, match="horizon"):
        store.claim(W1, queues=None, limit=10, lease=30.0, horizon=horizon)


def test_claim_admits_at_the_rate_and_holds_the_rest_waiting(store):
    store.declare_limit(LimitSpec.build("api", rate="1/min", burst=2))
    store.enqueue([limited(f"r-{i}", [["api", ""]]) for i in range(5)])
    claimed = claim_all(store, limit=10)
    assert len(claimed) == 2
    assert claimed.wake_at is not None and claimed.wake_at > time.time() + 20
    assert store.count_jobs()["waiting"] == 3
    again = claim_all(store)
    assert len(again) == 0 and again.wake_at == pytest.approx(claimed.wake_at, abs=1)
    [info] = store.list_limits()
    assert info.keys[0].remaining == 0 and info.keys[0].admitted == 2


def test_no_token_is_spent_on_cancelled_jobs(store):
    store.declare_limit(LimitSpec.build("api", rate="1/min", burst=1))
    store.enqueue([limited("c-0", [["api", ""]]), limited("c-1", [["api", ""]])])
    store.cancel("c-0")
    assert [j.id for j in claim_all(store)] == ["c-1"]


def test_concurrency_limit_is_released_by_finish_and_rescue(store):
    store.declare_limit(LimitSpec.build("two", concurrency=2))
    store.enqueue([limited(f"k-{i}", [["two", ""]]) for i in range(5)])
    first = claim_all(store, W1, lease=0.05)
    assert len(first) == 2 and claim_all(store, W2) == []
    store.finish(W1, [Outcome(first[0].id, 1, Status.COMPLETE, result_json="1")])
    [third] = claim_all(store, W2, lease=30)
    time.sleep(0.1)
    assert store.rescue_expired() == [first[1].id]  # W1 died holding one
    assert len(claim_all(store, W2)) == 1
    assert [k.running for k in store.list_limits()[0].keys] == [2]
    assert third.id not in {first[0].id, first[1].id}


def test_pause_holds_only_that_key_and_resumes_at_the_rate(store):
    store.declare_limit(LimitSpec.build("tenant", rate="100/s", burst=10, key="{tenant}"))
    store.enqueue(
        [limited(f"a-{i}", [["tenant", "a"]], tenant="a") for i in range(5)]
        + [limited(f"b-{i}", [["tenant", "b"]], tenant="b") for i in range(5)]
    )
    until = store.pause_limit("tenant", "a", time.time() + 60, "429 from api")
    claimed = claim_all(store, limit=10)
    assert {j.id[0] for j in claimed} == {"b"}
    assert claimed.wake_at == pytest.approx(until, abs=0.01)
    key_a = [k for k in store.list_limits()[0].keys if k.key == "a"][0]
    assert key_a.paused_until == pytest.approx(until, abs=0.01) and key_a.pause_reason == "429 from api"
    assert key_a.rate_limited == 1
    # a shorter pause never cuts a longer one short
    assert store.pause_limit("tenant", "a", time.time() + 1, "again") == pytest.approx(until, abs=0.01)


def test_after_a_pause_jobs_come_back_at_the_rate_not_all_at_once(store):
    store.declare_limit(LimitSpec.build("api", rate="10/s", burst=5))
    store.enqueue([limited(f"p-{i}", [["api", ""]]) for i in range(20)])
    until = store.pause_limit("api", "", time.time() + 0.2, "429")
    deadline = time.time() + 10
    claimed = []
    while not claimed and time.time() < deadline:
        claimed = claim_all(store, limit=20)
        claimed_by = time.time()
        time.sleep(0.01)
    # no burst at the reset: one job, plus one per 100 ms that had passed since the reset when
    # the claim returned (a stalled machine may claim late; the burst of 5 never comes back)
    assert 1 <= len(claimed) <= 1 + int((claimed_by - until) * 10 + 0.01)


def test_refusals_in_a_row_pause_the_key_for_every_worker_without_counting_a_rate_limit(store):
    """A run of refusals after a trim holds every worker off for a moment: the store records
    it as a pause of the key (so every process's tokens booked into it are void), with its
    reason, and a claim waits for its end; it is not an exhausted quota's pause."""
    store.declare_limit(LimitSpec.build("api", rate="100/s", burst=5))
    store.enqueue([limited(f"h-{i}", [["api", ""]]) for i in range(5)])
    now = time.time()
    for i in range(20):  # two seconds accepted at the declared pace
        store.observe_limit("api", "", Observation(now=now - 2 + i / 10, accepted=10))
    _, changed = store.observe_limit("api", "", Observation(now=now, token_at=now - 0.01, throttled=1, wait=1.0))
    assert changed == "cut"
    for i in range(1, HUSH_AFTER + 1):
        store.acquire("api", "", 1, 1.0)  # each refused request took a token of its own
        _, changed = store.observe_limit(
            "api", "", Observation(now=now + i / 100, token_at=now + i / 100 - 0.005, throttled=1, wait=1.0)
        )
    assert changed == "pause"
    key = store.list_limits()[0].keys[0]
    assert key.paused_until == pytest.approx(now + HUSH_AFTER / 100 + HUSH, abs=0.05)
    assert key.pause_reason == HOLD_REASON and key.rate_limited == 0
    claimed = claim_all(store, limit=5)
    assert not claimed and claimed.wake_at >= key.paused_until - 0.01
    # a hold never shortens a longer pause, nor takes its reason
    until = store.pause_limit("api", "", time.time() + 60, "budget spent")
    now = time.time()
    store.observe_limit("api", "", Observation(now=now, token_at=now - 0.01, throttled=1, wait=1.0))
    changes = []
    for i in range(1, 2 * HUSH_AFTER + 2):
        store.acquire("api", "", 1, 1.0)
        changes.append(
            store.observe_limit(
                "api", "", Observation(now=now + i / 100, token_at=now + i / 100 - 0.005, throttled=1, wait=1.0)
            )[1]
        )
    assert {"pause", "fell"} & set(changes)  # (the rules asked for a hold: the store kept the longer pause)
    key = store.list_limits()[0].keys[0]
    assert key.paused_until == pytest.approx(until, abs=0.01) and key.pause_reason == "budget spent"


def test_a_fixed_window_that_ran_out_pauses_the_key_for_every_worker_until_its_reset(store):
    """A refusal that proves a fixed window (a wait of more than a second) holds every worker
    until the window's end: a pause of the key in the store, so the tokens every process
    booked into what is left of the window are void instead of each being sent and refused."""
    store.declare_limit(LimitSpec.build("api", adaptive=True))
    store.enqueue([limited(f"w-{i}", [["api", ""]]) for i in range(5)])
    now = time.time()
    store.observe_limit("api", "", Observation(now=now - 2.0, accepted=1))
    for i in range(10):
        store.observe_limit("api", "", Observation(now=now - 1.8 + i / 5, accepted=20))
    _, changed = store.observe_limit("api", "", Observation(now=now, token_at=now - 0.01, throttled=1, wait=2.0))
    assert changed == "window"
    key = store.list_limits()[0].keys[0]
    assert key.source == "window"
    assert key.paused_until == pytest.approx(now + 2.0, abs=0.05) and key.pause_reason == WINDOW_REASON
    claimed = claim_all(store, limit=5)
    assert not claimed and claimed.wake_at >= key.paused_until - 0.01


def test_acquire(store):
    store.declare_limit(LimitSpec.build("api", rate="1/min", burst=2))
    assert store.acquire("api", "")[0] and store.acquire("api", "")[0]
    ok, retry_at = store.acquire("api", "")
    assert not ok and retry_at > time.time() + 20
    store.declare_limit(LimitSpec.build("slots", concurrency=1))
    assert store.acquire("slots", "") == (True, pytest.approx(time.time(), abs=5))
    with pytest.raises(ConfigError):
        store.acquire("nope", "")
    with pytest.raises(ConfigError):
        store.pause_limit("nope", "", time.time(), "x")


def test_acquire_hammered_from_many_threads_is_exact(store, database_url):
    """64 threads, each with its own connection, race for 30 tokens: exactly 30 win."""
    from floodway.store import open_store

    store.declare_limit(LimitSpec.build("hot", rate="1/h", burst=30))
    wins, start = [], threading.Event()

    def grab():
        own = open_store(database_url)
        start.wait()
        for _ in range(3):
            if own.acquire("hot", "")[0]:
                wins.append(1)
        own.close()

    threads = [threading.Thread(target=grab) for _ in range(64)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    assert len(wins) == 30


def test_fairness_round_robin_between_groups(store):
    store.enqueue([limited(f"big-{i:04d}", [], tenant="big") for i in range(300)])
    store.enqueue([limited(f"small-{i}", [], tenant="small") for i in range(5)])
    claimed = [j.id for j in claim_all(store, limit=10)]
    assert sum(1 for c in claimed if c.startswith("small")) == 5


def test_a_paused_limit_holds_back_only_jobs_that_hold_it(store):
    store.declare_limit(LimitSpec.build("api", rate="100/s"))
    store.enqueue([limited(f"held-{i}", [["api", ""]]) for i in range(100)])
    store.enqueue([limited(f"free-{i}", []) for i in range(3)])
    store.pause_limit("api", "", time.time() + 60, "429")
    assert sorted(j.id for j in claim_all(store, limit=10)) == ["free-0", "free-1", "free-2"]


def _key(store, name):
    [info] = [limit for limit in store.list_limits() if limit.spec.name == name]
    return info.keys[0]


def test_a_prefetch_claim_takes_limited_jobs_only_while_their_limits_have_headroom(store):
    """A claim ahead (``limit=0``): plain jobs, and jobs whose limits keep headroom once they
    are admitted: at most half the concurrency cap and half the burst in use, no pause."""
    store.declare_limit(LimitSpec.build("api", concurrency=4))
    store.enqueue([limited(f"held-{i}", [["api", ""]]) for i in range(3)])
    store.enqueue([limited(f"free-{i}", []) for i in range(2)])
    store.enqueue([limited(f"acme-{i}", [], tenant="acme") for i in range(2)])
    ahead = store.claim(W1, queues=None, limit=0, lease=30.0, ahead=10)
    assert sorted(j.id for j in ahead) == ["acme-0", "acme-1", "free-0", "free-1", "held-0", "held-1"]
    assert all(j.status is Status.RUNNING for j in ahead)
    assert _key(store, "api").running == 2  # half the cap: the third stays for a claim for slots
    assert store.claim(W1, queues=None, limit=0, lease=30.0, ahead=10) == []
    # the limited jobs' fairness group is intact: an ordinary claim still finds the rest
    assert [j.id for j in claim_all(store)] == ["held-2"]


def test_a_prefetch_claim_spends_at_most_half_the_burst_and_never_a_paused_key(store):
    store.declare_limit(LimitSpec.build("api", rate="10/s", burst=4))
    store.declare_limit(LimitSpec.build("tight", rate="10/s"))  # burst 1: never any headroom
    store.declare_limit(LimitSpec.build("other", rate="1000/s", burst=100))
    store.enqueue([limited(f"api-{i}", [["api", ""]]) for i in range(5)])
    store.enqueue([limited(f"tight-{i}", [["tight", ""]]) for i in range(2)])
    store.enqueue([limited(f"other-{i}", [["other", "x"]]) for i in range(3)])
    store.pause_limit("other", "x", time.time() + 60, "429")
    ahead = store.claim(W1, queues=None, limit=0, lease=30.0, ahead=10)
    assert sorted(j.id for j in ahead) == ["api-0", "api-1"]
    # held back by nothing but the headroom rule: the rest are ready for claims for slots
    got = claim_all(store, limit=10)
    assert sorted(j.id for j in got) == ["api-2", "api-3", "tight-0"]


def test_claim_ahead_adds_jobs_in_the_same_claim(store):
    """``ahead``: more jobs in the same claim, for the worker to start later, after the first
    ``limit``. PostgreSQL takes them; SQLite takes none (it has no round trip to save)."""
    from floodway.store.postgres import PostgresStore

    pg = isinstance(store, PostgresStore)
    store.enqueue([limited(f"plain-{i}", []) for i in range(6)])
    got = store.claim(W1, queues=None, limit=2, lease=30.0, ahead=3)
    assert len(got) == (5 if pg else 2)
    assert [j.id for j in got] == [f"plain-{i}" for i in range(len(got))]  # in claim order
    assert all(store.get_job(j.id).status is Status.RUNNING for j in got)
    assert len(claim_all(store, limit=10)) == 6 - len(got)

    # jobs that hold a limit are in play: after the first ``limit``, limited ones only while
    # the limit keeps headroom (half its cap of 4: two in all)
    store.declare_limit(LimitSpec.build("api", concurrency=4))
    store.enqueue([limited(f"held-{i}", [["api", ""]]) for i in range(4)])
    got = store.claim(W1, queues=None, limit=1, lease=30.0, ahead=5)
    assert [j.id for j in got] == (["held-0", "held-1"] if pg else ["held-0"])


def test_plain_jobs_in_capped_and_paused_queues_are_claimed_by_their_rules(store):
    """Jobs with no tenant and no limit in a mix of queues: the uncapped ones, the capped
    queue's free slots, nothing from a paused queue — in one claim."""
    store.set_queue("capped", 1)
    store.enqueue([new_job(f"capped-{i}", queue="capped") for i in range(3)])
    store.enqueue([new_job(f"plain-{i}") for i in range(2)])
    store.enqueue([new_job(f"held-{i}", queue="stopped") for i in range(2)])
    store.set_paused(queue="stopped", paused=True)
    got = sorted(j.id for j in claim_all(store, limit=10))
    assert got == ["capped-0", "plain-0", "plain-1"]
    assert claim_all(store, limit=10) == []


def test_a_queue_cap_that_appears_between_claims_of_limited_jobs_holds(store):
    """PostgreSQL locks the limit rows of the first groups' jobs in its claim's prelude, ahead
    of any queue's lock, only when the last claim saw no capped queue; a cap that appears in
    between is still counted (its lock is only tried then: one busy elsewhere gives the queue
    no room for that claim)."""
    store.declare_limit(LimitSpec.build("api", concurrency=100))
    store.enqueue([limited(f"a-{i}", [["api", ""]]) for i in range(2)])
    assert [j.id for j in claim_all(store, limit=1)] == ["a-0"]
    store.set_queue("narrow", 2)
    store.enqueue([limited(f"n-{i}", [["api", ""]], queue="narrow") for i in range(4)])
    assert sorted(j.id for j in claim_all(store, limit=10)) == ["a-1", "n-0", "n-1"]
    assert claim_all(store, limit=10) == []
    assert _key(store, "api").running == 4


def test_plain_jobs_and_tenant_jobs_share_claims_round_robin(store):
    store.enqueue([new_job(f"plain-{i:02d}") for i in range(20)])
    store.enqueue([limited(f"acme-{i:02d}", [], tenant="acme") for i in range(20)])
    got = [j.id for j in claim_all(store, limit=6)]
    assert sum(1 for g in got if g.startswith("acme")) == 3, got


def test_round_robin_goes_on_across_claims(store):
    """A claim that serves several groups stamps them in the order it last served each, so the
    next claim starts with the group that has waited longest: the groups alternate across
    claim boundaries too, not only within one claim (equal stamps let the same group lead
    every claim)."""
    store.enqueue([limited(f"a-{i:02d}", [], tenant="a") for i in range(9)])
    store.enqueue([limited(f"b-{i:02d}", [], tenant="b") for i in range(9)])
    order = []
    for _ in range(4):
        got = claim_all(store, limit=3)
        assert len(got) == 3
        order += [j.tenant for j in got]
    assert order in (["a", "b"] * 6, ["b", "a"] * 6), order


def test_a_due_retry_is_claimed_with_the_ready_jobs(store):
    store.enqueue([new_job("later", run_at=time.time() + 0.2), new_job("now")])
    time.sleep(0.3)  # the scheduled job's run_at passes (no assertion on time itself)
    assert sorted(j.id for j in claim_all(store)) == ["later", "now"]


def test_fairness_alternates_between_tenants(app):
    order = []

    @app.task
    def work(n: int):
        order.append(n)

    app.enqueue_many(work, [{"n": i} for i in range(200)], tenant="big")
    app.enqueue_many(work, [{"n": 1000 + i} for i in range(5)], tenant="small")
    app.worker(concurrency=1, burst=True).run()
    small_positions = [i for i, n in enumerate(order) if n >= 1000]
    assert small_positions == [1, 3, 5, 7, 9] or max(small_positions) < 12


# -- the app's side ----------------------------------------------------------------------------


def test_app_limits_resolve_keys_at_enqueue(app):
    app.limit("per-account", rate="5/s", key="{account.id}")
    app.limit("global", concurrency=3)

    @app.task(limits=["per-account", "global"])
    def sync(account: dict): ...

    job = app.enqueue(sync, {"account": {"id": 7}}).job()
    assert job.limits == (("per-account", "7"), ("global", ""))
    assert job.fair_key == "per-account=7|global="
    assert (
        app.enqueue(sync, {"account": {"id": 7}}, tenant="acme").job().fair_key == "tenant=acme|per-account=7|global="
    )
    with pytest.raises(EnqueueError, match="no value for"):
        app.enqueue(sync, {"account": {}})
    with pytest.raises(EnqueueError, match="unknown limit 'nope'"):
        app.enqueue(sync, {"account": {"id": 1}}, limits=["nope"])
    with pytest.raises(EnqueueError, match="list of limit names"):
        app.enqueue(sync, {"account": {"id": 1}}, limits="global")
    assert sum(app.store.count_jobs().values()) == 2


def test_set_limit_at_run_time(app):
    app.limit("api", rate="50/s", burst=5)
    app.sync_limits()
    spec = app.set_limit("api", rate="20/s")
    assert spec.rate == Rate(20, 1) and spec.burst == 5
    assert app.store.list_limits()[0].spec.rate == Rate(20, 1)
    with pytest.raises(ConfigError):
        app.set_limit("api", rate="lots")
    with pytest.raises(ConfigError):
        app.set_limit("missing", rate="1/s")
    with pytest.raises(ConfigError):
        app.set_limit("api", colour="red")


def test_rate_limited_job_is_rescheduled_without_spending_an_attempt(app):
    from floodway import Context, RateLimited

    app.limit("api", rate="100/s")

    @app.task(retry=0)
    async def call(ctx: Context):
        if len(ctx.app.handle(ctx.job_id).events()) < 4:
            raise RateLimited(retry_after="30s", limit="api")
        return "done"

    h = app.enqueue(call)
    app.worker(burst=True).run()
    job = h.job()
    assert job.status is Status.SCHEDULED and job.attempt == 0
    assert job.run_at >= time.time() + 25
    assert job.throttled_seconds >= 29
    last = h.events()[-1]
    assert (last.from_status, last.to_status) == (Status.RUNNING, Status.SCHEDULED)
    [info] = app.store.list_limits()
    assert info.keys[0].paused_until is not None and info.keys[0].rate_limited == 1


def test_acquire_waits_in_place_when_short(app):
    from floodway import Context

    app.limit("slow", rate="20/s", burst=1)

    @app.task
    async def many(ctx: Context):
        for _ in range(5):
            await ctx.acquire("slow")
        return ctx.throttled_seconds

    h = app.enqueue(many)
    app.worker(burst=True).run()
    assert h.result(timeout=10) > 0.1  # 4 waits of ~50 ms (the first token came with admission)
    assert h.job().attempt == 1


def test_worker_warns_when_concurrency_cannot_reach_a_rate(app, caplog):
    import asyncio
    import logging

    app.limit("api", rate="100/s")

    @app.task(limits=["api"])
    async def slowish():
        await asyncio.sleep(0.05)

    app.enqueue_many(slowish, [{}] * 5)
    app.worker(concurrency=5, burst=True).run()  # learns the average duration (~50 ms)
    assert app.store.average_duration(["slowish"]) >= 0.05
    with caplog.at_level(logging.WARNING, logger="floodway.worker"):
        app.worker(concurrency=2, burst=True).run()
    assert any(
        "needs a concurrency of 5" in r.getMessage() or "needs a concurrency of" in r.getMessage()
        for r in caplog.records
    )


def test_resume_limit_ends_a_pause(store):
    store.declare_limit(LimitSpec.build("api", rate="10/s", key="{tenant}"))
    store.pause_limit("api", "a", time.time() + 3600, "429")
    store.pause_limit("api", "b", time.time() + 3600, "429")
    assert store.paused_until("api", "a") > time.time() + 3000
    assert store.resume_limit("api", "a") == 1
    assert store.paused_until("api", "a") == 0 and store.paused_until("api", "b") > 0
    assert store.resume_limit("api") == 1
    assert store.paused_until("nope", "x") == 0
    with pytest.raises(ConfigError):
        store.resume_limit("nope")


def test_a_pause_voids_tokens_taken_before_it(app):
    from floodway import Context

    app.limit("api", rate="1/min", burst=1)

    @app.task(limits=["api"], retry=0)
    async def call(ctx: Context):
        # a 429 elsewhere pauses the key after this job was admitted
        ctx.app.store.pause_limit("api", "", time.time() + 30, "429 seen by another job")
        await ctx.acquire("api")  # the admission token is void now: the job is rescheduled
        return "sent"

    h = app.enqueue(call)
    app.worker(burst=True, poll_interval="10ms").run()
    job = h.job()
    assert job.status is Status.SCHEDULED and job.attempt == 0 and job.run_at > time.time() + 20


def test_a_refusal_on_its_way_to_the_store_holds_the_process_and_voids_booked_tokens(app):
    """While one job's refusal is told to the store, the other jobs of its process send
    nothing on the key; after it, the token their admission booked (at the pace refused) is
    void, and each takes a fresh one from the store."""
    from floodway import Context

    app.limit("api", rate="1000/s", burst=10)
    seen: dict[str, object] = {}

    def admitted() -> int:
        return sum(k.admitted for info in app.store.list_limits() if info.spec.name == "api" for k in info.keys)

    @app.task(limits=["api"], retry=0)
    async def call(ctx: Context):
        released: list[bool] = []

        def release() -> None:
            released.append(True)
            ctx.app.pauses.release("api", "")

        ctx.app.pauses.hold("api", "")  # another job of this process was just refused
        asyncio.get_running_loop().call_later(0.2, release)
        before = admitted()
        await ctx.acquire("api")
        seen["released_first"] = bool(released)
        seen["fresh_tokens"] = admitted() - before

    h = app.enqueue(call)
    app.worker(burst=True, poll_interval="10ms").run()
    assert h.job().status is Status.COMPLETE
    assert seen == {"released_first": True, "fresh_tokens": 1}


def test_a_fresh_token_is_booked_in_line_while_claims_keep_booking_every_slot(app):
    """A job that needs a token of its own (its admission's was voided by a pause or a
    refusal, or it calls again) while claims keep booking every coming slot of the key gets
    one in line, the way a claim does, and waits for its moment; asking for a token free right
    now would lose to the claims round after round until they stopped."""
    from floodway import Context

    app.limit("api", rate="100/s", burst=1)
    stop = threading.Event()
    booked: list[float] = []

    def claims_keep_booking() -> None:  # a worker's claims: every slot up to 50 ms ahead
        deadline = time.time() + 3.0
        while not stop.is_set() and time.time() < deadline:
            ok, at = app.store.acquire("api", "", 1, 0.05)
            if ok:
                booked.append(at)
            else:
                time.sleep(0.002)
        stop.set()

    seen: dict[str, object] = {}

    @app.task(retry=0)
    async def call(ctx: Context):
        claims = threading.Thread(target=claims_keep_booking)
        claims.start()
        while len(booked) < 5:  # the key's line is full 50 ms ahead
            await asyncio.sleep(0.005)
        await ctx.acquire("api")
        seen["claims_still_booking"] = not stop.is_set()
        seen["waited"] = ctx.throttled_seconds
        stop.set()
        await asyncio.to_thread(claims.join)

    h = app.enqueue(call)
    app.worker(burst=True, poll_interval="10ms").run()
    assert h.job().status is Status.COMPLETE
    assert seen["claims_still_booking"] is True, seen
    # the booking is at most the store's horizon ahead (one second), not the claims' whole run
    assert 0 < seen["waited"] <= 1.0, seen
    # the claims' own bookings stayed one interval apart: the job's token took a slot in line
    assert all(b - a >= 0.01 - 1e-6 for a, b in zip(booked, booked[1:])), booked
