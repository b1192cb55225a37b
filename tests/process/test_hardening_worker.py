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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proc_helpers import SRC, TIMEOUT, LoadedApps, read_lines, wait_until  # noqa: E402

from floodway import App, ConfigError  # noqa: E402
from floodway.jobs import Status  # noqa: E402
from floodway.store.base import ScheduleInfo  # noqa: E402

from ..contract.test_store_contract import new_job  # noqa: E402

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


SCHEDULED_APP = """
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
"""


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
    wait_until(
        lambda: any(j.task == "other" for j in store.list_jobs()),
        "the healthy schedule enqueued its tick",
        workers=workers,
    )
    wait_until(lambda: "other" in read_lines(tmp_path, "ticks.txt"), "the tick ran", workers=workers)
    assert not any(j.task == "tick" for j in store.list_jobs())
    # the scheduler goes on (more passes over the broken one) without logging it again
    wait_until(lambda: worker.log().count("schedule broken failed") >= 1, "the failure is logged", workers=workers)
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


@pytest.mark.serial
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
        first.freeze(database_url)
        try:
            second = workers.start(name, *options, label="second")
            wait_until(
                lambda: any(line.startswith(f"{second.pid} ") for line in read_lines(tmp_path, "starts.txt")),
                "the second worker rescued and started the job",
                workers=workers,
            )
        finally:
            first.signal(signal.SIGCONT)

        def first_settled() -> bool:
            mine = [
                line
                for f in ("refused.txt", "done.txt")
                for line in read_lines(tmp_path, f)
                if line.startswith(f"{first.pid} ")
            ]
            return bool(mine) or "stops now" in first.log()

        wait_until(first_settled, "the resumed stale run reached its side effect", workers=workers)
        (tmp_path / "go").touch()
        wait_until(lambda: store.get_job(handle.id).status is Status.COMPLETE, "the job completed", workers=workers)
        sent = [r.id for r in dest.accepted()]
        assert all(not s.startswith(f"{first.pid}-") for s in sent), (sent, workers.logs())
        assert [s for s in sent if s.startswith(f"{second.pid}-")], sent
        assert not [line for line in read_lines(tmp_path, "done.txt") if line.startswith(f"{first.pid} ")]
        assert store.get_job(handle.id).result == second.pid
        for proc in (first, second):
            proc.signal(signal.SIGTERM)
        for proc in (first, second):
            proc.wait()


# -- a dead worker costs seconds, not a lease ----------------------------------------------------

CRASH_APP = """
@app.task(retry=2)
async def long_job(ctx: floodway.Context, n: int):
    start = ctx.cursor or 0
    record("runs.txt", f"{os.getpid()} {ctx.attempt} {start}")
    for i in range(start, n):
        record("steps.txt", f"{os.getpid()} {i}")
        await ctx.checkpoint(i + 1)
        if i == 2 and ctx.attempt == 1 and not exists("killed"):
            touch("ready-to-kill")
            await wait_for_file("killed", 120)  # the test SIGKILLs this worker meanwhile
    return ctx.cursor
"""

#: long enough that a rescue seen within the test's waits cannot be the lease's doing
LONG_LEASE = ["--poll-interval", "50ms", "--lease", "60s", "--grace", "1s"]
WITHIN = 20.0


def _runs(tmp_path: Path) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in line.split()) for line in read_lines(tmp_path, "runs.txt")]


