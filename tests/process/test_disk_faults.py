"""Disk faults under the SQLite store: a disk that fills up, and a database that is read-only.

The disk is real: each test mounts a 2 MB tmpfs (``mount -t tmpfs -o size=2m``, which needs
root — without it these tests are skipped, saying so) and puts the database on it. "Full" is a
ballast file written until the kernel answers ENOSPC; deleting it gives the space back.
"Read-only" is the same mount remounted ``ro`` (chmod would not do: root ignores file modes).

Checked: enqueue on a full disk fails with ``StoreError`` and a message that says so, and
writes nothing (bulk enqueue: all or nothing); a worker process started before the disk filled
keeps running, backs off, and completes every job once space returns; a read-only database is
refused with ``StoreError`` naming the file, and nothing is written. Waits poll with deadlines;
every process is killed and the mount removed in teardown.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from floodway import App
from floodway.errors import StoreError

from ..contract.test_fuzz import run_cli
from ..proc_helpers import wait_until

pytestmark = pytest.mark.timeout(180)

SIZE = "2m"

APP = '''
import asyncio
import os

import floodway

HERE = {here!r}
DISK = {disk!r}
app = floodway.App("sqlite:///" + os.path.join(DISK, "jobs.db"))


@app.task(retry=floodway.Retry(attempts=10, initial="100ms", max="1s"))
async def fat(n: int) -> str:
    """Waits for HERE/go, then returns a result of 40 KB: its outcome needs room on the disk."""
    while not os.path.exists(os.path.join(HERE, "go")):
        await asyncio.sleep(0.02)
    return str(n % 10) * 40_000


@app.task
def small(n: int, pad: str = "") -> int:
    return n
'''


def _mount(path: Path, *options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join((f"size={SIZE}", *options)), "tmpfs", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def disk(tmp_path: Path):
    """A 2 MB tmpfs mounted at tmp_path/disk for this test."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; these tests simulate nothing else")
    try:
        _mount(path)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({getattr(exc, 'stderr', exc)}); the disk-fault tests need one")
    try:
        yield path
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], capture_output=True)
        done = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if done.returncode != 0:  # a process still holds a file: detach now, freed when it exits
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a ballast file until the filesystem is full (ENOSPC); return its path."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 512):  # down to the last partial page
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free < 64 * 1024
    return ballast


def make_app(tmp_path: Path, disk: Path) -> tuple[str, App]:
    name = f"diskapp_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP.format(here=str(tmp_path), disk=str(disk))))
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return name, module.app


def waiting(app: App) -> int:
    return app.store.count_jobs()["waiting"]


# -- a full disk --------------------------------------------------------------------------------


def test_enqueue_on_a_full_disk_fails_clearly_and_writes_nothing(tmp_path, disk):
    _, app = make_app(tmp_path, disk)
    try:
        app.enqueue_many("small", [{"n": i} for i in range(10)])
        ballast = fill(disk)
        for attempt in (
            lambda: app.enqueue("small", {"n": 1}),
            lambda: app.enqueue_many("small", [{"n": i, "pad": "x" * 1000} for i in range(200)]),
        ):
            with pytest.raises(StoreError, match="full"):
                attempt()
            assert waiting(app) == 10  # nothing half written
        ballast.unlink()
        app.enqueue_many("small", [{"n": i} for i in range(200)])
        assert waiting(app) == 210
    finally:
        app.close()


def test_a_large_bulk_enqueue_on_a_full_disk_fails_clearly_and_writes_nothing(tmp_path, disk):
    """(Found here: SQLITE_FULL mid-INSERT made SQLite roll back by itself, and SQLiteStore._write's
    own ROLLBACK then raised a raw "cannot rollback - no transaction is active"; fixed in 19de942.)"""
    _, app = make_app(tmp_path, disk)
    try:
        app.enqueue_many("small", [{"n": i} for i in range(10)])
        fill(disk)
        try:
            # 6 MB of jobs: more than SQLite's page cache holds, so pages spill mid-transaction
            app.enqueue_many("small", [{"n": i, "pad": "x" * 2000} for i in range(3000)])
        except StoreError as exc:
            assert "full" in str(exc)
        else:
            pytest.fail("a bulk enqueue on a full disk succeeded")
        finally:
            assert waiting(app) == 10  # all or nothing
    finally:
        app.close()


