"""The web API over real HTTP: uvicorn on a loopback port in a thread, a temporary SQLite
database, workers in this process when a test needs jobs to run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest

from floodway.web.openapi import document

from ..web_helpers import (
    GATES,
    RELEASE,
    client,
    login_csrf,
    make_app,
    read_sse,
    running_worker,
    serving,
    tokens,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[SimpleNamespace]:
    path = tmp_path_factory.mktemp("web") / "floodway.db"
    app = make_app(path)
    with serving(app) as server:
        yield SimpleNamespace(app=app, server=server, url=server.url, tokens=tokens(app), db=path)
    app.close()


@pytest.fixture(scope="module")
def admin(site) -> Iterator[httpx.Client]:
    with client(site.server, site.tokens["admin"]) as c:
        yield c


@pytest.fixture(scope="module")
def acme(site) -> Iterator[httpx.Client]:
    with client(site.server, site.tokens["acme"]) as c:
        yield c


@pytest.fixture(scope="module")
def globex(site) -> Iterator[httpx.Client]:
    with client(site.server, site.tokens["globex"]) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(site) -> Iterator[httpx.Client]:
    with client(site.server) as c:
        yield c


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def enqueue(c: httpx.Client, task: str, args: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    r = c.post("/api/jobs", json={"task": task, "args": args or {}, **options})
    assert r.status_code in (200, 201), r.text
    return r.json()


def status_of(c: httpx.Client, job_id: str) -> str:
    r = c.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()["status"]


def assert_error(r: httpx.Response, code: int, *fragments: str) -> dict[str, Any]:
    assert r.status_code == code, f"expected {code}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body


# -- access ---------------------------------------------------------------------------------------
def test_healthz_needs_no_token(anonymous):
    r = anonymous.get("/healthz")
    assert r.status_code == 200
    assert r.json()["ok"] is True and r.json()["schema_version"] >= 1


PROTECTED = [
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs"),
    ("POST", "/api/jobs/bulk"),
    ("GET", "/api/jobs/x"),
    ("GET", "/api/jobs/x/result"),
    ("GET", "/api/jobs/x/events"),
    ("GET", "/api/jobs/x/state"),
    ("GET", "/api/jobs/x/flow"),
    ("GET", "/api/jobs/x/detail"),
    ("GET", "/api/jobs/x/stream"),
    ("POST", "/api/jobs/x/cancel"),
    ("POST", "/api/jobs/x/retry"),
    ("POST", "/api/jobs/x/pause"),
    ("POST", "/api/jobs/x/resume"),
    ("GET", "/api/queues"),
    ("POST", "/api/queues/web/pause"),
    ("POST", "/api/queues/web/resume"),
    ("GET", "/api/limits"),
    ("PATCH", "/api/limits/partner-api"),
    ("GET", "/api/workers"),
    ("GET", "/api/schedules"),
    ("GET", "/api/stats"),
    ("GET", "/api/stream"),
    ("GET", "/api/me"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer fw_deadbeef_notarealsecretatallxxxxxxxxxxxx"],
)
def test_every_route_but_healthz_needs_a_live_token(site, header):
    headers = {"Authorization": header} if header is not None else {}
    with client(site.server) as c:
        for method, path in PROTECTED:
            r = c.request(method, path, headers=headers, json={"task": "add"} if method != "GET" else None)
            assert_error(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_dashboard_without_a_token_goes_to_the_login_page(anonymous):
    r = anonymous.get("/jobs?status=failed", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    page = anonymous.get("/login")
    assert page.status_code == 200 and 'name="token"' in page.text
    assert anonymous.get("/ui/queues").status_code == 401
    assert anonymous.get("/static/app.js").status_code == 200  # the login page's own assets


def test_token_cli_create_list_revoke_and_a_revoked_token_gets_401(site, admin):
    from click.testing import CliRunner

    from floodway.cli import cli

    def floodway(*commands: tuple[str, ...]) -> list[Any]:
        """Run each command in process (``floodway web`` itself is run as a process below)."""
        runner = CliRunner()
        return [runner.invoke(cli, ["--database", f"sqlite:///{site.db}", *args]) for args in commands]

    made, plain, neither, both = floodway(
        ("--json", "token", "create", "--tenant", "initech", "--label", "ci"),
        ("token", "create", "--admin"),
        ("token", "create"),
        ("token", "create", "--admin", "--tenant", "x"),
    )
    assert made.exit_code == 0, made.output
    info = json.loads(made.stdout)
    assert info["tenant"] == "initech" and info["admin"] is False and info["token"].startswith("fw_")
    assert plain.exit_code == 0 and "shown only this once" in plain.stdout and "fw_" in plain.stdout
    assert neither.exit_code == 2 and "--tenant NAME or --admin" in neither.output
    assert both.exit_code == 2

    listed_json, listed = floodway(("--json", "token", "list"), ("token", "list"))
    row = next(t for t in json.loads(listed_json.stdout) if t["id"] == info["id"])
    assert row["tenant"] == "initech" and row["revoked_at"] is None and "token" not in row
    assert "initech" in listed.stdout and info["token"] not in listed.stdout + listed_json.stdout

    with client(site.server, info["token"]) as c:
        assert c.get("/api/me").json() == {"token_id": info["id"], "tenant": "initech", "admin": False, "label": "ci"}
        (revoked,) = floodway(("token", "revoke", info["id"]))
        assert revoked.exit_code == 0, revoked.output
        assert_error(c.get("/api/me"), 401, "revoked")
        assert_error(c.get("/api/jobs"), 401)
    again, listed_json = floodway(("token", "revoke", info["id"]), ("--json", "token", "list"))
    assert again.exit_code == 1  # not live any more
    assert next(t for t in json.loads(listed_json.stdout) if t["id"] == info["id"])["revoked_at"] is not None


def test_admin_and_tenant_identity(admin, acme):
    assert admin.get("/api/me").json()["admin"] is True
    me = acme.get("/api/me").json()
    assert me["admin"] is False and me["tenant"] == "acme"


# -- enqueue, status, result, events --------------------------------------------------------------
def test_enqueue_status_result_events(site, admin):
    job_id = uid("add")
    r = admin.post("/api/jobs", json={"task": "add", "args": {"x": 2, "y": 3}, "id": job_id, "priority": 5})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == job_id and body["created"] is True and body["status"] == "waiting"
    again = admin.post("/api/jobs", json={"task": "add", "args": {"x": 2, "y": 3}, "id": job_id})
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["id"] == job_id

    job = admin.get(f"/api/jobs/{job_id}").json()
    assert job["task"] == "add" and job["args"] == {"x": 2, "y": 3} and job["queue"] == "web"
    assert job["priority"] == 5 and job["tenant"] is None and job["attempt"] == 0
    pending = admin.get(f"/api/jobs/{job_id}/result").json()
    assert pending == {"id": job_id, "status": "waiting", "done": False, "result": None, "error": None}

    with running_worker(site.app):
        done = admin.get(f"/api/jobs/{job_id}/result", params={"wait": 10}).json()
    assert done == {"id": job_id, "status": "complete", "done": True, "result": 5, "error": None}
    events = admin.get(f"/api/jobs/{job_id}/events").json()["events"]
    assert [(e["from"], e["to"]) for e in events] == [
        (None, "waiting"),
        ("waiting", "running"),
        ("running", "complete"),
    ]
    detail = admin.get(f"/api/jobs/{job_id}/detail").json()
    assert detail["job"]["status"] == "complete" and len(detail["events"]) == 3
    assert [a["outcome"] for a in detail["attempts"]] == ["complete"]
    assert admin.get(f"/api/jobs/{job_id}/state").json()["key"] == f"job:{job_id}"


def test_result_wait_returns_when_time_is_up(admin):
    job_id = enqueue(admin, "add", {"x": 1, "y": 1}, delay="10m")["id"]
    started = time.monotonic()
    r = admin.get(f"/api/jobs/{job_id}/result", params={"wait": 0.4})
    assert time.monotonic() - started >= 0.35
    assert r.json() == {"id": job_id, "status": "scheduled", "done": False, "result": None, "error": None}
    admin.post(f"/api/jobs/{job_id}/cancel")


def test_delay_as_seconds_or_duration(admin):
    for delay in (30, "30s", 0.5):
        job = enqueue(admin, "add", {"x": 1, "y": 1}, delay=delay)
        assert job["status"] == "scheduled"
        admin.post(f"/api/jobs/{job['id']}/cancel")


def test_concurrent_enqueue_requests_share_transactions(site):
    """60 POST /api/jobs at once over real HTTP: each answers 201 with its own job, written
    before the answer, and the requests' jobs share a few transactions (the group commit)."""
    app = site.app
    before = app.group_commit.transactions

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {site.tokens['admin']}"}
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=site.url, headers=headers, timeout=30, limits=limits) as c:
            return await asyncio.gather(
                *(c.post("/api/jobs", json={"task": "add", "args": {"x": i, "y": 1}}) for i in range(60))
            )

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [201] * 60
    for i, r in enumerate(answers):
        job = app.store.get_job(r.json()["id"])
        assert job is not None and job.args == {"x": i, "y": 1}
    assert app.group_commit.transactions - before < 60