def test_a_job_of_a_worker_killed_with_sigkill_resumes_on_another_long_before_its_lease(
    tmp_path, workers, make_app, database_url
) -> None:
    name, mod = make_app(on_backend(database_url) + CRASH_APP)
    store = mod.app.store
    store.migrate()
    handle = mod.app.enqueue("long_job", {"n": 6})
    first = workers.start(name, *LONG_LEASE, label="doomed")
    wait_until(lambda: (tmp_path / "ready-to-kill").exists(), "the first run checkpointed", workers=workers)
    second = workers.start(name, *LONG_LEASE, label="survivor")
    wait_until(lambda: len(store.list_workers()) == 2, "the second worker registered", workers=workers)
    first.signal(signal.SIGKILL)
    first.wait()
    (tmp_path / "killed").touch()
    wait_until(
        lambda: store.get_job(handle.id).status is Status.COMPLETE,
        "the dead worker's job was rescued and finished (its 60 s lease still had long to run)",
        timeout=WITHIN,
        workers=workers,
    )
    job = store.get_job(handle.id)
    assert job.result == 6
    assert job.attempt == 1  # the worker died, not the job: no attempt spent
    # it resumed from its checkpoint on the survivor: steps 0-2 ran once, on the dead worker
    assert _runs(tmp_path) == [(first.pid, 1, 0), (second.pid, 1, 3)]
    steps = [tuple(int(x) for x in line.split()) for line in read_lines(tmp_path, "steps.txt")]
    assert [s for _, s in steps] == [0, 1, 2, 3, 4, 5]
    lost = [e for e in store.events(handle.id) if e.error and e.error.get("type") == "WorkerLost"]
    assert len(lost) == 1 and "died" in lost[0].error["message"], store.events(handle.id)
    dead = {w.id: w for w in store.list_workers(include_stopped=True)}
    assert sum(1 for w in dead.values() if w.pid == first.pid and w.stopped_at is not None) == 1
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_burst_after_a_crash_rescues_and_finishes_the_dead_workers_job(
    tmp_path, workers, make_app, database_url
) -> None:
    """``worker --burst`` started after a worker died holding a job does not exit and leave
    that job ``running``: it rescues it, finishes it, then exits."""
    name, mod = make_app(on_backend(database_url) + CRASH_APP)
    store = mod.app.store
    store.migrate()
    handle = mod.app.enqueue("long_job", {"n": 5})
    first = workers.start(name, *LONG_LEASE, label="doomed")
    wait_until(lambda: (tmp_path / "ready-to-kill").exists(), "the first run checkpointed", workers=workers)
    first.signal(signal.SIGKILL)
    first.wait()
    (tmp_path / "killed").touch()
    burst = workers.start(name, *LONG_LEASE, "--burst", label="burst")
    assert burst.wait(timeout=WITHIN) == 0, burst.log_tail()
    job = store.get_job(handle.id)
    assert job.status is Status.COMPLETE and job.result == 5, (job.status, burst.log_tail())
    assert _runs(tmp_path) == [(first.pid, 1, 0), (burst.pid, 1, 3)]


FROZEN_HOLDER_APP = """
@app.task
async def hold(ctx: floodway.Context):
    record("runs.txt", f"{os.getpid()} {ctx.attempt} 0")
    if ctx.attempt == 1:
        touch("holding")
        await asyncio.sleep(3600)
    return os.getpid()
"""


@pytest.mark.serial
def test_burst_waits_for_a_frozen_holders_lease_then_finishes_its_job(
    tmp_path, workers, make_app, database_url
) -> None:
    """A worker on this host that is alive but frozen (SIGSTOP) keeps its job until its lease
    runs out; ``--burst`` waits for that and runs the job, rather than exit and strand it."""
    name, mod = make_app(on_backend(database_url) + FROZEN_HOLDER_APP)
    store = mod.app.store
    store.migrate()
    handle = mod.app.enqueue("hold", {})
    frozen = workers.start(name, "--poll-interval", "50ms", "--lease", "4s", label="frozen")
    wait_until(lambda: (tmp_path / "holding").exists(), "the job started", workers=workers)
    frozen.freeze(database_url)
    try:
        burst = workers.start(name, "--poll-interval", "50ms", "--lease", "4s", "--burst", label="burst")
        assert burst.wait(timeout=TIMEOUT) == 0, burst.log_tail()
        job = store.get_job(handle.id)
        assert job.status is Status.COMPLETE and job.result == burst.pid, (job.status, burst.log_tail())
        assert job.attempt == 2  # a lease that ran out spends the attempt, as before
    finally:
        frozen.signal(signal.SIGCONT)


def test_a_silent_worker_on_another_host_loses_its_jobs_long_before_its_lease(
    tmp_path, workers, make_app, database_url
) -> None:
    """A worker recorded on another host (so its process cannot be checked) that stops sending
    heartbeats: its job is rescued once its heartbeat is stale, not after its 60 s lease; the
    attempt is spent (it may be alive, cut off), as for a lease that ran out."""
    from floodway.store.base import WorkerInfo

    name, mod = make_app(on_backend(database_url) + FROZEN_HOLDER_APP)
    store = mod.app.store
    store.migrate()
    handle = mod.app.enqueue("hold", {})
    now = time.time()
    store.register_worker(
        WorkerInfo(
            "far-away:1:abc",
            "far-away",
            1,
            None,
            1,
            now,
            now,
            host_key="far-away/another-boot/pid:[1]",
            pid_start=12345,
        )
    )
    [claimed] = store.claim("far-away:1:abc", queues=None, limit=1, lease=60)
    assert claimed.id == handle.id
    survivor = workers.start(name, *LONG_LEASE, label="survivor")
    wait_until(
        lambda: store.get_job(handle.id).status is Status.COMPLETE,
        "the silent worker's job was rescued and finished (its 60 s lease still had long to run)",
        timeout=WITHIN + 10,
        workers=workers,
    )
    job = store.get_job(handle.id)
    assert job.result == survivor.pid and job.attempt == 2
    lost = [e for e in store.events(handle.id) if e.error and e.error.get("type") == "WorkerLost"]
    assert len(lost) == 1 and "heartbeats" in lost[0].error["message"]
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0


