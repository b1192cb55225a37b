"""A worker limited to some queues claims their jobs without reading another queue's backlog: the
work its claim does is the same beside 1,000 or 20,000 waiting jobs of another queue, whether
those wait in a fairness group of their own (another tenant's) or in the worker's jobs' group.

The work of the real claim is counted, never timed: on SQLite its virtual-machine steps, on
PostgreSQL the rows of ``jobs`` its transaction reads (``pg_stat_xact_user_tables``). Several
claims run at each size, so PostgreSQL's prepared statements (and their generic plans) count."""

from __future__ import annotations

import pytest

from .test_store_contract import new_job

BACKLOGS = (1_000, 20_000)
CLAIMS = 8
#: how much more work the larger backlog may cost (an index one level deeper, a few pages):
#: reading the backlog's jobs costs one step or row per job or more (20,000 rows, over 1,000
#: hundreds of steps)
SLACK, SLACK_STEPS = 1.5, 5
_READ = (
    "SELECT COALESCE(sum(seq_tup_read + COALESCE(idx_tup_fetch, 0)), 0) FROM pg_stat_xact_user_tables "
    "WHERE relname = 'jobs'"
)


def _backlog(store, n: int, tenant: str | None) -> None:
    for start in range(0, n, 5_000):
        store.enqueue([new_job(queue="bulk", tenant=tenant) for _ in range(min(5_000, n - start))])


def _claim_live(store) -> None:
    [job] = store.claim("w", queues=["live"], limit=1, lease=30.0)
    assert job.queue == "live"


def _sqlite_steps(store) -> int:
    """VM steps (in hundreds) of the most costly of ``CLAIMS`` claims of a ``live`` job."""
    steps = [0]

    def count() -> int:
        steps[-1] += 1
        return 0

    conn = store._conn()
    conn.set_progress_handler(count, 100)
    try:
        for _ in range(CLAIMS):
            steps.append(0)
            _claim_live(store)
    finally:
        conn.set_progress_handler(None, 0)
    return max(steps)


def _postgres_rows(store) -> int:
    """Rows of ``jobs`` read by the most costly of ``CLAIMS`` claims of a ``live`` job (the
    transaction's own counts: read at its start and at its end, it reports none in between)."""
    run, rows = store._run, [0]

    def counted(fn, **kw):
        def wrapped(cur):
            stats = cur.connection.cursor()
            stats.execute(_READ)
            before = int(stats.fetchone()[0])
            out = fn(cur)
            stats.execute(_READ)
            rows.append(int(stats.fetchone()[0]) - before)
            return out

        return run(wrapped, **kw)

    store._run = counted
    try:
        for _ in range(CLAIMS):
            _claim_live(store)
    finally:
        del store._run
    return max(rows)


@pytest.mark.parametrize("tenant", ["archive", None], ids=["own-group", "shared-group"])
def test_a_claim_for_some_queues_does_not_read_another_queues_backlog(store, database_url, tenant):
    work = []
    done = 0
    for n in BACKLOGS:
        _backlog(store, n - done, tenant)
        done = n
        store.enqueue([new_job(queue="live") for _ in range(CLAIMS)])
        work.append(_postgres_rows(store) if database_url.startswith("postgres") else _sqlite_steps(store))
    assert store.count_jobs(queue="bulk").get("waiting") == BACKLOGS[-1]
    small, large = work
    assert large <= small * SLACK + SLACK_STEPS, (BACKLOGS, work)
