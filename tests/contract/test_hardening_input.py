"""Every input boundary refuses what it cannot keep, before anything is written: the library
(on both backends), the web API over real HTTP (uvicorn on loopback) and the ``floodway`` CLI
(real subprocesses). And no value already stored can break a read."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest

from floodway import App
from floodway.alerts import ALERT_TASK, install_webhook
from floodway.errors import ConfigError, EnqueueError, JobFailed, JobIdTaken
from floodway.inputs import INT32_MAX, INT32_MIN, MAX_AHEAD_SECONDS
from floodway.jobs import NewJob, Status
from floodway.store import open_store
from floodway.tokens import create_token

from ..process.test_cli import Cli
from ..web_helpers import client, make_app, serving, tokens

pytestmark = pytest.mark.timeout(180)

LONE = "\ud800"
DEEP = 5000


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


# -- the library, on both backends ---------------------------------------------------------------
@pytest.fixture
def lib(database_url) -> Iterator[App]:
    app = App(database_url)

    @app.task
    def note(text: Any = None, **extra: Any) -> None:
        return None

    app.queue("known", max_concurrency=None)
    yield app
    app.close()


def count(app: App) -> int:
    return len(app.store.list_jobs(limit=10_000))


BAD_ENQUEUES = [
    # text UTF-8 cannot hold, anywhere
    ({"args": {"text": LONE}}, "surrogate"),
    ({"args": {"text": {"deeper": ["ok", "\udc00"]}}}, "surrogate"),
    ({"args": {LONE: 1}}, "surrogate"),
    ({"args": {"text": "x"}, "id": f"a{LONE}"}, "surrogate"),
    ({"args": {"text": "x"}, "queue": f"q{LONE}"}, "surrogate"),
    ({"args": {"text": "x"}, "tenant": f"t{LONE}"}, "surrogate"),
    # control characters in names
    ({"args": {}, "id": "a\x00b"}, "control character"),
    ({"args": {}, "id": "a\nb"}, "control character"),
    ({"args": {}, "queue": "q\x1b[31m"}, "control character"),
    ({"args": {}, "tenant": "acme\r\n"}, "control character"),
    # ids are URL path segments; tenants' names are the prefix of their ids
    ({"args": {}, "id": "acme:x/events"}, "'/'"),
    ({"args": {}, "tenant": "a:b"}, "':'"),
    ({"args": {}, "tenant": "cron"}, "reserved"),
    ({"args": {}, "tenant": "x" * 256}, "longer than 255"),
    # numbers the stores cannot hold, instants no date can show
    ({"args": {}, "priority": 2**70}, "priority must be between"),
    ({"args": {}, "priority": INT32_MAX + 1}, "priority must be between"),
    ({"args": {}, "delay": "3000000d"}, "'delay' is more than 3650 days"),
    ({"args": {}, "delay": MAX_AHEAD_SECONDS + 60}, "'delay' is more than 3650 days"),
    ({"args": {}, "start_at": datetime(9999, 1, 1, tzinfo=timezone.utc)}, "'start_at' is more than"),
    # JSON nested deeper than any reader can follow
    ({"args": {"text": nested(DEEP)}}, "nest"),
    ({"args": {"text": nested(150)}}, "nested more than 100 levels"),
]


@pytest.mark.parametrize("options, fragment", BAD_ENQUEUES)
def test_library_enqueue_refuses_bad_input_and_writes_nothing(lib, options, fragment):
    options = dict(options)
    args = options.pop("args")
    with pytest.raises(EnqueueError, match=None) as caught:
        lib.enqueue("note", args, **options)
    assert fragment in str(caught.value)
    with pytest.raises(EnqueueError) as caught_many:
        lib.enqueue_many("note", [{"text": "fine"}, args, {"text": "fine"}], **options)
    assert fragment in str(caught_many.value)
    # bulk with ids the caller chose goes through the other store path
    with pytest.raises(EnqueueError):
        lib.enqueue_many("note", [{"text": "fine"}, args], **{"id": "bulk", **options})
    assert count(lib) == 0
    str(caught.value).encode("utf-8")  # the message itself can always be shown


def test_library_accepts_the_edges(lib):
    now = datetime.now(timezone.utc)
    jobs = [
        lib.enqueue("note", {"text": "emoji \U0001f600 and \\ud800 as plain text"}, id="edge-text"),
        lib.enqueue("note", {"text": nested(99)}, id="edge-deep"),
        lib.enqueue("note", {}, priority=INT32_MAX, id="edge-high"),
        lib.enqueue("note", {}, priority=INT32_MIN, id="edge-low"),
        lib.enqueue("note", {}, delay=MAX_AHEAD_SECONDS - 60, id="edge-late"),
        lib.enqueue("note", {}, start_at=now + timedelta(days=3000), id="edge-start"),
        lib.enqueue("note", {}, tenant="t" * 255, id="x" * 255),
        lib.enqueue("note", {}, id="acme:invoice-42"),  # ':' stays fine in ids
    ]
    assert all(h.created for h in jobs)
    assert lib.store.get_job("edge-text").args["text"] == "emoji \U0001f600 and \\ud800 as plain text"
    assert lib.store.get_job("edge-high").priority == INT32_MAX
    assert lib.store.get_job("edge-low").priority == INT32_MIN
    assert {j.to_dict()["run_at"][:4] for j in lib.store.list_jobs(limit=100)} <= {
        str(y) for y in range(now.year, now.year + 11)
    }


def test_a_result_no_reader_could_show_fails_the_job_clearly(lib):
    """A task's return value is stored JSON too: text UTF-8 cannot hold, or nesting deeper than
    readers follow, fails the job with a clear error instead of breaking every read of it."""

    @lib.task(retry=0)
    def odd(kind: str) -> Any:
        return {"text": LONE} if kind == "surrogate" else nested(150)

    surrogate, deep = lib.enqueue(odd, {"kind": "surrogate"}), lib.enqueue(odd, {"kind": "deep"})
    lib.worker(burst=True).run()
    for handle, fragment in ((surrogate, "surrogate"), (deep, "nested more than 100")):
        with pytest.raises(JobFailed) as caught:
            handle.result(timeout=0)
        assert "not JSON-serialisable" in caught.value.message and fragment in caught.value.message
        assert lib.store.get_job(handle.id).to_dict()["result"] is None


def test_bulk_ids_must_fit_too(lib):
    with pytest.raises(EnqueueError, match="longer than 255"):
        lib.enqueue_many("note", [{}] * 11, id="x" * 253)  # x...x-10 is 256 characters
    assert count(lib) == 0


def test_internal_tasks_stay_enqueueable_by_the_library(lib):
    lib.settings = lib.settings.with_overrides(alert_webhook_url="http://127.0.0.1:9/hook")
    install_webhook(lib)
    handle = lib.enqueue(ALERT_TASK, {"alert": {"alert": "test"}})
    assert handle.created and lib.store.get_job(handle.id).task == ALERT_TASK
    # callers from outside (the web API) neither find them nor learn their names
    with pytest.raises(EnqueueError) as caught:
        lib.get_task(ALERT_TASK, internal=False)
    assert str(caught.value) == f"unknown task {ALERT_TASK!r} (registered: note)"
    with pytest.raises(EnqueueError) as caught:
        lib.get_task(lib.tasks[ALERT_TASK], internal=False)
    assert str(caught.value) == f"unknown task {ALERT_TASK!r} (registered: note)"
    assert lib.public_tasks() == ["note"]


def test_schedule_names_must_make_valid_ids(lib):
    with pytest.raises(ConfigError, match="'/'"):
        lib.schedule("note", cron="0 3 * * *", name="nightly/report")
    with pytest.raises(ConfigError, match="control character"):
        lib.schedule("note", cron="0 3 * * *", name="nightly\n")
    with pytest.raises(ConfigError, match="reserved"):
        lib.schedule("note", cron="0 3 * * *", name="ok", tenant="cron")
    with pytest.raises(EnqueueError, match="surrogate"):
        lib.schedule("note", cron="0 3 * * *", name="ok", args={"text": LONE})
    assert lib.schedules == {}


def test_limit_numbers_must_fit_the_stores(lib):
    for options, fragment in [
        ({"rate": "10/s", "burst": 2**70}, "burst"),
        ({"concurrency": 2**31}, "concurrency"),
        ({"rate": "9" * 400 + "/s"}, "not a usable rate"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            lib.limit("api", **options)
    lib.limit("api", rate="10/s", burst=INT32_MAX, concurrency=INT32_MAX)
    lib.sync_limits()
    for changes, fragment in [
        ({"burst": 2**70}, "burst"),
        ({"concurrency": 2**40}, "concurrency"),
        ({"rate": "1" + "0" * 400 + "/s"}, "not a usable rate"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            lib.set_limit("api", **changes)
    [info] = lib.store.list_limits()
    assert (info.spec.burst, info.spec.concurrency, str(info.spec.rate)) == (INT32_MAX, INT32_MAX, "10/s")
    with pytest.raises(ConfigError, match="max_concurrency"):
        lib.queue("huge", max_concurrency=2**40)


def test_tokens_take_only_valid_tenant_names(lib):
    for tenant, fragment in [
        ("a:b", "':'"),
        ("cron", "reserved"),
        ("Floodway", "reserved"),
        ("x" * 100_000, "longer"),
        ("t\x00", "control"),
        (f"t{LONE}", "surrogate"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            create_token(lib.store, tenant=tenant)
    with pytest.raises(ConfigError, match="control"):
        create_token(lib.store, admin=True, label="evil\x1b[2J")
    assert lib.store.list_tokens() == []


def new_job(job_id: str, tenant: str | None) -> NewJob:
    return NewJob(
        id=job_id,
        task="note",
        args_json="{}",
        queue="default",
        priority=0,
        max_attempts=1,
        retry_json="{}",
        run_at=time.time(),
        tenant=tenant,
        status=Status.WAITING,
    )


def test_store_owner_guard_writes_nothing_when_an_id_is_another_tenants(lib):
    store = lib.store
    store.enqueue([new_job("acme:taken-1", "globex"), new_job("acme:mine", "acme")])
    with pytest.raises(JobIdTaken, match="'acme:taken-1' is taken"):
        store.enqueue(
            [new_job("acme:taken-0", "acme"), new_job("acme:taken-1", "acme"), new_job("acme:taken-2", "acme")],
            {"default": None},
            owner="acme",
        )
    with pytest.raises(JobIdTaken):  # the single-job path too
        store.enqueue([new_job("acme:taken-1", "acme")], owner="acme")
    assert store.get_job("acme:taken-0") is None and store.get_job("acme:taken-2") is None
    # the owner's own existing jobs are idempotent as ever
    results = store.enqueue([new_job("acme:mine", "acme"), new_job("acme:new", "acme")], owner="acme")
    assert [(r.id, r.created) for r in results] == [("acme:mine", False), ("acme:new", True)]
    # and through the app: the whole bulk or nothing
    with pytest.raises(JobIdTaken):
        lib._enqueue(
            "note",
            [{}, {}, {}],
            single=False,
            id="acme:taken",
            queue=None,
            delay=None,
            start_at=None,
            retry=None,
            priority=None,
            tenant="acme",
            limits=None,
            owner="acme",
        )
    assert {j.id for j in store.list_jobs(limit=100)} == {"acme:taken-1", "acme:mine", "acme:new"}


def test_sqlite_url_options_are_bounded(tmp_path):
    for value in ("-1", "1e309", "nan", "inf", "100000"):
        with pytest.raises(ConfigError, match="busy_timeout"):
            open_store(f"sqlite:///{tmp_path / 'x.db'}?busy_timeout={value}")
    open_store(f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=0.5").close()


# -- the web API -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[SimpleNamespace]:
    path = tmp_path_factory.mktemp("hardening") / "floodway.db"
    app = make_app(path)
    install_webhook(app)  # registers floodway's own task, floodway.alert
    with serving(app) as server:
        yield SimpleNamespace(app=app, server=server, tokens=tokens(app), db=path)
    app.close()


@pytest.fixture(scope="module")
def admin(site) -> Iterator[httpx.Client]:
    with client(site.server, site.tokens["admin"]) as c:
        yield c


@pytest.fixture(scope="module")
def acme(site) -> Iterator[httpx.Client]:
    with client(site.server, site.tokens["acme"]) as c:
        yield c


def total(site) -> int:
    return len(site.app.store.list_jobs(limit=100_000))


def post_raw(c: httpx.Client, path: str, text: str) -> httpx.Response:
    """POST a JSON body written by hand (``\\ud800`` escapes, deep nesting, huge numbers)."""
    return c.post(path, content=text.encode("ascii"), headers={"content-type": "application/json"})


def expect_error(r: httpx.Response, code: int, fragment: str = "") -> None:
    assert r.status_code == code, f"expected {code}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    assert fragment in r.json()["error"], r.json()["error"]


ECHO = '{"task": "echo", "args": {"value": 1}, %s}'
BAD_API_ENQUEUES = [
    # unencodable text, wherever it is
    ('{"task": "echo", "args": {"value": "\\ud800"}}', "surrogate"),
    ('{"task": "echo", "args": {"\\udfff": 1}}', "\\udfff"),  # echo takes no such argument
    ('{"task": "echo", "args": {"value": {"a": ["\\ud800x"]}}}', "surrogate"),
    (ECHO % '"id": "x\\ud800"', "surrogate"),
    (ECHO % '"queue": "web\\ud800"', "surrogate"),
    (ECHO % '"tenant": "t\\ud800"', "surrogate"),
    ('{"task": "echo\\ud800"}', "surrogate"),
    # JSON nested 5,000 deep, or just deeper than stored JSON may be
    ('{"task": "echo", "args": {"value": %s}}' % ("[" * DEEP + "]" * DEEP), "nested too deeply"),
    ('{"task": "echo", "args": {"value": %s}}' % ("[" * 150 + "]" * 150), "nested more than 100"),
    # numbers and instants
    (ECHO % '"priority": %d' % 2**70, "priority must be between"),
    (ECHO % '"delay": "3000000d"', "'delay' is more than 3650 days"),
    # names
    (ECHO % '"id": "a/events"', "'/'"),
    (ECHO % '"id": "a\\u0000b"', "control character"),
    (ECHO % '"queue": "web\\n"', "control character"),
    (ECHO % '"tenant": "a:b"', "':'"),
    (ECHO % '"tenant": "cron"', "reserved"),
    (ECHO % ('"tenant": "%s"' % ("x" * 100_000)), "longer than 255"),
    # floodway's own namespaces and tasks
    (ECHO % '"id": "cron:acme-nightly:1700000000"', "namespace floodway keeps"),
    ('{"task": "floodway.alert", "args": {"alert": {}}}', "unknown task 'floodway.alert'"),
]


@pytest.mark.parametrize("body, fragment", BAD_API_ENQUEUES)
def test_api_enqueue_refuses_bad_input_with_400_and_writes_nothing(site, admin, body, fragment):
    before = total(site)
    expect_error(post_raw(admin, "/api/jobs", body), 400, fragment)
    bulk = json.loads(body) if len(body) < 200_000 and "[" * 150 not in body else None
    if bulk is not None and "args" in bulk:
        bulk["items"] = [{"value": 1}, bulk.pop("args")]
        expect_error(post_raw(admin, "/api/jobs/bulk", json.dumps(bulk)), 400)
    assert total(site) == before


def test_unknown_task_errors_never_list_internal_tasks(site, admin, acme):
    assert ALERT_TASK in site.app.tasks
    for c in (admin, acme):
        for path, body in [
            ("/api/jobs", {"task": "nope"}),
            ("/api/jobs/bulk", {"task": "nope", "items": [{}]}),
            ("/api/jobs", {"task": ALERT_TASK, "args": {"alert": {}}}),
            ("/api/jobs/bulk", {"task": ALERT_TASK, "items": [{"alert": {}}]}),
        ]:
            r = c.post(path, json=body)
            expect_error(r, 400, "unknown task")
            assert "floodway." not in r.json()["error"].split("registered:")[1]
    enum = admin.get("/openapi.json").json()["components"]["schemas"]["EnqueueRequest"]["properties"]["task"]["enum"]
    assert ALERT_TASK not in enum and "echo" in enum


def test_stored_unencodable_text_and_far_instants_still_read(site, admin):
    """Rows as an older version wrote them (or as written by hand): a lone surrogate escaped in
    the args JSON, a run_at in the year 10240. Every read answers."""
    job_id = admin.post(
        "/api/jobs", json={"task": "echo", "args": {"value": "placeholder"}, "tenant": "acme", "delay": "1h"}
    ).json()["id"]
    with sqlite3.connect(site.db) as db:
        db.execute(
            "UPDATE jobs SET args = ?, run_at = ?, result = ? WHERE id = ?",
            ('{"value":"\\ud800","\\udc00":"key"}', 2.6e11, '"\\udfff"', job_id),
        )
    one = admin.get(f"/api/jobs/{job_id}")
    assert one.status_code == 200, one.text
    assert one.json()["args"] == {"value": LONE, "\udc00": "key"}
    assert one.json()["run_at"].startswith("9999-")
    listed = admin.get("/api/jobs", params={"limit": 1000})
    assert listed.status_code == 200 and job_id in {j["id"] for j in listed.json()["jobs"]}
    for path in (f"/api/jobs/{job_id}/detail", f"/api/jobs/{job_id}/result", f"/api/jobs/{job_id}/events"):
        assert admin.get(path).status_code == 200, path
    with client(site.server, cookies={"floodway_token": site.tokens["admin"]}) as browser:
        for path in (f"/jobs/{job_id}", f"/ui/job/{job_id}", "/ui/jobs", "/jobs"):
            r = browser.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert "\ufffd" in browser.get(f"/jobs/{job_id}").text
        with browser.stream("GET", f"/api/jobs/{job_id}/stream") as stream:
            assert stream.status_code == 200
    with sqlite3.connect(site.db) as db:  # leave nothing odd for the other tests
        db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def test_tenant_ids_are_scoped_unambiguously(site, admin, acme):
    # tenant `a` enqueuing `b:invoice-42` can no longer squat tenant `a:b`: no such tenant can exist
    with pytest.raises(ConfigError):
        create_token(site.app.store, tenant="acme:b")
    r = acme.post("/api/jobs", json={"task": "echo", "args": {}, "id": "b:invoice-42"})
    assert r.status_code == 201 and r.json()["id"] == "acme:b:invoice-42"
    # a tenant named after floodway's own namespace cannot exist, so no tenant can pre-create a tick
    with pytest.raises(ConfigError, match="reserved"):
        create_token(site.app.store, tenant="cron")
    expect_error(
        admin.post("/api/jobs", json={"task": "add", "args": {"x": 1, "y": 1}, "id": "cron:housekeeping:1700000000"}),
        400,
        "namespace",
    )


def test_a_409_bulk_writes_none_of_its_items(site, admin, acme):
    key = uuid.uuid4().hex[:8]
    # an admin made acme's id `acme:<key>-1` a job of another tenant
    r = admin.post("/api/jobs", json={"task": "echo", "args": {}, "id": f"acme:{key}-1", "tenant": "globex"})
    assert r.status_code == 201
    before = total(site)
    expect_error(
        acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{"value": i} for i in range(3)], "id": key}),
        409,
        "is taken",
    )
    assert total(site) == before
    assert admin.get(f"/api/jobs/acme:{key}-0").status_code == 404
    assert admin.get(f"/api/jobs/acme:{key}-2").status_code == 404
    expect_error(acme.post("/api/jobs", json={"task": "echo", "args": {}, "id": f"{key}-1"}), 409, "is taken")
    assert total(site) == before
    # acme's own ids stay idempotent
    first = acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{}, {}], "id": f"{key}-own"}).json()
    again = acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{}, {}], "id": f"{key}-own"}).json()
    assert (first["created"], again["created"], again["existing"]) == (2, 0, 2)


def test_tenant_tokens_cannot_create_queues(site, admin, acme):
    before = {q["name"] for q in admin.get("/api/queues").json()["queues"]}
    expect_error(acme.post("/api/jobs", json={"task": "echo", "args": {}, "queue": "made-up"}), 400, "unknown queue")
    expect_error(
        acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{}], "queue": "made-up-2"}), 400, "unknown queue"
    )
    assert {q["name"] for q in admin.get("/api/queues").json()["queues"]} == before
    assert acme.post("/api/jobs", json={"task": "echo", "args": {}, "queue": "web"}).status_code == 201
    assert acme.post("/api/jobs", json={"task": "echo", "args": {}, "queue": "default"}).status_code == 201
    # admin tokens may still open a new queue
    assert (
        admin.post("/api/jobs", json={"task": "echo", "args": {}, "queue": "admin-made", "tenant": "acme"}).status_code
        == 201
    )


def test_job_ids_with_a_slash_cannot_be_made_so_routes_stay_unambiguous(site, admin, acme):
    before = total(site)
    expect_error(acme.post("/api/jobs", json={"task": "echo", "args": {}, "id": "x/events"}), 400, "'/'")
    expect_error(
        admin.post("/api/jobs/bulk", json={"task": "echo", "items": [{}], "id": "x/y", "tenant": "acme"}), 400, "'/'"
    )
    assert total(site) == before


def test_huge_numbers_are_400_not_500(site, admin):
    r = admin.request(
        "PATCH",
        "/api/limits/partner-api",
        content=('{"burst": %d}' % 2**70).encode(),
        headers={"content-type": "application/json"},
    )
    expect_error(r, 400, "burst")
    r = admin.request(
        "PATCH",
        "/api/limits/partner-api",
        content=('{"concurrency": %d}' % 2**70).encode(),
        headers={"content-type": "application/json"},
    )
    expect_error(r, 400, "concurrency")
    expect_error(admin.patch("/api/limits/partner-api", json={"rate": "9" * 400 + "/s"}), 400, "rate")
    limit = {lim["name"]: lim for lim in admin.get("/api/limits").json()["limits"]}["partner-api"]
    assert (limit["burst"], limit["rate"]) == (4, "20/s")
    expect_error(admin.get("/api/jobs", params={"offset": "99999999999999999999999"}), 400, "offset")
    with client(site.server, cookies={"floodway_token": site.tokens["admin"]}) as browser:
        for path in ("/ui/jobs", "/jobs"):
            r = browser.get(path, params={"offset": "99999999999999999999999"})
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert browser.get("/ui/jobs", params={"offset": "50"}).status_code == 200
    expect_error(admin.post("/api/queues/web%01/pause"), 400, "control character")


HOSTILE = [
    ("POST", "/api/jobs", '{"task": "echo", "args": {"value": "\\ud800"}, "tenant": "acme"}'),
    ("POST", "/api/jobs", '{"task": "echo", "args": {"value": 1}, "tenant": "acme", "priority": %d}' % 2**64),
    ("POST", "/api/jobs", '{"task": "echo", "args": {"value": 1}, "tenant": "acme", "delay": 1e308}'),
    ("POST", "/api/jobs", '{"task": "echo", "args": {"value": %s}, "tenant": "acme"}' % ("[" * DEEP + "]" * DEEP)),
    ("POST", "/api/jobs/bulk", '{"task": "echo", "items": [{"value": 1}, {"value": "\\udbff"}], "tenant": "acme"}'),
    ("POST", "/api/jobs/bulk", '{"task": "echo", "items": [{}], "tenant": "acme", "id": "%s"}' % ("x" * 254)),
    ("POST", "/api/jobs/bulk", '{"task": "floodway.alert", "items": [{"alert": {}}]}'),
    ("PATCH", "/api/limits/partner-api", '{"burst": %d}' % 2**63),
    ("PATCH", "/api/limits/per-tenant", '{"rate": "1e999/s"}'),
    ("POST", "/api/queues/%F0%9F%98%80%ED%A0%80/pause", ""),
    ("POST", "/api/limits/partner-api/reset", '{"key": "\\ud800"}'),
]


@pytest.mark.parametrize("method, path, body", HOSTILE)
def test_no_request_answers_5xx_and_an_error_writes_nothing(site, admin, method, path, body):
    def state():
        # the API's own per-token request quota (floodway.api) counts every request by design
        limits = [lim for lim in admin.get("/api/limits").json()["limits"] if lim["name"] != "floodway.api"]
        return total(site), limits, admin.get("/api/queues").json()["queues"]

    before = state()
    r = admin.request(
        method, path, content=body.encode("ascii") if body else None, headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert state() == before


# -- the CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def clean_failure(proc: Any, fragment: str) -> None:
    """Exit 2 with one line of error (after any progress lines), never a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if "━" not in line]
    assert len(lines) == 1 and lines[0].startswith(("error:", "usage error:")), proc.stderr
    assert fragment in lines[0], lines[0]


