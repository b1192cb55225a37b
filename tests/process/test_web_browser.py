"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
installed by scripts/install-chromium.sh; never `playwright install`). Screenshots go to
tests/artifacts/."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from ..web_helpers import GATES, RELEASE, client, make_app, running_worker, serving, tokens, wait_for

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. Install it with "
            "`bash scripts/install-chromium.sh` (apt-get install chromium); `make test` does.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[SimpleNamespace]:
    app = make_app(tmp_path_factory.mktemp("browser") / "floodway.db")
    with serving(app) as server:
        minted = tokens(app)
        with client(server, minted["admin"]) as api:
            yield SimpleNamespace(app=app, server=server, url=server.url, tokens=minted, api=api)
    app.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # whatever the Content-Security-Policy blocks (an inline script or style) is logged as an error
    p.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" and "Content Security Policy" in msg.text else None,
    )
    yield p
    context.close()
    assert not errors, f"JavaScript or Content-Security-Policy errors on the page: {errors}"


def shot(page: Any, name: str, full: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def log_in(page: Any, site: SimpleNamespace, who: str = "admin", then: str = "/") -> None:
    page.goto(site.url + then)
    page.wait_for_url("**/login?next=*")
    page.fill("#token", site.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_url(site.url + then)


def mark(page: Any) -> None:
    """Leave a mark in the page's JS state: it survives only as long as the page is not reloaded."""
    page.evaluate("window.__noReload = 'still here'")


def not_reloaded(page: Any) -> bool:
    return page.evaluate("window.__noReload") == "still here"


def enqueue(site: SimpleNamespace, task: str, args: dict[str, Any], **options: Any) -> str:
    r = site.api.post("/api/jobs", json={"task": task, "args": args, **options})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def status(site: SimpleNamespace, job_id: str) -> str:
    return site.api.get(f"/api/jobs/{job_id}").json()["status"]


def test_login_page_refuses_a_bad_token(page, site):
    from playwright.sync_api import expect

    page.goto(site.url + "/")
    page.wait_for_url("**/login?next=*")
    shot(page, "login", full=False)
    page.fill("#token", "fw_not_a_token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not valid")
    page.fill("#token", site.tokens["admin"])
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")
    expect(page.locator(".scope")).to_have_text("admin")


def test_job_goes_from_waiting_to_complete_live(page, site, browser):
    from playwright.sync_api import expect

    task = "add"
    job_id = enqueue(site, task, {"x": 20, "y": 22}, id=f"live-{uuid.uuid4().hex[:8]}")
    log_in(page, site, then=f"/jobs?task={task}")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".status-cell")).to_have_text("waiting")
    mark(page)

    detail = page.context.new_page()  # the job page, following the job's SSE stream
    detail.goto(f"{site.url}/jobs/{job_id}")
    expect(detail.locator("#job-status")).to_have_text("waiting")
    detail.evaluate("window.__noReload = 'still here'")

    # the list polls every 5 s: a change shows at the next poll, without a reload
    later_id = enqueue(site, task, {"x": 1, "y": 2})
    expect(page.locator(f'tr[data-job="{later_id}"] .status-cell')).to_have_text("waiting", timeout=TIMEOUT_MS)
    with running_worker(site.app):
        expect(row.locator(".status-cell")).to_have_text("complete", timeout=TIMEOUT_MS)
        expect(page.locator(f'tr[data-job="{later_id}"] .status-cell')).to_have_text("complete", timeout=TIMEOUT_MS)
        expect(detail.locator("#job-status")).to_have_text("complete")
    assert not_reloaded(page) and detail.evaluate("window.__noReload") == "still here"
    expect(detail.locator("#timeline li")).to_have_count(3)
    expect(detail.locator("pre.code.ok")).to_have_text("42")
    shot(detail, "dashboard-job-complete")
    shot(page, "dashboard-jobs")


