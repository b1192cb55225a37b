"""Resumable work: cursors, the once-ledger, budgets, pages, segments, pauses."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from floodway import Context, Status
from floodway.errors import ConfigError, EnqueueError, LeaseLost
from floodway.resumable import idempotency_key, split_segments

from ..conftest import running_worker, wait_for


def run_burst(app, **options):
    options.setdefault("poll_interval", "10ms")
    app.worker(burst=True, **options).run()


def test_checkpoint_is_durable_and_a_retry_resumes_from_it(app):
    seen = []

    @app.task(retry=2)
    async def walk(ctx: Context):
        start = ctx.cursor or 0
        for n in range(start, 10):
            seen.append((ctx.attempt, n))
            if n == 4 and ctx.attempt == 1:
                raise ConnectionError("dropped")
            await ctx.checkpoint(n + 1)
        return ctx.cursor

    h = app.enqueue(walk, retry=2)
    with running_worker(app):
        assert h.result(timeout=20) == 10
    assert seen == [(1, n) for n in range(5)] + [(2, n) for n in range(4, 10)]
    assert app.store.load_state(f"job:{h.id}").cursor is None  # purged on completion


def test_once_runs_each_key_once_across_reruns(app):
    calls = []

    @app.task(retry=1, retain_state=True)
    async def send(ctx: Context, items: list):
        results = []
        for item in items:
            results.append(await ctx.once(item, lambda i=item: calls.append(i) or {"sent": i}))
            if item == 3 and ctx.attempt == 1:
                raise RuntimeError("crash after 3")
        return results

    h = app.enqueue(send, {"items": [1, 2, 3, 4]}, retry=Retry1())
    with running_worker(app):
        assert h.result(timeout=20) == [{"sent": i} for i in (1, 2, 3, 4)]
    assert calls == [1, 2, 3, 4]  # the rerun skipped 1, 2 and 3 and returned their results
    ledger = app.store.load_ledger(f"job:{h.id}")
    assert set(ledger) == {"1", "2", "3", "4"}  # retained for audit


def Retry1():
    from floodway import Retry

    return Retry(attempts=1, initial="10ms")


def test_checkpoint_clears_the_ledger_and_int_and_str_keys_differ(app):
    @app.task
    async def pages(ctx: Context):
        await ctx.once(5, lambda: "int")
        await ctx.once("5", lambda: "str")
        before = dict(ctx.app.store.load_ledger(ctx.state_key))
        await ctx.checkpoint({"page": 1})
        after = ctx.app.store.load_ledger(ctx.state_key)
        return [sorted(before), after, ctx.cursor]

    h = app.enqueue(pages)
    run_burst(app)
    assert h.result(timeout=5) == [['"5"', "5"], {}, {"page": 1}]


def test_once_replays_an_httpx_response_and_error_responses_are_not_recorded(app):
    @app.task
    async def call(ctx: Context):
        ok = await ctx.once("a", lambda: httpx.Response(201, json={"id": 1}))
        again = await ctx.once("a", lambda: httpx.Response(500))
        with pytest.raises(httpx.HTTPStatusError):
            await ctx.once("b", lambda: httpx.Response(503, request=httpx.Request("POST", "http://x/")))
        ledger = ctx.app.store.load_ledger(ctx.state_key)
        return [ok.status_code, again.status_code, again.json(), sorted(ledger)]

    h = app.enqueue(call)
    run_burst(app)
    assert h.result(timeout=5) == [201, 201, {"id": 1}, ['"a"']]


def test_idempotency_keys_are_stable_and_distinct():
    assert idempotency_key("job:1", '"a"') == idempotency_key("job:1", '"a"')
    assert idempotency_key("job:1", '"a"') != idempotency_key("job:2", '"a"')
    assert idempotency_key("job:1", '"a"') != idempotency_key("job:1", '"b"')


def test_shared_state_carries_the_cursor_to_the_next_job(app):
    @app.task(state="orders:{tenant}")
    async def sync(ctx: Context, tenant: str, upto: int):
        start = ctx.cursor or 0
        await ctx.checkpoint(upto)
        return [ctx.state_key, start]

    first = app.enqueue(sync, {"tenant": "acme", "upto": 100})
    run_burst(app)
    second = app.enqueue(sync, {"tenant": "acme", "upto": 250})
    other = app.enqueue(sync, {"tenant": "globex", "upto": 7})
    run_burst(app)
    assert first.result(timeout=5) == ["orders:acme", 0]
    assert second.result(timeout=5) == ["orders:acme", 100]  # continued where the last run stopped
    assert other.result(timeout=5) == ["orders:globex", 0]
    assert app.store.load_state("orders:acme").cursor == 250  # shared state is not purged


def test_cursors_of_many_keys_are_read_at_once(app):
    @app.task(retain_state=True)
    async def walk(ctx: Context, upto: int):
        await ctx.checkpoint({"at": upto})

    handles = [app.enqueue(walk, {"upto": n}) for n in (3, 5)]
    run_burst(app)
    keys = [f"job:{h.id}" for h in handles]
    assert app.store.load_cursors(keys + ["job:nobody"]) == {keys[0]: {"at": 3}, keys[1]: {"at": 5}}
    assert app.store.load_cursors([]) == {}


def test_shared_state_template_needs_its_fields(app):
    @app.task(state="orders:{region}")
    async def regional(ctx: Context, **kwargs): ...

    with pytest.raises(EnqueueError, match="no value for"):
        app.enqueue(regional, {"other": 1})
    assert app.enqueue(regional, {"region": "eu"}).job().state_key == "orders:eu"


def test_budget_and_continue_later_spend_no_attempt(app):
    @app.task(budget="10s", margin="9950ms")  # out of time 50 ms into each run
    async def drain(ctx: Context):
        n = ctx.cursor or 0
        while n < 6:
            n += 1
            await ctx.checkpoint(n)
            if ctx.out_of_time():
                return ctx.continue_later()
            await asyncio.sleep(0.03)
        return n

    h = app.enqueue(drain, retry=0)
    with running_worker(app):
        assert h.result(timeout=30) == 6
    runs = [e for e in h.events() if e.to_status is Status.RUNNING]
    continues = [e for e in h.events() if e.reason and e.reason.startswith("continue_later")]
    assert len(runs) >= 2 and len(continues) == len(runs) - 1
    assert h.job().attempt == 1  # every continuation gave its attempt back


def test_continue_later_with_delay_schedules(app):
    @app.task
    async def later(ctx: Context):
        if ctx.cursor is None:
            await ctx.checkpoint("half")
            return ctx.continue_later(delay="1h")
        return "done"

    h = app.enqueue(later)
    run_burst(app)
    job = h.job()
    assert job.status is Status.SCHEDULED and job.run_at > time.time() + 3000 and job.attempt == 0


def test_a_run_that_ignores_its_budget_is_stopped_and_resumes_from_its_checkpoint(app):
    @app.task(budget="300ms", retry=0)
    async def stubborn(ctx: Context):
        if ctx.cursor == "step-2":
            return "finished"
        await ctx.checkpoint("step-2")
        await asyncio.sleep(60)  # never looks at out_of_time()

    @app.task(budget="200ms", retry=0)
    async def stuck(ctx: Context):
        await asyncio.sleep(60)  # no checkpoint: no progress, so the overrun is a failed attempt

    h, s = app.enqueue(stubborn), app.enqueue(stuck)
    with running_worker(app):
        assert h.result(timeout=20) == "finished"
        wait_for(lambda: s.status() is Status.FAILED, message="stuck to fail")
    assert "budget overrun" in [e for e in h.events() if e.to_status is Status.WAITING][-1].reason
    assert "timed out" in s.job().error["message"]


def test_pages_checkpoint_each_page_before_fetching_the_next(app):
    source = list(range(1, 26))
    fetched = []

    @app.task(budget="1h")
    async def walk(ctx: Context):
        async def fetch_page(after):
            fetched.append((after, ctx.cursor))
            return [{"id": i} for i in source if after is None or i > after][:10]

        done = []
        pages = ctx.pages(fetch_page)
        async for page in pages:
            done += await ctx.map(page, lambda r: r["id"], concurrency=3)
        return [done, pages.more, pages.pages]

    h = app.enqueue(walk)
    run_burst(app)
    done, more, count = h.result(timeout=5)
    assert done == source and more is False and count == 3
    # every fetch happened after the previous page was checkpointed
    assert fetched == [(None, None), (10, 10), (20, 20), (25, 25)]


def test_pages_stop_on_budget_and_the_next_run_resumes(app):
    @app.task(budget="10s", margin="9990ms")
    async def walk(ctx: Context):
        async def fetch_page(after):
            start = 0 if after is None else after
            return [{"id": i} for i in range(start + 1, min(start + 5, 20) + 1)]

        pages = ctx.pages(fetch_page)
        async for page in pages:
            await asyncio.sleep(0.02)
        return ctx.continue_later() if pages.more else ctx.cursor

    h = app.enqueue(walk)
    with running_worker(app):
        assert h.result(timeout=30) == 20
    assert len([e for e in h.events() if e.to_status is Status.RUNNING]) > 1


def test_a_page_that_goes_backwards_is_an_error(app):
    @app.task(retry=0)
    async def walk(ctx: Context):
        async def fetch_page(after):
            return [{"id": 3}, {"id": 2}]

        async for _ in ctx.pages(fetch_page):
            pass

    @app.task(retry=0)
    async def repeat(ctx: Context):
        async def fetch_page(after):
            return [{"id": 1}]  # ignores the cursor: would loop forever

        async for _ in ctx.pages(fetch_page):
            pass

    a, b = app.enqueue(walk), app.enqueue(repeat)
    run_burst(app)
    assert a.job().error["type"] == "PagingError" and "backwards" in a.job().error["message"]
    assert b.job().error["type"] == "PagingError"


def test_large_payloads_are_stored_in_segments_and_reassembled_exactly(app):
    records = [{"id": i, "body": "x" * 200} for i in range(3000)]  # ~650 KB

    @app.task(payload="tickets")
    async def import_tickets(ctx: Context, tickets: list):
        seen = [r async for r in ctx.records("tickets")]
        return [len(tickets), seen == list(tickets), seen[-1]["id"], tickets.segment_count]

    h = app.enqueue(import_tickets, {"tickets": records})
    assert h.job().args["tickets"]["count"] == 3000  # the job row holds a marker, not the list
    run_burst(app)
    count, equal, last, segments = h.result(timeout=10)
    assert (count, equal, last) == (3000, True, 2999) and segments >= 6
    with pytest.raises(Exception):
        app.store.load_segment(h.id, "tickets", 0)  # purged on completion


def test_segment_walk_resumes_at_segment_and_offset(app):
    records = [{"id": i, "pad": "y" * 100} for i in range(2500)]
    processed = []

    @app.task(payload="items", budget="10s", margin="9900ms", retain_state=True)
    async def consume(ctx: Context, items: list):
        walk = ctx.records("items")
        async for record in walk:
            processed.append(record["id"])
            # at least 0.5 ms a record, so 2,500 records need many 100 ms runs; time.sleep, as
            # an event loop's timer may fire early or at once for a sub-millisecond delay
            time.sleep(0.0005)
        return ctx.continue_later() if walk.more else len(processed)

    h = app.enqueue(consume, {"items": records})
    with running_worker(app):
        assert h.result(timeout=60) == 2500
    assert processed == list(range(2500))  # nothing lost, nothing repeated across runs
    assert len([e for e in h.events() if e.to_status is Status.RUNNING]) > 1
    assert app.store.load_segment(h.id, "items", 0)  # retained for audit


def test_split_segments_bounds():
    items = [{"n": i} for i in range(1000)]
    pieces = split_segments(items, 1024)
    assert all(len(p.encode()) <= 1024 for p in pieces)
    import json

    assert [x for p in pieces for x in json.loads(p)] == items
    assert split_segments([], 1024) == ["[]"]


def test_pause_and_resume(app):
    started = threading.Event()

    @app.task
    async def long_walk(ctx: Context):
        n = ctx.cursor or 0
        while n < 200:
            n += 1
            started.set()
            await ctx.checkpoint(n)
            if ctx.out_of_time():  # true once paused
                return ctx.continue_later()
            await asyncio.sleep(0.01)
        return n

    h = app.enqueue(long_walk)
    with running_worker(app, lease="300ms"):
        assert started.wait(20)
        assert app.store.set_paused(job_id=h.id, paused=True) == 1
        wait_for(lambda: h.status() is Status.WAITING, message="the paused job to stop")
        stopped_at = app.store.load_state(f"job:{h.id}").cursor
        assert 0 < stopped_at < 200
        time.sleep(0.3)  # a paused job is not claimed: nothing moves meanwhile
        assert h.status() is Status.WAITING and app.store.load_state(f"job:{h.id}").cursor == stopped_at
        app.store.set_paused(job_id=h.id, paused=False)
        assert h.result(timeout=60) == 200


def test_pause_a_queue(app):
    @app.task(queue=None)
    def quick():
        return 1

    app.store.set_paused(queue="default", paused=True)
    h = app.enqueue(quick)
    run_burst(app)  # nothing ready: a paused queue is not claimed
    assert h.status() is Status.WAITING
    assert [q.paused for q in app.store.list_queues() if q.name == "default"] == [True]
    app.store.set_paused(queue="default", paused=False)
    run_burst(app)
    assert h.result(timeout=5) == 1


def test_a_stale_run_cannot_move_the_cursor(app):
    from floodway.jobs import NewJob

    app.store.enqueue([NewJob("j", "t", "{}", "default", 0, 3, "{}", time.time())])
    [job] = app.store.claim("w1", queues=None, limit=1, lease=0.01)
    time.sleep(0.05)
    app.store.rescue_expired()
    app.store.claim("w2", queues=None, limit=1, lease=30)
    with pytest.raises(LeaseLost):
        app.store.checkpoint("j", "w1", 1, "job:j", "5")
    with pytest.raises(LeaseLost):
        app.store.record_once("j", "w1", 1, "job:j", '"k"', None)
    app.store.checkpoint("j", "w2", 2, "job:j", "5")
    assert app.store.load_state("job:j").cursor == 5


@pytest.mark.parametrize(
    "options, message",
    [
        ({"budget": "1s", "margin": "2s"}, "longer than its margin"),
        ({"margin": "1s"}, "needs a budget"),
        ({"budget": "0s"}, "greater than zero"),
        ({"payload": "nope"}, "not one of its parameters"),
        ({"state": "{tenant"}, "malformed"),
    ],
)
def test_bad_resumable_options(app, options, message):
    with pytest.raises(ConfigError, match=message):

        @app.task(**options)
        async def t(ctx: Context, items: list = ()): ...


def test_bad_runtime_input(app):
    @app.task(retry=0)
    async def bad_cursor(ctx: Context):
        await ctx.checkpoint({1, 2})

    @app.task(retry=0)
    async def bad_key(ctx: Context):
        await ctx.once(["a"], lambda: 1)

    @app.task(payload="items")
    async def takes(ctx: Context, items: list): ...

    a, b = app.enqueue(bad_cursor), app.enqueue(bad_key)
    run_burst(app)
    assert "cursor must be JSON" in a.job().error["message"]
    assert "must be a str or an int" in b.job().error["message"]
    with pytest.raises(EnqueueError, match="must be a list"):
        app.enqueue(takes, {"items": "not a list"})