def test_bulk_enqueue_is_all_or_nothing(site, admin):
    prefix = uid("bulk")
    r = admin.post(
        "/api/jobs/bulk",
        json={
            "task": "add",
            "items": [{"x": i, "y": 1} for i in range(5)],
            "id": prefix,
            "queue": "web",
            "priority": 1,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"ids": [f"{prefix}-{i}" for i in range(5)], "created": 5, "existing": 0}
    again = admin.post(
        "/api/jobs/bulk", json={"task": "add", "items": [{"x": i, "y": 1} for i in range(5)], "id": prefix}
    )
    assert again.status_code == 200 and again.json()["created"] == 0 and again.json()["existing"] == 5

    task_before = len(admin.get("/api/jobs", params={"task": "echo", "limit": 1000}).json()["jobs"])
    bad = admin.post(
        "/api/jobs/bulk", json={"task": "echo", "items": [{"value": 1}, {"value": 2, "nope": 3}], "tenant": "acme"}
    )
    assert_error(bad, 400, "item 1")
    assert len(admin.get("/api/jobs", params={"task": "echo", "limit": 1000}).json()["jobs"]) == task_before
    assert_error(admin.post("/api/jobs/bulk", json={"task": "add", "items": []}), 400, "items")
    assert_error(admin.post("/api/jobs/bulk", json={"task": "add", "items": [1, 2]}), 400, "items[0]")
    assert_error(admin.post("/api/jobs/bulk", json={"task": "add"}), 400, "items")
    with running_worker(site.app):
        wait_for(lambda: all(status_of(admin, f"{prefix}-{i}") == "complete" for i in range(5)), message="bulk jobs")


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"task": "no_such_task"}, "unknown task 'no_such_task'"),
        ({"args": {"x": 1}}, "'task' is required"),
        ({"task": "add", "args": {"x": 1}}, "args do not match"),
        ({"task": "add", "args": [1, 2]}, "'args' must be a JSON object"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "delay": "soon"}, "delay"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "delay": -5}, "delay"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "delay": 1e300}, "'delay' is more than 3650 days"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "delay": "99999999h"}, "'delay' is more than"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "priority": "high"}, "'priority' must be an integer"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "id": ""}, "'id' must be a non-empty string"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "id": "x" * 300}, "longer than"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "queue": 7}, "'queue'"),
        ({"task": "add", "args": {"x": 1, "y": 2}, "colour": "red"}, "unknown field(s) ['colour']"),
    ],
)
def test_enqueue_bad_input_is_400_with_a_clear_message(admin, body, fragment):
    assert_error(admin.post("/api/jobs", json=body), 400, fragment)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"", "JSON object"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"task": "add", "args": {"x": NaN, "y": 1}}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_400(admin, raw, fragment):
    r = admin.post("/api/jobs", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, fragment)


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("/api/jobs", {"status": "done"}, "unknown status 'done'"),
        ("/api/jobs", {"limit": 0}, "'limit'"),
        ("/api/jobs", {"limit": "many"}, "'limit' must be an integer"),
        ("/api/jobs", {"offset": -1}, "'offset'"),
        ("/api/stats", {"window": "x"}, "'window'"),
        ("/api/stream", {"interval": 0}, "'interval'"),
    ],
)
def test_bad_query_parameters_are_400(admin, path, params, fragment):
    assert_error(admin.get(path, params=params), 400, fragment)


