"""Real multi-process tests of the worker: real SQLite files, real ``floodway worker`` processes.

Each test writes a small app module into ``tmp_path`` (its App on an absolute
``sqlite:////…/jobs.db`` URL), enqueues from this process, and starts workers with
``python -m floodway --app <module>:app worker …``. Tasks record what they do in ways that are
themselves safe across processes (O_APPEND lines, an flock-guarded gauge). Waits poll the store
with a generous deadline; nothing asserts on wall time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proc_helpers import (  # noqa: E402
    SRC,
    TIMEOUT,
    LoadedApps,
    db_rows,
    read_gauge,
    read_lines,
    timelines,
    wait_until,
)

from floodway.jobs import Status  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FAST = ["--poll-interval", "50ms", "--lease", "2s"]


@pytest.fixture
def make_app(tmp_path: Path):
    """Write an app module and import it here; returns (module name, module)."""
    apps = LoadedApps(tmp_path)
    try:
        yield apps.load
    finally:
        apps.close()


def _running_by_worker(app) -> dict[str, int]:
    """{worker_id: number of running jobs} as the store sees it."""
    return {w.id: w.running for w in app.store.list_workers(include_stopped=True) if w.running}


def _assert_exit_ok(proc) -> None:
    code = proc.wait()
    assert code == 0, f"{proc.label} exited with {code}\n{proc.log_tail()}"


# -- 1. two processes drain 2,000 jobs, each exactly once ------------------------------------

DRAIN_APP = """
@app.task
async def note(ctx: floodway.Context, n: int):
    # hold the first jobs until the test has seen both workers claim some: proves that the two
    # processes really compete for the same jobs (no timing involved)
    if not exists("go"):
        await wait_for_file("go", 60)
    record("runs.txt", f"{ctx.job_id} {os.getpid()}")
    return n
"""


def test_two_workers_drain_2000_jobs_each_exactly_once(tmp_path, workers, make_app):
    name, mod = make_app(DRAIN_APP)
    handles = mod.app.enqueue_many("note", [{"n": i} for i in range(2000)])
    enqueued = {h.id for h in handles}
    assert len(enqueued) == 2000

    opts = ["--concurrency", "8", "--burst", "--grace", "5s", *FAST]
    a = workers.start(name, *opts, label="drain-a")
    b = workers.start(name, *opts, label="drain-b")

    # both workers hold claimed jobs at the same time: they share the table
    wait_until(
        lambda: len(_running_by_worker(mod.app)) == 2,
        lambda: f"both workers to hold running jobs; store: {_running_by_worker(mod.app)}",
        workers=workers,
    )
    (tmp_path / "go").touch()

    _assert_exit_ok(a)
    _assert_exit_ok(b)

    counts = mod.app.store.count_jobs()
    assert counts["complete"] == 2000, f"not every job completed: {counts}\n{workers.logs()}"

    lines = read_lines(tmp_path, "runs.txt")
    ran = Counter(line.split()[0] for line in lines)
    duplicates = {job_id: n for job_id, n in ran.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} job(s) ran more than once, e.g. {list(duplicates.items())[:5]}"
    assert set(ran) == enqueued, f"missing runs: {len(enqueued - set(ran))}, unknown runs: {len(set(ran) - enqueued)}"
    pids = {line.split()[1] for line in lines}
    assert pids == {str(a.pid), str(b.pid)}, f"runs came from pids {pids}, expected both workers"

    # the store agrees: one claim and one completion per job, every result written
    per_job = [
        (
            job_id,
            sum(e.to_status is Status.RUNNING for e in events),
            sum(e.to_status is Status.COMPLETE for e in events),
        )
        for job_id, events in timelines(mod.app.store).items()
    ]
    assert len(per_job) == 2000
    bad = [row for row in per_job if row[1] != 1 or row[2] != 1]
    assert not bad, f"jobs claimed/completed other than once: {bad[:5]}"
    attempts = db_rows(tmp_path, "SELECT attempt, COUNT(*) FROM jobs GROUP BY attempt")
    assert attempts == [(1, 2000)]
    rows = db_rows(tmp_path, "SELECT args, result FROM jobs")
    assert all(json.loads(args)["n"] == json.loads(result) for args, result in rows)


# -- 2. a worker killed mid-job: the lease expires, another worker rescues and runs it ---------

KILL_APP = """
@app.task
async def stuck(ctx: floodway.Context):
    record("runs.txt", f"{ctx.job_id} {ctx.attempt} {os.getpid()}")
    if exists("started"):  # the first run started, and its worker was killed
        return "rescued"
    touch("started")
    await wait_for_file("never", 60)  # never appears: the worker is killed meanwhile
    return "first run finished"
