"""The transition table: every allowed edge, and every refused one."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floodway.errors import TransitionError
from floodway.jobs import FINAL_STATUSES, TRANSITIONS, Status, can_transition, check_transition

ALLOWED = {
    (None, Status.WAITING), (None, Status.SCHEDULED),
    (Status.SCHEDULED, Status.WAITING), (Status.SCHEDULED, Status.CANCELLED),
    (Status.WAITING, Status.RUNNING), (Status.WAITING, Status.CANCELLED), (Status.WAITING, Status.SCHEDULED),
    (Status.RUNNING, Status.COMPLETE), (Status.RUNNING, Status.FAILED), (Status.RUNNING, Status.RETRYING),
    (Status.RUNNING, Status.WAITING), (Status.RUNNING, Status.SCHEDULED), (Status.RUNNING, Status.CANCELLED),
    (Status.RETRYING, Status.RUNNING), (Status.RETRYING, Status.CANCELLED), (Status.RETRYING, Status.WAITING),
    (Status.FAILED, Status.WAITING), (Status.CANCELLED, Status.WAITING),
}


def test_statuses_are_seed_002s_plus_cancelled():
    assert [s.value for s in Status] == [
        "scheduled", "waiting", "running", "retrying", "failed", "complete", "cancelled"]


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
