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