def test_retry_a_failed_job_with_the_button(page, site):
    from playwright.sync_api import expect

    key = f"gate-{uuid.uuid4().hex[:8]}"
    job_id = enqueue(site, "flaky", {"key": key})
    with running_worker(site.app):
        wait_for(lambda: status(site, job_id) == "failed", message="the flaky job to fail")
        log_in(page, site, then=f"/jobs/{job_id}")
        expect(page.locator("#job-status")).to_have_text("failed")
        expect(page.locator(".card .err").first).to_contain_text(f"gate {key} is closed")
        mark(page)
        GATES[key] = True
        page.get_by_role("button", name="Retry").click()
        expect(page.locator("#job-status")).to_have_text("complete")
    assert not_reloaded(page)
    expect(page.locator("#timeline")).to_contain_text("retried by user")
    expect(page.locator(".toast").first).to_contain_text("queued again")
    attempts = page.locator("section:has(h2:text('Attempts')) tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("failed")
    expect(attempts.nth(1)).to_contain_text("complete")
    shot(page, "dashboard-job-retried")


def test_cancel_from_the_list_and_pause_a_queue(page, site):
    from playwright.sync_api import expect

    job_id = enqueue(site, "add", {"x": 5, "y": 5}, delay="1h")
    log_in(page, site, then="/jobs?status=scheduled")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".status-cell")).to_have_text("scheduled")
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_count(0)  # the scheduled filter no longer matches it
    assert status(site, job_id) == "cancelled"

    queue = f"q-{uuid.uuid4().hex[:6]}"
    queued = enqueue(site, "add", {"x": 1, "y": 1}, queue=queue)
    page.goto(site.url + "/")
    queue_row = page.locator(f'tr[data-queue="{queue}"]')
    queue_row.get_by_role("button", name="Pause").click()
    expect(queue_row).to_contain_text("paused")
    with running_worker(site.app):
        time.sleep(0.3)  # a worker is running: the paused queue's job must stay put
        assert status(site, queued) == "waiting"
        queue_row.get_by_role("button", name="Resume").click()
        expect(queue_row.locator('[data-count="complete"]')).to_have_text("1")


def test_overview_updates_live_with_a_chart(page, site):
    from playwright.sync_api import expect

    key = f"hold-{uuid.uuid4().hex[:6]}"
    RELEASE[key] = threading.Event()
    log_in(page, site)
    expect(page.locator("#live")).to_have_class("live on")
    waiting = page.locator('[data-total="waiting"]')
    expect(waiting).not_to_have_text("–")
    mark(page)
    before = int(page.locator('[data-total="complete"]').inner_text().replace(",", ""))
    site.api.post("/api/jobs/bulk", json={"task": "add", "items": [{"x": i, "y": i} for i in range(40)]})
    held = enqueue(site, "hold", {"key": key}, id=key)
    expect(waiting).not_to_have_text("0")
    with running_worker(site.app, concurrency=4):
        for _ in range(6):  # a few seconds of traffic for the chart
            site.api.post("/api/jobs/bulk", json={"task": "add", "items": [{"x": i, "y": 1} for i in range(25)]})
            time.sleep(0.5)
        expect(page.locator('[data-total="running"]')).to_have_text("1")  # the held job
        expect(page.locator("#workers")).to_contain_text("1/4")
        wait_for(
            lambda: int(page.locator('[data-total="complete"]').inner_text().replace(",", "")) >= before + 190,
            message="the completions to show",
        )
        time.sleep(1.2)
        shot(page, "dashboard-overview")
        RELEASE[key].set()
        wait_for(lambda: status(site, held) == "complete", message="the held job")
    assert not_reloaded(page)
    points = page.evaluate("document.getElementById('chart').getContext('2d').getImageData(0, 0, 300, 150).data.length")
    assert points > 0
    expect(page.locator("#queues")).to_contain_text("web")
    # a page opened afterwards starts its chart from the store's history, not empty
    history = site.api.get("/api/stats/history", params={"seconds": 120}).json()
    assert sum(history["done"]) >= 190 and len(history["seconds"]) == len(history["done"])
    page.reload()
    wait_for(lambda: int(page.locator("#chart").get_attribute("data-seeded") or 0) > 0, message="the seeded chart")
    # the bars get their widths from app.js (no inline styles under the Content-Security-Policy)
    assert page.locator("#queues .seg").first.evaluate("e => e.style.width").endswith("%")
    expect(page.locator("#limits")).to_contain_text("partner-api")
    expect(page.locator("#schedules")).to_contain_text("housekeeping")
    # the learned-quota chart samples /api/limits and offers each limit
    expect(page.locator("#limit-pick option", has_text="partner-api")).to_have_count(1)
    wait_for(
        lambda: int(page.locator("#limit-chart").get_attribute("data-points") or 0) >= 2,
        message="the learned-quota chart to collect samples",
    )


