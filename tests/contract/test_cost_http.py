"""Cost-weighted limits settled from the response, on every backend: the store's ``settle``,
and ``ctx.http(limit=..., cost=estimate, actual_cost=...)`` draining jobs of variable cost
through a loopback GraphQL-style API that really enforces a bucket of points
(``tests/cost_destination.py``), in one process and in two worker processes on one store.

The destination answers a call that does not fit its bucket with a 429 and spends nothing, so
"no refusal" is the invariant that says the settled budget never overdrew it."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cost_destination import CostDestination  # noqa: E402
from proc_helpers import TIMEOUT, LoadedApps, wait_until  # noqa: E402

from floodway import ConfigError, Context, graphql_cost  # noqa: E402
from floodway.limits import LimitSpec  # noqa: E402

pytestmark = pytest.mark.timeout(180)

#: the destination's bucket and ours: 8 calls in flight may each cost up to 5 more than their
#: estimate (40), a learned slower pace may re-read the burst (20) as room: 20 + 40 + 20 < 100
SIZE, RESTORE = 100, 200
LIMIT = dict(rate=f"{RESTORE}/s", burst=20)
ESTIMATE = 5


def costs(n: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 10) for _ in range(n)]


def key_of(app_or_store, name: str, key: str = ""):
    store = getattr(app_or_store, "store", app_or_store)
    info = {i.spec.name: i for i in store.list_limits()}[name]
    return {k.key: k for k in info.keys}.get(key)


@pytest.fixture
def dest():
    d = CostDestination(size=SIZE, restore=RESTORE).start()
    yield d
    d.stop()


# -- the store -------------------------------------------------------------------------------


def test_settle_credits_and_debits_the_key_for_every_worker(store):
    store.declare_limit(LimitSpec.build("shop", rate="1/min", burst=10))  # 6 s a token: no leak here
    assert store.acquire("shop", "", 10)[0]
    assert not store.acquire("shop", "", 1)[0]
    store.settle("shop", "", -4)  # the call cost 6, not 10
    assert store.acquire("shop", "", 4)[0]
    assert not store.acquire("shop", "", 1)[0]
    store.settle("shop", "", 20)  # ... and the next one 24 more than charged: a debt
    ok, retry_at = store.acquire("shop", "", 1)
    assert not ok and retry_at > time.time() + 20 * 6 - 30
    assert key_of(store, "shop").admitted == 10 + 4 - 4 + 20
    store.settle("shop", "", -10_000)  # a credit never reaches before now: only the burst is back
    assert store.acquire("shop", "", 10)[0] and not store.acquire("shop", "", 1)[0]


def test_settle_leaves_unused_keys_and_limits_without_a_rate_alone(store):
    store.declare_limit(LimitSpec.build("shop", rate="1/min", burst=10))
    store.declare_limit(LimitSpec.build("slots", concurrency=2))
    store.settle("shop", "never-used", 5)
    assert store.acquire("shop", "never-used", 10)[0]
    store.acquire("slots", "")
    store.settle("slots", "", 5)
    with pytest.raises(ConfigError, match="unknown limit"):
        store.settle("nope", "", 1)


# -- one process, both clients ----------------------------------------------------------------


def test_jobs_of_variable_cost_drain_with_no_refusal(app, dest):
    app.limit("shop", **LIMIT)

    @app.task(retry=0)
    async def query(ctx: Context, n: int, cost: int):
        async with ctx.http(dest.url, limit="shop", cost=ESTIMATE, actual_cost=graphql_cost) as client:
            response = await client.post("/graphql", json={"id": n, "cost": cost})
        assert response.status_code == 200, response.text
        return response.json()["extensions"]["cost"]["actualQueryCost"]

    spent = costs(80)
    handles = app.enqueue_many(query, [{"n": i, "cost": c} for i, c in enumerate(spent)])
    app.worker(burst=True, concurrency=8).run()
    assert [h.result(timeout=10) for h in handles] == spent
    assert dest.rejected_count == 0, f"{dest.rejected_count} calls were THROTTLED"
    assert dest.points_accepted == sum(spent) > 3 * SIZE  # the bucket was drained several times over
    # every call charged its estimate and settled the rest: the key counts what was really spent
    info = key_of(app, "shop")
    assert info.admitted == sum(spent)
    assert info.source == "usage"  # the stated bucket fed the learned pace


def test_a_sync_client_settles_and_a_request_may_carry_its_own_estimate(app, dest):
    app.limit("shop", **LIMIT)

    def actual(response):
        return response.json()["extensions"]["cost"]["actualQueryCost"]

    @app.task(retry=0)
    def query(ctx: Context, n: int, cost: int):
        with ctx.http_sync(dest.url, limit="shop", cost=ESTIMATE, actual_cost=actual) as client:
            # a query known to be big says so: charged 10 up front, settled all the same
            extensions = {"floodway_cost": 10} if cost > 8 else {}
            response = client.post("/graphql", json={"id": n, "cost": cost}, extensions=extensions)
        assert response.status_code == 200, response.text
        return cost

    spent = costs(60, seed=11)
    app.enqueue_many(query, [{"n": i, "cost": c} for i, c in enumerate(spent)])
    app.worker(burst=True, concurrency=8).run()
    assert app.store.count_jobs()["complete"] == len(spent)
    assert dest.rejected_count == 0
    assert key_of(app, "shop").admitted == sum(spent)


def test_without_settlement_the_same_drain_is_throttled(app, dest):
    """The control: charged the estimate only, the destination refuses (the test above proves
    something)."""
    app.limit("shop", **LIMIT)

    @app.task(retry=0)
    async def query(ctx: Context, n: int, cost: int):
        async with ctx.http(dest.url, limit="shop", cost=2) as client:
            response = await client.post("/graphql", json={"id": n, "cost": cost})
        return response.status_code

    app.enqueue_many(query, [{"n": i, "cost": 10} for i in range(40)])
    # until empty, not burst: the refused jobs may be rescheduled seconds ahead, and they count
    app.worker(until_empty=True, concurrency=8).run()
    assert app.store.count_jobs()["complete"] == 40
    assert dest.rejected_count > 0


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cost": 21}, "a cost of 21 can never pass a burst of 20"),
        ({"cost": 0}, "cost must be an int >= 1"),
        ({"cost": "5"}, "cost must be an int >= 1"),
        ({"cost": 2.5}, "cost must be an int >= 1"),
        ({"actual_cost": "extensions.cost"}, "actual_cost must be a function"),
        ({"limit": None, "cost": 3}, "need a limit"),
    ],
)
def test_a_bad_estimate_fails_the_job_when_the_client_is_made_and_sends_nothing(app, dest, options, message):
    app.limit("shop", **LIMIT)

    @app.task(retry=0)
    async def query(ctx: Context):
        async with ctx.http(dest.url, **{"limit": "shop", **options}) as client:
            await client.post("/graphql", json={"cost": 1})

    handle = app.enqueue(query)
    app.worker(burst=True).run()
    job = handle.job()
    assert job.status.value == "failed" and job.error["type"] == "ConfigError"
    assert message in job.error["message"]
    assert dest.records() == []


@pytest.mark.parametrize("reading", [-3, float("nan"), "seven", 10**9])
def test_an_impossible_actual_cost_is_ignored_and_logged_once(app, dest, reading, caplog):
    name = f"shop-{uuid.uuid4().hex[:8]}"  # a warning is given once per limit and process
    app.limit(name, **LIMIT)

    @app.task(retry=0)
    async def query(ctx: Context, n: int):
        async with ctx.http(dest.url, limit=name, cost=ESTIMATE, actual_cost=lambda r: reading) as client:
            response = await client.post("/graphql", json={"id": n, "cost": 1})
        return response.status_code

    with caplog.at_level(logging.WARNING, logger="floodway.cost"):
        handles = app.enqueue_many(query, [{"n": i} for i in range(6)])
        app.worker(burst=True, concurrency=3).run()
    assert [h.result(timeout=10) for h in handles] == [200] * 6
    assert key_of(app, name).admitted == 6 * ESTIMATE  # nothing settled
    warnings = [r for r in caplog.records if r.name == "floodway.cost"]
    assert len(warnings) == 1 and name in warnings[0].getMessage()


# -- two worker processes on one store ----------------------------------------------------------

APP = """
app.close()
app = floodway.App({url!r})
app.limit("shop", rate="{rate}/s", burst={burst})


