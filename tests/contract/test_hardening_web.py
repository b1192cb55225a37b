"""The web layer under attack and under load: tenant views that cost what admin views cost, a cap
on bulk requests, a request rate per token, login CSRF, security headers, the session cookie
behind a TLS-terminating proxy, streams of revoked tokens, tokens in the access log, and start-up
on a damaged database. Real servers on loopback, real SQLite files and PostgreSQL, real
``floodway`` processes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from floodway import App
from floodway.config import load_settings
from floodway.errors import ConfigError, StoreError
from floodway.store import open_store
from floodway.tokens import create_token
from floodway.web import create_app, data
from floodway.web.auth import Principal

from ..web_helpers import (
    client,
    free_port,
    login_csrf,
    make_app,
    read_sse,
    serving,
    tokens,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

#: the store limit holding each token's request budget
API_LIMIT = "floodway.api"


def tenant_app(database_url: str) -> App:
    app = App(database_url)
    app.limit("per-tenant", rate="50/s", burst=5, key="{tenant}")

    @app.task(queue="bulk", limits=["per-tenant"])
    def fetch(n: int) -> int:
        return n

    @app.task(queue="other")
    def plain(n: int) -> int:
        return n

    return app


# -- 6. tenant views cost what admin views cost ------------------------------------------------------
def test_tenant_stats_count_every_job_of_the_tenant(database_url):
    """A tenant's counts and rates are aggregated by the store over all its jobs — the views used
    to read at most 10,000 of them row by row and say "truncated"."""
    app = tenant_app(database_url)
    try:
        many = 10_050
        app.tasks["fetch"].enqueue_many([{"n": i} for i in range(many)], tenant="acme")
        app.tasks["plain"].enqueue_many([{"n": i} for i in range(7)], tenant="acme")
        app.tasks["fetch"].enqueue_many([{"n": i} for i in range(5)], tenant="globex")
        app.tasks["plain"].enqueue_many([{"n": i} for i in range(3)])  # no tenant
        acme = Principal("t1", "acme", False)

        queues = data.queues_view(app, acme)
        assert queues["truncated"] is False
        assert {q["name"]: q["counts"]["waiting"] for q in queues["queues"]} == {"bulk": many, "other": 7}

        stats = data.stats_view(app, acme, window=100.0)
        assert stats["truncated"] is False
        assert stats["queues"]["bulk"]["depth"] == many and stats["queues"]["other"]["depth"] == 7
        # the rate is over the time observed (the jobs came within a few seconds), not the window
        rate_in = stats["queues"]["bulk"]["rate_in"]
        assert many / 100.0 < rate_in <= many
        assert stats["limits"]["per-tenant"]["depth"] == many
        assert stats["limits"]["per-tenant"]["rate_in"] == pytest.approx(rate_in, rel=0.05)

        live = data.live_view(app, acme)
        assert live["totals"]["waiting"] == many + 7 and live["truncated"] is False

        globex = data.stats_view(app, Principal("t2", "globex", False), window=100.0)
        assert set(globex["queues"]) == {"bulk"} and globex["queues"]["bulk"]["depth"] == 5
        admin = data.stats_view(app, Principal("t0", None, True), window=100.0)
        assert admin["queues"]["bulk"]["depth"] == many + 5 and admin["queues"]["other"]["depth"] == 10
        assert admin["limits"]["per-tenant"]["depth"] == many + 5
    finally:
        app.close()


def _explain(database_url: str, sql: str, params: tuple[Any, ...]) -> str:
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return "\n".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # which index serves it, whatever the table's size
        return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", params))


def _analyze(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        conn.execute("ANALYZE")
        conn.close()
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")


def test_tenant_queries_read_through_a_tenant_index(database_url):
    """Every query behind a tenant's views finds its rows through one of the jobs_tenant indexes
    (no scan of the jobs table); the newest-first job lists need no sort."""
    app = tenant_app(database_url)
    try:
        for t in range(20):  # many tenants, as a shared server has; the planner knows it
            app.tasks["fetch"].enqueue_many([{"n": i} for i in range(100)], tenant="acme" if t == 0 else f"t{t}")
        _analyze(database_url)
        if database_url.startswith("sqlite"):
            from floodway.store.sqlite import TENANT_QUERIES
        else:
            from floodway.store.postgres import TENANT_QUERIES
        assert set(TENANT_QUERIES) >= {
            "counts",
            "created",
            "finished",
            "limits_waiting",
            "limits_created",
            "limits_finished",
            "drain_backlog",
            "drain_created",
            "drain_finished",
        }
        for name, sql in TENANT_QUERIES.items():
            since = time.time() - 60
            marks = sql.count("?") + sql.count("%s")
            params = (since, 0.5, "acme", since) if marks == 4 else ("acme", since)[:marks]
            plan = _explain(database_url, sql, params)
            assert "jobs_tenant" in plan, f"{name}: {plan}"
            assert not re.search(r"\bSCAN jobs\b(?! USING)", plan) and "Seq Scan" not in plan, f"{name}: {plan}"
        if database_url.startswith("sqlite"):
            newest = _explain(database_url, "SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 50", ())
            assert "jobs_created" in newest and "TEMP B-TREE" not in newest, newest
            mine = _explain(
                database_url,
                "SELECT id FROM jobs WHERE tenant = ? ORDER BY created_at DESC, rowid DESC LIMIT 50",
                ("acme",),
            )
            assert "jobs_tenant_created" in mine and "TEMP B-TREE" not in mine, mine
        else:
            mine = _explain(
                database_url,
                "SELECT id FROM jobs WHERE tenant = %s ORDER BY created_at DESC, seq DESC LIMIT 50",
                ("acme",),
            )
            assert "jobs_tenant_created" in mine, mine  # (a sort of the few rows found may still be cheaper)
    finally:
        app.close()


# -- 6. a cap on bulk requests -------------------------------------------------------------------------
def test_bulk_enqueue_over_the_cap_is_413_naming_it_and_writes_nothing(tmp_path):
    app = make_app(tmp_path / "bulk.db")
    with serving(app, max_bulk=100) as server, client(server, tokens(app)["acme"]) as acme:
        r = acme.post("/api/jobs/bulk", json={"task": "add", "items": [{"x": i, "y": 1} for i in range(101)]})
        assert r.status_code == 413, r.text
        assert "101" in r.json()["error"] and "100" in r.json()["error"] and "api_max_bulk" in r.json()["error"]
        assert app.store.list_jobs(limit=10) == []
        ok = acme.post("/api/jobs/bulk", json={"task": "add", "items": [{"x": i, "y": 1} for i in range(100)]})
        assert ok.status_code == 201 and ok.json()["created"] == 100
        assert (
            acme.get("/openapi.json").json()["components"]["schemas"]["BulkEnqueueRequest"]["properties"]["items"][
                "maxItems"
            ]
            == 100
        )
    app.close()


def test_api_settings_are_validated_and_on_by_default(tmp_path):
    defaults = load_settings(env={}, pyproject=False)
    assert defaults.api_rate == "50/s" and defaults.api_burst >= 1 and defaults.api_max_bulk == 10_000
    chosen = load_settings(
        env={"FLOODWAY_API_RATE": "5/min", "FLOODWAY_API_BURST": "3", "FLOODWAY_API_MAX_BULK": "20"}, pyproject=False
    )
    assert (chosen.api_rate, chosen.api_burst, chosen.api_max_bulk) == ("5/min", 3, 20)
    assert load_settings({"api_rate": "off"}, env={}, pyproject=False).api_rate is None
    for bad in ({"api_rate": "fast"}, {"api_max_bulk": 0}, {"api_burst": "many"}):
        with pytest.raises(ConfigError):
            load_settings(bad, env={}, pyproject=False)
    app = App(f"sqlite:///{tmp_path / 'settings.db'}", api_max_bulk=7, api_rate="2/s", api_burst=4)
    web = create_app(app)
    assert web.state.max_bulk == 7 and str(web.state.api_limit.rate) == "2/s" and web.state.api_limit.burst == 4
    assert create_app(App(f"sqlite:///{tmp_path / 'default.db'}")).state.api_limit is not None  # on by default
    assert create_app(app, api_rate=None).state.api_limit is None
    app.close()


# -- 6. a request rate per token -------------------------------------------------------------------------
def test_api_rate_per_token_answers_429_with_retry_after(tmp_path):
    app = make_app(tmp_path / "rate.db")
    with serving(app, api_rate="1/min", api_burst=3) as server:
        minted = tokens(app)
        with client(server, minted["acme"]) as acme, client(server, minted["globex"]) as globex:
            for _ in range(3):
                assert acme.get("/api/me").status_code == 200
            spent = acme.get("/api/jobs")
            assert spent.status_code == 429, spent.text
            assert spent.headers["content-type"].startswith("application/json")
            assert "too many requests" in spent.json()["error"]
            wait = int(spent.headers["retry-after"])
            assert 1 <= wait <= 60
            # the dashboard's fragments count against the same token
            assert acme.get("/ui/queues").status_code == 429
            # nothing else was done for the refused request
            refused = acme.post("/api/jobs", json={"task": "add", "args": {"x": 1, "y": 2}})
            assert refused.status_code == 429 and app.store.list_jobs(limit=5) == []
            # per token: another token has its own budget; /healthz needs none
            assert globex.get("/api/me").status_code == 200
            assert acme.get("/healthz").status_code == 200
        keys = {k.key: k for info in app.store.list_limits() if info.spec.name == API_LIMIT for k in info.keys}
        assert len(keys) == 2  # one key per token that made requests, held in the store's limit
    app.close()


# -- 6. live streams -------------------------------------------------------------------------------------
def test_streams_refuse_an_interval_below_the_minimum(tmp_path):
    app = make_app(tmp_path / "streams.db")
    with serving(app) as server, client(server, tokens(app)["acme"]) as acme:
        r = acme.get("/api/stream", params={"interval": 0.1, "ticks": 1})
        assert r.status_code == 400 and "between 1 and 60" in r.json()["error"]
        job = acme.post("/api/jobs", json={"task": "add", "args": {"x": 1, "y": 1}, "delay": "1h"}).json()["id"]
        r = acme.get(f"/api/jobs/{job}/stream", params={"interval": 0.05})
        assert r.status_code == 400 and "interval" in r.json()["error"]
    app.close()


def test_jobs_page_polls_every_few_seconds(tmp_path):
    import floodway.web

    template = (Path(floodway.web.__file__).parent / "templates" / "jobs.html").read_text()
    polls = [int(v) for v in re.findall(r'data-poll="(\d+)"', template)]
    assert polls and min(polls) >= 5000


# -- 14. a revoked token's streams end at the next tick ---------------------------------------------------
def test_a_revoked_tokens_streams_end_at_the_next_tick(tmp_path):
    app = make_app(tmp_path / "revoke.db")
    with serving(app) as server:
        secret, info = create_token(app.store, tenant="acme")
        with client(server, secret) as acme:
            job = acme.post("/api/jobs", json={"task": "add", "args": {"x": 1, "y": 1}, "delay": "1h"}).json()["id"]
            with (
                acme.stream("GET", "/api/stream", params={"interval": 1}) as live,
                acme.stream("GET", f"/api/jobs/{job}/stream") as one,
            ):
                assert [e for e, _ in read_sse(live, count=1)] == ["stats"]
                assert "job" in [e for e, _ in read_sse(one, until="job")]
                assert app.store.revoke_token(info.id)
                # the very next event of each stream says so, and the stream ends
                assert [e for e, _ in read_sse(live)] == ["revoked"]
                assert [e for e, _ in read_sse(one)] == ["revoked"]
    app.close()


# -- 9. login CSRF -----------------------------------------------------------------------------------------
def test_a_login_posted_from_another_site_is_refused(tmp_path):
    app = make_app(tmp_path / "login.db")
    with serving(app) as server:
        attacker_token = tokens(app)["globex"]
        forged = {"token": attacker_token, "next": "/"}
        with client(server) as victim:
            # what an auto-submitting form on another origin sends: no anti-forgery cookie or field
            r = victim.post(
                "/login",
                data=forged,
                follow_redirects=False,
                headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
            )
            assert r.status_code == 403 and "floodway_token" not in r.headers.get("set-cookie", "")
            # a field the attacker made up does not match the victim's cookie
            login_csrf(victim)
            r = victim.post("/login", data={**forged, "csrf": "made-up"}, follow_redirects=False)
            assert r.status_code == 403 and "floodway_token" not in r.headers.get("set-cookie", "")
            # the right value, but the browser says the post came from another site
            r = victim.post(
                "/login",
                data={**forged, "csrf": login_csrf(victim)},
                follow_redirects=False,
                headers={"Sec-Fetch-Site": "cross-site"},
            )
            assert r.status_code == 403 and "floodway_token" not in r.headers.get("set-cookie", "")
            assert victim.get("/api/me").status_code == 401  # still not logged in
            # our own form works
            r = victim.post(
                "/login",
                data={**forged, "csrf": login_csrf(victim)},
                follow_redirects=False,
                headers={"Sec-Fetch-Site": "same-origin"},
            )
            assert r.status_code == 303 and "floodway_token=" in r.headers["set-cookie"]
            assert victim.get("/api/me").json()["tenant"] == "globex"
    app.close()


# -- 10. security headers -----------------------------------------------------------------------------------
def test_security_headers_on_pages_api_static_and_streams(tmp_path):
    app = make_app(tmp_path / "headers.db")
    with serving(app) as server:
        minted = tokens(app)
        with client(server, minted["admin"]) as admin, client(server) as anonymous:
            responses = [
                anonymous.get("/login"),
                anonymous.get("/", follow_redirects=False),
                anonymous.get("/static/app.js"),
                anonymous.get("/healthz"),
                anonymous.get("/api/me"),
                admin.get("/"),
                admin.get("/jobs"),
                admin.get("/ui/queues"),
                admin.get("/api/jobs"),
                admin.get("/api/jobs/nope"),
                admin.get("/no/such/route"),
                admin.get("/openapi.json"),
            ]
            with admin.stream("GET", "/api/stream", params={"ticks": 1}) as stream:
                responses.append(stream)
            for r in responses:
                where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
                csp = r.headers.get("content-security-policy", "")
                assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, where
                assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp, where
                assert r.headers.get("x-frame-options") == "DENY", where
                assert r.headers.get("x-content-type-options") == "nosniff", where
                assert r.headers.get("referrer-policy") == "no-referrer", where
            # the pages need nothing the policy forbids: no inline scripts, styles or handlers
            job = admin.post("/api/jobs", json={"task": "add", "args": {"x": 1, "y": 1}, "delay": "1h"}).json()["id"]
            for page in (
                admin.get("/"),
                admin.get("/jobs"),
                admin.get(f"/jobs/{job}"),
                admin.get("/ui/queues"),
                admin.get("/ui/limits"),
                anonymous.get("/login"),
            ):
                html = page.text
                assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.request.url
                assert not re.search(r"\sstyle=|<style", html), page.request.url
                assert not re.search(r"\son[a-z]+=", html), page.request.url
    app.close()


# -- 11, 14: `floodway web` behind a proxy, and its access log ----------------------------------------------
def _web(tmp_path: Path, db: Path, *args: str) -> tuple[subprocess.Popen, str]:
    sock = free_port()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "FLOODWAY_DATABASE_URL": f"sqlite:///{db}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "floodway", "web", "--port", str(port), *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return False

    wait_for(healthy, timeout=30, message="floodway web to answer")
    return proc, url


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    return out


def _log_in(url: str, token: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=10) as c:
        form = c.get("/login", headers=headers)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        cookie = form.headers["set-cookie"].split(";")[0]  # sent back by hand: it may be marked Secure
        return c.post(
            "/login", data={"token": token, "csrf": csrf}, follow_redirects=False, headers={**headers, "Cookie": cookie}
        )


def test_behind_a_tls_proxy_the_session_cookie_is_secure_and_tokens_stay_out_of_the_log(tmp_path):
    db = tmp_path / "proxy.db"
    store = open_store(f"sqlite:///{db}")
    secret = create_token(store, admin=True)[0]
    store.close()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}

    proc, url = _web(tmp_path, db, "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
    try:
        behind = _log_in(url, secret, https)
        assert behind.status_code == 303, behind.text
        assert "floodway_token=" in behind.headers["set-cookie"] and "Secure" in behind.headers["set-cookie"]
        plain = _log_in(url, secret, {})
        assert plain.status_code == 303 and "Secure" not in plain.headers["set-cookie"]
        leaked = httpx.get(f"{url}/api/jobs", params={"token": secret, "status": "waiting"}, timeout=10)
        assert leaked.status_code == 401  # a token in the query string is no credential...
        httpx.get(f"{url}/api/me?{secret}", timeout=10)
    finally:
        log = _stop(proc)
    assert secret not in log  # ...and it is not written to the access log either
    assert "/api/jobs?token=[hidden]&status=waiting" in log, log

    proc, url = _web(tmp_path, db, "--proxy-headers", "--forwarded-allow-ips", "192.0.2.1")
    try:  # a proxy that is not trusted cannot make the request https
        untrusted = _log_in(url, secret, https)
        assert untrusted.status_code == 303 and "Secure" not in untrusted.headers["set-cookie"]
    finally:
        _stop(proc)


# -- 14. `floodway web` on a damaged database; an empty database file -------------------------------------
def _floodway(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLOODWAY_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "floodway", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_floodway_web_on_a_corrupt_database_is_a_one_line_error(tmp_path):
    db = tmp_path / "corrupt.db"
    db.write_bytes(os.urandom(8192))
    port = free_port()
    number = port.getsockname()[1]
    port.close()
    done = _floodway(tmp_path, db, "web", "--port", str(number))
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "corrupt.db" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_zero_byte_database_file_is_refused_and_a_missing_one_created(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="empty file"):
        open_store(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0  # left as it was, for whoever restores it
    done = _floodway(tmp_path, empty, "jobs")
    assert done.returncode == 1 and done.stderr.startswith("error:") and "empty file" in done.stderr
    assert "Traceback" not in done.stderr and empty.stat().st_size == 0
    missing = tmp_path / "new.db"
    store = open_store(f"sqlite:///{missing}")
    assert store.schema_version() > 0 and missing.stat().st_size > 0
    store.close()


# -- found by fuzzing the API -----------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["burst", "concurrency"])
def test_a_limit_change_too_large_to_store_is_400(tmp_path, field):
    app = make_app(tmp_path / "limits.db")
    with serving(app) as server, client(server, tokens(app)["admin"]) as admin:
        r = admin.patch("/api/limits/partner-api", json={field: 11838550872889317140188717289308160})
        assert r.status_code == 400 and "at most" in r.json()["error"], r.text
        limit = next(i for i in app.store.list_limits() if i.spec.name == "partner-api")
        assert (limit.spec.burst, limit.spec.concurrency) == (4, None)  # unchanged
        assert admin.patch("/api/limits/partner-api", json={field: 2**31 - 1}).status_code == 200
    app.close()
