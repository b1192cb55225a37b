"""The chaos drain, short: real worker processes drain jobs into a rate-limited loopback API
while workers are SIGKILLed and restarted, one is SIGSTOPped past its lease and resumed, and
PostgreSQL is restarted (``chaos/run.py``; ``make chaos`` runs the long version).

Checked after the fact, from the store and from every request the destination saw (it does not
deduplicate, so every repeat is counted): every job complete, none running, nothing lost, no
record applied twice by a destination honouring Idempotency-Key, repeated deliveries within the
design's bound, no second with more accepted requests than rate + burst, and every status
change an edge of the transition table.

Also here: the bugs the chaos drain found, each reproduced deterministically.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Config, Report, render, run_chaos
from floodway import App, Context, Retry
from floodway.errors import StoreError
from floodway.jobs import Status
from floodway.store import open_store

from .conftest import BACKENDS
from .pg_helpers import base_url

pytestmark = pytest.mark.timeout(300)

#: the short runs: enough jobs that the drain outlasts the chaos (the rate caps the speed)
SHORT = {
    "sqlite": dict(jobs=1500, workers=2, rate=150.0, burst=5),
    "postgres": dict(jobs=2500, workers=4, rate=200.0, burst=5),
}

#: A bug the chaos drain hits now and then (PostgreSQL restart): see
#: test_a_store_error_while_loading_the_cursor_retries_the_job. When every unfinished job
#: failed this way, the run is reported as an expected failure, naming the bug; anything else
#: fails the test.
CONTEXT_BUG = (
    "worker.py: a StoreError raised by store.load_state in Worker._context_for (the database "
    "restarting) reaches Worker._run's `except BaseException`, which calls "
    "self._failure(job, None, exc); with task=None the failure is final, so the job is FAILED on "
    "its first attempt with every retry unused and its record never sent"
)


def _only_the_context_bug(report: Report) -> bool:
    if not report.unfinished or report.duplicate_effects or report.max_accepted_1s > report.limit_1s:
        return False
    if report.bad_transitions or report.running:
        return False
    if len(report.unfinished) != report.jobs - report.complete or report.lost != len(report.unfinished):
        return False
    return all(
        job["status"] == "failed" and job["attempt"] < job["max_attempts"]
        and any("_context_for" in frame for frame in job["frames"])
        for job in report.unfinished
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chaos_drain_loses_and_duplicates_nothing(backend: str, tmp_path: Path) -> None:
    options = SHORT[backend]
    config = Config(
        backend=backend, concurrency=16, lease=2.0, kill_every=(1.0, 2.0), stop_for=4.0,
        stop_at=0.15, restart_at=0.4, timeout=200.0, workdir=str(tmp_path / "chaos"),
        postgres_url=base_url() if backend == "postgres" else None, **options,
    )
    lines: list[str] = []
    report = run_chaos(config, out=lines.append)
    text = "\n".join(lines) + "\n" + render(report)
    if not report.ok and _only_the_context_bug(report):
        pytest.xfail(f"known bug: {CONTEXT_BUG}\n{text}")
    assert report.ok, text
    jobs = options["jobs"]
    assert report.complete == jobs and report.statuses == {"complete": jobs}, text
    assert report.running == 0 and report.lost == 0 and report.duplicate_effects == 0, text
    assert report.unkeyed_requests == 0, text
    assert report.repeated_deliveries <= report.repeated_delivery_bound, text
    assert report.max_accepted_1s <= options["rate"] + options["burst"], text
    assert report.kills >= 2 and report.restarts == report.kills, text
    assert report.stops == 1 and report.stop_seconds > config.lease, text
    assert report.db_restarts == (1 if backend == "postgres" else 0), text
    assert not report.bad_transitions, text


# -- bugs the chaos drain found, reproduced ------------------------------------------------------

@pytest.mark.xfail(strict=True, reason=CONTEXT_BUG)
def test_a_store_error_while_loading_the_cursor_retries_the_job(tmp_path: Path) -> None:
    """A database blip while the worker loads a job's cursor must cost at most an attempt."""
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.task(retry=Retry(attempts=3, initial=0))
    async def deliver(ctx: Context, n: int) -> int:
        return n

    store = open_store(app.database_url)
    app.use_store(store)
    real = store.load_state
    calls = {"n": 0}

    def flaky_load_state(key: str):
        calls["n"] += 1
        if calls["n"] == 1:  # what the PostgreSQL store raises when the server restarts
            raise StoreError("the connection broke while committing a read; it may or may not have been written")
        return real(key)

    store.load_state = flaky_load_state  # type: ignore[method-assign]
    try:
        handle = app.enqueue(deliver, {"n": 7})
        app.worker(burst=True, poll_interval=0.01, lease=5).run()
        job = handle.job()
        assert calls["n"] >= 1
        assert job.status is Status.COMPLETE, (job.status, job.attempt, job.error)
        assert job.result == 7
    finally:
        app.close()