def test_a_tenant_sees_only_its_own(page, site):
    from playwright.sync_api import expect

    mine = enqueue(site, "echo", {"value": "acme's"}, tenant="acme", delay="1h")
    theirs = enqueue(site, "echo", {"value": "globex's"}, tenant="globex", delay="1h")
    log_in(page, site, who="acme", then="/jobs")
    expect(page.locator(".scope")).to_have_text("tenant acme")
    expect(page.locator(f'tr[data-job="{mine}"]')).to_have_count(1)
    expect(page.locator(f'tr[data-job="{theirs}"]')).to_have_count(0)
    assert page.locator("tr[data-job]").count() == site.api.get("/api/jobs", params={"tenant": "acme"}).json()["count"]
    shot(page, "dashboard-tenant-jobs")
    page.goto(f"{site.url}/jobs/{theirs}")
    expect(page.locator("h1")).to_contain_text("No job with id")
    page.goto(site.url + "/")
    expect(page.locator("#queues")).to_contain_text("web")
    expect(page.locator("#workers")).to_have_count(0)
    expect(page.locator("#queues button")).to_have_count(0)  # no queue controls for a tenant
    expect(page.locator("#limits")).not_to_contain_text("partner-api")
    shot(page, "dashboard-tenant-overview")
    for job_id in (mine, theirs):
        site.api.post(f"/api/jobs/{job_id}/cancel")


def test_a_debounced_job_shows_its_folds_and_the_overview_its_tasks_shaping(page, site):
    from playwright.sync_api import expect

    if "notify_debounced" not in site.app.tasks:

        @site.app.task(name="notify_debounced", queue="web", debounce="1h", debounce_key="{contact}")
        def notify(contact: str, note: str = "") -> None:
            return None

    contact = f"c-{uuid.uuid4().hex[:8]}"
    first = enqueue(site, "notify_debounced", {"contact": contact})
    for note in ("second", "third"):
        folded = site.api.post(
            "/api/jobs", json={"task": "notify_debounced", "args": {"contact": contact, "note": note}}
        )
        assert folded.status_code == 200 and folded.json()["id"] == first, folded.text
    log_in(page, site, then=f"/jobs/{first}")
    expect(page.locator("#folded")).to_have_text("2 enqueues folded in")
    expect(page.locator("#timeline")).to_contain_text("debounced: 2 later enqueue(s) folded into this job")
    shot(page, "dashboard-job-debounced")
    page.goto(site.url + "/")
    expect(page.locator('#tasks tr[data-task="notify_debounced"] .shaping-debounce')).to_have_text("1h, key {contact}")
    page.locator("#tasks").scroll_into_view_if_needed()
    shot(page, "dashboard-tasks", full=False)
    site.api.post(f"/api/jobs/{first}/cancel")