def test_cli_enqueue_on_a_full_disk_says_so_without_a_traceback(tmp_path, disk):
    name, app = make_app(tmp_path, disk)
    sys.path.insert(0, str(tmp_path))
    try:
        app.enqueue_many("small", [{"n": i} for i in range(5)])
        fill(disk)
        code, out, err, logged = run_cli(["--app", f"{name}:app", "enqueue", "small", "--args", '{"n": 1}'])
        assert code == 1 and "full" in err and "Traceback" not in err + out, (code, err)
        assert waiting(app) == 5
    finally:
        sys.path.remove(str(tmp_path))
        app.close()


def test_a_worker_backs_off_on_a_full_disk_and_recovers_when_space_returns(tmp_path, disk, workers):
    name, app = make_app(tmp_path, disk)
    try:
        handles = app.enqueue_many("fat", [{"n": i} for i in range(20)])
        worker = workers.start(name, "--concurrency", "20", "--poll-interval", "50ms")
        wait_until(lambda: app.store.count_jobs()["running"] == 20, "the worker to claim all 20 jobs", workers=workers)
        ballast = fill(disk)
        (tmp_path / "go").touch()  # the jobs finish now; their 800 KB of results do not fit
        # it keeps trying, backing off (0.05 s, 0.1 s, 0.2 s... up to 5 s), and keeps running
        wait_until(
            lambda: worker.log().count("could not write") >= 4,
            "the worker to retry writing its outcomes on the full disk",
            workers=workers,
        )
        assert worker.alive(), worker.log_tail()
        with pytest.raises(StoreError, match="full"):
            app.enqueue("small", {"n": 1})
        counts = app.store.count_jobs()
        assert counts["complete"] < 20 and counts["failed"] == 0, counts
        ballast.unlink()
        wait_until(
            lambda: app.store.count_jobs()["complete"] == 20,
            lambda: f"every job to complete once space returned: {app.store.count_jobs()}",
            workers=workers,
        )
        assert worker.alive(), worker.log_tail()
        for h in handles:
            assert h.result(timeout=0) == str(int(h.job().args["n"]) % 10) * 40_000
        # and it goes on taking new work
        more = app.enqueue_many("small", [{"n": i} for i in range(5)])
        wait_until(lambda: all(h.status().value == "complete" for h in more), "new jobs to complete", workers=workers)
        assert app.store.count_jobs()["failed"] == 0
    finally:
        app.close()


# -- a read-only database ----------------------------------------------------------------------


def test_a_read_only_database_is_refused_clearly_and_nothing_is_written(tmp_path, disk):
    name, app = make_app(tmp_path, disk)
    app.enqueue_many("small", [{"n": i} for i in range(10)])
    app.close()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
    try:
        _, readonly = make_app(tmp_path, disk)
        try:
            for attempt in (
                lambda: readonly.enqueue("small", {"n": 1}),
                lambda: readonly.enqueue_many("small", [{"n": i} for i in range(100)]),
            ):
                with pytest.raises(StoreError) as caught:
                    attempt()
                assert str(disk / "jobs.db") in str(caught.value), caught.value
        finally:
            readonly.close()
        sys.path.insert(0, str(tmp_path))
        try:
            code, out, err, _ = run_cli(["--app", f"{name}:app", "enqueue", "small", "--args", '{"n": 1}'])
            assert code == 1 and "jobs.db" in err and "Traceback" not in err + out, (code, err)
            code, out, err, _ = run_cli(["--app", f"{name}:app", "worker", "--burst"])
            assert code == 1 and "jobs.db" in err and "Traceback" not in err + out, (code, err)
        finally:
            sys.path.remove(str(tmp_path))
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True, capture_output=True)
    _, again = make_app(tmp_path, disk)
    try:
        assert waiting(again) == 10
        assert again.store.count_jobs()["complete"] == 0
    finally:
        again.close()