def test_result_wait_bounds_are_checked(admin):
    job_id = enqueue(admin, "add", {"x": 1, "y": 1}, delay="10m")["id"]
    assert_error(admin.get(f"/api/jobs/{job_id}/result", params={"wait": -1}), 400, "'wait'")
    assert_error(admin.get(f"/api/jobs/{job_id}/result", params={"wait": 61}), 400, "'wait'")
    admin.post(f"/api/jobs/{job_id}/cancel")


def test_unknown_jobs_routes_and_methods(admin):
    assert_error(admin.get("/api/jobs/no-such-job"), 404, "no job with id 'no-such-job'")
    for suffix in ("result", "events", "state", "flow", "detail", "stream"):
        assert_error(admin.get(f"/api/jobs/no-such-job/{suffix}"), 404, "no job")
    for action in ("cancel", "retry", "pause", "resume"):
        assert_error(admin.post(f"/api/jobs/no-such-job/{action}"), 404, "no job")
    assert_error(admin.get("/api/nothing-here"), 404)
    assert_error(admin.delete("/api/jobs"), 405)


def test_body_size_limit_is_413(admin):
    big = {"task": "echo", "args": {"value": "x" * 1_100_000}}
    assert_error(admin.post("/api/jobs", json=big), 413, "over the limit")
    assert_error(admin.post("/api/jobs/bulk", json={"task": "echo", "items": [{"value": "y" * 1_100_000}]}), 413)
    assert_error(admin.patch("/api/limits/partner-api", content=b"{" + b" " * 1_100_000 + b"}"), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"task": "echo", "args": {"value": "'
        for _ in range(120):
            yield b"z" * 10_000
        yield b'"}}'

    assert_error(admin.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"}), 413)
    # just under the limit is fine (floodway's own payload limit is what answers then)
    fits = admin.post("/api/jobs", json={"task": "echo", "args": {"value": "x" * 900_000}, "tenant": "acme"})
    assert fits.status_code == 201, fits.text


# -- cancel, retry, pause, resume -------------------------------------------------------------------
def test_cancel_pause_resume_retry_and_409s(site, admin):
    job_id = enqueue(admin, "add", {"x": 4, "y": 4}, delay="10m")["id"]
    paused = admin.post(f"/api/jobs/{job_id}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert admin.get(f"/api/jobs/{job_id}").json()["paused"] is True
    assert admin.post(f"/api/jobs/{job_id}/resume").json()["paused"] is False
    assert_error(admin.post(f"/api/jobs/{job_id}/retry"), 409, "only failed, cancelled or retrying")
    cancelled = admin.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.json() == {"id": job_id, "status": "cancelled", "cancel_requested": False}
    assert admin.post(f"/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent
    assert_error(admin.post(f"/api/jobs/{job_id}/pause"), 409, "only unfinished jobs")
    assert admin.post(f"/api/jobs/{job_id}/retry").json() == {"id": job_id, "status": "waiting"}
    with running_worker(site.app):
        assert admin.get(f"/api/jobs/{job_id}/result", params={"wait": 10}).json()["result"] == 8
    assert_error(admin.post(f"/api/jobs/{job_id}/retry"), 409)
    assert_error(admin.post(f"/api/jobs/{job_id}/cancel"), 409, "complete")
    reasons = [e["reason"] for e in admin.get(f"/api/jobs/{job_id}/events").json()["events"]]
    assert "cancelled by user" in reasons and "retried by user" in reasons


def test_cancel_a_running_job_and_retry_a_failed_one(site, admin):
    key = uid("hold")
    RELEASE[key] = threading.Event()
    running_id = enqueue(admin, "hold", {"key": key})["id"]
    failing_id = enqueue(admin, "flaky", {"key": key})["id"]
    with running_worker(site.app):
        wait_for(lambda: status_of(admin, running_id) == "running", message="hold running")
        r = admin.post(f"/api/jobs/{running_id}/cancel")
        assert r.json() == {"id": running_id, "status": "running", "cancel_requested": True}
        wait_for(lambda: status_of(admin, running_id) == "cancelled", message="running job cancelled")
        failed = admin.get(f"/api/jobs/{failing_id}/result", params={"wait": 10}).json()
        assert failed["status"] == "failed" and failed["done"] and "gate" in failed["error"]["message"]
        GATES[key] = True
        assert admin.post(f"/api/jobs/{failing_id}/retry").json()["status"] == "waiting"
        again = admin.get(f"/api/jobs/{failing_id}/result", params={"wait": 10}).json()
        assert again["status"] == "complete" and again["result"] == f"gate {key} opened"
    RELEASE[key].set()


# -- lists, queues, limits, workers, schedules, stats, flows ----------------------------------------------
def test_list_and_filter_jobs(site, admin):
    task_tenant = uid("lister")
    made = [enqueue(admin, "echo", {"value": i}, tenant=task_tenant)["id"] for i in range(4)]
    later = enqueue(admin, "add", {"x": 1, "y": 1}, tenant=task_tenant, delay="1h")["id"]
    listed = admin.get("/api/jobs", params={"tenant": task_tenant}).json()
    assert [j["id"] for j in listed["jobs"]] == [later, *reversed(made)]  # newest first
    assert listed["count"] == 5 and listed["limit"] == 50 and listed["offset"] == 0
    page = admin.get("/api/jobs", params={"tenant": task_tenant, "limit": 2, "offset": 1}).json()["jobs"]
    assert [j["id"] for j in page] == [made[3], made[2]]
    only = admin.get("/api/jobs", params={"tenant": task_tenant, "status": "scheduled"}).json()["jobs"]
    assert [j["id"] for j in only] == [later]
    both = admin.get("/api/jobs", params={"tenant": task_tenant, "status": "scheduled,waiting"}).json()["jobs"]
    assert len(both) == 5
    repeated = admin.get("/api/jobs", params=[("tenant", task_tenant), ("status", "scheduled"), ("status", "waiting")])
    assert len(repeated.json()["jobs"]) == 5
    assert {
        j["task"] for j in admin.get("/api/jobs", params={"tenant": task_tenant, "task": "add"}).json()["jobs"]
    } == {"add"}
    assert admin.get("/api/jobs", params={"tenant": task_tenant, "queue": "nope"}).json()["jobs"] == []
    for job_id in [*made, later]:
        admin.post(f"/api/jobs/{job_id}/cancel")


def test_queues_with_counts_and_pause_resume(site, admin, acme):
    queue = uid("q")
    job_id = enqueue(admin, "add", {"x": 1, "y": 1}, queue=queue)["id"]
    found = {q["name"]: q for q in admin.get("/api/queues").json()["queues"]}
    assert found[queue]["counts"]["waiting"] == 1 and found[queue]["max_concurrency"] == 1
    assert set(found[queue]["counts"]) == {
        "scheduled",
        "waiting",
        "running",
        "retrying",
        "failed",
        "complete",
        "cancelled",
    }
    assert admin.post(f"/api/queues/{queue}/pause").json() == {"queue": queue, "paused": True}
    assert {q["name"]: q for q in admin.get("/api/queues").json()["queues"]}[queue]["paused"] is True
    with running_worker(site.app):
        assert admin.get(f"/api/jobs/{job_id}/result", params={"wait": 0.5}).json()["status"] == "waiting"
        assert admin.post(f"/api/queues/{queue}/resume").json() == {"queue": queue, "paused": False}
        assert admin.get(f"/api/jobs/{job_id}/result", params={"wait": 10}).json()["status"] == "complete"
    assert_error(acme.post(f"/api/queues/{queue}/pause"), 403, "admin")
    assert_error(acme.post(f"/api/queues/{queue}/resume"), 403, "admin")


def test_limits_list_and_change_at_run_time(admin, acme):
    limits = {lim["name"]: lim for lim in admin.get("/api/limits").json()["limits"]}
    assert limits["partner-api"]["rate"] == "20/s" and limits["partner-api"]["burst"] == 4
    assert limits["per-tenant"]["key"] == "{tenant}"
    changed = admin.patch("/api/limits/partner-api", json={"rate": "10/s", "burst": 2, "concurrency": 3})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["rate"], changed.json()["burst"], changed.json()["concurrency"]) == ("10/s", 2, 3)
    again = {lim["name"]: lim for lim in admin.get("/api/limits").json()["limits"]}["partner-api"]
    assert (again["rate"], again["burst"], again["concurrency"]) == ("10/s", 2, 3)
    assert admin.patch("/api/limits/partner-api", json={"concurrency": None}).json()["concurrency"] is None
    assert_error(admin.patch("/api/limits/no-such-limit", json={"rate": "1/s"}), 404, "no limit named")
    assert_error(admin.patch("/api/limits/partner-api", json={"rate": "fast"}), 400, "rate")
    assert_error(admin.patch("/api/limits/partner-api", json={"burst": 0}), 400, "burst")
    assert_error(admin.patch("/api/limits/partner-api", json={"burst": None}), 400, "burst")
    assert_error(admin.patch("/api/limits/partner-api", json={}), 400, "at least one")
    assert_error(admin.patch("/api/limits/partner-api", json={"speed": 1}), 400, "unknown field")
    assert_error(acme.patch("/api/limits/partner-api", json={"rate": "1000/s"}), 403, "admin")
    assert_error(acme.patch("/api/limits/per-tenant", json={"rate": "1000/s"}), 403, "admin")
    restored = admin.patch("/api/limits/partner-api", json={"rate": "20/s", "burst": 4}).json()
    assert (restored["rate"], restored["burst"]) == ("20/s", 4)


def test_a_limit_reads_alone_and_what_it_learned_can_be_reset(site, admin, acme):
    from floodway.quota import Observation

    now = time.time()
    site.app.store.observe_limit("partner-api", "", Observation(now=now, accepted=10))
    site.app.store.observe_limit("partner-api", "", Observation(now=now + 0.5, token_at=now + 0.4, throttled=1))
    one = admin.get("/api/limits/partner-api")
    assert one.status_code == 200, one.text
    key = one.json()["keys"][0]
    assert key["source"] == "429s" and key["effective_rate"] < 20 and key["throttled"] == 1, key
    assert one.json()["declared"]["rate"] == "20/s"  # the declaration in the code the server loaded
    assert_error(admin.get("/api/limits/no-such-limit"), 404, "no limit named")
    assert_error(acme.post("/api/limits/partner-api/reset"), 403, "admin")
    assert_error(admin.post("/api/limits/partner-api/reset", json={"key": 5}), 400, "key")
    assert_error(admin.post("/api/limits/no-such-limit/reset"), 404, "no limit named")
    reset = admin.post("/api/limits/partner-api/reset")
    assert reset.status_code == 200 and reset.json()["forgotten"] == 1, reset.text
    assert reset.json()["keys"][0]["source"] == "declared" and reset.json()["keys"][0]["effective_rate"] == 20
    assert_error(admin.patch("/api/limits/partner-api", json={"adaptive": "yes"}), 400, "adaptive")
    assert admin.patch("/api/limits/partner-api", json={"adaptive": True}).json()["adaptive"] is True
    assert admin.patch("/api/limits/partner-api", json={"adaptive": False, "rate": "20/s"}).json()["adaptive"] is False


def test_workers_schedules_and_stats(site, admin, acme, globex):
    with running_worker(site.app) as worker:
        workers = wait_for(
            lambda: [w for w in admin.get("/api/workers").json()["workers"] if w["id"] == worker.id],
            message="worker listed",
        )
        assert workers[0]["heartbeat_age"] < 30 and workers[0]["concurrency"] == 8
        stats = admin.get("/api/stats", params={"window": 30}).json()
        assert stats["window_seconds"] == 30 and stats["workers"] >= 1 and "web" in stats["queues"]
        assert {"depth", "running", "rate_in", "rate_out", "counts"} <= set(stats["queues"]["web"])
        assert "partner-api" in stats["limits"]
    assert_error(acme.get("/api/workers"), 403, "admin")

    names = {s["name"] for s in admin.get("/api/schedules").json()["schedules"]}
    assert {"acme-nightly", "housekeeping"} <= names
    mine = acme.get("/api/schedules").json()["schedules"]
    assert [s["name"] for s in mine] == ["acme-nightly"] and mine[0]["next_tick"] and mine[0]["cron"] == "0 3 * * *"
    assert globex.get("/api/schedules").json()["schedules"] == []

    tenant_stats = acme.get("/api/stats").json()
    assert tenant_stats["workers"] is None and "partner-api" not in tenant_stats["limits"]


def test_flow_steps_and_cursor(site, admin):
    job_id = enqueue(admin, "stepped", {"n": 3})["id"]
    with running_worker(site.app):
        assert admin.get(f"/api/jobs/{job_id}/result", params={"wait": 15}).json()["result"] == 30
    flow = admin.get(f"/api/jobs/{job_id}/flow").json()
    assert flow["executionId"] == job_id and flow["status"] == "complete"
    assert flow["totalSteps"] == 3 and flow["completedSteps"] == 3
    assert [s["stepId"] for s in flow["steps"]] == ["part-0", "part-1", "part-2"]
    assert all("throttlingOverhead" in s for s in flow["steps"])
    state = admin.get(f"/api/jobs/{job_id}/state").json()
    assert state["cursor"] == {"done": 2} and state["checkpoints"] == 3


# -- live streams, metrics ---------------------------------------------------------------------
def test_job_stream_follows_the_timeline_until_final(site, admin):
    key = uid("stream")
    RELEASE[key] = threading.Event()
    job_id = enqueue(admin, "hold", {"key": key})["id"]
    with admin.stream("GET", f"/api/jobs/{job_id}/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        first = read_sse(r, count=2)
        assert first[0] == ("event", first[0][1]) and first[0][1]["to"] == "waiting"
        assert first[1][0] == "job" and first[1][1]["status"] == "waiting"
        with running_worker(site.app):
            wait_for(lambda: status_of(admin, job_id) == "running", message="running")
            threading.Timer(0.3, RELEASE[key].set).start()
            rest = read_sse(r, until="end")
    transitions = [d["to"] for e, d in rest if e == "event"]
    assert transitions == ["running", "complete"]
    assert "running" in [d["status"] for e, d in rest if e == "job"]
    assert rest[-1][0] == "end" and rest[-1][1]["status"] == "complete" and rest[-1][1]["result"] == key


def test_live_stream_sends_counts_and_limits(site, admin, acme):
    enqueue(acme, "echo", {"value": "live"})
    with admin.stream("GET", "/api/stream", params={"interval": 1, "ticks": 3}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        ticks = read_sse(r)
    assert [e for e, _ in ticks] == ["stats", "stats", "stats"]
    data = ticks[-1][1]
    assert {"at", "queues", "totals", "limits", "workers"} <= set(data)
    assert any(q["name"] == "web" for q in data["queues"])
    assert {lim["name"] for lim in data["limits"]} >= {"partner-api", "per-tenant"}
    assert sum(data["totals"].values()) == sum(sum(q["counts"].values()) for q in data["queues"])
    with acme.stream("GET", "/api/stream", params={"interval": 1, "ticks": 1}) as r:
        ((event, mine),) = read_sse(r)
    assert mine["workers"] is None and [q["name"] for q in mine["queues"]] == ["web"]
    assert [lim["name"] for lim in mine["limits"]] == ["per-tenant"]


def test_metrics_are_prometheus_text_for_admin_only(site, admin, acme, anonymous):
    enqueue(admin, "add", {"x": 0, "y": 0})
    r = admin.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE floodway_jobs gauge" in r.text
    assert 'floodway_jobs{queue="web",status="waiting"}' in r.text
    assert "floodway_limit_admitted" in r.text and "floodway_workers" in r.text
    assert_error(acme.get("/metrics"), 403, "admin")
    assert_error(anonymous.get("/metrics"), 401)


# -- tenant isolation ------------------------------------------------------------------------------
def test_tenant_isolation(site, admin, acme, globex):
    with running_worker(site.app):  # settle everything pending, so acme's counts hold still
        wait_for(
            lambda: not admin.get("/api/jobs", params={"status": "waiting,running,retrying"}).json()["jobs"],
            message="nothing pending",
        )
    acme_before = acme.get("/api/queues").json()
    acme_stats_before = {name: q["counts"] for name, q in acme.get("/api/stats").json()["queues"].items()}
    acme_jobs = admin.get("/api/jobs", params={"tenant": "acme", "limit": 1000}).json()["jobs"]
    assert sum(sum(q["counts"].values()) for q in acme_before["queues"]) == len(acme_jobs)

    secret = globex.post("/api/jobs", json={"task": "echo", "args": {"value": "globex secret"}, "id": "secret"})
    assert secret.status_code == 201
    g_id = secret.json()["id"]
    assert g_id == "globex:secret" and secret.json()["job"]["tenant"] == "globex"
    failed_g = enqueue(globex, "doomed", {"reason": "globex only"})["id"]
    with running_worker(site.app):
        wait_for(lambda: status_of(globex, failed_g) == "failed", message="globex failure")
        wait_for(lambda: status_of(globex, g_id) == "complete", message="globex echo")

    def same_as_missing(r: httpx.Response, job_id: str) -> None:
        assert_error(r, 404)
        assert r.json()["error"] == f"no job with id {job_id!r}"

    for job_id in (g_id, failed_g):
        for suffix in ("", "/result", "/events", "/state", "/flow", "/detail", "/stream"):
            same_as_missing(acme.get(f"/api/jobs/{job_id}{suffix}"), job_id)
        for action in ("cancel", "retry", "pause", "resume"):
            same_as_missing(acme.post(f"/api/jobs/{job_id}/{action}"), job_id)
    assert status_of(globex, failed_g) == "failed"  # nothing acme tried changed it
    assert globex.get(f"/api/jobs/{g_id}").json()["paused"] is False

    # lists, counts, stats and streams show nothing of globex
    assert all(j["tenant"] == "acme" for j in acme.get("/api/jobs", params={"limit": 1000}).json()["jobs"])
    assert acme.get("/api/jobs", params={"tenant": "globex"}).json()["jobs"] == []
    assert acme.get("/api/jobs", params={"status": "failed", "task": "doomed"}).json()["jobs"] == []
    assert acme.get("/api/queues").json() == acme_before
    assert {name: q["counts"] for name, q in acme.get("/api/stats").json()["queues"].items()} == acme_stats_before
    with acme.stream("GET", "/api/stream", params={"interval": 1, "ticks": 1}) as r:
        ((_, live),) = read_sse(r)
    assert live["queues"] == acme_before["queues"]

    # the same id names acme's own job: no collision, nothing learnt
    mine = acme.post("/api/jobs", json={"task": "echo", "args": {"value": "acme"}, "id": "secret"})
    assert mine.status_code == 201 and mine.json()["id"] == "acme:secret" and mine.json()["created"] is True
    assert (
        acme.post("/api/jobs", json={"task": "echo", "args": {"value": "acme"}, "id": "acme:secret"}).json()["created"]
        is False
    )
    assert acme.get("/api/jobs/acme:secret").json()["tenant"] == "acme"
    # a tenant token cannot act for another tenant
    assert_error(acme.post("/api/jobs", json={"task": "echo", "args": {}, "tenant": "globex"}), 403, "only for tenant")
    assert_error(acme.post("/api/jobs", json={"task": "echo", "args": {"tenant": "globex"}}), 403)
    assert_error(acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{}], "tenant": "globex"}), 403)
    bulk = acme.post("/api/jobs/bulk", json={"task": "echo", "items": [{"value": 1}, {"value": 2}]}).json()
    assert all(acme.get(f"/api/jobs/{i}").json()["tenant"] == "acme" for i in bulk["ids"])

    # limits: a tenant sees only its own keys of tenant-keyed limits
    with running_worker(site.app):
        wait_for(lambda: acme.get("/api/jobs/acme:secret").json()["status"] == "complete", message="acme echo")
    every = {lim["name"]: lim for lim in admin.get("/api/limits").json()["limits"]}
    assert {"acme", "globex"} <= {k["key"] for k in every["per-tenant"]["keys"]}
    acme_limits = acme.get("/api/limits").json()["limits"]
    assert [lim["name"] for lim in acme_limits] == ["per-tenant"]
    assert [k["key"] for k in acme_limits[0]["keys"]] == ["acme"]

    # admin sees everything
    assert admin.get(f"/api/jobs/{g_id}").json()["tenant"] == "globex"
    tenants = {j["tenant"] for j in admin.get("/api/jobs", params={"limit": 1000}).json()["jobs"]}
    assert {"acme", "globex"} <= tenants
    assert admin.get("/api/jobs", params={"tenant": "globex"}).json()["count"] >= 2
    # and globex sees its own
    assert globex.get(f"/api/jobs/{g_id}/result").json()["result"] == {"value": "globex secret", "tenant": "globex"}


# -- dashboard and cookie auth ----------------------------------------------------------------------
def test_login_cookie_works_for_the_api_and_needs_x_requested_with_for_changes(site):
    with client(site.server) as c:
        bad = c.post("/login", data={"token": "fw_nope_nope", "csrf": login_csrf(c)})
        assert bad.status_code == 401 and "not valid" in bad.text
        r = c.post(
            "/login",
            data={"token": site.tokens["acme"], "next": "/jobs", "csrf": login_csrf(c)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
        assert c.get("/api/me").json()["tenant"] == "acme"
        job_id = c.post(
            "/api/jobs",
            json={"task": "add", "args": {"x": 1, "y": 1}, "delay": "1h"},
            headers={"X-Requested-With": "floodway"},
        ).json()["id"]
        assert_error(c.post(f"/api/jobs/{job_id}/cancel"), 403, "X-Requested-With")
        assert (
            c.post(f"/api/jobs/{job_id}/cancel", headers={"X-Requested-With": "floodway"}).json()["status"]
            == "cancelled"
        )
        page = c.get("/")
        assert page.status_code == 200 and "tenant acme" in page.text
        out = c.post("/logout", follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert c.get("/", follow_redirects=False).status_code == 303
        assert (
            c.post(
                "/login",
                data={"token": site.tokens["acme"], "next": "//evil.example", "csrf": login_csrf(c)},
                follow_redirects=False,
            ).headers["location"]
            == "/"
        )


def test_dashboard_pages_and_fragments_render(site, admin, acme):
    job_id = enqueue(admin, "stepped", {"n": 2}, tenant="acme")["id"]
    with running_worker(site.app):
        admin.get(f"/api/jobs/{job_id}/result", params={"wait": 10})
    overview = admin.get("/")
    assert (
        overview.status_code == 200 and "Throughput" in overview.text and 'data-stream="/api/stream"' in overview.text
    )
    assert "Workers" in overview.text and "Workers" not in acme.get("/").text
    queues = admin.get("/ui/queues").text
    assert 'data-queue="web"' in queues and "Pause" in queues
    assert "Pause" not in acme.get("/ui/queues").text  # queue controls are admin only
    assert "per-tenant" in admin.get("/ui/limits").text and "partner-api" not in acme.get("/ui/limits").text
    assert admin.get("/ui/workers").status_code == 200 and acme.get("/ui/workers").status_code == 403
    assert "acme-nightly" in acme.get("/ui/schedules").text and "housekeeping" not in acme.get("/ui/schedules").text
    jobs = acme.get("/ui/jobs", params={"task": "stepped", "status": "complete"}).text
    assert f'data-job="{job_id}"' in jobs
    detail = acme.get(f"/jobs/{job_id}")
    assert detail.status_code == 200 and "part-1" in detail.text and "Timeline" in detail.text
    assert "&#34;done&#34;: 1" in detail.text or '"done": 1' in detail.text  # the cursor
    assert acme.get(f"/ui/job/{job_id}").status_code == 200
    found = acme.get("/jobs", params={"id": job_id}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/jobs/{job_id}"
    missing = acme.get("/jobs", params={"id": "nope-nope"})
    assert missing.status_code == 200 and "No job with id" in missing.text
    other = enqueue(admin, "add", {"x": 1, "y": 1}, tenant="globex", delay="1h")["id"]
    assert acme.get(f"/jobs/{other}").status_code == 404
    assert acme.get(f"/ui/job/{other}").status_code == 404
    assert acme.get("/jobs", params={"id": other}, follow_redirects=False).status_code == 200  # not found
    admin.post(f"/api/jobs/{other}/cancel")


# -- the OpenAPI document and schemathesis ---------------------------------------------------------
def test_openapi_describes_every_api_route(site, admin):
    doc = admin.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    routes = set()
    for route in site.server.asgi.routes:
        path = getattr(route, "path", "")
        if path.startswith("/api") or path in ("/metrics", "/healthz", "/openapi.json"):
            for method in route.methods - {"HEAD"}:
                routes.add((method.lower(), path.replace(":path", "").replace(":str", "")))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if path != "/healthz":
                assert "401" in op["responses"], (method, path)
            if method in ("post", "patch") and op.get("requestBody"):
                assert "413" in op["responses"] and "400" in op["responses"], (method, path)


@pytest.mark.parametrize("who", ["admin", "acme"])
def test_schemathesis_finds_no_server_errors(tmp_path, who):
    """Generated requests, valid and invalid, against every endpoint but the endless streams, with
    an admin token and with a tenant's: never a 5xx, and every answer matches the document
    (status code, content type, schema)."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    app = make_app(tmp_path / "fuzz.db")  # its own database: fuzzing pauses random queues
    with serving(app) as server, requests.Session() as session:
        token = tokens(app)[who]
        served = session.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
        assert served == document(tasks=list(app.tasks))
        assert served["components"]["schemas"]["EnqueueRequest"]["properties"]["task"]["enum"] == sorted(app.tasks)
        schema = schemathesis.openapi.from_dict(served)
        session.headers["Authorization"] = f"Bearer {token}"
        checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
        seen: list[int] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("stream"):
                continue  # endless by design; covered by the SSE tests
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=8,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    response = case.call(base_url=server.url, session=session, timeout=15)
                    seen.append(response.status_code)
                    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
                    case.validate_response(response, checks=checks)

                try:
                    run()
                except Unsatisfiable:  # nothing to make invalid (e.g. no parameters, no body)
                    assert mode is GenerationMode.NEGATIVE, operation.label
    app.close()
    assert len(seen) > 250 and max(seen) < 500
    assert {200, 400, 404} <= set(seen)


def test_floodway_web_command_serves_the_app(tmp_path):
    from ..web_helpers import free_port

    sock = free_port()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "FLOODWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "floodway", "web", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        wait_for(healthy, timeout=30, message="floodway web to answer")
        assert httpx.get(f"http://127.0.0.1:{port}/api/jobs", timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)
    assert "dashboard and API on http://127.0.0.1" in (proc.stderr.read() if proc.stderr else "")


def test_stats_history_counts_each_second_and_a_tenant_sees_only_its_own(acme, globex, admin):
    def history(c: httpx.Client) -> dict[str, Any]:
        r = c.get("/api/stats/history", params={"seconds": 120})
        assert r.status_code == 200, r.text
        return r.json()

    before_acme, before_globex = sum(history(acme)["enqueued"]), sum(history(globex)["enqueued"])
    for _ in range(7):
        enqueue(acme, "add", {"x": 1, "y": 2})
    after = history(acme)
    assert len(after["seconds"]) == len(after["enqueued"]) == len(after["done"]) >= 120
    assert after["seconds"] == sorted(after["seconds"])
    assert sum(after["enqueued"]) >= before_acme + 7
    assert sum(history(globex)["enqueued"]) == before_globex  # acme's jobs are not globex's
    assert sum(history(admin)["enqueued"]) >= sum(after["enqueued"])
    for bad in ("0", "-5", "abc", "100000"):
        assert_error(admin.get("/api/stats/history", params={"seconds": bad}), 400, "seconds")


def test_bulk_actions_by_filter_count_and_a_tenant_acts_only_on_its_own(acme, globex, admin):
    # this test's jobs only: those enqueued from now on (the module's tests run one at a time)
    window = {"created_after": datetime.fromtimestamp(time.time() - 0.001, timezone.utc).isoformat()}
    mine = [enqueue(acme, "add", {"x": n, "y": 0}, delay="1h")["id"] for n in range(3)]
    theirs = [enqueue(globex, "add", {"x": n, "y": 0}, delay="1h")["id"] for n in range(2)]

    def act(c: httpx.Client, body: dict[str, Any]) -> httpx.Response:
        return c.post("/api/jobs/bulk-actions", json=body)

    counted = act(acme, {"action": "pause", "filter": {**window, "status": "scheduled"}, "dry_run": True})
    assert counted.status_code == 200 and counted.json() == {"action": "pause", "count": 3, "dry_run": True}
    assert (
        act(acme, {"action": "pause", "filter": {**window, "status": "scheduled"}}).json()["count"] == 3
    )  # acme's only
    assert (
        act(admin, {"action": "resume", "filter": {**window, "status": "scheduled"}, "dry_run": True}).json()["count"]
        == 3
    )
    assert (
        act(admin, {"action": "cancel", "filter": {**window, "status": "scheduled", "tenant": "globex"}}).json()[
            "count"
        ]
        == 2
    )
    assert [status_of(globex, i) for i in theirs] == ["cancelled", "cancelled"]
    assert [status_of(acme, i) for i in mine] == ["scheduled"] * 3
    assert_error(act(acme, {"action": "cancel", "filter": {"tenant": "globex"}}), 403, "acme")
    assert_error(act(acme, {"action": "cancel"}), 400, "give a filter")
    assert_error(act(admin, {"action": "cancel"}), 400, "give a filter")
    assert_error(
        act(admin, {"action": "explode", "filter": {**window, "status": "scheduled"}}), 400, "unknown bulk action"
    )
    assert_error(act(admin, {"action": "retry", "filter": {"status": "sleeping"}}), 400, "not a job status")
    assert_error(act(admin, {"action": "retry", "filter": {"nope": 1}}), 400, "unknown filter field")
    assert_error(act(admin, {"action": "retry", "filter": {"task": 7}}), 400, "'task'")
    assert_error(
        act(admin, {"action": "retry", "filter": {**window, "status": "scheduled"}, "dry_run": "yes"}), 400, "dry_run"
    )
    assert act(acme, {"action": "cancel", "filter": {**window, "status": "scheduled"}}).json()["count"] == 3


def test_jobs_are_searched_by_text_in_their_args(acme, globex, admin):
    needle = uid("Needle")
    made = enqueue(acme, "echo", {"value": f"order {needle} for acme"})["id"]
    found = acme.get("/api/jobs", params={"text": needle.lower()}).json()["jobs"]
    assert [j["id"] for j in found] == [made]
    assert globex.get("/api/jobs", params={"text": needle}).json()["jobs"] == []  # acme's, not globex's
    assert [j["id"] for j in admin.get("/api/jobs", params={"text": needle}).json()["jobs"]] == [made]
    page = admin.get("/ui/jobs", params={"text": needle})
    assert page.status_code == 200 and made in page.text
    assert_error(admin.get("/api/jobs", params={"text": "x" * 256}), 400, "text")
