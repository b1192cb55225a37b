"""Shared fixtures. ``store`` runs the contract suite against every backend."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest

from floodway import App
from floodway.store import Store, open_store

from . import pg_helpers

#: Every backend the contract suites run on. PostgreSQL needs FLOODWAY_TEST_POSTGRES_URL
#: (``make test`` provides it); without it the postgres tests fail, they are never skipped.
#: FLOODWAY_TEST_BACKENDS=sqlite narrows the run on purpose (a quick local loop).
BACKENDS = [b.strip() for b in os.environ.get("FLOODWAY_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist starts its workers with COLUMNS=80 and LINES=24 as if they had a terminal;
    # the CLI under test sizes its tables from COLUMNS, so a parallel run would print other
    # tables than a serial one. Both run the CLI as it runs without a terminal.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'floodway.db'}"
    elif request.param == "postgres":
        with pg_helpers.migrated_database() as url:
            yield url
    else:
        raise AssertionError(f"unknown backend {request.param!r}")


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get(pg_helpers.ENV_URL):
        pg_helpers.drop_idle()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (for PostgreSQL-only tests)."""
    with pg_helpers.throwaway_database() as url:
        yield url


@pytest.fixture
def store(database_url) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.close()


@pytest.fixture
def app(database_url) -> Iterator[App]:
    a = App(database_url)
    yield a
    a.close()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, message: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail clearly after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextmanager
def running_worker(app: App, *, immediately: bool = False, **options) -> Iterator:
    """An in-process worker on a thread for the duration of the block; stopped (``immediately``
    or after its running jobs finish) and checked to have ended."""
    options.setdefault("concurrency", 10)
    options.setdefault("poll_interval", "20ms")
    worker = app.worker(**options)
    thread = threading.Thread(target=worker.run, daemon=True, name="worker")
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(immediately=immediately)
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


@pytest.fixture
def workers(tmp_path):
    """Worker processes a test starts (``proc_helpers.Workers``); all SIGKILLed at teardown."""
    from .proc_helpers import Workers

    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()
