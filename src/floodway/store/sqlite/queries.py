"""The SQLite store's queries that more than one role reads, by name."""

from __future__ import annotations

from ..base import (
    TIMELINE_SQL,
)

_TIMELINE = TIMELINE_SQL.format(mark="?")


_JOB_COLUMNS = (
    "id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, tenant, "
    "result, error, worker_id, lease_until, cancel_requested, created_at, updated_at, "
    "started_at, finished_at, limits, fair_key, throttled_seconds, state_key, paused"
)


_SPEC_SQL = "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits"


#: a tenant's jobs per (queue, status), counted in the index jobs_tenant
_TENANT_COUNTS = "SELECT queue, status, COUNT(*) FROM jobs WHERE tenant = ? GROUP BY queue, status"


#: what moved since an instant (``app.stats()``), per queue and per limit
_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE status = 'waiting' AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE created_at >= ? AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE finished_at >= ? AND limits IS NOT NULL "
                       "GROUP BY limits",
}


#: the same for one tenant, each read through one of the jobs_tenant* indexes
_TENANT_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = ? AND created_at >= ? GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = ? AND finished_at >= ? GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND status = 'waiting' "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND created_at >= ? "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = ? AND finished_at >= ? "
                       "AND limits IS NOT NULL GROUP BY limits",
}


#: every query a tenant's views run on the jobs table, by name (its plan must use an index)
TENANT_QUERIES = {"counts": _TENANT_COUNTS, **_TENANT_ACTIVITY}
