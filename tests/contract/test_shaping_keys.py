"""Dedupe windows and debounce, on both backends: which job an enqueue returns, what it writes,
and the errors bad options get before anything is written."""

from __future__ import annotations

import threading
import time

import pytest

from floodway import Status
from floodway.errors import ConfigError, EnqueueError


def total(app):
    return sum(app.store.count_jobs().values())


@pytest.fixture
def tasks(app):
    @app.task(unique_for="10m", unique_key="{order_id}")
    async def sync_order(order_id: int, note: str = "") -> None:
        return None

    @app.task(unique_while="active", unique_key="{order_id}")
    async def ship(order_id: int) -> None:
        return None

    @app.task(unique_for="1h")
    async def by_args(a: int, b: int = 0) -> None:
        return None

    @app.task(debounce="30s", debounce_key="{contact_id}", debounce_max="2m")
    async def refresh(contact_id: int, name: str) -> str:
        return name

    return sync_order, ship, by_args, refresh


# -- dedupe windows --------------------------------------------------------------------------
def test_a_key_enqueued_within_its_window_returns_the_first_job(app, tasks):
    sync_order = tasks[0]
    first = sync_order.enqueue({"order_id": 7})
    again = sync_order.enqueue({"order_id": 7, "note": "other args, same key"})
    other = sync_order.enqueue({"order_id": 8})
    assert first.created and not again.created and other.created
    assert again.id == first.id and other.id != first.id
    assert total(app) == 2
    assert first.job().args == {"order_id": 7}  # the first job is left as it was


def test_a_dedupe_window_holds_whatever_the_job_became(app, tasks):
    sync_order = tasks[0]
    first = sync_order.enqueue({"order_id": 7})
    app.store.cancel(first.id)
    assert first.status() is Status.CANCELLED
    assert sync_order.enqueue({"order_id": 7}).id == first.id
    assert total(app) == 1


def test_after_the_window_a_key_makes_a_new_job(app, tasks):
    sync_order = tasks[0]
    first = sync_order.enqueue({"order_id": 7}, unique_for=0.2)
    time.sleep(0.3)
    second = sync_order.enqueue({"order_id": 7}, unique_for=0.2)
    assert second.created and second.id != first.id
    # and the key now stands for the new job
    assert sync_order.enqueue({"order_id": 7}, unique_for=5).id == second.id


def test_unique_while_active_dedupes_only_unfinished_jobs(app, tasks):
    ship = tasks[1]
    first = ship.enqueue({"order_id": 1})
    assert ship.enqueue({"order_id": 1}).id == first.id
    app.store.cancel(first.id)  # finished: the key is free again
    second = ship.enqueue({"order_id": 1})
    assert second.created and second.id != first.id


def test_without_a_key_template_the_arguments_are_the_key(app, tasks):
    by_args = tasks[2]
    one = by_args.enqueue({"a": 1, "b": 2})
    assert by_args.enqueue({"b": 2, "a": 1}).id == one.id  # the same call, keys in another order
    assert by_args.enqueue({"a": 1, "b": 3}).id != one.id


def test_tenants_never_share_a_key(app, tasks):
    sync_order = tasks[0]
    acme = sync_order.enqueue({"order_id": 7}, tenant="acme")
    globex = sync_order.enqueue({"order_id": 7}, tenant="globex")
    assert acme.id != globex.id and globex.created
    assert sync_order.enqueue({"order_id": 7}, tenant="acme").id == acme.id


def test_bulk_enqueue_dedupes_per_item_and_inside_the_batch(app, tasks):
    sync_order = tasks[0]
    existing = sync_order.enqueue({"order_id": 1})
    handles = sync_order.enqueue_many([{"order_id": 1}, {"order_id": 2}, {"order_id": 2}, {"order_id": 3}])
    assert [h.created for h in handles] == [False, True, False, True]
    assert handles[0].id == existing.id and handles[1].id == handles[2].id
    assert total(app) == 3


def test_per_enqueue_options_give_a_task_a_dedupe_window(app):
    @app.task
    async def plain(x: int) -> None:
        return None

    a = plain.enqueue({"x": 1}, unique_for="1m", unique_key="{x}")
    b = plain.enqueue({"x": 1}, unique_for="1m", unique_key="{x}")
    c = plain.enqueue({"x": 1})  # no key: a plain enqueue
    assert a.id == b.id and c.id != a.id and total(app) == 2


