"""The PostgreSQL store's queries that more than one role runs, by name, and its advisory-lock namespaces."""

from __future__ import annotations

from ..sql import JOB_COLUMNS, in_dialect
from ..sql import TENANT_QUERIES as SHARED_TENANT_QUERIES

#: every query a tenant's views run on the jobs table, by name, in this dialect (see ``store.sql``)
TENANT_QUERIES = {name: in_dialect(sql, "%s") for name, sql in SHARED_TENANT_QUERIES.items()}

_JOB_COLUMNS = JOB_COLUMNS


_J = {name.strip(): i for i, name in enumerate(_JOB_COLUMNS.split(","))}


# advisory lock namespaces (the first int4 of the two-key form); the second is hashtext(name)
_NS_MIGRATE = 0x466C0001


_NS_QUEUE = 0x466C0002


_NS_FAIR = 0x466C0003


#: the fairness groups of a text[] parameter, each under a shared advisory lock held until
#: commit, taken in key order (see ``PostgresStore._mark_fair_keys``); params: _NS_FAIR, keys
_LOCKED_FAIR_KEYS = (
    "SELECT k, pg_advisory_xact_lock_shared(%s, hashtext(k)) FROM (SELECT k FROM unnest(%t::text[]) AS k ORDER BY k) s"
)


def _ready_heads(where: str, limit: str, columns: str = "*", *, by_queue: bool = False, skip: str = "") -> str:
    """The first ``limit`` rows of ``jobs j`` matching ``where``, in claim order (priority, then
    age), row-locked with SKIP LOCKED.

    ``by_queue``: one index range per queue of the ``%(queues)t`` parameter (jobs_ready_queue
    starts with the fairness group and the queue), merged, so another queue's jobs are never
    read however many of them wait; queues named in ``skip`` (a text[] parameter, e.g. the full
    ones) are not read at all. The queues must be distinct. Up to ``limit`` rows of each queue
    are locked, some of them not returned: they stay locked only until the claim commits."""
    order = "ORDER BY j.priority DESC, j.run_at, j.seq"
    if not by_queue:
        return f"SELECT {columns} FROM jobs j WHERE {where} {order} LIMIT {limit} FOR UPDATE OF j SKIP LOCKED"
    names = f" WHERE NOT (q.name = ANY({skip}))" if skip else ""
    return (
        f"SELECT j.* FROM (SELECT name FROM unnest(%(queues)t::text[]) AS q(name){names}) q CROSS JOIN LATERAL "
        f"(SELECT {columns} FROM jobs j WHERE {where} AND j.queue = q.name {order} LIMIT {limit} "
        f"FOR UPDATE OF j SKIP LOCKED) j {order} LIMIT {limit}"
    )
