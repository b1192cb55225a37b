"""PostgreSQL for the tests: throwaway databases on the server named by
``FLOODWAY_TEST_POSTGRES_URL`` (``make test`` starts one with ``scripts/start-postgres.sh``).

Without that variable every PostgreSQL test *fails* with a message saying how to get one: a
missing database is never a reason to skip. ``FLOODWAY_TEST_BACKENDS=sqlite`` is the explicit
way to run only the SQLite half (e.g. for a quick local loop); CI never sets it.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV_URL = "FLOODWAY_TEST_POSTGRES_URL"
ENV_RESTART = "FLOODWAY_TEST_POSTGRES_RESTART"
PREFIX = "fw_t_"
_counter = itertools.count()


def base_url() -> str:
    url = os.environ.get(ENV_URL)
    if not url:
        pytest.fail(
            f"{ENV_URL} is not set: PostgreSQL tests need a server. Run `make test`, or "
            f'`eval "$(scripts/start-postgres.sh)"` before pytest '
            f"(FLOODWAY_TEST_BACKENDS=sqlite runs only the SQLite half, on purpose).",
            pytrace=False,
        )
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(timeout: float = 60.0):
    """A connection to the server's maintenance database; waits out a restart (another test
    run on the same server may be restarting it)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(base_url(), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _admin_execute(sql: str, timeout: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with _admin(timeout) as conn:
                conn.execute(sql)
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _drop_stale(conn) -> None:
    """Databases left by test processes that died (their pid is in the name)."""
    for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall():
        try:
            pid = int(name[len(PREFIX) :].split("_")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_cleaned = False


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh, empty database for one test; dropped (connections and all) afterwards."""
    global _cleaned
    name = f"{PREFIX}{os.getpid()}_{next(_counter)}"
    if not _cleaned:
        with _admin() as conn:
            _drop_stale(conn)
        _cleaned = True
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(base_url(), name)
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restart_server(timeout: float = 120.0) -> None:
    """Restart the PostgreSQL server (fast shutdown: every connection is cut)."""
    command = os.environ.get(ENV_RESTART)
    if not command:
        pytest.fail(
            f"{ENV_RESTART} is not set: run the tests through `make test` (scripts/start-postgres.sh)", pytrace=False
        )
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"restarting PostgreSQL failed ({done.returncode}): {done.stdout}{done.stderr}")


def wait_for_server(url: str, timeout: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