def test_cli_enqueue_refuses_bad_input_with_one_line_and_writes_nothing(cli):
    for args, fragment in [
        (("send", "--args", '{"to": "\\ud800"}'), "surrogate"),
        (("send", "--args", '{"to": "x"}', "--id", "a/b"), "'/'"),
        (("send", "--args", '{"to": "x"}', "--id", "a\tb"), "control character"),
        (("send", "--args", '{"to": "x"}', "--tenant", "a:b"), "':'"),
        (("send", "--args", '{"to": "x"}', "--tenant", "cron"), "reserved"),
        (("send", "--args", '{"to": "x"}', "--tenant", "t" * 300), "longer than 255"),
        (("send", "--args", '{"to": "x"}', "--priority", str(2**70)), "priority must be between"),
        (("send", "--args", '{"to": "x"}', "--delay", "3000000d"), "'delay' is more than 3650 days"),
        (("send", "--args", '{"to": %s}' % ("[" * DEEP + "]" * DEEP)), "nested too deeply"),
    ]:
        proc = cli.run("enqueue", *args, app=True)
        clean_failure(proc, fragment)
    lines = cli.path / "jobs.jsonl"
    lines.write_text('{"to": "a"}\n{"to": "b"}\n')
    for options, fragment in [
        (("--tenant", "a:b"), "':'"),
        (("--id", "batch/1"), "'/'"),
        (("--delay", "3000000d"), "'delay' is more than 3650 days"),
        (("--batch-size", "1", "--priority", str(2**40)), "priority must be between"),
    ]:
        proc = cli.run("enqueue-file", "send", str(lines), *options, app=True)
        clean_failure(proc, fragment)
    lines.write_text('{"to": "a"}\n{"to": "\\ud800"}\n')
    clean_failure(cli.run("enqueue-file", "send", str(lines), "--batch-size", "1", app=True), "surrogate")
    proc = cli.run("token", "create", "--tenant", "a:b")
    clean_failure(proc, "':'")
    clean_failure(cli.run("limits", "set", "api", "--burst", str(2**70), app=True), "burst")
    assert cli.json("jobs") == [] and cli.json("token", "list") == []


def test_cli_reads_stored_rows_it_could_not_have_written(cli):
    job_id = cli.enqueue("send", {"to": "ada@example.com"}, "--tenant", "acme")
    with sqlite3.connect(cli.path / "jobs.db") as db:
        db.execute("UPDATE jobs SET args = ?, run_at = ? WHERE id = ?", ('{"to":"\\ud800"}', 2.6e11, job_id))
    for args in (("jobs",), ("status", job_id)):
        for as_json in (False, True):
            proc = cli.run(*args, as_json=as_json)
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
            assert job_id in proc.stdout
