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


def _stale_dropped() -> None:
    global _cleaned
    if not _cleaned:
        with _admin() as conn:
            _drop_stale(conn)
        _cleaned = True


def drop_idle() -> None:
    """Drop the databases this process kept for recycling (at the end of the run)."""
    while _idle:
        _admin_execute(f'DROP DATABASE IF EXISTS "{_idle.pop()}" WITH (FORCE)')


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh, empty database for one test; dropped (connections and all) afterwards."""
    name = f"{PREFIX}{os.getpid()}_{next(_counter)}"
    _stale_dropped()
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(base_url(), name)
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Creating a database costs about 0.3 s here (the copy of its template is written and synced),
# most of a short contract test. So a test's database is recycled: when the next test asks, a
# database an earlier test of this process used is emptied (its connections ended, every table
# truncated, the rows the migrations seed put back) and handed on, already migrated. A database
# whose schema a test changed (a table, an index, a schema version of its own) fails the
# fingerprint and is dropped instead, so each test still starts from exactly what a fresh,
# migrated database holds.
_FINGERPRINT = """
SELECT md5(coalesce((SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname)
                     FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace), '')
        || coalesce((SELECT string_agg(p.proname, ',' ORDER BY p.proname)
                     FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace), '')
        || coalesce((SELECT string_agg(t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger t
                     JOIN pg_class c ON c.oid = t.tgrelid
                     WHERE c.relnamespace = 'public'::regnamespace), '')
        || coalesce((SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace), '')
        || coalesce((SELECT string_agg(version::text, ',' ORDER BY version) FROM floodway_schema), ''))
"""
#: The table that records the schema's version: part of the fingerprint, never truncated.
_VERSION_TABLE = "floodway_schema"
_idle: list[str] = []
_fresh_state: dict | None = None  # the fingerprint and the seeded rows of a freshly migrated database


def _capture(conn) -> dict:
    seeded: dict[str, tuple[list[str], list[tuple]]] = {}
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
        )
        if name != _VERSION_TABLE
    ]
    for table in tables:
        cur = conn.execute(f'SELECT * FROM "{table}"')
        rows = cur.fetchall()
        if rows:
            seeded[table] = ([d.name for d in cur.description], rows)
    fingerprint = conn.execute(_FINGERPRINT).fetchone()[0]
    return {"fingerprint": fingerprint, "tables": tables, "seeded": seeded}


def _empty(url: str, name: str) -> bool:
    """Empty a used database back to its freshly migrated state; False when it cannot be."""
    import psycopg

    assert _fresh_state is not None
    with _admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    with psycopg.connect(url, connect_timeout=5) as conn:
        if conn.execute(_FINGERPRINT).fetchone()[0] != _fresh_state["fingerprint"]:
            return False
        tables = ", ".join(f'"{t}"' for t in _fresh_state["tables"])
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        for table, (columns, rows) in _fresh_state["seeded"].items():
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(["%s"] * len(columns))
            conn.cursor().executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
    return True


@contextmanager
def migrated_database() -> Iterator[str]:
    """A database at the current schema holding only what its migrations seed (the contract
    tests' database): recycled from an earlier test of this process when one is idle."""
    global _fresh_state
    from floodway.store import open_store

    url = None
    while _idle:
        name = _idle.pop()
        candidate = with_database(base_url(), name)
        try:
            if _empty(candidate, name):
                url = candidate
                break
        except Exception:  # a database a test left unusable is dropped, never reused
            pass
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if url is None:
        name = f"{PREFIX}{os.getpid()}_{next(_counter)}"
        _stale_dropped()
        _admin_execute(f'CREATE DATABASE "{name}"')
        url = with_database(base_url(), name)
        open_store(url).close()
        if _fresh_state is None:
            import psycopg

            with psycopg.connect(url) as conn:
                _fresh_state = _capture(conn)
    _idle.append(name)  # handed on (emptied first) to the next test that asks
    yield url


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