"""


def test_sigkilled_worker_job_is_rescued_and_completes(tmp_path, workers, make_app):
    name, mod = make_app(KILL_APP)
    job_id = mod.app.enqueue("stuck").id

    first = workers.start(name, "--concurrency", "1", "--grace", "1s", *FAST, label="doomed")
    wait_until(lambda: (tmp_path / "started").exists(), "the task to start in the first worker", workers=workers)
    running = mod.app.store.get_job(job_id)
    assert running.status is Status.RUNNING and running.attempt == 1
    doomed_id = running.worker_id
    assert doomed_id and f":{first.pid}:" in doomed_id

    first.signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    # nobody has touched the job: it is still running under the dead worker's lease
    assert mod.app.store.get_job(job_id).status is Status.RUNNING

    second = workers.start(name, "--concurrency", "2", "--grace", "1s", *FAST, label="rescuer")
    wait_until(
        lambda: mod.app.store.get_job(job_id).status is Status.COMPLETE,
        lambda: f"the job to complete; it is {mod.app.store.get_job(job_id)}",
        workers=workers,
    )
    second.signal(signal.SIGTERM)
    _assert_exit_ok(second)

    job = mod.app.store.get_job(job_id)
    assert job.status is Status.COMPLETE
    assert job.result == "rescued"
    assert job.attempt == 1  # the worker died, not the job: no attempt spent

    runs = [line.split() for line in read_lines(tmp_path, "runs.txt")]
    assert [(r[1], r[2]) for r in runs] == [("1", str(first.pid)), ("1", str(second.pid))]

    events = mod.app.store.events(job_id)
    path = [(e.from_status, e.to_status, e.attempt) for e in events]
    assert path == [
        (None, Status.WAITING, 0),
        (Status.WAITING, Status.RUNNING, 1),
        (Status.RUNNING, Status.WAITING, 0),
        (Status.WAITING, Status.RUNNING, 1),
        (Status.RUNNING, Status.COMPLETE, 1),
    ], path
    rescue = events[2]
    assert rescue.reason and "worker died" in rescue.reason, rescue
    assert rescue.worker_id == doomed_id
    assert rescue.error and rescue.error["type"] == "WorkerLost"
    assert events[1].worker_id == doomed_id
    assert events[3].worker_id != doomed_id and f":{second.pid}:" in events[3].worker_id


# -- 3. SIGTERM: running jobs get the grace period, then go back without spending an attempt ---

SLEEPY_APP = """
@app.task
async def sleepy(ctx: floodway.Context):
    record("runs.txt", ctx.job_id)
    await asyncio.sleep(60)
    return "slept"