# -- the store's side, on both backends ---------------------------------------------------------


def test_liveness_tells_a_reused_pid_from_the_worker_that_had_it() -> None:
    from floodway import liveness
    from floodway.liveness import LeaseHolder, verdict

    here = liveness.host_key()
    me = os.getpid()
    mine = liveness.start_time(me)
    assert mine is not None
    now = time.time()
    alive = LeaseHolder("w", 1, now + 60, here, me, mine, now, None, observed_at=now)
    assert verdict(alive, here=here, judge_stale=True) == liveness.ALIVE
    reused = LeaseHolder("w", 1, now + 60, here, me, mine + 1, now, None, observed_at=now)
    assert verdict(reused, here=here, judge_stale=True) == liveness.DEAD
    silent_here = LeaseHolder("w", 1, now + 60, here, me, mine, now - 60, None, observed_at=now)
    assert verdict(silent_here, here=here, judge_stale=True) == liveness.FROZEN  # alive: the lease decides
    silent_far = LeaseHolder("w", 1, now + 60, "elsewhere", me, mine, now - 60, None, observed_at=now)
    assert verdict(silent_far, here=here, judge_stale=True) == liveness.STALE
    assert verdict(silent_far, here=here, judge_stale=False) == liveness.FROZEN


def test_store_rescue_worker_gives_back_the_attempt_of_a_dead_workers_job_a_bounded_number_of_times(store) -> None:
    from floodway.liveness import FREE_LOST_RUNS
    from floodway.store.base import WorkerInfo

    store.enqueue([new_job("j", max_attempts=2)])
    attempts = []
    for run in range(FREE_LOST_RUNS + 2):
        worker = f"w{run}"
        now = time.time()
        store.register_worker(WorkerInfo(worker, "h", 1, None, 1, now, now, host_key="h", pid_start=1))
        [job] = store.claim(worker, queues=None, limit=1, lease=60)
        assert [h.worker_id for h in store.lease_holders()] == [worker]
        assert store.rescue_worker(worker, dead=True) == ["j"]
        attempts.append((job.attempt, store.get_job("j").status))
        assert store.lease_holders() == []
        assert store.list_workers() == [] or all(w.id != worker for w in store.list_workers())
    # free while under the bound, then each loss spends an attempt; the last one fails the job
    assert attempts == [(1, Status.WAITING)] * FREE_LOST_RUNS + [(1, Status.WAITING), (2, Status.FAILED)]


def test_store_rescue_worker_backs_off_when_the_silent_worker_speaks(store) -> None:
    from floodway.store.base import WorkerInfo

    store.enqueue([new_job("j", max_attempts=3)])
    now = time.time()
    store.register_worker(WorkerInfo("w", "h", 1, None, 1, now, now))
    store.claim("w", queues=None, limit=1, lease=60)
    assert store.rescue_worker("w", dead=False, heartbeat_before=now - 1) == []  # it spoke at `now`
    assert store.get_job("j").status is Status.RUNNING
    assert store.rescue_worker("w", dead=False, heartbeat_before=time.time() + 1) == ["j"]
    job = store.get_job("j")
    assert job.status is Status.WAITING and job.attempt == 1  # spent: the next run is attempt 2


def test_store_heartbeat_reports_lost_leases_and_renews_no_expired_one(store) -> None:

    store.enqueue([new_job(i, max_attempts=3) for i in ("a", "b", "c")])
    store.claim("w", queues=None, limit=2, lease=60)  # a and b
    store.claim("w", queues=None, limit=1, lease=0.01)  # c, whose lease runs out at once
    time.sleep(0.05)
    renewal = store.heartbeat("w", ["a", "b", "c", "gone"], 60)
    assert set(renewal) == set() and renewal.lost == {"c", "gone"}
    assert store.get_job("c").status is Status.RUNNING  # not renewed; the rescue takes it
    assert store.rescue_expired() == ["c"]
    assert store.heartbeat("other", ["a"], 60).lost == {"a"}
