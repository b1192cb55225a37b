"""The transition table: every allowed edge, and every refused one."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floodway.errors import TransitionError
from floodway.jobs import FINAL_STATUSES, TRANSITIONS, Status, can_transition, check_transition

ALLOWED = {
    (None, Status.WAITING),
    (None, Status.SCHEDULED),
    (Status.SCHEDULED, Status.WAITING),
    (Status.SCHEDULED, Status.CANCELLED),
    (Status.WAITING, Status.RUNNING),
    (Status.WAITING, Status.CANCELLED),
    (Status.WAITING, Status.SCHEDULED),
    (Status.RUNNING, Status.COMPLETE),
    (Status.RUNNING, Status.FAILED),
    (Status.RUNNING, Status.RETRYING),
    (Status.RUNNING, Status.WAITING),
    (Status.RUNNING, Status.SCHEDULED),
    (Status.RUNNING, Status.CANCELLED),
    (Status.RETRYING, Status.RUNNING),
    (Status.RETRYING, Status.CANCELLED),
    (Status.RETRYING, Status.WAITING),
    (Status.FAILED, Status.WAITING),
    (Status.CANCELLED, Status.WAITING),
}


def test_statuses_are_the_bulk_job_names_plus_cancelled():
    assert [s.value for s in Status] == [
        "scheduled",
        "waiting",
        "running",
        "retrying",
        "failed",
        "complete",
        "cancelled",
    ]


@pytest.mark.parametrize("source, target", sorted(ALLOWED, key=str))
def test_allowed(source, target):
    assert can_transition(source, target)
    check_transition(source, target)


@pytest.mark.parametrize(
    "source, target",
    [(s, t) for s, t in itertools.product([None, *Status], Status) if (s, t) not in ALLOWED],
)
def test_refused(source, target):
    assert not can_transition(source, target)
    with pytest.raises(TransitionError):
        check_transition(source, target)


def test_complete_is_terminal_and_finals_only_go_back_to_waiting():
    assert TRANSITIONS[Status.COMPLETE] == frozenset()
    for status in FINAL_STATUSES - {Status.COMPLETE}:
        assert TRANSITIONS[status] == {Status.WAITING}


@given(st.lists(st.sampled_from(list(Status)), min_size=1, max_size=30))
def test_walks_through_the_table_never_leave_complete(path):
    """Any path the table allows, once complete, stays complete."""
    current = None
    for target in path:
        if can_transition(current, target):
            if current is Status.COMPLETE:
                pytest.fail("left complete")
            current = target
    assert current is None or isinstance(current, Status)


def test_job_from_row_equals_the_constructed_job_field_for_field():
    """``job_from_row`` fills the frozen dataclass through its ``__dict__``: every field must be
    set, with the value the constructor would give, and the job must stay frozen."""
    import dataclasses
    import json

    from floodway.jobs import Job
    from floodway.store.base import job_from_row

    row = (
        "j1",
        "task",
        '{"n": 1}',
        "q",
        "running",
        5,
        2,
        3,
        '{"attempts": 2}',
        10.0,
        "acme",
        '{"ok": true}',
        '{"type": "E"}',
        "w1",
        40.0,
        1,
        1.0,
        2.0,
        3.0,
        4.0,
        '[["api", "acme"]]',
        "acme",
        0.5,
        "orders:acme",
        0,
        '{"traceparent": "00-1-2-01"}',
    )
    built = Job(
        id="j1",
        task="task",
        args={"n": 1},
        queue="q",
        status=Status.RUNNING,
        priority=5,
        attempt=2,
        max_attempts=3,
        run_at=10.0,
        created_at=1.0,
        updated_at=2.0,
        tenant="acme",
        retry={"attempts": 2},
        result={"ok": True},
        error={"type": "E"},
        worker_id="w1",
        lease_until=40.0,
        started_at=3.0,
        finished_at=4.0,
        cancel_requested=True,
        limits=(("api", "acme"),),
        fair_key="acme",
        throttled_seconds=0.5,
        shared_state="orders:acme",
        paused=False,
        trace='{"traceparent": "00-1-2-01"}',
    )
    job = job_from_row(row)
    assert job == built
    assert set(vars(job)) == {f.name for f in dataclasses.fields(Job)}
    assert job.status is Status.RUNNING and job.cancel_requested is True and job.paused is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = Status.COMPLETE  # type: ignore[misc]
    assert json.loads(json.dumps(job.to_dict()))["status"] == "running"