def test_a_laned_limit_shows_each_lane(page, site):
    from playwright.sync_api import expect

    site.app.limit("crm", rate="2/s", lanes={"interactive": 0.2, "backfill": 0.8})

    @site.app.task(retry=0, queue="web", limits=["crm"], lane="backfill", name="crm_sync")
    def crm_sync(i: int) -> int:
        return i

    handles = site.app.enqueue_many(crm_sync, [{"i": i} for i in range(60)])
    with running_worker(site.app):
        # a backlog the key paces: the backfill lane asks all the while the page is looked at
        wait_for(lambda: status(site, handles[1].id) == "complete", message="the laned jobs to start")
        log_in(page, site)
        lanes = page.locator('#limits tr[data-lanes="crm"]')
        expect(lanes).to_have_count(1)
        # each declared lane with its share; backfill, alone with demand, is paced at the
        # key's whole rate; interactive never asked: idle, lending its share
        backfill = lanes.locator('[data-lane="backfill"]')
        expect(backfill).to_contain_text("80%")
        expect(backfill).to_contain_text("2/s now")
        expect(backfill).to_contain_text("active")
        expect(backfill).to_contain_text("running")
        interactive = lanes.locator('[data-lane="interactive"]')
        expect(interactive).to_contain_text("20%")
        expect(interactive).to_contain_text("0.4/s now")
        expect(interactive).to_contain_text("idle")
        expect(page.locator('#limits tr[data-lanes="partner-api"]')).to_have_count(0)  # no lanes, no row
        shot(page, "dashboard-limit-lanes")
    for handle in handles:
        site.api.post(f"/api/jobs/{handle.id}/cancel")


def test_a_bulk_action_on_the_jobs_filter_counts_first_and_asks_to_confirm(page, site):
    from playwright.sync_api import expect

    if "bulk_target" not in site.app.tasks:

        @site.app.task(name="bulk_target", queue="web")
        def bulk_target(n: int) -> None:
            return None

    made = [enqueue(site, "bulk_target", {"n": n}, delay=3600) for n in range(4)]
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    log_in(page, site, then="/jobs?task=bulk_target&status=scheduled")
    page.locator('#bulk [data-bulk="cancel"]').click()
    expect(page.locator("#toasts")).to_contain_text("cancel: 4 job(s)")
    assert asked == ["cancel 4 job(s) matching this filter?"]
    assert [status(site, job_id) for job_id in made] == ["cancelled"] * 4
    shot(page, "dashboard-bulk-cancel")


def test_the_backlog_chart_projects_the_drain_from_the_forecast(page, tmp_path):
    from playwright.sync_api import expect

    app = make_app(tmp_path / "backlog.db")

    @app.task(name="partner_sync", queue="partner", limits=["partner-api"])
    def partner_sync(n: int) -> None:
        return None

    try:
        with serving(app) as server:
            own = SimpleNamespace(url=server.url, tokens=tokens(app))
            # 200 jobs through a limit of 20/s and no worker yet: the forecast assumes the limit's rate
            app.enqueue_many(partner_sync, [{"n": n} for n in range(200)])
            log_in(page, own)
            chart = page.locator("#backlog-chart")
            wait_for(
                lambda: (chart.get_attribute("data-projection") or "") not in ("", "empty"),
                message="the projection",
            )
            assert float(chart.get_attribute("data-projection") or 0) == pytest.approx(10, rel=0.2)
            expect(page.locator("#backlog-eta")).to_contain_text("drains in")
            # the past line and the projection drawn: pixels on both sides of "now"
            inked = page.evaluate(
                """() => { const c = document.getElementById('backlog-chart'); const g = c.getContext('2d');
                  const d = g.getImageData(0, 0, c.width, c.height).data, w = c.width, split = Math.round(w * 0.6);
                  let left = 0, right = 0;
                  for (let i = 3; i < d.length; i += 4) if (d[i] > 0 && d[i - 1] > 150 && d[i - 3] > 80 && d[i - 2] < 120)
                    ((i >> 2) % w < split ? left++ : right++);
                  return [left, right]; }"""
            )
            assert inked[1] > 0, inked
            shot(page, "dashboard-backlog-projection", full=False)
            # a paused queue will not drain: the projection says so
            app.store.set_paused(queue="partner", paused=True)
            wait_for(
                lambda: chart.get_attribute("data-projection") == "will-not-drain", message="the paused projection"
            )
            expect(page.locator("#backlog-eta")).to_contain_text("partner")
    finally:
        app.close()
