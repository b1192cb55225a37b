"""Helpers for tests that run real ``floodway worker`` processes.

A test writes a small app module into its ``tmp_path`` (``write_app``), imports it in the test
process to enqueue (``load_app_module``), and starts workers with ``Workers.start`` — each one
``python -m floodway --app <module>:app worker ...`` with ``cwd=tmp_path`` so that ``--app``
imports the module. Every process started through a ``Workers`` is SIGKILLed on ``close()``
if it is still alive, so a failing test leaves nothing behind.

Nothing here sleeps and hopes: ``wait_until`` polls a condition until a generous deadline and
fails the test with a message (and the workers' log tails) when it never holds.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

#: How long any one wait may take before the test fails (generous: CI machines are slow).
TIMEOUT = 60.0

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: Prepended to every app module: the app on an absolute SQLite URL, and cross-process
#: recording tools the tasks use (each safe across processes *and* threads).
APP_HEADER = '''
import asyncio
import fcntl
import os
import time

import floodway

HERE = {here!r}
DB_PATH = os.path.join(HERE, "jobs.db")
app = floodway.App("sqlite:///" + DB_PATH)


def record(name, line):
    """Append one line to HERE/name: O_APPEND and a single write, so lines never interleave."""
    fd = os.open(os.path.join(HERE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def _gauge_update(name, delta):
    """Add delta to the gauge in HERE/name ("current max"), under an exclusive flock."""
    fd = os.open(os.path.join(HERE, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 100, 0).decode().split()
        current, highest = (int(raw[0]), int(raw[1])) if raw else (0, 0)
        current += delta
        highest = max(highest, current)
        data = f"{{current}} {{highest}}".ljust(40).encode()
        os.pwrite(fd, data, 0)
        return current
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def gauge_enter(name):
    return _gauge_update(name, +1)


def gauge_exit(name):
    return _gauge_update(name, -1)


def touch(name):
    with open(os.path.join(HERE, name), "w"):
        pass


def exists(name):
    return os.path.exists(os.path.join(HERE, name))


async def wait_for_file(name, cap):
    """Wait (asynchronously) until HERE/name exists or cap seconds pass; True if it appeared."""
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        if exists(name):
            return True
        await asyncio.sleep(0.02)
    return False
'''


def write_app(tmp_path: Path, body: str) -> str:
    """Write ``APP_HEADER + body`` as a uniquely named module in ``tmp_path``; return its name."""
    name = f"fw_app_{uuid.uuid4().hex[:10]}"
    source = APP_HEADER.format(here=str(tmp_path)) + "\n" + textwrap.dedent(body)
    (tmp_path / f"{name}.py").write_text(source)
    return name


def load_app_module(tmp_path: Path, name: str) -> ModuleType:
    """Import the module written by ``write_app`` into the test process (for enqueueing)."""
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LoadedApps:
    """The app modules one test writes and imports; ``close()`` closes their apps and forgets
    the modules, so the next test's module of the same name is imported afresh."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.loaded: list[tuple[str, ModuleType]] = []

    def load(self, source: str) -> tuple[str, ModuleType]:
        """Write ``source`` as an app module and import it; returns (module name, module)."""
        name = write_app(self.tmp_path, source)
        module = load_app_module(self.tmp_path, name)
        self.loaded.append((name, module))
        return name, module

    def close(self) -> None:
        for name, module in self.loaded:
            module.app.close()
            sys.modules.pop(name, None)


def timelines(store) -> dict[str, list]:
    """Every job's timeline as floodway builds it: the stored events and the ones the job row
    holds (a claim and a plain completion store none; see ``store.base.timeline_from_rows``)."""
    ids = [job.id for job in store.list_jobs(limit=max(1, sum(store.count_jobs().values())))]
    return {job_id: store.events(job_id) for job_id in ids}


def claim_times(store) -> dict[str, list[float]]:
    """When each job was claimed (moved to ``running``), every run, in order."""
    return {
        job_id: [e.at for e in events if e.to_status.value == "running"] for job_id, events in timelines(store).items()
    }


def db_rows(tmp_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a query on the test's SQLite file, read with a connection of its own."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "jobs.db", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def read_gauge(tmp_path: Path, name: str) -> tuple[int, int]:
    """(current, highest) of a gauge written by the app's ``gauge_enter``/``gauge_exit``."""
    path = tmp_path / name
    with open(path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            raw = f.read().decode().split()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return (int(raw[0]), int(raw[1])) if raw else (0, 0)


def read_lines(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / name
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


class WorkerProc:
    """One ``floodway worker`` process, its output going to files in ``tmp_path``."""

    def __init__(self, popen: subprocess.Popen, log_path: Path, label: str):
        self.popen = popen
        self.log_path = log_path
        self.label = label

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def freeze(self, database_url: str, tries: int = 500) -> None:
        """SIGSTOP the worker at a moment it holds no SQLite write transaction.

        A process frozen inside one keeps the database file's write lock, and every other
        process waits on it for as long as the freeze lasts: SQLite's locks are the OS's, and
        nothing ends them but the holder. A test that means to freeze a worker holding a *job*
        (past its lease) freezes it, checks the lock is free, and if not lets the worker finish
        its write and tries again. On PostgreSQL the server ends a frozen transaction itself
        (``idle_in_transaction_session_timeout``), so the worker is frozen wherever it is."""
        if not database_url.startswith("sqlite:///"):
            self.signal(signal.SIGSTOP)
            return
        path = database_url[len("sqlite:///") :].split("?", 1)[0]
        for _ in range(tries):
            self.signal(signal.SIGSTOP)
            conn = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                self.signal(signal.SIGCONT)
                time.sleep(0.01)
            finally:
                conn.close()
        pytest.fail(f"{self.label} (pid {self.pid}) held the SQLite write lock at each of {tries} freezes")

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit; fail the test (with its log) if it does not."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.label} (pid {self.pid}) did not exit within {timeout}s\n{self.log_tail()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"--- {self.label} (pid {self.pid}, exit {self.popen.poll()}) log tail ---\n{tail}"


class Workers:
    """Starts worker processes for one test and kills whatever is left on ``close()``."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[WorkerProc] = []

    def start(self, module: str, *options: str, app_attr: str = "app", label: str | None = None) -> WorkerProc:
        label = label or f"worker-{len(self.procs) + 1}"
        log_path = self.tmp_path / f"{label}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.tmp_path), SRC, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("FLOODWAY_DATABASE_URL", None)
        env.pop("FLOODWAY_APP", None)
        cmd = [sys.executable, "-m", "floodway", "--app", f"{module}:{app_attr}", "worker", *options]
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(
                cmd,
                cwd=self.tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        proc = WorkerProc(popen, log_path, label)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def wait_until(
    condition: Callable[[], Any],
    message: str | Callable[[], str],
    *,
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    workers: Workers | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy (which is returned).

    Fails the test with ``message`` (and the workers' log tails) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            if workers is not None:
                text += "\n" + workers.logs()
            pytest.fail(f"timed out after {timeout}s waiting: {text}")
        time.sleep(interval)
