"""Shaping through the REST API, on both backends (uvicorn on a loopback port): dedupe,
debounce and lanes in single and bulk enqueues, the existing job answered 200 with
``created: false``, bad values answered 400 with the library's message and nothing written,
and a tenant's keys never matching another tenant's jobs."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest

from floodway import App, Batch
from floodway.limits import split_lane
from floodway.store.keyed import fold_reason, folds_in

from .. import pg_helpers
from ..conftest import BACKENDS
from ..web_helpers import client, serving, tokens

pytestmark = pytest.mark.timeout(120)


def make_app(url: str) -> App:
    app = App(url)
    app.limit("hub", rate="100/s", lanes={"interactive": 0.2, "backfill": 0.5})
    app.queue("web", max_concurrency=None)

    @app.task(queue="web")
    def sync_order(order_id: int, note: str = "") -> None:
        return None

    @app.task(queue="web", limits=["hub"])
    def refresh(contact: str, name: str = "") -> str:
        return name

    @app.task(queue="web", batch=Batch(max_size=10, key="{shop}"))
    def push(items: list) -> None:
        return None

    @app.task(queue="web", debounce="30s", debounce_key="{contact}", debounce_max="2m")
    def notify(contact: str) -> None:
        return None

    @app.task(queue="web", unique_while="active", unique_key="{order_id}")
    def ship(order_id: int) -> None:
        return None

    return app


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory) -> Iterator[SimpleNamespace]:
    if request.param == "sqlite":
        urls: Any = iter([f"sqlite:///{tmp_path_factory.mktemp('shaping') / 'floodway.db'}"])
        done = None
    else:
        context = pg_helpers.throwaway_database()
        urls, done = iter([context.__enter__()]), context
    app = make_app(next(urls))
    try:
        with serving(app) as server:
            minted = tokens(app)
            with client(server, minted["admin"]) as admin, client(server, minted["acme"]) as acme:
                with client(server, minted["globex"]) as globex:
                    yield SimpleNamespace(app=app, admin=admin, acme=acme, globex=globex)
    finally:
        app.close()
        if done is not None:
            done.__exit__(None, None, None)


def uid() -> int:
    return uuid.uuid4().int % 10**9


def post(c: httpx.Client, body: dict[str, Any], path: str = "/api/jobs") -> httpx.Response:
    return c.post(path, json=body)


def total(site: SimpleNamespace) -> int:
    return sum(site.app.store.count_jobs().values())


# -- dedupe ------------------------------------------------------------------------------------------
def test_a_deduped_enqueue_answers_200_with_the_first_job(site):
    order = uid()
    body = {"task": "sync_order", "args": {"order_id": order}, "unique_for": "10m", "unique_key": "{order_id}"}
    first = post(site.admin, body)
    assert first.status_code == 201 and first.json()["created"] is True, first.text
    again = post(site.admin, {**body, "args": {"order_id": order, "note": "later"}})
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False and again.json()["id"] == first.json()["id"]
    assert again.json()["job"]["args"] == {"order_id": order}  # the first job, as it was
    other = post(site.admin, {**body, "args": {"order_id": order + 1}})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # unique_while="active": the same, as long as the first job is unfinished
    active = {"task": "sync_order", "args": {"order_id": order}, "unique_while": "active", "unique_key": "{order_id}"}
    made = post(site.admin, active)
    assert post(site.admin, active).json() | {"job": None} == made.json() | {"created": False, "job": None}


def test_a_bulk_enqueue_dedupes_its_items_and_earlier_jobs(site):
    a, b = uid(), uid()
    body = {"task": "sync_order", "items": [{"order_id": a}, {"order_id": a}, {"order_id": b}], "unique_for": 600}
    first = post(site.admin, body, "/api/jobs/bulk")
    assert first.status_code == 201, first.text
    ids = first.json()["ids"]
    assert ids[0] == ids[1] != ids[2]
    assert first.json()["created"] == 2 and first.json()["existing"] == 1
    again = post(site.admin, body, "/api/jobs/bulk")
    assert again.status_code == 200 and again.json() == {"ids": ids, "created": 0, "existing": 3}


# -- debounce ----------------------------------------------------------------------------------------
def test_a_debounced_enqueue_folds_into_the_waiting_job(site):
    contact = f"c-{uid()}"
    body = {"task": "refresh", "debounce": "1h", "debounce_key": "{contact}", "debounce_max": "2h"}
    first = post(site.admin, {**body, "args": {"contact": contact, "name": "Ada"}})
    assert first.status_code == 201, first.text
    job_id = first.json()["id"]
    for name in ("Grace", "Edsger"):
        folded = post(site.admin, {**body, "args": {"contact": contact, "name": name}})
        assert folded.status_code == 200, folded.text
        assert folded.json()["created"] is False and folded.json()["id"] == job_id
    job = site.admin.get(f"/api/jobs/{job_id}").json()
    assert job["args"] == {"contact": contact, "name": "Edsger"} and job["status"] == "scheduled"
    reasons = [e["reason"] for e in site.admin.get(f"/api/jobs/{job_id}/events").json()["events"]]
    assert any(r and r.startswith("debounced: 2 later enqueue(s) folded") for r in reasons), reasons


# -- lanes -------------------------------------------------------------------------------------------
def test_a_lane_is_taken_from_the_body(site):
    made = post(site.admin, {"task": "refresh", "args": {"contact": "x"}, "lane": "interactive"})
    assert made.status_code == 201, made.text
    [(name, key)] = made.json()["job"]["limits"]
    assert name == "hub" and split_lane(key)[1] == "interactive"
    bulk = post(site.admin, {"task": "refresh", "items": [{"contact": "y"}], "lane": "backfill"}, "/api/jobs/bulk")
    assert bulk.status_code == 201, bulk.text
    job = site.app.store.get_job(bulk.json()["ids"][0])
    assert split_lane(job.limits[0][1])[1] == "backfill"


# -- bad values --------------------------------------------------------------------------------------
BAD = [
    ({"unique_for": "soon"}, "cannot parse 'soon' as a duration"),
    ({"unique_for": 0}, "must be greater than zero"),
    ({"unique_key": "{order_id}"}, "unique_key needs unique_for"),
    ({"unique_for": "1m", "unique_key": "{nope}"}, "names {nope}, which is not an argument"),
    ({"unique_while": "forever"}, "unique_while must be one of ['active']"),
    ({"unique_while": "active", "unique_for": "1m"}, "not both"),
    ({"unique_for": "1m", "debounce": "5s"}, "deduped (unique_*) or debounced (debounce*), not both"),
    ({"debounce_key": "{order_id}"}, "needs debounce="),
    ({"debounce": "10s", "debounce_max": "5s"}, "debounce_max (5s) must be at least the debounce (10s)"),
    ({"debounce": "10s", "delay": "1m"}, "a debounced job runs when its window ends"),
    ({"unique_for": "1m", "id": "mine"}, "pass id= or a unique key, not both"),
    ({"lane": "interactive"}, "none of the job's limits"),
    ({"unique_for": True}, "'unique_for' must be seconds"),
    ({"debounce": ["5s"]}, "'debounce' must be seconds"),
    ({"unique_key": 7, "unique_for": "1m"}, "'unique_key' must be a non-empty string"),
    ({"lane": ""}, "'lane' must be a non-empty string"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_value_is_400_with_the_library_message_and_writes_nothing(site, options, message):
    before = total(site)
    single = post(site.admin, {"task": "sync_order", "args": {"order_id": 1}, **options})
    assert single.status_code == 400, single.text
    assert message in single.json()["error"]
    bulk = post(
        site.admin, {"task": "sync_order", "items": [{"order_id": 1}, {"order_id": 2}], **options}, "/api/jobs/bulk"
    )
    assert bulk.status_code == 400, bulk.text
    assert message in bulk.json()["error"]
    assert total(site) == before


def test_a_bad_key_in_one_bulk_item_names_it_and_writes_nothing(site):
    before = total(site)
    body = {"task": "sync_order", "items": [{"order_id": 1}, {"note": "no order"}], "unique_for": "1m"}
    body["unique_key"] = "{order_id}"
    r = post(site.admin, body, "/api/jobs/bulk")
    assert r.status_code == 400 and "(item 1)" in r.json()["error"], r.text
    assert total(site) == before


# -- tenants -----------------------------------------------------------------------------------------
def test_a_tenant_never_gets_another_tenants_job_back_by_key(site):
    order = uid()
    body = {"task": "sync_order", "args": {"order_id": order}, "unique_for": "1h", "unique_key": "{order_id}"}
    acme = post(site.acme, body)
    assert acme.status_code == 201, acme.text
    globex = post(site.globex, body)
    assert globex.status_code == 201 and globex.json()["created"] is True, globex.text
    assert globex.json()["id"] != acme.json()["id"]
    assert globex.json()["job"]["tenant"] == "globex"
    # each tenant's own key still dedupes; an admin naming the tenant reaches that tenant's job
    assert post(site.acme, body).json()["id"] == acme.json()["id"]
    assert post(site.globex, body).json()["id"] == globex.json()["id"]
    admin_acme = post(site.admin, {**body, "tenant": "acme"})
    assert admin_acme.status_code == 200 and admin_acme.json()["id"] == acme.json()["id"]
    # a job with no tenant is a key space of its own too
    untenanted = post(site.admin, body)
    assert untenanted.status_code == 201 and untenanted.json()["id"] not in (acme.json()["id"], globex.json()["id"])
    # a debounce key folds only into its own tenant's job
    debounce = {"task": "sync_order", "debounce": "1h", "debounce_key": "{order_id}"}
    folded_into = post(site.acme, {**debounce, "args": {"order_id": order + 1}}).json()["id"]
    other = post(site.globex, {**debounce, "args": {"order_id": order + 1, "note": "globex's"}})
    assert other.status_code == 201 and other.json()["id"] != folded_into
    assert site.acme.get(f"/api/jobs/{folded_into}").json()["args"] == {"order_id": order + 1}


def test_no_argument_makes_a_key_without_a_tenant_match_a_tenants_key(site):
    order = uid()
    crafted = {"task": "refresh", "args": {"contact": f"acme\x1f{order}"}, "unique_for": "1h"}
    crafted["unique_key"] = "{contact}"
    untenanted = post(site.admin, crafted)
    assert untenanted.status_code == 201, untenanted.text
    mine = post(site.acme, {**crafted, "args": {"contact": str(order)}})
    assert mine.status_code == 201 and mine.json()["id"] != untenanted.json()["id"], mine.text


def test_a_tenant_bulk_enqueue_dedupes_within_its_tenant_only(site):
    order = uid()
    body = {"task": "sync_order", "items": [{"order_id": order}], "unique_for": "1h"}
    acme = post(site.acme, body, "/api/jobs/bulk")
    globex = post(site.globex, body, "/api/jobs/bulk")
    assert acme.status_code == globex.status_code == 201, (acme.text, globex.text)
    assert acme.json()["ids"] != globex.json()["ids"]
    assert post(site.globex, body, "/api/jobs/bulk").json()["ids"] == globex.json()["ids"]


# -- the document -------------------------------------------------------------------------------------
def test_the_openapi_document_describes_the_options(site):
    doc = site.admin.get("/openapi.json").json()
    for name in ("EnqueueRequest", "BulkEnqueueRequest"):
        props = doc["components"]["schemas"][name]["properties"]
        for option in ("unique_for", "unique_key", "unique_while", "debounce", "debounce_key", "debounce_max", "lane"):
            assert option in props and props[option].get("description"), (name, option)
        assert props["unique_while"]["enum"] == ["active"]


# -- the dashboard ---------------------------------------------------------------------------------
def test_a_batch_items_page_shows_its_batch_key(site):
    made = post(site.acme, {"task": "push", "args": {"shop": "north-1", "sku": 3}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    detail = site.acme.get(f"/api/jobs/{job_id}/detail").json()
    assert detail["shaping"] == {"batch_key": "north-1", "folded": None}
    page = site.acme.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and 'id="batch-key">north-1<' in page.text
    plain = post(site.admin, {"task": "sync_order", "args": {"order_id": uid()}}).json()["id"]
    assert site.admin.get(f"/api/jobs/{plain}/detail").json()["shaping"] == {"batch_key": None, "folded": None}
    assert "batch key" not in site.admin.get(f"/jobs/{plain}").text


def test_a_debounced_jobs_page_shows_the_fold_count_and_its_timeline_line(site):
    contact = f"c-{uid()}"
    ids = {post(site.globex, {"task": "notify", "args": {"contact": contact}}).json()["id"] for _ in range(4)}
    [job_id] = ids
    assert site.globex.get(f"/api/jobs/{job_id}/detail").json()["shaping"]["folded"] == 3
    page = site.globex.get(f"/jobs/{job_id}").text
    assert 'id="folded">3 enqueues folded in<' in page
    assert "debounced: 3 later enqueue(s) folded into this job" in page  # the timeline's line


def test_the_overview_lists_each_tasks_shaping(site):
    page = site.acme.get("/")
    assert page.status_code == 200
    rows = {
        name: page.text.split(f'data-task="{name}"', 1)[1].split("</tr>", 1)[0] for name in ("notify", "ship", "push")
    }
    assert "30s, at most 2m, key {contact}" in rows["notify"]
    assert "while unfinished, key {order_id}" in rows["ship"]
    assert "up to 10 items, waits 0ms, key {shop}, charged per call" in rows["push"]
    assert 'data-task="floodway.' not in page.text  # floodway's own tasks are not listed


def test_the_fold_line_is_read_back_as_written():
    assert [folds_in(fold_reason(n)) for n in (1, 2, 57)] == [1, 2, 57]
    assert folds_in(None) is None and folds_in("debounced: soon") is None and folds_in("paused") is None