def test_concurrent_enqueues_of_one_key_make_one_job(app, tasks):
    sync_order = tasks[0]
    ids: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            for _ in range(20):
                ids.append(sync_order.enqueue({"order_id": 99}).id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 and total(app) == 1


# -- debounce --------------------------------------------------------------------------------
def test_debounced_enqueues_fold_into_one_job_with_the_last_arguments(app, tasks):
    refresh = tasks[3]
    first = refresh.enqueue({"contact_id": 1, "name": "a"})
    before = first.job().run_at
    time.sleep(0.05)
    second = refresh.enqueue({"contact_id": 1, "name": "b"})
    third = refresh.enqueue({"contact_id": 1, "name": "c"})
    other = refresh.enqueue({"contact_id": 2, "name": "x"})
    assert first.created and not second.created and not third.created and other.created
    assert second.id == first.id == third.id
    job = first.job()
    assert job.status is Status.SCHEDULED and job.args == {"contact_id": 1, "name": "c"}
    assert job.run_at > before  # the quiet period starts again at each enqueue
    assert total(app) == 2
    reasons = [e.reason or "" for e in app.store.events(first.id)]
    assert any("2 later enqueue(s) folded" in r for r in reasons), reasons


def test_debounce_max_bounds_how_long_a_stream_postpones_the_run(app, tasks):
    refresh = tasks[3]
    options = {"debounce": "0.4s", "debounce_max": "0.6s"}
    first = refresh.enqueue({"contact_id": 1, "name": "a"}, **options)
    created = first.job().created_at
    time.sleep(0.3)
    refresh.enqueue({"contact_id": 1, "name": "b"}, **options)
    # the quiet period would end 0.7 s after the first; debounce_max holds it to 0.6 s
    assert created + 0.55 <= first.job().run_at <= created + 0.65


def test_a_debounced_job_that_started_is_not_changed(app, tasks):
    refresh = tasks[3]
    first = refresh.enqueue({"contact_id": 1, "name": "a"}, debounce=0.05)
    time.sleep(0.1)
    claimed = app.store.claim("w1", queues=None, limit=10, lease=30)
    assert [j.id for j in claimed] == [first.id]
    second = refresh.enqueue({"contact_id": 1, "name": "b"}, debounce=0.05)
    assert second.created and second.id != first.id
    assert first.job().args == {"contact_id": 1, "name": "a"}


def test_a_debounced_bulk_enqueue_keeps_the_last_item_of_each_key(app, tasks):
    refresh = tasks[3]
    handles = refresh.enqueue_many([{"contact_id": k % 3, "name": f"n{k}"} for k in range(9)])
    assert len({h.id for h in handles}) == 3 and total(app) == 3
    last = {k % 3: f"n{k}" for k in range(9)}
    for h in handles[-3:]:
        job = h.job()
        assert job.args["name"] == last[job.args["contact_id"]]


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"unique_for": "-5s"}, "unique_for"),
        ({"unique_for": "soon"}, "unique_for"),
        ({"unique_for": 0}, "unique_for"),
        ({"unique_for": 1e300}, "longer than ten years"),
        ({"debounce": "5s", "debounce_max": 1e300}, "longer than ten years"),
        ({"unique_key": "{order_id}"}, "needs unique_for"),
        ({"unique_key": "{nope}", "unique_for": "1m"}, "not an argument of the task"),
        ({"unique_key": "{order_id", "unique_for": "1m"}, "malformed"),
        ({"unique_while": "forever"}, "unique_while"),
        ({"unique_while": "active", "unique_for": "1m"}, "not both"),
        ({"debounce": "-1s"}, "debounce"),
        ({"debounce_key": "{order_id}"}, "needs debounce="),
        ({"debounce": "5s", "debounce_max": "1s"}, "at least"),
        ({"debounce": "5s", "debounce_key": "{missing}"}, "not an argument"),
        ({"debounce": "5s", "unique_for": "1m"}, "not both"),
    ],
)
def test_bad_shaping_options_are_refused_at_declaration(app, options, message):
    with pytest.raises(ConfigError, match=message):

        @app.task(**options)
        async def bad(order_id: int) -> None:
            return None

    assert "bad" not in app.tasks


def test_bad_shaping_options_at_enqueue_write_nothing(app, tasks):
    sync_order, _, _, refresh = tasks
    with pytest.raises(EnqueueError, match="unique_for"):
        sync_order.enqueue({"order_id": 1}, unique_for="-1s")
    with pytest.raises(EnqueueError, match="not an argument"):
        sync_order.enqueue({"order_id": 1}, unique_key="{x}")
    with pytest.raises(EnqueueError, match="no value for"):
        sync_order.enqueue_many([{"order_id": 1, "note": "x"}, {"order_id": 2}], unique_key="{note}")
    with pytest.raises(EnqueueError, match="id= or a unique key"):
        sync_order.enqueue({"order_id": 1}, id="mine")
    with pytest.raises(EnqueueError, match="no delay"):
        refresh.enqueue({"contact_id": 1, "name": "a"}, delay="5s")
    assert total(app) == 0


def test_a_purged_job_frees_its_key(app, tasks):
    sync_order = tasks[0]
    first = sync_order.enqueue({"order_id": 5})
    app.store.cancel(first.id)
    assert app.store.purge(older_than=time.time() + 1, statuses=["cancelled"]) == 1
    second = sync_order.enqueue({"order_id": 5})
    assert second.created and second.id != first.id
