"""Shared fixtures. ``store`` runs the contract suite against every backend."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

from floodway import App
from floodway.store import Store, open_store

BACKENDS = ["sqlite"]


def backend_url(backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'floodway.db'}"
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> str:
    return backend_url(request.param, tmp_path)


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
