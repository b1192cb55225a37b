"""Stores: where jobs live. ``open_store(url)`` picks the backend from the URL's scheme.

The layers, from the bottom: ``base`` (the records and the four role ports ``QueuePort``,
``LimitsPort``, ``StatePort`` and ``AdminPort`` that make up ``Store``), ``rules`` (the
decisions every backend applies: admission, status guards from the transition table, cancel,
retry, rescue, purge; pure functions), ``sql`` (``SQLStore``: the queries and methods both SQL
backends share, in either dialect), then the backends ``sqlite`` and ``postgres``, each a
package of role mixins that keeps only what truly differs (connections, claim, bulk enqueue,
completion, rescue, notifications).
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import (
    AdminPort,
    ClaimedJobs,
    EnqueueResult,
    LimitInfo,
    LimitKeyInfo,
    LimitsPort,
    Outcome,
    QueueInfo,
    QueuePort,
    ScheduleInfo,
    StatePort,
    StateSnapshot,
    StepRecord,
    Store,
    TokenInfo,
    WorkerInfo,
)

DEFAULT_URL = "sqlite:///floodway.db"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store a database URL names (``sqlite:///path.db`` or
    ``postgresql://user@host:5432/dbname``)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"database URL must be a non-empty string, got {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, migrate=migrate)
    if scheme in ("postgres", "postgresql"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise ConfigError(f"the PostgreSQL store needs psycopg 3 and psycopg-pool: {exc}") from exc

        return PostgresStore(url, migrate=migrate)
    raise ConfigError(f"unsupported database URL {url!r}: expected sqlite:///path.db or postgresql://user@host/dbname")


__all__ = [
    "Store",
    "QueuePort",
    "LimitsPort",
    "StatePort",
    "AdminPort",
    "ClaimedJobs",
    "LimitInfo",
    "LimitKeyInfo",
    "Outcome",
    "StateSnapshot",
    "StepRecord",
    "ScheduleInfo",
    "TokenInfo",
    "QueueInfo",
    "WorkerInfo",
    "EnqueueResult",
    "open_store",
    "DEFAULT_URL",
]
