"""What a drain forecast reads, written once for both SQL backends: per queue and per job's
(limit, key) list, the backlog by status and the jobs created and finished in a window, in
small time buckets (the spread of the observed rates gives the forecast its range).

Grouped by ``(queue, limits)``: a few distinct lists however many jobs, so the cost is that of
``activity``; the per-key sums are made in Python from each group's list.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sql import SQLStore

#: the statuses a drain still has to get through (running jobs finish too)
BACKLOG_STATUSES = ("scheduled", "waiting", "retrying", "running")
#: how many buckets a window is read in
BUCKETS = 120

_BACKLOG = (
    "SELECT queue, limits, status, COUNT(*) FROM jobs "
    "WHERE status IN ('scheduled', 'waiting', 'retrying', 'running'){scope} GROUP BY queue, limits, status"
)
# a bucket's index is rounded from the middle of its width: both backends' ROUND agree there
_MOVED = "SELECT queue, limits, ROUND(({column} - ?) / ? - 0.5), COUNT(*) FROM jobs WHERE {scope}{column} >= ? GROUP BY 1, 2, 3"
#: every query of a drain forecast, whole-store and one tenant's (each read through a jobs_tenant*
#: index: the tenant comes first in each WHERE); parameters: (since, width, [tenant,] since)
DRAIN_QUERIES = {
    "drain_backlog": _BACKLOG.format(scope=""),
    "drain_created": _MOVED.format(column="created_at", scope=""),
    "drain_finished": _MOVED.format(column="finished_at", scope=""),
}
TENANT_DRAIN_QUERIES = {
    "drain_backlog": _BACKLOG.format(scope=" AND tenant = ?"),
    "drain_created": _MOVED.format(column="created_at", scope="tenant = ? AND "),
    "drain_finished": _MOVED.format(column="finished_at", scope="tenant = ? AND "),
}


def _empty() -> dict[str, Any]:
    return {"backlog": {}, "created": [0] * BUCKETS, "finished": [0] * BUCKETS, "holds": []}


def drain_counts(store: "SQLStore", since: float, width: float, tenant: str | None) -> dict[str, Any]:
    """``{"queues": {queue: entry}, "keys": {(limit, key): entry}}``, each entry holding
    ``backlog`` (jobs per status), ``holds`` (a queue's: the distinct (limit, key) lists of
    its backlog, None for jobs that hold none), ``created`` and ``finished`` (jobs per bucket of ``width``
    seconds from ``since``, ``BUCKETS`` of them)."""
    queries = TENANT_DRAIN_QUERIES if tenant is not None else DRAIN_QUERIES
    tail: tuple[Any, ...] = (tenant,) if tenant is not None else ()
    queues: dict[str, dict[str, Any]] = {}
    keys: dict[tuple[str, str], dict[str, Any]] = {}

    def entries(queue: str, held: str | None) -> list[dict[str, Any]]:
        out = [queues.setdefault(queue, _empty())]
        pairs = {(pair[0], pair[1]) for pair in json.loads(held)} if held else set()
        out.extend(keys.setdefault(pair, _empty()) for pair in sorted(pairs))
        return out

    for queue, held, status, count in store._read(store._q(queries["drain_backlog"]), tail):
        # the (limit, key) lists a queue's backlog holds (None: no limit), for its rate cap
        lists = queues.setdefault(queue, _empty())["holds"]
        pairs = sorted({(pair[0], pair[1]) for pair in json.loads(held)}) if held else None
        if pairs not in lists:
            lists.append(pairs)
        for entry in entries(queue, held):
            entry["backlog"][status] = entry["backlog"].get(status, 0) + int(count)
    for field in ("created", "finished"):
        sql = store._q(queries[f"drain_{field}"])
        for queue, held, bucket, count in store._read(sql, (float(since), float(width), *tail, float(since))):
            index = min(max(int(bucket), 0), BUCKETS - 1)
            for entry in entries(queue, held):
                entry[field][index] += int(count)
    return {"queues": queues, "keys": keys}
