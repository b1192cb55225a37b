"""Hardening of schedules and of the worker against stale and dead peers.

Real parts only: real SQLite files and the real PostgreSQL server, real ``floodway worker``
processes (frozen with SIGSTOP, killed with SIGKILL), the real ``floodway`` command. Tests
assert invariants (what ran, how often, who owned what), never how fast it happened.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from proc_helpers import SRC, TIMEOUT, LoadedApps, read_lines, wait_until  # noqa: E402

from floodway import App, ConfigError  # noqa: E402
from floodway.jobs import Status  # noqa: E402
from floodway.store.base import ScheduleInfo  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def make_app(tmp_path: Path):
    apps = LoadedApps(tmp_path)
    try:
        yield apps.load
    finally:
        apps.close()


def on_backend(url: str) -> str:
    """App module source lines that put ``app`` on the test's database instead of the header's."""
    return f"app.close()\napp = floodway.App({url!r})\n"


# -- schedules: an impossible cron, isolation, listing -----------------------------------------

@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_a_cron_that_never_fires_is_refused_at_declaration(tmp_path: Path, cron: str) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        @app.task
        def tick() -> None:
            return None

        with pytest.raises(ConfigError, match="never fires"):
            app.schedule(tick, cron=cron, name="never")
        assert "never" not in app.schedules
        app.schedule(tick, cron="0 0 29 2 *", name="leap-day")  # rare, but it fires
    finally:
        app.close()


SCHEDULED_APP = '''
@app.task
def tick():
    record("ticks.txt", "tick")


@app.task
def other():
    record("ticks.txt", "other")


app.schedule(tick, cron="0 0 1 1 *", name="broken")
app.schedule(other, cron="* * * * *", name="every-minute")
# a schedule that cannot compute its ticks any more, whatever the reason (here: a cron that
# never fires, as one stored by an older version would be)
app.schedules["broken"].cron = "0 0 30 2 *"
'''


def test_one_failing_schedule_does_not_stop_the_others(tmp_path, workers, make_app, caplog) -> None:
    """A worker process runs two schedules, one of which fails every time: the other still
    enqueues its ticks, and the failure is logged once, not at every retry."""
    name, mod = make_app(SCHEDULED_APP)
    store = mod.app.store
    store.migrate()
    # both schedules last ticked two minutes ago: "every-minute" is due at once
    past = time.time() - 120
    for schedule in mod.app.schedules.values():
        info = schedule.info()
        info.last_tick = past
        store.save_schedule(info)
    worker = workers.start(name, "--poll-interval", "50ms", "--lease", "3s")
    wait_until(lambda: any(j.task == "other" for j in store.list_jobs()),
               "the healthy schedule enqueued its tick", workers=workers)
    wait_until(lambda: "other" in read_lines(tmp_path, "ticks.txt"), "the tick ran", workers=workers)
    assert not any(j.task == "tick" for j in store.list_jobs())
    # the scheduler goes on (more passes over the broken one) without logging it again
    wait_until(lambda: worker.log().count("schedule broken failed") >= 1, "the failure is logged",
               workers=workers)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert worker.log().count("schedule broken failed") == 1, worker.log_tail()


def test_run_due_logs_a_failing_schedule_once_per_episode(tmp_path, caplog) -> None:
    from floodway.schedule import ScheduleHealth, run_due, sync_schedules

    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        @app.task
        def tick() -> None:
            return None

        app.schedule(tick, cron="* * * * *", name="flaky")
        app.schedule(tick, cron="* * * * *", name="steady")
        sync_schedules(app)
        health = ScheduleHealth()
        start = time.time()
        good_cron = app.schedules["flaky"].cron
        app.schedules["flaky"].cron = "0 0 30 2 *"
        caplog.set_level(logging.INFO, logger="floodway.schedule")
        for minute in range(1, 4):
            ids = run_due(app, start + 60 * minute, health)
            assert [i for i in ids if i.startswith("cron:steady:")], ids
            assert not [i for i in ids if i.startswith("cron:flaky:")]
        assert sum("schedule flaky failed" in r.getMessage() for r in caplog.records) == 1
        app.schedules["flaky"].cron = good_cron
        assert [i for i in run_due(app, start + 300, health) if i.startswith("cron:flaky:")]
        assert sum("schedule flaky recovered" in r.getMessage() for r in caplog.records) == 1
        assert health.failing == {}
    finally:
        app.close()


def test_cli_schedules_lists_a_stored_schedule_that_cannot_fire(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    app = App(url)
    try:
        app.store.migrate()
        app.store.save_schedule(ScheduleInfo("feb-30", "tick", "0 0 30 2 *", "UTC", {}, {}, "skip", None))
        app.store.save_schedule(ScheduleInfo("daily", "tick", "0 6 * * *", "UTC", {}, {}, "skip", None))
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODWAY_")}
    env["PYTHONPATH"] = SRC
    for as_json in (True, False):
        argv = [sys.executable, "-m", "floodway", *(["--json"] if as_json else []), "--database", url, "schedules"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        if as_json:
            rows = {r["name"]: r for r in json.loads(done.stdout)}
            assert rows["feb-30"]["next_tick"] is None and "never fires" in rows["feb-30"]["error"]
            assert rows["daily"]["next_tick"] is not None and rows["daily"]["error"] is None
        else:
            assert "feb-30" in done.stdout and "daily" in done.stdout


# -- a stalled worker's stale run makes no side effect -----------------------------------------

STALL_APP = '''
from floodway.errors import LeaseLost

DEST = open(os.path.join(HERE, "dest_url.txt")).read().strip()


def first_run_then_wait(attempt):
    """The first run sleeps past the moment the test freezes its worker; a rescued run waits
    for the test's go before its side effect, so the stale run resumes while it is running."""
    return attempt == 1