@app.task(retry=0)
async def query(ctx, n: int, cost: int):
    async with ctx.http({dest!r}, limit="shop", cost={estimate}, actual_cost=floodway.graphql_cost) as client:
        response = await client.post("/graphql", json={{"id": n, "cost": cost}})
    if response.status_code != 200:
        raise RuntimeError(response.text)
    return cost
"""


def test_two_worker_processes_settle_one_shared_budget(tmp_path, database_url, workers, dest):
    apps = LoadedApps(tmp_path)
    try:
        source = APP.format(url=database_url, rate=RESTORE, burst=LIMIT["burst"], dest=dest.url, estimate=ESTIMATE)
        name, mod = apps.load(source)
        spent = costs(120, seed=3)
        mod.app.enqueue_many("query", [{"n": i, "cost": c} for i, c in enumerate(spent)])
        for i in range(2):
            workers.start(name, "--concurrency", "4", "--poll-interval", "50ms", label=f"w{i}")

        def finished():
            counts = mod.app.store.count_jobs()
            return counts if counts["complete"] + counts["failed"] >= len(spent) else None

        counts = wait_until(
            finished,
            lambda: f"the drain; now {mod.app.store.count_jobs()}",
            timeout=TIMEOUT,
            interval=0.1,
            workers=workers,
        )
        assert counts["complete"] == len(spent), workers.logs()
        assert dest.rejected_count == 0, f"{dest.rejected_count} calls were THROTTLED"
        assert dest.points_accepted == sum(spent)
        assert key_of(mod.app, "shop").admitted == sum(spent)
        ran_by = {job.worker_id for job in mod.app.store.list_jobs(limit=1000)}
        assert len(ran_by) == 2, ran_by
    finally:
        apps.close()


def test_a_job_admitted_by_the_limit_spends_its_admission_token_as_the_first_of_a_cost(app):
    app.limit("shop", rate="1/min", burst=20)  # 6 s a token: nothing leaks during the test

    @app.task(retry=0, limits=["shop"])
    async def big(ctx: Context):
        await ctx.acquire("shop", cost=5)

    app.enqueue_many(big, [{} for _ in range(3)])
    app.worker(burst=True).run()
    assert app.store.count_jobs()["complete"] == 3
    assert key_of(app, "shop").admitted == 3 * 5  # not 3 x (1 + 5)