"""


def test_sigterm_releases_long_jobs_without_spending_an_attempt(tmp_path, workers, make_app):
    name, mod = make_app(SLEEPY_APP)
    ids = [h.id for h in mod.app.enqueue_many("sleepy", [{}, {}, {}])]
    assert all(mod.app.store.get_job(i).attempt == 0 for i in ids)

    proc = workers.start(name, "--concurrency", "3", "--grace", "0.5s", *FAST, label="sleepy")
    wait_until(
        lambda: mod.app.store.count_jobs()["running"] == 3,
        lambda: f"three running jobs; counts {mod.app.store.count_jobs()}",
        workers=workers,
    )
    wait_until(lambda: len(read_lines(tmp_path, "runs.txt")) == 3, "the three tasks to start", workers=workers)

    proc.signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    assert code == 0, proc.log_tail()

    for job_id in ids:
        job = mod.app.store.get_job(job_id)
        assert job.status is Status.WAITING, job
        assert job.attempt == 0, f"the release spent an attempt: {job}"
        assert job.worker_id is None and job.lease_until is None, job
        events = mod.app.store.events(job_id)
        last = events[-1]
        assert (last.from_status, last.to_status) == (Status.RUNNING, Status.WAITING), events
        assert last.attempt == 0
        assert last.reason and "released" in last.reason, last
        assert [(e.from_status, e.to_status) for e in events] == [
            (None, Status.WAITING),
            (Status.WAITING, Status.RUNNING),
            (Status.RUNNING, Status.WAITING),
        ]
    assert "SIGTERM received" in proc.log()
    assert mod.app.store.list_workers() == [], "the stopped worker should be marked stopped"


GATED_APP = """
@app.task
async def gated(ctx: floodway.Context):
    record("runs.txt", ctx.job_id)
    if not await wait_for_file("go", 60):
        raise RuntimeError("the test never opened the gate")
    return "done"
"""


def test_sigterm_lets_short_jobs_finish_within_grace_and_claims_no_more(tmp_path, workers, make_app):
    name, mod = make_app(GATED_APP)
    ids = [h.id for h in mod.app.enqueue_many("gated", [{}] * 4)]

    # (no prefetch: every job the store shows running here has started)
    proc = workers.start(name, "--concurrency", "2", "--prefetch", "0", "--grace", "30s", *FAST, label="gated")
    wait_until(
        lambda: mod.app.store.count_jobs()["running"] == 2,
        lambda: f"two running jobs; counts {mod.app.store.count_jobs()}",
        workers=workers,
    )
    running = {j.id for j in mod.app.store.list_jobs(status=[Status.RUNNING])}

    proc.signal(signal.SIGTERM)
    # the worker has handled the signal (it logs it) before the jobs are allowed to finish
    wait_until(lambda: "SIGTERM received" in proc.log(), "the worker to log the SIGTERM", workers=workers)
    (tmp_path / "go").touch()
    code = proc.wait(timeout=30)
    assert code == 0, proc.log_tail()

    for job_id in ids:
        job = mod.app.store.get_job(job_id)
        if job_id in running:
            assert job.status is Status.COMPLETE and job.attempt == 1 and job.result == "done", job
        else:  # a stopping worker claims nothing new
            assert job.status is Status.WAITING and job.attempt == 0, job
            assert [e.to_status for e in mod.app.store.events(job_id)] == [Status.WAITING]
    assert sorted(read_lines(tmp_path, "runs.txt")) == sorted(running)


SYNC_BLOCKING_APP = """
@app.task
def blocking(ctx: floodway.Context):
    gauge_enter("runs.gauge")
    record("runs.txt", f"{ctx.job_id} {ctx.attempt} {os.getpid()}")
    try:
        # a sync body the worker cannot interrupt; ends by itself after a cap
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not exists("never"):
            time.sleep(0.02)
    finally:
        gauge_exit("runs.gauge")
    return "done"
"""


def test_sigterm_never_lets_a_sync_job_run_twice_at_once(tmp_path, workers, make_app):
    name, mod = make_app(SYNC_BLOCKING_APP)
    (tmp_path / "runs.gauge").write_text("0 0")
    job_id = mod.app.enqueue("blocking").id

    first = workers.start(name, "--concurrency", "1", "--grace", "0.5s", *FAST, label="stopping")
    wait_until(lambda: read_lines(tmp_path, "runs.txt"), "the sync task to start", workers=workers)
    first.signal(signal.SIGTERM)
    workers.start(name, "--concurrency", "1", "--grace", "0.5s", *FAST, label="other")

    # either the other worker starts the job again, or the stopping worker finishes with it first
    wait_until(
        lambda: len(read_lines(tmp_path, "runs.txt")) >= 2 or not first.alive(),
        "a second run of the job or the first worker's exit",
        workers=workers,
    )
    _, overlapping = read_gauge(tmp_path, "runs.gauge")
    assert overlapping == 1, (
        f"job {job_id} ran {overlapping} times at once: {read_lines(tmp_path, 'runs.txt')}; "
        f"store: {mod.app.store.get_job(job_id)}"
    )


# -- 4/5. queue caps hold across processes -----------------------------------------------------

CAPPED_APP = """
narrow = app.queue("narrow", max_concurrency=3)


