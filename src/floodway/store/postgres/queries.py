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


# A finished job gives its concurrency slots back without locking its limit key's row: every
# claim of every worker locks that row, and a release that waited for it (and held it through
# its own commit) made finishing and claiming queue behind each other. So a key's running jobs
# are two counters that only grow: ``limit_keys.running`` counts the slots taken (under the
# row's lock, by claims), ``limit_releases`` the slots given back, in one row per connection (a
# striped counter: no two releases wait for each other). Running = taken - given back. A claim
# reads the row it locked as it is now, and the stripes as of its statement's start: a release
# committed since is not seen yet, so a cap can only admit fewer than it could, never more.

#: the stripes of connections that are gone, summed into stripe 0 in one transaction (so a
#: reader sees the same total before and after); rows locked by another fold are left to it
FOLD_GONE_STRIPES = (
    "WITH gone AS (DELETE FROM limit_releases r WHERE (r.limit_name, r.key, r.stripe) IN "
    "(SELECT limit_name, key, stripe FROM limit_releases WHERE stripe <> 0 AND stripe NOT IN "
    "(SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) FOR UPDATE SKIP LOCKED) "
    "RETURNING r.limit_name, r.key, r.n) "
    "INSERT INTO limit_releases (limit_name, key, stripe, n) "
    "SELECT limit_name, key, 0, sum(n) FROM gone GROUP BY limit_name, key ORDER BY limit_name, key "
    "ON CONFLICT (limit_name, key, stripe) DO UPDATE SET n = limit_releases.n + excluded.n"
)


def key_running(row: str) -> str:
    """The running jobs of the ``limit_keys`` row ``row`` (an alias or the table's name): the
    slots taken less those given back."""
    return (
        f"GREATEST({row}.running - COALESCE((SELECT sum(r.n)::bigint FROM limit_releases r "
        f"WHERE r.limit_name = {row}.limit_name AND r.key = {row}.key), 0), 0)"
    )


#: a key's running jobs in a statement on ``limit_keys`` unaliased
KEY_RUNNING = key_running("limit_keys")

#: the slots a transaction gives back, added to its connection's stripe (params: names, keys,
#: counts), and a wake-up for the workers of the queues ``queues`` (params: channel, queues)
#: only where a claim may have waited for these slots: a key that was at least half full
#: before, or a limit with lanes (whose lanes have caps of their own). A key far from its cap
#: held no claim back: waking every worker for each finished job made them all look again, and
#: serialised the commits of every finish (a NOTIFY takes a lock to commit). A claim that saw
#: the key full although this release did not (a claim of over half the cap, committed since
#: this statement began) is found by its worker's next poll.
RELEASE_SLOTS = (
    "WITH v AS (SELECT * FROM unnest(%(names)t::text[], %(keys)t::text[], %(counts)t::int8[]) AS v(n, k, c)), "
    "given AS (INSERT INTO limit_releases (limit_name, key, stripe, n) "
    "SELECT n, k, pg_backend_pid(), c FROM v ORDER BY n, k "
    "ON CONFLICT (limit_name, key, stripe) DO UPDATE SET n = limit_releases.n + excluded.n) "
    "SELECT pg_notify(%(channel)s, q) FROM unnest(%(queues)t::text[]) AS q WHERE EXISTS (SELECT 1 FROM v "
    "JOIN limit_keys lk ON lk.limit_name = v.n AND lk.key = v.k JOIN limits l ON l.name = v.n "
    "WHERE l.concurrency IS NOT NULL AND (l.bounds IS NOT NULL OR 2 * "
    # (the statement's query does not see its own release: this is the count before it)
    f"{key_running('lk')} >= l.concurrency))"
)

#: the key rows of the (names, keys) parameters, locked in key order: limit_name, key, tat,
#: paused_until, running jobs, admitted, learned. ``{skip}``: "" or " SKIP LOCKED"
LOCK_KEYS = (
    f"SELECT limit_name, key, tat, paused_until, {KEY_RUNNING}, admitted, learned FROM limit_keys "
    "WHERE (limit_name, key) IN (SELECT n, k FROM unnest(%t::text[], %t::text[]) AS p(n, k)) "
    "ORDER BY limit_name, key FOR UPDATE{skip}"
)
