"""Bulk actions by filter, on both backends: exact counts, a dry run that writes nothing, chunks,
a retried job's ledger kept, and the errors a bad filter gets before anything is written."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from floodway import App, ConfigError, Context, Retry, Status
from floodway.store.base import JobFilter
from floodway.store.bulk import bulk_action


def statuses(app) -> Counter:
    return Counter(job.status for job in app.store.list_jobs(limit=100_000))


@pytest.fixture
def tasks(app):
    @app.task(retry=0)
    async def sync_orders(n: int) -> None:
        if n % 2:
            raise RuntimeError(f"order {n}: upstream said 422")

    @app.task(retry=0)
    async def other(n: int) -> None:
        raise RuntimeError("boom")

    return sync_orders, other


def test_retry_by_filter_acts_on_the_matching_failed_jobs_only(app, tasks):
    sync_orders, other = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(10)], tenant="acme")
    sync_orders.enqueue_many([{"n": n} for n in range(4)], tenant="globex")
    other.enqueue_many([{"n": n} for n in range(3)], tenant="acme")
    app.worker(burst=True).run()
    assert statuses(app) == Counter({Status.FAILED: 5 + 2 + 3, Status.COMPLETE: 5 + 2})
    assert app.bulk("retry", status="failed", task="sync_orders", tenant="acme", dry_run=True) == 5
    assert statuses(app)[Status.FAILED] == 10  # a dry run writes nothing
    assert app.bulk("retry", status="failed", task="sync_orders", tenant="acme") == 5
    waiting = app.store.list_jobs(status=["waiting"], limit=100)
    assert (
        len(waiting) == 5 and {j.task for j in waiting} == {"sync_orders"} and {j.tenant for j in waiting} == {"acme"}
    )
    assert all(j.attempt == 0 for j in waiting)
    assert "retried by user (bulk)" in [e.reason for e in app.store.events(waiting[0].id)]
    # the error text filter: only the jobs whose error says so
    assert app.bulk("retry", status="failed", error="BOOM", dry_run=True) == 3


def test_cancel_pause_resume_and_purge_by_filter(app, tasks):
    sync_orders, _ = tasks
    handles = sync_orders.enqueue_many([{"n": n} for n in range(6)], queue="q1")
    sync_orders.enqueue_many([{"n": n} for n in range(4)], queue="q2")
    assert app.bulk("pause", queue="q1") == 6
    assert app.bulk("pause", queue="q1") == 0  # already paused: nothing to do
    assert all(h.job().paused for h in handles)
    assert app.bulk("resume", queue="q1") == 6
    assert app.bulk("cancel", queue="q2") == 4
    assert statuses(app) == Counter({Status.WAITING: 6, Status.CANCELLED: 4})
    assert app.bulk("purge", status="cancelled", dry_run=True) == 4
    assert app.bulk("purge", status="cancelled") == 4
    assert statuses(app) == Counter({Status.WAITING: 6})


def test_a_bulk_cancel_asks_running_jobs_to_stop(app, tasks):
    sync_orders, _ = tasks
    handle = sync_orders.enqueue({"n": 0})
    (claimed,) = app.store.claim("w1", queues=None, limit=1, lease=30)
    assert app.bulk("cancel", task="sync_orders") == 1
    job = handle.job()
    assert job.status is Status.RUNNING and job.cancel_requested


def test_created_before_and_after_bound_the_jobs(app, tasks):
    sync_orders, _ = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(3)])
    now = datetime.now(timezone.utc)
    assert app.bulk("cancel", created_before=now, dry_run=True) == 3
    assert app.bulk("cancel", created_after=now.isoformat(), dry_run=True) == 0


def test_chunks_act_on_every_job_once(app, tasks):
    sync_orders, _ = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(53)])
    assert bulk_action(app.store, "cancel", JobFilter(task="sync_orders"), chunk=7) == 53
    assert statuses(app) == Counter({Status.CANCELLED: 53})
    cancelled = [
        e for j in app.store.list_jobs(limit=100) for e in app.store.events(j.id) if e.to_status is Status.CANCELLED
    ]
    assert len(cancelled) == 53


def test_a_bulk_retry_keeps_the_ledger_so_recorded_calls_are_not_sent_again(app):
    sent: Counter = Counter()
    failing = [True]

    @app.task(retry=Retry(attempts=0))
    async def push(ctx: Context, n: int) -> None:
        await ctx.once("call", lambda: sent.update([n]))
        if failing[0]:
            raise RuntimeError("after the call")

    push.enqueue_many([{"n": n} for n in range(4)])
    app.worker(burst=True).run()
    assert statuses(app) == Counter({Status.FAILED: 4})
    failing[0] = False
    assert app.bulk("retry", status="failed") == 4
    app.worker(burst=True).run()
    assert statuses(app) == Counter({Status.COMPLETE: 4})
    assert sent == Counter(range(4))  # each call made once, before and after the bulk retry


@pytest.mark.parametrize(
    "action, options, message",
    [
        ("retry", {}, "give a filter"),
        ("retry", {"status": "sleeping"}, "not a job status"),
        ("retry", {"status": "waiting"}, "acts on cancelled, failed, retrying jobs only"),
        ("purge", {"status": "running"}, "only finished jobs"),
        ("explode", {"task": "x"}, "unknown bulk action"),
        ("cancel", {"created_before": "yesterday"}, "created"),
        (
            "cancel",
            {"created_before": "2020-01-01T00:00:00+00:00", "created_after": "2021-01-01T00:00:00+00:00"},
            "before",
        ),
        ("cancel", {"task": "a\nb"}, "control character"),
        ("cancel", {"error": ""}, "error"),
        ("retry", {"task": "sync_ordres"}, "unknown task 'sync_ordres'"),
        ("cancel", {"queue": "nowhere"}, "unknown queue 'nowhere'"),
    ],
)
def test_a_bad_filter_is_refused_and_nothing_is_written(app, tasks, action, options, message):
    sync_orders, _ = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(3)])
    with pytest.raises(ConfigError, match=message):
        app.bulk(action, **options)
    assert statuses(app) == Counter({Status.WAITING: 3})


def test_jobs_of_a_task_no_longer_in_the_code_can_still_be_acted_on(app, tasks, database_url):
    sync_orders, _ = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(3)])
    other = App(database_url)  # a process that does not declare the task (the CLI without --app)
    try:
        assert other.bulk("cancel", task="sync_orders") == 3
        with pytest.raises(ConfigError, match="unknown task 'gone'"):
            other.bulk("cancel", task="gone")
    finally:
        other.close()


def test_all_acts_on_every_job(app, tasks):
    sync_orders, _ = tasks
    sync_orders.enqueue_many([{"n": n} for n in range(3)])
    assert app.bulk("pause", all=True) == 3
