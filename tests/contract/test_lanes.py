"""Reserved lanes against every backend: a contended key splits by share, an idle lane lends
its share and takes it back, bad lanes are refused before anything is written, and lanes show
in the limits view."""

from __future__ import annotations

import collections

import pytest

from floodway.errors import ConfigError, EnqueueError
from floodway.limits import split_lane

SHARES = {"interactive": 0.2, "backfill": 0.8}


def _lane_rate_holds(claimed: list, lane: str, share_rate: float, fraction: float) -> None:
    """A backlogged lane is served at its share of the key's rate (``share_rate``): never above
    it (plus a burst), and at least that rate or its ``fraction`` of all the admissions,
    whichever is less, measured over the claims' own timestamps. When claims cannot keep up
    with the key's whole rate (a slow backend, a busy machine) the lane still gets its share
    and the other lanes get what is left, so the split of the admissions depends on the
    machine; the bounds do not."""
    times = sorted(job.started_at for job in claimed)
    elapsed = times[-1] - times[0]
    mine = sum(1 for job in claimed if split_lane(job.limits[0][1])[1] == lane)
    assert mine <= share_rate * elapsed + 3, (mine, elapsed)
    assert mine >= 0.8 * min(share_rate * elapsed, fraction * len(claimed)) - 3, (mine, len(claimed), elapsed)


def _declare(app, rate="200/s", **extra):
    app.limit("hub", rate=rate, lanes=SHARES, **extra)

    @app.task(limits=["hub"], lane="backfill")
    def sync(i: int) -> None:
        pass

    return sync


def _claim_until(app, total: int, stop=None, claimed: list | None = None) -> collections.Counter:
    """Claim (never finishing: a rate limit needs no slot back) until ``total`` jobs were
    admitted; the lanes they came from, counted (and the jobs, in ``claimed``)."""
    counts: collections.Counter = collections.Counter()
    while sum(counts.values()) < total:
        for job in app.store.claim("w", queues=None, limit=50, lease=60):
            counts[split_lane(job.limits[0][1])[1]] += 1
            if claimed is not None:
                claimed.append(job)
            if stop is not None and stop(job):
                return counts
    return counts


def test_a_contended_key_splits_by_share(app):
    sync = _declare(app)
    app.enqueue_many(sync, [{"i": i} for i in range(500)])
    app.enqueue_many(sync, [{"i": i} for i in range(500)], lane="interactive")
    claimed: list = []
    counts = _claim_until(app, 400, claimed=claimed)
    _lane_rate_holds(claimed, "interactive", 40, 0.2)  # 0.2 of 200/s
    [info] = app.store.list_limits()
    [key] = info.keys  # the lanes' rows are not keys of their own
    assert key.key == ""
    lanes = {lane.lane: lane for lane in key.lanes}
    assert set(lanes) == {"interactive", "backfill"}
    assert lanes["interactive"].active and lanes["backfill"].active
    assert lanes["interactive"].effective_rate == pytest.approx(40)
    assert lanes["backfill"].effective_rate == pytest.approx(160)
    assert lanes["interactive"].running + lanes["backfill"].running == key.running == sum(counts.values())
    # never more than the key's rate in all: the key's own GCRA state counted every admission
    assert key.admitted == sum(counts.values())


def test_an_idle_lane_lends_its_share_and_takes_it_back(app):
    sync = _declare(app)
    app.enqueue_many(sync, [{"i": i} for i in range(1000)])
    counts = _claim_until(app, 150)
    assert counts == {"backfill": 150}  # alone, it is paced at the whole rate
    [key] = app.store.list_limits()[0].keys
    assert {lane.lane: lane.effective_rate for lane in key.lanes}["backfill"] == pytest.approx(200)
    # interactive demand arrives: admitted before the backfill took more than one interactive
    # interval's worth of the key (5 ms x 200/s = 1 job per 5 ms; 25 ms = 5 jobs, plus a batch)
    handle = sync.enqueue({"i": -1}, lane="interactive")
    counts = _claim_until(app, 200, stop=lambda job: job.id == handle.id)
    assert counts["interactive"] == 1
    assert counts["backfill"] <= 10


@pytest.mark.parametrize(
    "declare, enqueue, message",
    [
        ({"lanes": SHARES}, {"lane": "bulk"}, "limit 'hub' has no such lane"),
        ({"lanes": SHARES}, {}, "gives its whole rate to its lanes"),
        ({}, {"lane": "interactive"}, "none of the job's limits"),
        ({"lanes": SHARES}, {"lane": "a\nb"}, "control character"),
    ],
)
def test_bad_lanes_at_enqueue_write_nothing(app, declare, enqueue, message):
    app.limit("hub", rate="10/s", **declare)

    @app.task(limits=["hub"])
    def sync(i: int) -> None:
        pass

    with pytest.raises(EnqueueError, match=message):
        sync.enqueue({"i": 1}, **enqueue)
    with pytest.raises(EnqueueError, match=message):
        sync.enqueue_many([{"i": 1}, {"i": 2}], **enqueue)
    assert app.store.list_jobs() == []


def test_jobs_without_a_lane_use_the_rest(app):
    app.limit("hub", rate="200/s", lanes={"interactive": 0.2, "backfill": 0.5})

    @app.task(limits=["hub"])
    def sync(i: int) -> None:
        pass

    app.enqueue_many(sync, [{"i": i} for i in range(300)])
    app.enqueue_many(sync, [{"i": i} for i in range(300)], lane="backfill")
    claimed: list = []
    _claim_until(app, 300, claimed=claimed)
    # the rest (0.3) against backfill's 0.5: 3/8 of the key's 200/s
    _lane_rate_holds(claimed, "", 75, 0.375)


def test_a_task_lane_its_limits_do_not_declare_is_found_at_worker_start(app):
    app.limit("hub", rate="10/s", lanes=SHARES)

    @app.task(limits=["hub"], lane="bulk")
    def sync(i: int) -> None:
        pass

    with pytest.raises(ConfigError, match="task 'sync': lane 'bulk': limit 'hub' has no such lane"):
        app.check_limits()
    with pytest.raises(ConfigError, match="lane must be a non-empty string"):
        app.task(limits=["hub"], lane="", name="other")(lambda i: None)
