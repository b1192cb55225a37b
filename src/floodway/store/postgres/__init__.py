"""The PostgreSQL store: many worker processes on many machines against one database.

psycopg 3 with a ``psycopg_pool.ConnectionPool``. The ``Store`` interface stays synchronous —
the worker calls it from a small thread pool — and every method is one short transaction:

- **claims** take ready rows with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers never wait
  for each other's jobs), round-robin over fairness groups, in batches;
- **limits** are admitted once per claim batch: the ``limit_keys`` rows the batch's
  candidates hold are locked with ``SELECT ... FOR UPDATE`` in key order (no deadlocks), the
  GCRA / concurrency / pause decisions are made for the whole batch, written back, and the
  rows are released at commit — a hot limit costs one row lock per *batch*, not per job; a
  completion gives its slots back without that lock (``queries.RELEASE_SLOTS``);
- **queue caps** hold across processes: a claim takes a per-queue advisory transaction lock
  before it counts the running jobs of a capped queue;
- **enqueue** is one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (over arrays,
  so 10,000 jobs are one statement), and sends ``NOTIFY floodway_jobs`` so idle workers wake
  at once (``wait_for_jobs``); polling stays only as a safety net;
- **completions** are written in batches, one statement per batch;
- **time** (leases, run_at, GCRA) is the database server's clock, so workers on machines
  whose clocks disagree still share one limit exactly.

A connection that breaks (the server restarted, a failover) is replaced and the transaction
retried with backoff when it cannot have committed; a transaction whose COMMIT was lost in
flight raises ``StoreError`` (the caller retries; every write is idempotent or guarded).

URL: ``postgresql://user:pass@host:5432/dbname?pool_max=10`` with floodway's options
``pool_min`` (1), ``pool_max`` (10), ``pool_timeout`` (30 s: how long a caller waits for a free
connection before a clear ``StoreError``), ``reconnect_timeout`` (60 s: how long a call keeps
retrying while the server is unreachable) and ``prepare_threshold`` (5; ``0`` for PgBouncer in
transaction mode). Every other query parameter goes to libpq (``sslmode``, ``connect_timeout``…).

The store is one class made of role mixins, each in a module of its own: ``connection``
(URL, adapters, pool, transactions, schema), ``enqueue``, ``claim``, ``queue`` (finish,
heartbeat, rescue), ``limits``, ``state`` (cursors, ledger, segments, steps), ``admin`` (what
people read and do) and ``notify`` (LISTEN/NOTIFY); ``queries`` holds the queries more than one
of them runs.
"""

from __future__ import annotations

from .admin import PostgresAdmin
from .claim import PostgresClaim
from .connection import CHANNEL
from .enqueue import PostgresEnqueue
from .limits import PostgresLimits
from .notify import PostgresNotify
from .queries import TENANT_QUERIES
from .queue import PostgresQueue
from .state import PostgresState


class PostgresStore(
    PostgresEnqueue, PostgresClaim, PostgresQueue, PostgresLimits, PostgresState, PostgresAdmin, PostgresNotify
):
    """A store in one PostgreSQL database, shared by any number of worker processes."""


__all__ = ["CHANNEL", "PostgresStore", "TENANT_QUERIES"]
