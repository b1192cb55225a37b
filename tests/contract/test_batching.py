"""Batching, on both backends: queued items run many to a call of a function that takes a list,
through a loopback bulk endpoint that really enforces its rate; each item keeps its own job,
result and retries; bad declarations are refused."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from floodway import Batch, ConfigError, Context, EnqueueError, Retry, Status

from ..destination import Destination


def statuses(app) -> Counter:
    return Counter(job.status for job in app.store.list_jobs(limit=100_000))


def test_items_run_many_to_a_call_and_each_keeps_its_own_result(app):
    calls: list[int] = []

    @app.task(batch=Batch(max_size=50))
    async def double(ctx: Context, items: list[dict]) -> list[int]:
        calls.append(len(items))
        assert len(ctx.batch) == len(items)
        return [item["n"] * 2 for item in items]

    handles = double.enqueue_many([{"n": n} for n in range(120)])
    app.worker(concurrency=4, burst=True).run()
    assert sum(calls) == 120 and max(calls) <= 50
    assert len(calls) <= 6  # 120 ready items at 50 a call, whatever order the claims took
    assert [h.result(timeout=0) for h in handles] == [n * 2 for n in range(120)]
    assert statuses(app) == Counter({Status.COMPLETE: 120})


def test_one_batch_never_mixes_keys_or_tenants(app):
    seen: list[set] = []

    @app.task(batch=Batch(max_size=100, key="{region}"))
    def sync(ctx: Context, items: list[dict]) -> None:
        seen.append({(ctx.tenant, item["region"]) for item in items})
        assert all(job.tenant == ctx.tenant for job in ctx.batch)

    for tenant in ("acme", "globex"):
        sync.enqueue_many([{"region": r} for r in ("eu", "us") for _ in range(10)], tenant=tenant)
    app.worker(concurrency=4, burst=True).run()
    assert all(len(kinds) == 1 for kinds in seen), seen
    assert statuses(app) == Counter({Status.COMPLETE: 40})


def test_only_the_items_marked_failed_are_retried_in_a_later_batch(app):
    runs: Counter = Counter()

    @app.task(batch=Batch(max_size=10), retry=Retry(attempts=3, initial=0.01, jitter=False))
    async def upsert(ctx: Context, items: list[dict]) -> list[str]:
        for index, item in enumerate(items):
            runs[item["id"]] += 1
            if item["id"] % 4 == 0 and runs[item["id"]] == 1:
                ctx.fail(index, "the API refused this record")
        return ["ok"] * len(items)

    handles = upsert.enqueue_many([{"id": i} for i in range(10)])
    app.worker(concurrency=2, burst=True).run()
    for _ in range(50):  # the retries are due a moment later
        if statuses(app).get(Status.RETRYING, 0) == 0:
            break
        app.worker(concurrency=2, burst=True).run()
    assert all(h.status() is Status.COMPLETE for h in handles)
    assert {i: runs[i] for i in range(10)} == {i: 2 if i % 4 == 0 else 1 for i in range(10)}
    assert [h.job().attempt for h in handles] == [2 if i % 4 == 0 else 1 for i in range(10)]


def test_a_batch_that_raises_fails_each_item_on_its_own_attempts(app):
    @app.task(batch=Batch(max_size=10), retry=0)
    async def broken(items: list[dict]) -> None:
        raise RuntimeError("bulk endpoint down")

    handles = broken.enqueue_many([{"i": i} for i in range(5)])
    app.worker(burst=True).run()
    for h in handles:
        job = h.job()
        assert job.status is Status.FAILED and "bulk endpoint down" in job.error["message"]


def test_a_result_of_the_wrong_length_fails_the_items(app):
    @app.task(batch=Batch(max_size=10), retry=0)
    async def short(items: list[dict]) -> list[int]:
        return [1]

    handles = short.enqueue_many([{"i": i} for i in range(3)])
    app.worker(burst=True).run()
    assert all("one result per item" in h.job().error["message"] for h in handles)


def test_max_wait_lets_a_batch_fill_from_items_enqueued_after_it_started(app):
    sizes: list[int] = []

    @app.task(batch=Batch(max_size=20, max_wait="1.5s"))
    async def gather(items: list[dict]) -> None:
        sizes.append(len(items))

    async def main() -> None:
        worker = app.worker(concurrency=2)
        running = asyncio.create_task(worker.run_async())
        gather.enqueue({"i": 0})
        await asyncio.sleep(0.4)  # the first item's batch is forming: it waits for more
        await asyncio.to_thread(gather.enqueue_many, [{"i": i} for i in range(1, 8)])
        for _ in range(200):
            if sum(sizes) == 8:
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await running

    asyncio.run(main())
    assert sizes == [8]


def test_a_bulk_endpoint_gets_every_record_once_within_its_limits(app):
    """The endpoint takes at most 20 records a call and 5 calls a second; the task's limit
    says 5/s, charged once per call: every record arrives once, no call is refused."""
    with Destination(rate=5, burst=1, style="leaky") as api:
        api.bulk_max = 20
        app.limit("bulk", rate="5/s")

        @app.task(batch=Batch(max_size=20), limits=["bulk"])
        async def send(ctx: Context, items: list[dict]) -> list[bool]:
            async with ctx.http(api.url, limit="bulk") as http:
                response = await http.post("/bulk/orders", json={"records": items})
                response.raise_for_status()
                return [r.get("ok", False) for r in response.json()["results"]]

        handles = send.enqueue_many([{"id": i} for i in range(100)])
        app.worker(concurrency=4, burst=True).run()
        assert sorted(api.bulk_ids) == list(range(100))
        assert api.rejected_count == 0
        assert all(h.result(timeout=0) is True for h in handles)


def test_batches_charged_per_item_spend_one_token_per_item(app):
    app.limit("per_item", rate="200/s", burst=50)

    @app.task(batch=Batch(max_size=25, charge="item"), limits=["per_item"])
    async def each(items: list[dict]) -> None:
        return None

    each.enqueue_many([{"i": i} for i in range(100)])
    app.worker(burst=True).run()
    info = {i.spec.name: i for i in app.store.list_limits()}["per_item"]
    assert sum(k.admitted for k in info.keys) + 0 >= 4  # each call's lead was admitted
    assert statuses(app) == Counter({Status.COMPLETE: 100})


# -- bad declarations -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Batch(max_size=0), "max_size"),
        (lambda: Batch(max_size=1.5), "max_size"),
        (lambda: Batch(max_wait="-1s"), "max_wait"),
        (lambda: Batch(max_wait="later"), "max_wait"),
        (lambda: Batch(key="{oops"), "malformed"),
        (lambda: Batch(charge="byte"), "charge"),
    ],
)
def test_bad_batch_options_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_batch_task_must_take_a_list(app):
    with pytest.raises(ConfigError, match="one argument"):

        @app.task(batch=Batch())
        async def two(a: int, b: int) -> None:
            return None

    with pytest.raises(ConfigError, match="annotated int"):

        @app.task(batch=Batch())
        async def scalar(ctx: Context, item: int) -> None:
            return None

    with pytest.raises(ConfigError, match="batch must be a floodway.Batch"):

        @app.task(batch={"max_size": 10})  # type: ignore[arg-type]
        async def loose(items: list) -> None:
            return None

    assert not {"two", "scalar", "loose"} & set(app.tasks)


def test_an_item_without_its_batch_key_is_refused_at_enqueue(app):
    @app.task(batch=Batch(key="{account}"))
    async def keyed(items: list[dict]) -> None:
        return None

    with pytest.raises(EnqueueError, match="batch key"):
        keyed.enqueue_many([{"account": 1}, {"other": 2}])
    assert sum(app.store.count_jobs().values()) == 0


def test_a_retried_batch_never_resends_an_item_ctx_once_recorded(app):
    sent: Counter = Counter()
    crashed = []

    @app.task(batch=Batch(max_size=10), retry=Retry(attempts=2, initial=0.01, jitter=False))
    async def push(ctx: Context, items: list[dict]) -> None:
        for item in items:
            await ctx.once(f"item:{item['id']}", lambda i=item["id"]: sent.update([i]))
            if item["id"] == 3 and not crashed:
                crashed.append(True)
                raise RuntimeError("connection reset after the third item")

    handles = push.enqueue_many([{"id": i} for i in range(6)])
    for _ in range(50):
        app.worker(burst=True).run()
        if all(h.status() is Status.COMPLETE for h in handles):
            break
    assert all(h.status() is Status.COMPLETE for h in handles)
    assert crashed and sent == Counter(range(6))  # each item sent once, across both batches
