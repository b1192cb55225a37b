"""Limits end to end: real HTTP over loopback against a destination that really enforces a
rate limit (``tests/destination.py``), and real ``floodway worker`` processes sharing one
SQLite store.

Each test writes a small app module into ``tmp_path`` (see ``tests/proc_helpers.py``) whose
tasks POST to the destination with ``ctx.http(limit=...)``. What the destination accepted
(times, Idempotency-Keys = job ids, tenants) and what the store says (statuses, attempts,
events, ``list_limits()``) are checked after the fact. Waits poll with bounded deadlines;
nothing asserts on the wall time of the test itself (time windows are computed from the
destination's own accept timestamps or the store's event times). Every worker process is
SIGKILLed in teardown.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from destination import Destination, count_between, max_in_window  # noqa: E402
from proc_helpers import (  # noqa: E402
    TIMEOUT,
    LoadedApps,
    Workers,
    claim_times,
    db_rows,
    read_gauge,
    read_lines,
    timelines,
    wait_until,
)

from floodway import App, ConfigError, EnqueueError  # noqa: E402
from floodway.worker import BOOK_AHEAD  # noqa: E402

pytestmark = pytest.mark.timeout(180)

WORKER_OPTS = ["--poll-interval", "50ms", "--lease", "5s", "--grace", "1s"]

#: prepended to every app body: the destination's URL and the one call every task makes
COMMON = '''
DEST = "@DEST@"


async def post_order(ctx, limit, n, path="/orders"):
    """One POST through ctx.http; the job id is the Idempotency-Key."""
    headers = {"Idempotency-Key": ctx.job_id}
    if ctx.tenant:
        headers["X-Tenant"] = ctx.tenant
    async with ctx.http(base_url=DEST, limit=limit, timeout=30) as client:
        response = await client.post(path, json={"id": n}, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"destination answered {response.status_code}: {response.text}")
    return n
'''


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def destination():
    """``destination(**options)`` starts a loopback Destination (``cls=`` a subclass of it); all
    are stopped at teardown."""
    started: list[Destination] = []

    def start(cls: type[Destination] = Destination, **options) -> Destination:
        dest = cls(**options).start()
        started.append(dest)
        return dest

    try:
        yield start
    finally:
        for dest in started:
            dest.stop()


@pytest.fixture
def make_app(tmp_path: Path):
    """``make_app(body, dest)``: write COMMON + body as an app module bound to ``dest`` and
    import it here; returns (module name, module)."""
    apps = LoadedApps(tmp_path)

    def make(body: str, dest: Destination | None = None):
        return apps.load(COMMON.replace("@DEST@", dest.url if dest else "http://127.0.0.1:9") + body)

    try:
        yield make
    finally:
        apps.close()


# -- helpers -----------------------------------------------------------------------------------


def wait_finished(app, n: int, workers: Workers, timeout: float = TIMEOUT) -> dict[str, int]:
    """Poll the store until ``n`` jobs are final (complete, failed or cancelled)."""

    def finished():
        counts = app.store.count_jobs()
        return counts if counts["complete"] + counts["failed"] + counts["cancelled"] >= n else None

    return wait_until(
        finished,
        lambda: f"{n} jobs to finish; counts now {app.store.count_jobs()}",
        timeout=timeout,
        interval=0.1,
        workers=workers,
    )


def assert_all_complete_first_attempt(tmp_path: Path, app, n: int, workers: Workers) -> None:
    counts = app.store.count_jobs()
    failed = db_rows(tmp_path, "SELECT id, status, error FROM jobs WHERE status != 'complete' LIMIT 3")
    assert counts["complete"] == n, f"not all complete: {counts}; e.g. {failed}\n{workers.logs()}"
    attempts = db_rows(tmp_path, "SELECT attempt, COUNT(*) FROM jobs GROUP BY attempt")
    assert attempts == [(1, n)], f"an attempt was spent: (attempt, jobs) = {attempts}"


def assert_each_job_accepted_once(tmp_path: Path, dest: Destination) -> None:
    """Exactly one accepted request per job (the Idempotency-Key is the job id): none lost,
    none duplicated. The destination here does not deduplicate, so duplicates would show."""
    ids = {row[0] for row in db_rows(tmp_path, "SELECT id FROM jobs")}
    seen = Counter(r.idempotency_key for r in dest.accepted())
    duplicated = {k: c for k, c in seen.items() if c > 1}
    assert not duplicated, (
        f"{len(duplicated)} job(s) reached the destination more than once: {list(duplicated.items())[:5]}"
    )
    assert set(seen) == ids, f"lost: {len(ids - set(seen))}, unknown: {len(set(seen) - ids)}"


def limit_info(app, name: str):
    return {info.spec.name: info for info in app.store.list_limits()}[name]


def key_info(app, name: str, key: str):
    return {k.key: k for k in limit_info(app, name).keys}.get(key)


def paused(app, name: str, key: str) -> float | None:
    """When the key's pause ends, or None when it is not paused."""
    info = key_info(app, name, key)
    return info.paused_until if info is not None else None


