"""The claim planner's edge cases (``floodway.worker_plan.plan_claim``), beside the main cases in
test_worker_plan: a full worker, prefetch turned off, backpressure and the batch bound on each
part of a claim; and the backoffs the worker keeps with their own first step and cap."""

from __future__ import annotations

from floodway.worker_plan import Backoff, plan_claim

BASE = dict(concurrency=4, prefetch=8, batch_size=8)


def test_a_full_worker_waits():
    # every slot busy, the prefetch full and every claimed job unwritten: nothing to claim
    plan = plan_claim(**BASE, running=4, prefetched=8, unflushed=12, found_work=True)
    assert plan.free == 0 and plan.room == 0 and not plan.ahead and plan.want == 0


def test_an_idle_worker_that_last_found_nothing_claims_only_for_its_slots():
    plan = plan_claim(**BASE, running=1, prefetched=0, unflushed=1, found_work=False)
    assert (plan.free, plan.want, plan.extra, plan.ahead) == (3, 3, 0, False)


def test_prefetch_turned_off_never_claims_ahead():
    off = dict(BASE, prefetch=0)
    busy = plan_claim(**off, running=4, prefetched=0, unflushed=4, found_work=True)
    assert busy.free == 0 and busy.room == 0 and not busy.ahead
    draining = plan_claim(**off, running=0, prefetched=0, unflushed=0, found_work=True)
    assert draining.want == 4 and draining.extra == 0


def test_a_busy_worker_tops_up_its_prefetch_to_the_brim():
    plan = plan_claim(**BASE, running=4, prefetched=4, unflushed=8, found_work=True)
    assert plan.ahead and plan.room == 4  # half used: claim the other half


def test_backpressure_counts_finished_runs_whose_outcome_is_not_written():
    # 2 running, 18 finished and unwritten: the in-flight bound (4 + 8 + 8 - 20 = 0) holds back
    # the two free slots and anything ahead
    held = plan_claim(**BASE, running=2, prefetched=0, unflushed=20, found_work=True)
    assert held.free == 0 and held.want == 0 and held.extra == 0 and not held.ahead
    # some written: the bound frees one slot's worth, so nothing more ahead in the same claim
    eased = plan_claim(**BASE, running=2, prefetched=0, unflushed=19, found_work=True)
    assert eased.free == 1 and eased.want == 1 and eased.extra == 0


def test_the_batch_bounds_the_claim_ahead_and_the_slots_claim():
    plan = plan_claim(
        concurrency=50, prefetch=100, batch_size=10, running=50, prefetched=0, unflushed=50, found_work=True
    )
    assert plan.ahead and plan.room == 10
    idle = plan_claim(
        concurrency=50, prefetch=100, batch_size=10, running=0, prefetched=0, unflushed=0, found_work=True
    )
    assert idle.want == 10 and idle.extra == 10


def test_the_start_up_and_outcome_write_backoffs():
    start_up = Backoff(first=0.2, cap=2.0)
    assert [start_up.failed() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    writes = Backoff(first=0.05, cap=5.0)
    assert [writes.failed() for _ in range(4)] == [0.05, 0.1, 0.2, 0.4]
    writes.succeeded()
    assert writes.failed() == 0.05
    claims = Backoff()  # the claim loop's: the store unreachable (a restart, a failover)
    assert [claims.failed() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