@app.task(retry=5)
async def side_async(ctx: floodway.Context):
    pid = os.getpid()
    record("starts.txt", f"{{pid}} {{ctx.attempt}}")
    if first_run_then_wait(ctx.attempt):
        await asyncio.sleep(3)
    else:
        await wait_for_file("go", 60)
    record("about.txt", f"{{pid}} {{ctx.attempt}}")
    try:
        async with ctx.http(DEST) as client:
            await client.post("/orders", json={{"id": f"{{pid}}-{{ctx.attempt}}"}})
        await ctx.checkpoint({{"sent": True}})
    except LeaseLost:
        record("refused.txt", f"{{pid}} {{ctx.attempt}}")
        raise
    record("done.txt", f"{{pid}} {{ctx.attempt}}")
    return pid


@app.task(retry=5)
def side_sync(ctx: floodway.Context):
    pid = os.getpid()
    record("starts.txt", f"{{pid}} {{ctx.attempt}}")
    if first_run_then_wait(ctx.attempt):
        time.sleep(3)
    else:
        while not exists("go"):
            time.sleep(0.02)
    record("about.txt", f"{{pid}} {{ctx.attempt}}")
    try:
        with ctx.http_sync(DEST) as client:
            client.post("/orders", json={{"id": f"{{pid}}-{{ctx.attempt}}"}})
        ctx.checkpoint_sync({{"sent": True}})
    except LeaseLost:
        record("refused.txt", f"{{pid}} {{ctx.attempt}}")
        raise
    record("done.txt", f"{{pid}} {{ctx.attempt}}")
    return pid
'''


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_worker_frozen_past_its_lease_makes_no_side_effect_after_it_resumes(
    tmp_path, workers, make_app, database_url, kind
) -> None:
    """SIGSTOP a worker mid-job past its lease; another worker rescues the job and runs it;
    SIGCONT the first while the second is still running: the stale run sends no request and
    writes no checkpoint (``LeaseLost``), and the job completes once, on the second worker."""
    from destination import Destination

    with Destination(enforce=False) as dest:
        (tmp_path / "dest_url.txt").write_text(dest.url)
        name, mod = make_app(on_backend(database_url) + STALL_APP.format())
        store = mod.app.store
        store.migrate()
        handle = mod.app.enqueue(f"side_{kind}", {})
        options = ["--poll-interval", "50ms", "--lease", "2s", "--grace", "1s"]
        first = workers.start(name, *options, label="first")
        wait_until(lambda: read_lines(tmp_path, "starts.txt"), "the first run started", workers=workers)
        first.signal(signal.SIGSTOP)
        try:
            second = workers.start(name, *options, label="second")
            wait_until(lambda: any(line.startswith(f"{second.pid} ") for line in read_lines(tmp_path, "starts.txt")),
                       "the second worker rescued and started the job", workers=workers)
        finally:
            first.signal(signal.SIGCONT)

        def first_settled() -> bool:
            mine = [line for f in ("refused.txt", "done.txt") for line in read_lines(tmp_path, f)
                    if line.startswith(f"{first.pid} ")]
            return bool(mine) or "stops now" in first.log()

        wait_until(first_settled, "the resumed stale run reached its side effect", workers=workers)
        (tmp_path / "go").touch()
        wait_until(lambda: store.get_job(handle.id).status is Status.COMPLETE, "the job completed",
                   workers=workers)
        sent = [r.id for r in dest.accepted()]
        assert all(not s.startswith(f"{first.pid}-") for s in sent), (sent, workers.logs())
        assert [s for s in sent if s.startswith(f"{second.pid}-")], sent
        assert not [line for line in read_lines(tmp_path, "done.txt") if line.startswith(f"{first.pid} ")]
        assert store.get_job(handle.id).result == second.pid
        for proc in (first, second):
            proc.signal(signal.SIGTERM)
        for proc in (first, second):
            proc.wait()