# -- a. two processes share one declared limit ---------------------------------------------------

SHARED_APP = """
app.limit("dest", rate="20/s", burst=2)


@app.task(retry=0, limits=["dest"])
async def held(ctx: floodway.Context, n: int):
    return await post_order(ctx, "dest", n)


@app.task(retry=0)
async def acquired(ctx: floodway.Context, n: int):
    # no limit held at claim: ctx.http takes each token itself (waiting or rescheduling)
    return await post_order(ctx, "dest", n)
"""


@pytest.mark.parametrize("task", ["held", "acquired"])
def test_two_processes_share_one_declared_limit(tmp_path, workers, destination, make_app, task):
    # The destination enforces 20/s with a burst of 8: the declared limit's burst of 2 plus 6
    # requests of slack for the scheduling jitter between a worker taking a token and its
    # request arriving (the first requests of a fresh process are the slowest), so that a 429
    # here can only mean the two processes did not share the limit.
    dest = destination(rate=20, burst=8)
    name, mod = make_app(SHARED_APP, dest)
    n = 150
    mod.app.enqueue_many(task, [{"n": i} for i in range(n)])
    procs = [workers.start(name, "--concurrency", "10", *WORKER_OPTS, label=f"w{i}") for i in range(2)]

    wait_finished(mod.app, n, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    assert dest.rejected_count == 0, f"{dest.rejected_count} requests were refused with 429"

    if task == "held":
        # the limit is taken at claim: the claims of both processes, as the store recorded
        # them, are exactly within GCRA's bound (rate + burst in any second)
        claims = [at for runs in claim_times(mod.app.store).values() for at in runs]
        assert len(claims) == n
        assert max_in_window(claims) <= 20 + 2, f"{max_in_window(claims)} claims in one second"
        assert max_in_window(claims, 0.25) <= 2 + 5
    arrivals = dest.accepted_times()
    assert max_in_window(arrivals) <= 20 + 8, f"{max_in_window(arrivals)} requests arrived in one second"
    # a quarter of a second: GCRA allows 2 + 5; allow 6 more for jitter
    assert max_in_window(arrivals, 0.25) <= 13, (
        f"{max_in_window(arrivals, 0.25)} requests arrived within 0.25 s under a 20/s, burst-2 limit"
    )
    ran_by = {
        e.worker_id for events in timelines(mod.app.store).values() for e in events if e.to_status.value == "running"
    }
    assert len(ran_by) == 2, f"jobs ran in {len(ran_by)} worker(s): {ran_by}"
    assert all(p.alive() for p in procs)


BOOKED_APP = """
app.limit("dest", rate="200/s", burst=2)


@app.task(retry=0, limits=["dest"])
async def held(ctx: floodway.Context, n: int):
    record("starts", f"{ctx.job_id} {time.time()!r}")
    return await post_order(ctx, "dest", n)
"""


def test_a_binding_limit_claimed_in_booked_batches_keeps_its_bound_and_starts_no_job_early(
    tmp_path, workers, destination, make_app
):
    # 200/s, a burst of 2: an interval of 5 ms, far less than the time between a worker's
    # claims, so the claims book tokens ahead (50 ms by default) and each job starts at its
    # token's moment. The destination allows the declared rate with 20 requests of slack for
    # the jitter between a job's start and its request's arrival.
    dest = destination(rate=200, burst=22)
    name, mod = make_app(BOOKED_APP, dest)
    n = 600
    mod.app.enqueue_many("held", [{"n": i} for i in range(n)])
    for i in range(2):
        workers.start(name, "--concurrency", "25", *WORKER_OPTS, label=f"w{i}")

    wait_finished(mod.app, n, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    # the moments the tokens were booked for (each job's start as the store records it) keep
    # GCRA's bound, rate + burst, in every second, and burst + a quarter of the rate in 0.25 s
    booked = {job.id: job.started_at for job in mod.app.store.list_jobs(limit=n + 1)}
    moments = sorted(booked.values())
    assert len(moments) == n
    assert max_in_window(moments) <= 200 + 2, f"{max_in_window(moments)} tokens in one second"
    assert max_in_window(moments, 0.25) <= 2 + 50, f"{max_in_window(moments, 0.25)} tokens in 0.25 s"
    # no job started before the moment its token was booked for
    starts = dict(line.split() for line in read_lines(tmp_path, "starts"))
    assert len(starts) == n
    early = {job_id: booked[job_id] - float(at) for job_id, at in starts.items() if float(at) < booked[job_id]}
    assert not early, f"{len(early)} job(s) started before their token's moment, e.g. {list(early.items())[:3]}"
    assert dest.rejected_count == 0, f"{dest.rejected_count} requests were refused with 429"


# -- b. the destination is stricter than the declared limit ---------------------------------------

STRICT_APP = """
app.limit("dest", rate="40/s")
app.wait_in_place = 0.5  # waits longer than this send the job back to `scheduled`


@app.task(retry=0, limits=["dest"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "dest", n)
"""


@pytest.mark.parametrize("mode", ["retry-after", "reset", "none"])
def test_429s_from_a_stricter_destination_spend_no_attempt(tmp_path, workers, destination, make_app, mode):
    dest = destination(rate=10, burst=0, mode=mode)
    name, mod = make_app(STRICT_APP, dest)
    n = 40
    mod.app.enqueue_many("order", [{"n": i} for i in range(n)])
    for i in range(2):
        workers.start(name, "--concurrency", "10", *WORKER_OPTS, label=f"w{i}")

    wait_finished(mod.app, n, workers, timeout=90)
    assert dest.rejected_count > 0, "the destination never refused: the test proves nothing"
    # retry=0: one run allowed, so a 429 that spent an attempt would have failed the job
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    assert max_in_window(dest.accepted_times()) <= 10

    # a refusal asking for a short wait (or none) is congestion, not an empty quota: every
    # worker slows down to what the destination accepts, nobody is paused or rescheduled
    info = key_info(mod.app, "dest", "")
    assert info.throttled == dest.rejected_count, (info, dest.rejected_count)
    assert info.effective_rate < 40, f"the declared 40/s was never cut: {info}"
    assert info.rate_limited == 0, info
    if mode == "reset" and info.source == "window":
        # a sliding window's resets are whole epoch seconds: refusals that line up on one of
        # them for over a second read as a fixed window's end, which paces the key just the same
        return
    assert info.source == "429s" and info.cuts >= 1, info
    assert info.exhausted == 0, info


# -- c. a keyed limit pauses only the key that got the 429 -----------------------------------------

KEYED_APP = """
app.limit("per-tenant", rate="5/s", key="{tenant}")


@app.task(retry=0, limits=["per-tenant"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "per-tenant", n, path=f"/tenants/{ctx.tenant}/orders")
"""


def test_a_429_for_one_tenant_pauses_only_that_key(tmp_path, workers, destination, make_app):
    dest = destination(rate=100, per_tenant=True)  # never binding: only the block below refuses
    dest.block("A", count=1, retry_after=6)  # A's first request gets `429 Retry-After: 6`
    name, mod = make_app(KEYED_APP, dest)
    mod.app.enqueue_many("order", [{"n": i} for i in range(8)], tenant="A")
    mod.app.enqueue_many("order", [{"n": i} for i in range(15)], tenant="B")
    workers.start(name, "--concurrency", "10", *WORKER_OPTS)

    # while B drains, A's key is paused and B's is not (observed live, in the store)
    seen_split = False

    def b_done():
        nonlocal seen_split
        a, b = key_info(mod.app, "per-tenant", "A"), key_info(mod.app, "per-tenant", "B")
        if a is not None and a.paused_until is not None and (b is None or b.paused_until is None):
            seen_split = True
        return len(dest.accepted("B")) >= 15

    wait_until(b_done, lambda: f"B's 15 jobs to reach the destination; {dest.stats()}", workers=workers, interval=0.02)
    wait_finished(mod.app, 23, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, 23, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    assert seen_split, "never saw key A paused while key B was not"

    refused = dest.rejected("A")
    assert len(refused) == 1 and not dest.rejected("B")
    paused_at = refused[0].at
    first = mod.app.store.get_job(refused[0].idempotency_key)
    paused_recorded = next(e.at for e in mod.app.store.events(first.id) if e.to_status.value == "scheduled")
    claimed = {job_id: min(runs) for job_id, runs in claim_times(mod.app.store).items() if runs}
    # A sent nothing during its pause (a job claimed before the 429 came back may have been
    # calling at the same moment, but no job claimed after the pause was recorded)...
    a_during = [r for r in dest.records() if r.tenant == "A" and paused_at < r.at < paused_at + 6]
    late = [r for r in a_during if claimed[r.idempotency_key] > paused_recorded]
    assert not late, f"{len(late)} A job(s) claimed after the pause still called during it"
    assert len(a_during) <= 2, f"{len(a_during)} A requests during the pause"
    # ...while B kept going at its own 5/s
    b_during = count_between(dest.accepted_times("B"), paused_at, paused_at + 6)
    assert b_during >= 10, f"only {b_during} of B's requests were accepted during A's pause"
    # admissions are exact; arrivals also carry each job's claim-to-request delay, which a
    # loaded machine stretches and squeezes: allow two of jitter at the destination
    assert max_in_window(dest.accepted_times("B")) <= 5 + 1 + 2
    a_key, b_key = key_info(mod.app, "per-tenant", "A"), key_info(mod.app, "per-tenant", "B")
    assert a_key.rate_limited == 1 and b_key.rate_limited == 0


IN_FLIGHT_APP = """
app.limit("dest", rate="100/s", burst=10)


@app.task(retry=0, limits=["dest"])
async def order(ctx: floodway.Context, n: int):
    if n > 0:  # claimed with job 0, but calls only once job 0's 429 has paused the limit
        await wait_for_file("go", 60)
    return await post_order(ctx, "dest", n)
"""


def test_a_pause_stops_jobs_admitted_before_it(tmp_path, workers, destination, make_app):
    dest = destination(rate=1000)
    dest.block(None, count=1, retry_after=5)  # the first request gets `429 Retry-After: 5`
    name, mod = make_app(IN_FLIGHT_APP, dest)
    first = mod.app.enqueue("order", {"n": 0})
    mod.app.enqueue_many("order", [{"n": i} for i in range(1, 10)])
    workers.start(name, "--concurrency", "10", *WORKER_OPTS)
    wait_until(
        lambda: (
            len(mod.app.store.list_jobs(status=["running"])) == 10
            or mod.app.store.get_job(first.id).status.value == "scheduled"
        ),
        "the ten jobs to be claimed",
        workers=workers,
    )
    paused_until = wait_until(lambda: paused(mod.app, "dest", ""), "job 0's 429 to pause the limit", workers=workers)
    (tmp_path / "go").touch()
    wait_finished(mod.app, 10, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, 10, workers)
    refused_at = dest.rejected()[0].at
    during = [r for r in dest.records() if refused_at < r.at < paused_until]
    assert not during, f"{len(during)} request(s) were sent while the limit was paused"


# -- d. fairness: a small tenant is not starved by a big backlog -----------------------------------

FAIR_APP = """
app.limit("shared", concurrency=2)


@app.task(retry=0, limits=["shared"])
async def work(ctx: floodway.Context, n: int):
    record("runs.txt", ctx.tenant)
    await asyncio.sleep(0.005)
    return n
"""


def test_small_tenant_is_not_starved_by_a_big_backlog(tmp_path, workers, make_app):
    name, mod = make_app(FAIR_APP)
    mod.app.enqueue_many("work", [{"n": i} for i in range(2000)], tenant="big")
    workers.start(name, "--concurrency", "4", *WORKER_OPTS)
    wait_until(lambda: len(read_lines(tmp_path, "runs.txt")) >= 30, "the big tenant to start", workers=workers)
    big_before = len(read_lines(tmp_path, "runs.txt"))
    mod.app.enqueue_many("work", [{"n": i} for i in range(10)], tenant="small")

    wait_until(
        lambda: read_lines(tmp_path, "runs.txt").count("small") >= 10,
        lambda: f"the small tenant's 10 jobs to run; runs: {Counter(read_lines(tmp_path, 'runs.txt'))}",
        workers=workers,
    )
    runs = read_lines(tmp_path, "runs.txt")
    last_small = max(i for i, tenant in enumerate(runs) if tenant == "small")
    big_meanwhile = runs[:last_small].count("big") - big_before
    assert big_meanwhile <= 200, f"{big_meanwhile} big jobs ran before the 10 small ones were done"
    done = db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE tenant = 'small' AND status = 'complete'")[0][0]
    wait_until(
        lambda: (
            db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE tenant = 'small' AND status = 'complete'")[0][0] == 10
        ),
        f"the small tenant's jobs to be complete in the store (now {done})",
        workers=workers,
    )
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE status = 'failed'")[0][0] == 0


# -- e. a concurrency limit holds across two processes ---------------------------------------------

TWO_AT_ONCE_APP = """
app.limit("two-at-once", concurrency=2)


@app.task(retry=0, limits=["two-at-once"])
async def hold(ctx: floodway.Context, n: int):
    gauge_enter("gauge")
    try:
        record("runs.txt", str(os.getpid()))
        await asyncio.sleep(0.1)
    finally:
        gauge_exit("gauge")
    return n
"""


def test_concurrency_limit_holds_across_two_processes(tmp_path, workers, make_app):
    name, mod = make_app(TWO_AT_ONCE_APP)
    mod.app.enqueue_many("hold", [{"n": i} for i in range(40)])
    for i in range(2):
        workers.start(name, "--concurrency", "10", *WORKER_OPTS, label=f"w{i}")
    wait_finished(mod.app, 40, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, 40, workers)
    current, highest = read_gauge(tmp_path, "gauge")
    assert current == 0
    assert highest == 2, f"at most {highest} jobs held the limit at once (cap 2)"
    assert key_info(mod.app, "two-at-once", "").running == 0, "a slot of the limit was not given back"


# -- f. an adaptive limit learns the destination's rate -------------------------------------------

ADAPTIVE_APP = """
app.limit("learn", rate="100/s", adaptive=True)


@app.task(retry=0, limits=["learn"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "learn", n)
"""


@pytest.mark.parametrize(
    "quota_headers",
    [
        pytest.param(False, id="from-429s"),
        pytest.param(True, id="from-quota-headers"),
    ],
)
def test_adaptive_limit_converges_to_the_destination_rate(tmp_path, workers, destination, make_app, quota_headers):
    r = 20
    dest = destination(rate=r, burst=0, mode="retry-after", quota_headers=quota_headers)
    name, mod = make_app(ADAPTIVE_APP, dest)
    # long enough (~10 s at the destination's rate) for the cuts from 100/s to converge before
    # the drain ends, however fast the first ones come
    n = 10 * r
    mod.app.enqueue_many("order", [{"n": i} for i in range(n)])
    for i in range(2):
        workers.start(name, "--concurrency", "10", *WORKER_OPTS, label=f"w{i}")

    wait_finished(mod.app, n, workers, timeout=60)
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    learned = key_info(mod.app, "learn", "").effective_rate
    assert r / 2 <= learned <= 2 * r, f"the adaptive limit settled at {learned:.3f}/s against a {r}/s destination"
    # and the drain ran at about the destination's rate (not at a collapsed one): the last
    # half of the accepts came at >= half of it
    times = sorted(dest.accepted_times())
    tail = times[n // 2 :]
    assert (len(tail) - 1) / (tail[-1] - tail[0]) >= r / 2, "the drain crawled"


ADAPTIVE_BURST_APP = """
app.limit("learn", rate="100/s", burst=30, adaptive=True)


@app.task(retry=0, limits=["learn"])
async def order(ctx: floodway.Context, n: int):
    await wait_for_file("go", 60)  # all 30 call at once: one overloaded second
    return await post_order(ctx, "learn", n)
"""


class _RefusalsOneByOne(Destination):
    """Answers its k-th 429 only after k x 0.15 s: the refusals of one overloaded second then
    reach the client one at a time, so no two of them are processed at once (concurrent
    read-modify-writes of the stored rate would otherwise lose some cuts at random)."""

    refused_so_far = 0

    async def _orders(self, request):
        response = await super()._orders(request)
        if response.status_code == 429:
            with self._lock:
                self.refused_so_far += 1
                k = self.refused_so_far
            await asyncio.sleep(0.15 * k)
        return response


def test_one_overloaded_second_does_not_collapse_an_adaptive_limit(tmp_path, workers, destination, make_app):
    # 30 requests sent at once to a destination allowing 10/s: ~20 are refused. They are one
    # overload, all sent before the first refusal was known: learning from them should cut the
    # rate once (or a few times), not once per refused request.
    dest = destination(cls=_RefusalsOneByOne, rate=10, burst=0)
    name, mod = make_app(ADAPTIVE_BURST_APP, dest)
    n = 30
    mod.app.enqueue_many("order", [{"n": i} for i in range(n)])
    workers.start(name, "--concurrency", "30", *WORKER_OPTS)
    wait_until(
        lambda: len(mod.app.store.list_jobs(status=["running"])) == n, "the 30 jobs to be claimed", workers=workers
    )
    (tmp_path / "go").touch()

    # follow the stored rate until every job is done, or until it has fallen below half the
    # destination's rate (a collapsed limit would take minutes to drain the rest)
    lowest = [100.0]

    def done_or_collapsed():
        lowest[0] = min(lowest[0], key_info(mod.app, "learn", "").effective_rate)
        counts = mod.app.store.count_jobs()
        return lowest[0] < 5 or counts["complete"] + counts["failed"] >= n

    wait_until(done_or_collapsed, lambda: f"the drain; {mod.app.store.count_jobs()}", workers=workers, interval=0.02)
    assert dest.rejected_count >= 10, f"only {dest.rejected_count} refusals: the second was not overloaded"
    assert lowest[0] >= 5, (
        f"{dest.rejected_count} refusals in one overloaded second cut the adaptive limit to {lowest[0]:.2f}/s "
        "against a 10/s destination"
    )
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)


def test_adaptive_limit_rises_while_no_429s_come(tmp_path, workers, destination, make_app):
    # "raising it slowly while none come": 60 successes and not one 429 must raise the rate
    dest = destination(rate=1000)  # never refuses, sends no quota headers
    name, mod = make_app(ADAPTIVE_APP.replace("100/s", "10/s"), dest)
    n = 60
    mod.app.enqueue_many("order", [{"n": i} for i in range(n)])
    workers.start(name, "--concurrency", "10", *WORKER_OPTS)
    wait_finished(mod.app, n, workers)
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert dest.rejected_count == 0
    learned = key_info(mod.app, "learn", "").effective_rate
    assert learned > 10, f"after {n} successes and no 429 the adaptive limit is still {learned}/s"


# -- g. changing a limit at run time takes effect without a restart --------------------------------

RUNTIME_APP = """
app.limit("dest", rate="40/s")


@app.task(retry=0, limits=["dest"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "dest", n)
"""


def test_set_limit_at_run_time_takes_effect_without_restart(tmp_path, workers, destination, make_app):
    dest = destination(rate=1000)  # not binding: it only records
    name, mod = make_app(RUNTIME_APP, dest)
    mod.app.enqueue_many("order", [{"n": i} for i in range(400)])
    procs = [workers.start(name, "--concurrency", "10", *WORKER_OPTS, label=f"w{i}") for i in range(2)]
    wait_until(lambda: dest.accepted_count >= 40, lambda: f"40 accepts; {dest.stats()}", workers=workers)

    mod.app.set_limit("dest", rate="5/s")
    # a claim that read the clock after this saw the new rate; a claim just before it may have
    # booked tokens of the old rate up to BOOK_AHEAD later (a job's start is its token's moment)
    changed_at = time.time() + BOOK_AHEAD

    def claims() -> dict[str, float]:
        return {job_id: min(runs) for job_id, runs in claim_times(mod.app.store).items() if runs}

    def sent_after_change() -> list[float]:
        claimed = claims()
        return [r.at for r in dest.accepted() if claimed.get(r.idempotency_key, 0) >= changed_at]

    wait_until(
        lambda: len(sent_after_change()) >= 15,
        lambda: f"15 jobs claimed after the change to call; {dest.stats()}",
        workers=workers,
    )
    assert all(p.alive() for p in procs), "a worker restarted or died"
    assert str(limit_info(mod.app, "dest").spec.rate) == "5/s"

    claimed = claims()
    before = [at for at in claimed.values() if at < changed_at]
    after = [at for at in claimed.values() if at >= changed_at]
    # not vacuous: before the change both workers claimed faster than 5/s allows
    assert max_in_window(before) > 5 + 1, f"only {max_in_window(before)} claims in any second before the change"
    # after it, both workers' claims keep to 5/s exactly (GCRA: rate + burst in any second)...
    assert max_in_window(after) <= 5 + 1, f"{max_in_window(after)} claims in one second after the change to 5/s"
    # ...and so do the calls of those jobs, give or take one of jitter (jobs claimed before the
    # change may still be calling with the token they got at the old rate)
    assert max_in_window(sent_after_change()) <= 5 + 2


# -- h. a task that raises RateLimited itself ----------------------------------------------------

SELF_LIMITED_APP = """
app.limit("dest", rate="100/s")


@app.task(retry=0)
async def polite(ctx: floodway.Context, n: int):
    marker = f"limited-{ctx.job_id}"
    if not exists(marker):
        touch(marker)
        raise floodway.RateLimited(retry_after="1s", limit="dest")
    record("runs.txt", f"{ctx.job_id} {ctx.attempt}")
    return n
"""


def test_task_raising_rate_limited_is_rescheduled_without_spending_an_attempt(tmp_path, workers, make_app):
    name, mod = make_app(SELF_LIMITED_APP)
    handle = mod.app.enqueue("polite", {"n": 7})
    workers.start(name, "--concurrency", "2", *WORKER_OPTS)

    assert handle.result(timeout=TIMEOUT) == 7
    job = mod.app.store.get_job(handle.id)
    assert job.attempt == 1 and job.status.value == "complete"
    assert read_lines(tmp_path, "runs.txt") == [f"{handle.id} 1"]
    events = mod.app.store.events(handle.id)
    steps = [(e.from_status and e.from_status.value, e.to_status.value) for e in events]
    assert ("running", "scheduled") in steps, steps
    back = next(e for e in events if e.to_status.value == "scheduled")
    assert "rate limited" in back.reason and "dest" in back.reason, back.reason
    runs = [e for e in events if e.to_status.value == "running"]
    assert len(runs) == 2
    # the first run raised RateLimited(retry_after="1s") after its claim: the second claim
    # came at least a second after the first
    assert runs[1].at - runs[0].at >= 1.0, f"ran again {runs[1].at - runs[0].at:.2f}s after the first run"
    assert key_info(mod.app, "dest", "").rate_limited == 1


# -- i. bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"rate": "fast"},
        {"rate": "10/fortnight"},
        {"rate": "0/s"},
        {"rate": "-5/s"},
        {"rate": "5"},
        {"rate": 5},
        {"rate": ""},
        {"rate": "5/s", "burst": 0},
        {"rate": "5/s", "burst": True},
        {"concurrency": 0},
        {"concurrency": 1.5},
        {},
        {"adaptive": True, "rate": "0/s"},
        {"adaptive": True, "floor": "10/s", "ceiling": "1/s"},
        {"rate": "5/s", "key": "{}"},
        {"rate": "5/s", "key": "{tenant"},
        {"rate": "5/s", "key": "{a-b}"},
    ],
    ids=repr,
)
def test_malformed_limit_declarations_are_refused(tmp_path, options):
    app = App(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigError):
        app.limit("x", **options)
    assert "x" not in app.limits
    app.close()


def test_unknown_limit_names_are_refused_at_enqueue_and_set_limit(tmp_path):
    app = App(f"sqlite:///{tmp_path / 'x.db'}")
    app.limit("known", rate="5/s")

    @app.task(limits=["nope"])
    async def undeclared(n: int) -> int:
        return n

    @app.task
    async def plain(n: int) -> int:
        return n

    with pytest.raises(EnqueueError, match="nope"):
        app.enqueue(undeclared, {"n": 1})
    with pytest.raises(EnqueueError, match="nope"):
        app.enqueue(plain, {"n": 1}, limits=["known", "nope"])
    with pytest.raises(EnqueueError, match="nope"):
        app.enqueue_many(plain, [{"n": 1}, {"n": 2}], limits=["nope"])
    with pytest.raises(EnqueueError):
        app.enqueue(plain, {"n": 1}, limits="known")  # a string, not a list of names
    with pytest.raises(ConfigError):
        app.set_limit("nope", rate="1/s")
    with pytest.raises(ConfigError):
        app.set_limit("known", rate="quick")
    with pytest.raises(ConfigError):
        app.set_limit("known", speed="1/s")
    assert sum(app.store.count_jobs().values()) == 0, "a refused enqueue wrote something"
    app.close()


BAD_HTTP_APP = """
app.limit("dest", rate="50/s")


@app.task(retry=0)
async def unknown_limit(ctx: floodway.Context, n: int):
    async with ctx.http(base_url=DEST, limit="nope") as client:
        await client.post("/orders", json={"id": n})
    return n


@app.task(retry=0, limits=["dest"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "dest", n)
"""


def test_http_with_an_unknown_limit_fails_the_job_not_the_worker(tmp_path, workers, destination, make_app):
    dest = destination(rate=100)
    name, mod = make_app(BAD_HTTP_APP, dest)
    bad = mod.app.enqueue("unknown_limit", {"n": 1})
    mod.app.enqueue_many("order", [{"n": i} for i in range(5)])
    proc = workers.start(name, "--concurrency", "4", *WORKER_OPTS)
    wait_finished(mod.app, 6, workers)
    job = mod.app.store.get_job(bad.id)
    assert job.status.value == "failed"
    assert job.error["type"] == "ConfigError" and "nope" in job.error["message"], job.error
    assert mod.app.store.count_jobs()["complete"] == 5
    assert proc.alive()
    assert dest.accepted_count == 5 and dest.rejected_count == 0, "the bad job sent a request"


def test_garbage_rate_limit_headers_fall_back_to_backoff(tmp_path, workers, destination, make_app):
    # declared 50/s against a destination allowing 5/s that answers its 429s with unreadable
    # Retry-After / X-RateLimit-Reset / RateLimit values: nothing crashes, the backoff decides
    dest = destination(rate=5, burst=0, mode="garbage")
    name, mod = make_app(STRICT_APP.replace("40/s", "50/s"), dest)
    n = 20
    mod.app.enqueue_many("order", [{"n": i} for i in range(n)])
    workers.start(name, "--concurrency", "10", *WORKER_OPTS)
    wait_finished(mod.app, n, workers, timeout=90)
    assert dest.rejected_count >= 2, f"only {dest.rejected_count} garbage 429s were sent"
    assert_all_complete_first_attempt(tmp_path, mod.app, n, workers)
    assert_each_job_accepted_once(tmp_path, dest)
    # a refusal with no usable wait is congestion: counted, the rate cut, nobody paused
    info = key_info(mod.app, "dest", "")
    assert info.throttled == dest.rejected_count and info.cuts >= 1, info
    assert "ignoring unreadable rate-limit headers" in workers.logs()
    assert "Traceback" not in workers.logs()


ABSURD_APP = """
app.limit("dest", rate="50/s")


@app.task(retry=0, limits=["dest"])
async def order(ctx: floodway.Context, n: int):
    return await post_order(ctx, "dest", n)
"""


class _AbsurdRetryAfter(Destination):
    def _reject_headers(self, now, wait):
        return {"Retry-After": "99999999999"}  # ~3,000 years: a broken API, not a real reset


def test_an_absurd_retry_after_does_not_freeze_the_limit_for_centuries(tmp_path, workers, destination, make_app):
    dest = destination(cls=_AbsurdRetryAfter, rate=100)
    dest.block(None, count=1, retry_after=1)
    name, mod = make_app(ABSURD_APP, dest)
    handle = mod.app.enqueue("order", {"n": 1})
    workers.start(name, "--concurrency", "2", *WORKER_OPTS)
    wait_until(
        lambda: (
            dest.rejected_count >= 1 and mod.app.store.get_job(handle.id).status.value not in ("waiting", "running")
        ),
        "the 429 to be handled",
        workers=workers,
    )
    job = mod.app.store.get_job(handle.id)
    assert job.status.value != "failed", f"the job failed on a 429: {job.error['message']}"
    until = paused(mod.app, "dest", "")
    year = 366 * 86400
    assert until is None or until <= time.time() + year, (
        f"limit paused for {(until - time.time()) / 86400 / 365:.0f} years"
    )
    assert job.run_at <= time.time() + year, f"job scheduled {(job.run_at - time.time()) / 86400 / 365:.0f} years out"
