"""How a run ends (``floodway.worker_outcomes``), without a worker or a store."""

from __future__ import annotations

import time
from types import SimpleNamespace

from floodway.errors import Fail
from floodway.jobs import Job, Status
from floodway.resumable import ContinueLater
from floodway.retry import Retry
from floodway.tasks import Task
from floodway.worker_outcomes import (
    call_arguments,
    continue_later,
    failure,
    hard_timeout,
    interrupted,
    unknown_task,
)


class Unfixable(Exception):
    pass


def make_task(fn=None, **options) -> Task:
    defaults = dict(name="t", queue="default", retry=Retry(attempts=3, initial=2.0, give_up_on=(Unfixable,)))
    defaults.update(timeout=None, priority=0)
    defaults.update(options)
    return Task(None, fn or (lambda x: x), **defaults)  # type: ignore[arg-type]


def make_job(attempt: int = 1, max_attempts: int = 3, **fields) -> Job:
    now = time.time()
    values = dict(args={"x": 1}, queue="default", status=Status.RUNNING, priority=0, run_at=now)
    values.update(created_at=now, updated_at=now)
    values.update(fields)
    return Job("j1", "t", attempt=attempt, max_attempts=max_attempts, **values)  # type: ignore[arg-type]


def test_a_failure_with_attempts_left_is_retried_after_the_policys_delay():
    before = time.time()
    outcome = failure(make_job(attempt=1), make_task(), ValueError("boom"))
    assert outcome.status == Status.RETRYING and outcome.error["type"] == "ValueError"
    assert before + 2.0 <= outcome.run_at <= time.time() + 2.0


def test_a_failure_is_final_on_the_last_attempt_on_a_programming_error_or_a_give_up_type():
    assert failure(make_job(attempt=3), make_task(), ValueError("x")).status == Status.FAILED
    assert failure(make_job(), make_task(), Fail("bad input")).status == Status.FAILED
    assert failure(make_job(), make_task(), Unfixable()).status == Status.FAILED
    assert failure(make_job(), None, ValueError("no task")).status == Status.FAILED


def test_the_jobs_stored_retry_policy_wins_over_the_tasks():
    job = make_job(retry={"attempts": 3, "initial": 30.0, "give_up_on": ["builtins.KeyError"]})
    assert failure(job, make_task(), ValueError("x")).run_at >= time.time() + 29
    assert failure(job, make_task(), KeyError("k")).status == Status.FAILED


def test_a_run_that_continues_later_keeps_its_attempt_and_names_its_cursor():
    ctx = SimpleNamespace(throttled_seconds=1.5, cursor={"page": 7})
    now_again = continue_later(make_job(), ctx, ContinueLater(), reason="continue_later")  # type: ignore[arg-type]
    assert now_again.status == Status.WAITING and now_again.run_at is None and not now_again.spend_attempt
    assert now_again.reason == 'continue_later (cursor {"page": 7})' and now_again.throttled_seconds == 1.5
    later = continue_later(make_job(), ctx, ContinueLater(delay=60), reason="r")  # type: ignore[arg-type]
    assert later.status == Status.SCHEDULED and later.run_at >= time.time() + 59


def test_an_interrupted_run_is_cancelled_or_given_back_unspent():
    assert interrupted(make_job(), cancelled=True, worker_id="w").status == Status.CANCELLED
    released = interrupted(make_job(), cancelled=False, worker_id="w1")
    assert released.status == Status.WAITING and not released.spend_attempt and "w1" in released.reason


def test_an_unknown_task_fails_naming_the_worker():
    outcome = unknown_task(make_job(), "w9")
    assert outcome.status == Status.FAILED and outcome.error["type"] == "UnknownTask"
    assert "w9" in outcome.error["message"]


def test_the_hard_timeout_is_the_timeout_else_the_budget():
    assert hard_timeout(make_task(timeout=5.0, budget=60.0)) == 5.0
    assert hard_timeout(make_task(budget=60.0)) == 60.0
    assert hard_timeout(make_task()) is None


def test_the_arguments_put_the_context_first_only_for_a_task_that_takes_one():
    ctx = SimpleNamespace()

    def with_ctx(ctx, x):
        return x

    assert call_arguments(make_task(with_ctx), make_job(), ctx) == ((ctx,), {"x": 1})  # type: ignore[arg-type]
    assert call_arguments(make_task(), make_job(), ctx) == ((), {"x": 1})  # type: ignore[arg-type]
