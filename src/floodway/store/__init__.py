"""Stores: where jobs live. ``open_store(url)`` picks the backend from the URL's scheme."""

from __future__ import annotations

from ..errors import ConfigError
from .base import (
    ClaimedJobs,
    EnqueueResult,
    LimitInfo,
    LimitKeyInfo,
    Outcome,
    QueueInfo,
    ScheduleInfo,
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
    raise ConfigError(
        f"unsupported database URL {url!r}: expected sqlite:///path.db or postgresql://user@host/dbname"
    )


__all__ = ["Store", "ClaimedJobs", "LimitInfo", "LimitKeyInfo", "Outcome", "StateSnapshot", "StepRecord", "ScheduleInfo", "TokenInfo", "QueueInfo", "WorkerInfo", "EnqueueResult", "open_store", "DEFAULT_URL"]
