"""How a worker that is told to stop when the work is done decides that it is: ``burst`` exits
when nothing is ready now and says what is left; ``until_empty`` waits for retries, running jobs
and jobs scheduled within its horizon. Both backends, a real worker in this process."""

from __future__ import annotations

import logging

from floodway import Retry, Status

ATTEMPTS: dict[str, int] = {}


def flaky_app(app):
    @app.task(retry=Retry(attempts=1, backoff="fixed", initial="1s"))
    def flaky(key: str) -> str:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        if ATTEMPTS[key] == 1:
            raise RuntimeError("the first try fails")
        return "ok"

    @app.task
    def later() -> str:
        return "done"

    return flaky, later


def test_burst_exits_with_a_retry_pending_and_says_so(app, caplog):
    flaky, _ = flaky_app(app)
    key = f"burst-{id(app)}"
    handle = app.enqueue(flaky, {"key": key})
    with caplog.at_level(logging.WARNING, logger="floodway.worker"):
        app.run_worker(burst=True, concurrency=2, poll_interval="20ms")
    assert handle.status() is Status.RETRYING
    said = [r.getMessage() for r in caplog.records if "exits (nothing ready now)" in r.getMessage()]
    assert said and "1 retrying" in said[0] and "the next is due in" in said[0]


def test_until_empty_waits_for_the_retry_and_for_what_is_due_within_its_horizon(app, caplog):
    flaky, later = flaky_app(app)
    key = f"until-{id(app)}"
    retried = app.enqueue(flaky, {"key": key})
    soon = app.enqueue(later, delay="1500ms")
    with caplog.at_level(logging.WARNING, logger="floodway.worker"):
        app.run_worker(until_empty=True, horizon="5s", concurrency=2, poll_interval="20ms")
    assert retried.status() is Status.COMPLETE and ATTEMPTS[key] == 2
    assert soon.status() is Status.COMPLETE
    assert not [r for r in caplog.records if "exits (nothing ready now)" in r.getMessage()]


def test_until_empty_does_not_wait_for_a_job_beyond_its_horizon(app, caplog):
    _, later = flaky_app(app)
    tomorrow = app.enqueue(later, delay="1h")
    with caplog.at_level(logging.WARNING, logger="floodway.worker"):
        app.run_worker(until_empty=True, horizon="1m", concurrency=2, poll_interval="20ms")
    assert tomorrow.status() is Status.SCHEDULED
    said = [r.getMessage() for r in caplog.records if "exits (nothing ready now)" in r.getMessage()]
    assert said and "1 scheduled" in said[0]
