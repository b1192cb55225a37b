"""Reserved lanes held across worker processes, on both backends: two workers draining a
backfill backlog and an interactive backlog of one laned limit serve the interactive lane at
its share of the key's rate and never above it, admit no more than the key's rate in all, and
run every job once."""

from __future__ import annotations

import collections

from ..destination import count_between, max_in_window
from ..proc_helpers import LoadedApps, read_lines, wait_until

RATE = 50  # per second, the key's
SHARE = 0.2  # interactive's; backfill has the rest of the declared lanes
BURST = 2  # the key's (a lane's is its part of this, at least 2)
BACKFILL = 300
INTERACTIVE = 50  # ~5 s at the lane's 10/s: backfill stays backlogged all the while

APP = """
app.close()
app = floodway.App({url!r})
app.limit("hub", rate="{rate}/s", burst={burst}, lanes={{"interactive": {share}, "backfill": {rest}}})


@app.task(limits=["hub"], lane="backfill")
async def fill(ctx: floodway.Context, i: int) -> None:
    record("starts", f"backfill {{ctx.job_id}} {{time.time()}}")


@app.task(limits=["hub"], lane="interactive")
async def ask(ctx: floodway.Context, i: int) -> None:
    record("starts", f"interactive {{ctx.job_id}} {{time.time()}}")
"""


def test_two_workers_hold_the_lane_shares_of_one_key(tmp_path, database_url, workers):
    apps = LoadedApps(tmp_path)
    try:
        name, module = apps.load(APP.format(url=database_url, rate=RATE, burst=BURST, share=SHARE, rest=1 - SHARE))
        module.fill.enqueue_many([{"i": i} for i in range(BACKFILL)])
        module.ask.enqueue_many([{"i": i} for i in range(INTERACTIVE)])
        for label in ("a", "b"):
            workers.start(name, "--concurrency", "10", "--poll-interval", "50ms", label=f"worker-{label}")
        total = BACKFILL + INTERACTIVE
        wait_until(
            lambda: module.app.store.count_jobs()["complete"] == total,
            lambda: f"every job to finish: {module.app.store.count_jobs()}",
            timeout=120,
            workers=workers,
        )

        # nothing ran twice: one start per job, and the store counts one attempt each
        starts = [line.split() for line in read_lines(tmp_path, "starts")]
        runs = collections.Counter(job_id for _, job_id, _ in starts)
        assert len(runs) == total and set(runs.values()) == {1}, runs.most_common(3)
        jobs = module.app.store.list_jobs(limit=total + 1)
        assert len(jobs) == total and {job.attempt for job in jobs} == {1}
        # both workers took part: the shares held across processes, not inside one
        assert len({job.worker_id for job in jobs}) == 2

        # the admissions as the store saw them: a job's claim is its admission
        admitted = sorted(job.started_at for job in jobs)
        interactive = sorted(job.started_at for job in jobs if job.task == "ask")
        # never more than the key's rate in all (plus its burst), in any second
        assert max_in_window(admitted, 1.0) <= RATE + BURST, max_in_window(admitted, 1.0)

        # the interactive lane while both lanes were backlogged: from the first admission to
        # its own last one (backfill still had work after it: it was enqueued 6 s deep)
        start, end = admitted[0], interactive[-1]
        assert count_between(admitted, end, float("inf")) > 1, "backfill ran dry before interactive"
        elapsed = end - start
        share_rate = SHARE * RATE
        lane_burst = max(2, BURST)
        mine = len(interactive)
        # never above its share of the rate (plus its burst) ...
        assert mine <= share_rate * elapsed + lane_burst, (mine, elapsed)
        assert max_in_window(interactive, 1.0) <= share_rate + lane_burst, max_in_window(interactive, 1.0)
        # ... and served at about it: a backlogged lane is not starved by the other
        assert mine >= 0.8 * share_rate * elapsed - 3, (mine, elapsed)
        # backfill took the rest of the key meanwhile, not more
        others = count_between(admitted, start, end + 1e-9) - mine
        assert others <= (RATE - share_rate) * elapsed + BURST + lane_burst, (others, elapsed)
    finally:
        apps.close()
