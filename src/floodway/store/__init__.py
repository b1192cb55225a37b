"""Stores: where jobs live. ``open_store(url)`` picks the backend from the URL's scheme."""

from __future__ import annotations

from ..errors import ConfigError
from .base import ClaimedJobs, EnqueueResult, LimitInfo, LimitKeyInfo, Outcome, QueueInfo, StateSnapshot, Store, WorkerInfo

DEFAULT_URL = "sqlite:///floodway.db"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store a database URL names (``sqlite:///path.db``)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"database URL must be a non-empty string, got {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, migrate=migrate)
    if scheme in ("postgres", "postgresql"):
        raise ConfigError(
            "the PostgreSQL store is not available in this version of floodway; "
            "use sqlite:///path.db"
        )
    raise ConfigError(
        f"unsupported database URL {url!r}: expected sqlite:///path.db"
    )


__all__ = ["Store", "ClaimedJobs", "LimitInfo", "LimitKeyInfo", "Outcome", "StateSnapshot", "QueueInfo", "WorkerInfo", "EnqueueResult", "open_store", "DEFAULT_URL"]
