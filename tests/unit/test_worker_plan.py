"""The worker's claim planner and backoff (``floodway.worker_plan``), without a worker."""

from __future__ import annotations

from floodway.worker_plan import Backoff, plan_claim

BASE = dict(concurrency=10, prefetch=20, batch_size=20)


def test_an_idle_worker_claims_for_its_free_slots_and_nothing_ahead():
    plan = plan_claim(**BASE, running=0, prefetched=0, unflushed=0, found_work=False)
    assert (plan.free, plan.want, plan.extra, plan.ahead) == (10, 10, 0, False)


def test_draining_a_backlog_claims_ahead_in_the_same_claim():
    plan = plan_claim(**BASE, running=4, prefetched=0, unflushed=4, found_work=True)
    assert plan.want == 6 and plan.extra == 20 and not plan.ahead


def test_a_busy_worker_claims_ahead_while_its_prefetch_is_half_empty():
    plan = plan_claim(**BASE, running=10, prefetched=10, unflushed=20, found_work=True)
    assert plan.free == 0 and plan.ahead and plan.room == 10
    fuller = plan_claim(**BASE, running=10, prefetched=11, unflushed=21, found_work=True)
    assert not fuller.ahead  # topped up only once half is used
    quiet = plan_claim(**BASE, running=10, prefetched=0, unflushed=10, found_work=False)
    assert not quiet.ahead  # the last claim found nothing: no claim ahead


def test_unwritten_outcomes_hold_claims_back():
    # slots free, but a full batch beyond the slots and the prefetch is still unwritten
    plan = plan_claim(**BASE, running=0, prefetched=0, unflushed=50, found_work=True)
    assert plan.free == 0 and plan.room == 0 and not plan.ahead and plan.want == 0
    partly = plan_claim(**BASE, running=0, prefetched=0, unflushed=45, found_work=True)
    assert partly.free == 5 and partly.extra == 0


def test_a_claim_never_asks_for_more_than_a_batch():
    plan = plan_claim(concurrency=100, prefetch=0, batch_size=8, running=0, prefetched=0, unflushed=0, found_work=True)
    assert plan.want == 8 and plan.extra == 0 and not plan.ahead


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success():
    b = Backoff(first=0.2, cap=1.0)
    assert [b.failed() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.succeeded()
    assert b.failed() == 0.2


def test_a_supervised_task_goes_on_after_a_failure_and_waits_what_it_asks():
    import asyncio

    from floodway.worker_leases import LeaseKeeping

    calls: list[str] = []

    async def step() -> float | None:
        calls.append("run")
        if len(calls) == 2:
            raise RuntimeError("the store is away")
        return 0.001 if len(calls) % 2 else None

    async def main() -> None:
        task = asyncio.create_task(LeaseKeeping()._supervise("test", step, 0.002))
        while len(calls) < 6:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(asyncio.wait_for(main(), 5))
    assert len(calls) >= 6  # the failure on the second turn did not end the task


def test_what_is_left_is_counted_over_the_workers_queues_and_described():
    from types import SimpleNamespace

    from floodway.worker_plan import describe_left, still_to_do, work_left

    queues = [
        SimpleNamespace(name="a", counts={"retrying": 900, "complete": 100, "scheduled": 0}),
        SimpleNamespace(name="b", counts={"scheduled": 5, "waiting": 0}),
    ]
    left = work_left(queues, ["a"])
    assert left["retrying"] == 900 and left["scheduled"] == 0
    assert describe_left(left, 101.0, 100.0) == "900 retrying; the next is due in 1.0s"
    assert describe_left(work_left(queues, None), None, 0.0) == "900 retrying, 5 scheduled"
    assert describe_left(work_left([], None), None, 0.0) is None
    only_later = work_left(queues, ["b"])
    assert not still_to_do(only_later, 100.0 + 3600, 100.0, 60.0)  # scheduled beyond the horizon
    assert still_to_do(only_later, 100.0 + 30, 100.0, 60.0)
    assert still_to_do(left, None, 0.0, 0.0)  # a retry is work, however far away
