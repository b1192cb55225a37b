"""The enqueue boundary: valid input becomes durable jobs, bad input a clear error and no write."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from typing import TypedDict

import pytest

from floodway import App, Context, Queue, Retry, Status
from floodway.errors import ConfigError, EnqueueError, JobNotFound, SchemaTooNewError, StoreError


@pytest.fixture
def tasks(app):
    @app.task
    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hi {name}{punctuation}"

    @app.task(queue="mail", retry=Retry(attempts=2, initial="2s"), priority=3)
    def send(ctx: Context, to: str) -> None:
        return None

    @app.task
    def anything(**kwargs):
        return kwargs

    return greet, send, anything


def total(app):
    return sum(app.store.count_jobs().values())


def test_enqueue_returns_a_durable_handle(app, tasks):
    greet, _, _ = tasks
    handle = app.enqueue(greet, {"name": "ada"})
    assert handle.created and handle.status() is Status.WAITING
    job = handle.job()
    assert job.task == "greet" and job.args == {"name": "ada"} and job.queue == "default"
    assert job.max_attempts == 7  # 6 retries by default
    # a second App on the same file sees it: it is in the database, not in memory
    other = App(app.database_url)
    try:
        assert other.handle(handle.id).status() is Status.WAITING
    finally:
        other.close()


def test_task_options_are_applied(app, tasks):
    _, send, _ = tasks
    job = app.enqueue(send, {"to": "x@example.com"}).job()
    assert job.queue == "mail" and job.priority == 3 and job.max_attempts == 3
    assert job.retry["initial"] == 2.0


def test_enqueue_options_override(app, tasks):
    greet, _, _ = tasks
    job = app.enqueue(
        greet, {"name": "b"}, queue=Queue("fast", max_concurrency=4), priority=9, retry=0, tenant="acme"
    ).job()
    assert (job.queue, job.priority, job.max_attempts, job.tenant) == ("fast", 9, 1, "acme")
    assert {q.name: q.max_concurrency for q in app.store.list_queues()}["fast"] == 4


def test_task_by_name(app, tasks):
    assert app.enqueue("greet", {"name": "c"}).job().task == "greet"


def test_undeclared_queue_gets_concurrency_one_declared_keeps_its_cap(app, tasks):
    greet, _, _ = tasks
    app.queue("wide", max_concurrency=None)
    app.queue("four", max_concurrency=4)
    app.enqueue(greet, {"name": "a"}, queue="adhoc")
    app.enqueue(greet, {"name": "a"}, queue="wide")
    app.enqueue(greet, {"name": "a"}, queue="four")
    caps = {q.name: q.max_concurrency for q in app.store.list_queues()}
    assert caps["adhoc"] == 1 and caps["wide"] is None and caps["four"] == 4 and caps["default"] is None


def test_delay_and_start_at(app, tasks):
    greet, _, _ = tasks
    later = app.enqueue(greet, {"name": "d"}, delay="5m").job()
    assert later.status is Status.SCHEDULED
    at = datetime.now(timezone.utc) + timedelta(hours=1)
    job = app.enqueue(greet, {"name": "e"}, start_at=at).job()
    assert job.status is Status.SCHEDULED and job.run_at == pytest.approx(at.timestamp())
    iso = app.enqueue(greet, {"name": "f"}, start_at="2000-01-01T00:00:00Z").job()
    assert iso.status is Status.WAITING  # in the past: ready now
    assert app.enqueue(greet, {"name": "g"}, delay=timedelta(0)).status() is Status.WAITING


def test_same_id_returns_the_existing_job(app, tasks):
    greet, _, _ = tasks
    first = app.enqueue(greet, {"name": "one"}, id="greet-1")
    again = app.enqueue(greet, {"name": "two"}, id="greet-1")
    assert first.created and not again.created and again.id == "greet-1"
    assert again.job().args == {"name": "one"} and total(app) == 1


def test_enqueue_many_in_one_go_with_indexed_ids(app, tasks):
    greet, _, _ = tasks
    handles = app.enqueue_many(greet, [{"name": str(i)} for i in range(3)], id="batch")
    assert [h.id for h in handles] == ["batch-0", "batch-1", "batch-2"]
    assert [h.job().args["name"] for h in handles] == ["0", "1", "2"]
    again = app.enqueue_many(greet, [{"name": "x"}] * 4, id="batch")
    assert [h.created for h in again] == [False, False, False, True]
    assert app.enqueue_many(greet, []) == []


def test_async_twins(app, tasks):
    greet, _, _ = tasks

    async def main():
        h = await app.enqueue_async(greet, {"name": "as"}, id="async-1")
        hs = await app.enqueue_many_async(greet, [{"name": "x"}, {"name": "y"}])
        return h, hs, await h.status_async(), await h.events_async()

    h, hs, status, events = asyncio.run(main())
    assert h.id == "async-1" and len(hs) == 2 and status is Status.WAITING and len(events) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["ada"], "must be a dict"),
        ("ada", "must be a dict"),
        ({"nme": "ada"}, "do not match"),
        ({}, "do not match"),
        ({"name": "a", "extra": 1}, "do not match"),
        ({1: "a"}, "names must be strings"),
        ({"name": object()}, "not JSON-serialisable"),
        ({"name": float("nan")}, "not JSON-serialisable"),
    ],
)
def test_bad_args_are_refused_and_nothing_is_written(app, tasks, args, message):
    greet, _, _ = tasks
    with pytest.raises(EnqueueError, match=message):
        app.enqueue(greet, args)
    assert total(app) == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delay": "-5s"}, "negative"),
        ({"delay": "soon"}, "cannot parse"),
        ({"start_at": datetime(2030, 1, 1)}, "no time zone"),
        ({"start_at": "next tuesday"}, "ISO-8601"),
        ({"delay": "1s", "start_at": "2030-01-01T00:00:00Z"}, "not both"),
        ({"priority": "high"}, "priority"),
        ({"retry": "3"}, "retry"),
        ({"retry": -1}, "negative"),
        ({"id": ""}, "job id"),
        ({"id": "x" * 300}, "longer"),
        ({"queue": ""}, "queue"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_bad_options_are_refused(app, tasks, options, message):
    greet, _, _ = tasks
    with pytest.raises((EnqueueError, ConfigError), match=message):
        app.enqueue(greet, {"name": "x"}, **options)
    assert total(app) == 0


def test_unknown_task(app, tasks):
    with pytest.raises(EnqueueError, match="unknown task 'nope'.*greet"):
        app.enqueue("nope", {})


def test_payload_limit(database_url, tmp_path):
    small = App(database_url, max_payload_bytes=100)
    try:

        @small.task
        def t(blob: str): ...

        small.enqueue(t, {"blob": "x" * 50})
        with pytest.raises(EnqueueError, match="over max_payload_bytes=100"):
            small.enqueue(t, {"blob": "x" * 200})
        assert sum(small.store.count_jobs().values()) == 1
    finally:
        small.close()


def test_payload_limit_from_environment(monkeypatch, database_url):
    monkeypatch.setenv("FLOODWAY_MAX_PAYLOAD_BYTES", "64")
    assert App(database_url).max_payload_bytes == 64
    monkeypatch.setenv("FLOODWAY_MAX_PAYLOAD_BYTES", "lots")
    with pytest.raises(ConfigError, match="FLOODWAY_MAX_PAYLOAD_BYTES"):
        App(database_url)


def test_bulk_with_one_bad_item_writes_nothing(app, tasks):
    greet, _, _ = tasks
    items = [{"name": str(i)} for i in range(100)]
    items[57] = {"name": 1, "oops": True}
    with pytest.raises(EnqueueError, match=r"item 57"):
        app.enqueue_many(greet, items)
    assert total(app) == 0
    # far into a large bulk, after earlier items have been streamed to the store (PostgreSQL
    # writes generated ids in chunks while later items are still being checked)
    items = [{"name": str(i)} for i in range(1000)]
    items[950] = {"name": "x", "oops": True}
    with pytest.raises(EnqueueError, match=r"unexpected keyword argument 'oops'.* \(item 950\)$"):
        app.enqueue_many(greet, items)
    items[950] = {"name": float("nan")}
    with pytest.raises(EnqueueError, match=r"not JSON-serialisable.* \(item 950\)$"):
        app.enqueue_many(greet, items)
    assert total(app) == 0
    items[950] = {"name": "fine"}
    assert all(h.created for h in app.enqueue_many(greet, items)) and total(app) == 1000
    with pytest.raises(EnqueueError, match="list of argument dicts"):
        app.enqueue_many(greet, {"name": "x"})


def test_bulk_binding_is_checked_per_set_of_names_with_the_same_errors(app, tasks):
    greet, _, anything = tasks
    # the same names in another order, or a bad set of names seen before, give what a fresh
    # bind gives: the message names the item and the first offending argument in its order
    for attempt in range(2):
        items = [{"name": "a"}, {"punctuation": "?", "name": "b"}, {"name": "c", "zz": 1, "aa": 2}]
        with pytest.raises(EnqueueError, match=r"unexpected keyword argument 'zz'.* \(item 2\)$"):
            app.enqueue_many(greet, items)
        with pytest.raises(EnqueueError, match=r"missing a required argument: 'name'.* \(item 1\)$"):
            app.enqueue_many(greet, [{"name": "a"}, {"punctuation": "?"}])
        with pytest.raises(EnqueueError, match=r"unexpected keyword argument 'aa'$"):
            app.enqueue(greet, {"name": "c", "aa": 2, "zz": 1})
    assert total(app) == 0
    handles = app.enqueue_many(greet, [{"name": "a"}, {"punctuation": "?", "name": "b"}])
    assert [h.job().args for h in handles] == [{"name": "a"}, {"punctuation": "?", "name": "b"}]
    assert len(app.enqueue_many(anything, [{f"k{i}": i} for i in range(2000)])) == 2000


def test_generated_ids_are_unique_hex_and_sort_in_enqueue_order(app, tasks):
    greet, _, _ = tasks
    single = [app.enqueue(greet, {"name": "one"}).id for _ in range(3)]
    time.sleep(0.002)  # ids order by their millisecond; within one they order by chance
    bulk = [h.id for h in app.enqueue_many(greet, [{"name": str(i)} for i in range(500)])]
    time.sleep(0.002)
    later = [h.id for h in app.enqueue_many(greet, [{"name": "x"}] * 3)]
    ids = single + bulk + later
    assert len(set(ids)) == len(ids) == 506
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert bulk == sorted(bulk) and max(single) < min(bulk) and max(bulk) < min(later)


def test_registration_errors(app):
    @app.task
    def dup(): ...

    with pytest.raises(ConfigError, match="registered already"):
        app.task(dup.fn)
    with pytest.raises(ConfigError, match="not an exception type"):
        app.task(lambda: None, name="x", give_up_on=[int])
    with pytest.raises(ConfigError, match="timeout"):
        app.task(lambda: None, name="y", timeout="0s")
    with pytest.raises(ConfigError, match="max_concurrency"):
        app.queue("q", max_concurrency=0)


def test_handle_of_unknown_job(app):
    with pytest.raises(JobNotFound):
        app.handle("nope").status()
    with pytest.raises(ConfigError):
        app.handle("")


def test_default_database_from_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOODWAY_DATABASE_URL", raising=False)
    assert App().database_url == "sqlite:///floodway.db"
    monkeypatch.setenv("FLOODWAY_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    app = App()
    app.store
    assert os.path.exists(tmp_path / "env.db")
    app.close()


@pytest.mark.parametrize(
    "url, error",
    [
        ("mysql://localhost/db", ConfigError),
        ("sqlite://host/db", ConfigError),
        ("sqlite:/relative.db", ConfigError),
        ("sqlite:relative.db", ConfigError),
        ("sqlite:///", ConfigError),
        ("sqlite:///x.db?synchronous=sometimes", ConfigError),
        ("sqlite:///x.db?colour=blue", ConfigError),
        ("sqlite:////no/such/dir/floodway.db", StoreError),
    ],
)
def test_bad_database_urls(url, error):
    with pytest.raises(error):
        App(url).store


def test_corrupt_database_file(tmp_path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all" * 100)
    app = App(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="corrupt.db"):
        app.store


def test_database_newer_than_the_code_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/new.db"
    app = App(url)
    app.store.migrate()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute("INSERT INTO floodway_schema VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    app.close()
    with pytest.raises(SchemaTooNewError, match="999"):
        App(url).store


def test_an_args_error_names_every_missing_and_every_unexpected_key(app):
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(EnqueueError, match=r"missing a required argument: 'a'; unexpected 'x', 'y'$"):
        app.enqueue(add, {"b": 1, "x": 2, "y": 3})
    with pytest.raises(EnqueueError, match=r"unexpected keyword argument 'x'$"):
        app.enqueue(add, {"a": 1, "b": 2, "x": 3})
    assert app.store.count_jobs()["waiting"] == 0  # nothing was written


class Address(TypedDict):
    city: str
    zip: int


def test_argument_types_are_checked_at_enqueue_naming_the_field(app):
    @app.task
    async def ship(contact_id: int, address: Address, tags: list[str] | None = None) -> None:
        return None

    ship.enqueue({"contact_id": 1, "address": {"city": "Oslo", "zip": 150}, "tags": ["vip"]})
    with pytest.raises(EnqueueError, match="contact_id must be an integer, got str 'one'"):
        ship.enqueue({"contact_id": "one", "address": {"city": "Oslo", "zip": 150}})
    with pytest.raises(EnqueueError, match=r"address.zip must be an integer.*\(item 1\)"):
        ship.enqueue_many(
            [
                {"contact_id": 1, "address": {"city": "a", "zip": 1}},
                {"contact_id": 2, "address": {"city": "b", "zip": "x"}},
            ]
        )
    with pytest.raises(EnqueueError, match=r"tags\[0\] must be a string"):
        ship.enqueue({"contact_id": 1, "address": {"city": "a", "zip": 1}, "tags": [7]})
    assert total(app) == 1