def _gate():
    deadline = time.monotonic() + 60
    while not exists("go") and time.monotonic() < deadline:
        time.sleep(0.02)


@app.task(queue="narrow")
def narrow_job(ctx: floodway.Context):
    _gate()
    gauge_enter("narrow.gauge")
    try:
        time.sleep(0.05)
    finally:
        gauge_exit("narrow.gauge")
    record("runs.txt", f"{ctx.job_id} {os.getpid()}")


@app.task(queue="solo")
def solo_job(ctx: floodway.Context):
    _gate()
    gauge_enter("solo.gauge")
    try:
        time.sleep(0.05)
    finally:
        gauge_exit("solo.gauge")
    record("runs.txt", f"{ctx.job_id} {os.getpid()}")
"""


def _run_capped(tmp_path, workers, mod, name, task, queue, count, cap):
    ids = {h.id for h in mod.app.enqueue_many(task, [{}] * count)}
    (tmp_path / f"{queue}.gauge").write_text("0 0")

    opts = ["--concurrency", "10", "--burst", "--grace", "5s", *FAST]
    a = workers.start(name, *opts, label=f"{queue}-a")
    b = workers.start(name, *opts, label=f"{queue}-b")
    # open the gate only once both processes are up and polling the queue
    wait_until(
        lambda: len(mod.app.store.list_workers(include_stopped=True)) == 2, "both workers to register", workers=workers
    )
    (tmp_path / "go").touch()

    seen_running = 0

    def finished() -> bool:
        nonlocal seen_running
        seen_running = max(seen_running, mod.app.store.count_jobs(queue=queue)["running"])
        return not a.alive() and not b.alive()

    wait_until(finished, lambda: f"both burst workers to exit; counts {mod.app.store.count_jobs()}", workers=workers)
    _assert_exit_ok(a)
    _assert_exit_ok(b)

    counts = mod.app.store.count_jobs(queue=queue)
    assert counts["complete"] == count, f"{counts}\n{workers.logs()}"
    ran = Counter(line.split()[0] for line in read_lines(tmp_path, "runs.txt"))
    assert set(ran) == ids and max(ran.values()) == 1

    current, highest = read_gauge(tmp_path, f"{queue}.gauge")
    assert current == 0
    assert 1 <= highest <= cap, f"{highest} {queue} jobs ran at once across the processes (cap {cap})"
    assert seen_running <= cap, f"the store showed {seen_running} running {queue} jobs (cap {cap})"


def test_declared_queue_cap_holds_across_two_processes(tmp_path, workers, make_app):
    name, mod = make_app(CAPPED_APP)
    _run_capped(tmp_path, workers, mod, name, "narrow_job", "narrow", 60, 3)
    assert dict((q.name, q.max_concurrency) for q in mod.app.store.list_queues())["narrow"] == 3


def test_undeclared_string_queue_runs_one_at_a_time_across_two_processes(tmp_path, workers, make_app):
    name, mod = make_app(CAPPED_APP)
    _run_capped(tmp_path, workers, mod, name, "solo_job", "solo", 20, 1)


# -- startup errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module_source, spec, expected",
    [
        (None, "fw_no_such_module_here:app", "cannot import 'fw_no_such_module_here'"),
        ("raise RuntimeError('boom at import')\n", "fw_broken:app", "RuntimeError: boom at import"),
        ("x = 1\n", "fw_not_app:x", "not a floodway App"),
    ],
)
def test_worker_with_an_unimportable_app_exits_2(tmp_path, module_source, spec, expected):
    if module_source is not None:
        (tmp_path / f"{spec.split(':')[0]}.py").write_text(module_source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), SRC]))
    env.pop("FLOODWAY_APP", None)
    done = subprocess.run(
        [sys.executable, "-m", "floodway", "--app", spec, "worker", "--burst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
