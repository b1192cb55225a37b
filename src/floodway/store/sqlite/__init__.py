"""The embedded SQLite store (stdlib ``sqlite3``, WAL).

Several worker processes may share one database file: every write is one short
``BEGIN IMMEDIATE`` transaction (so two writers queue on the busy timeout instead of
deadlocking on a lock upgrade), reads run outside transactions, and each thread has its own
connection. Completions and claims are written in batches, one transaction per batch.

The store is one class made of role mixins, each in a module of its own: ``connection``
(URL, connections, transactions, schema), ``claim``, ``queue`` (enqueue, finish, heartbeat,
rescue), ``limits``, ``state`` (cursors, ledger, segments, steps) and ``admin`` (what people
read and do); ``queries`` holds the queries more than one of them runs.
"""

from __future__ import annotations

from .admin import SQLiteAdmin
from .claim import SQLiteClaim
from .connection import MAX_BUSY_TIMEOUT, load_migrations
from .limits import SQLiteLimits
from .queries import TENANT_QUERIES
from .queue import SQLiteQueue
from .state import SQLiteState


class SQLiteStore(SQLiteClaim, SQLiteQueue, SQLiteLimits, SQLiteState, SQLiteAdmin):
    """A store in one SQLite file, shared safely by several processes on one machine.

    URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
    ``?synchronous=normal`` (faster commits; a power cut may lose the last ones — the default
    ``full`` makes every returned enqueue durable) and ``?busy_timeout=30`` (seconds).
    """


__all__ = ["MAX_BUSY_TIMEOUT", "SQLiteStore", "TENANT_QUERIES", "load_migrations"]
