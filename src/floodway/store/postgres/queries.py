"""The PostgreSQL store's queries that more than one role runs, by name, and its advisory-lock namespaces."""

from __future__ import annotations

from ..base import (
    TIMELINE_SQL,
)

_TIMELINE = TIMELINE_SQL.format(mark="%s")


#: a tenant's jobs per (queue, status), counted in the index jobs_tenant
_TENANT_COUNTS = "SELECT queue, status, COUNT(*) FROM jobs WHERE tenant = %s GROUP BY queue, status"


#: what moved since an instant (``app.stats()``), per queue and per limit
_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE created_at >= %s GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE finished_at >= %s GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE status = 'waiting' AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE created_at >= %s AND limits IS NOT NULL "
                      "GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE finished_at >= %s AND limits IS NOT NULL "
                       "GROUP BY limits",
}


#: the same for one tenant, each read through one of the jobs_tenant* indexes
_TENANT_ACTIVITY = {
    "created": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = %s AND created_at >= %s GROUP BY queue",
    "finished": "SELECT queue, COUNT(*) FROM jobs WHERE tenant = %s AND finished_at >= %s GROUP BY queue",
    "limits_waiting": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND status = 'waiting' "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_created": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND created_at >= %s "
                      "AND limits IS NOT NULL GROUP BY limits",
    "limits_finished": "SELECT limits, COUNT(*) FROM jobs WHERE tenant = %s AND finished_at >= %s "
                       "AND limits IS NOT NULL GROUP BY limits",
}


#: every query a tenant's views run on the jobs table, by name (its plan must use an index)
TENANT_QUERIES = {"counts": _TENANT_COUNTS, **_TENANT_ACTIVITY}


_JOB_COLUMNS = (
    "id, task, args, queue, status, priority, attempt, max_attempts, retry, run_at, tenant, "
    "result, error, worker_id, lease_until, cancel_requested, created_at, updated_at, "
    "started_at, finished_at, limits, fair_key, throttled_seconds, state_key, paused"
)


_J = {name.strip(): i for i, name in enumerate(_JOB_COLUMNS.split(","))}


# advisory lock namespaces (the first int4 of the two-key form); the second is hashtext(name)
_NS_MIGRATE = 0x466C0001


_NS_QUEUE = 0x466C0002


_NS_FAIR = 0x466C0003


#: the fairness groups of a text[] parameter, each under a shared advisory lock held until
#: commit, taken in key order (see ``PostgresStore._mark_fair_keys``); params: _NS_FAIR, keys
_LOCKED_FAIR_KEYS = (
    "SELECT k, pg_advisory_xact_lock_shared(%s, hashtext(k)) FROM "
    "(SELECT k FROM unnest(%t::text[]) AS k ORDER BY k) s"
)
