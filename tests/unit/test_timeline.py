"""``timeline_from_rows``: a job's timeline from its row and its stored events, including
timelines stored under earlier rules (every event stored), which must not gain duplicates."""

from floodway.jobs import Status
from floodway.store.base import stores_run_events, timeline_from_rows

W = "worker-1"


def job_row(status, *, attempt=0, worker=None, started=None, finished=None, created=100.0):
    return (0, 0, created, None, status, attempt, None, worker, None, started, finished)


def event_row(seq, at, src, dst, attempt, *, worker=None, reason=None, error=None):
    return (1, seq, at, src, dst, attempt, error, worker, reason, None, None)


def edges(events):
    return [(e.from_status and e.from_status.value, e.to_status.value, e.attempt, e.worker_id, e.at) for e in events]


def test_waiting_job_is_its_enqueue():
    assert edges(timeline_from_rows("j", [job_row("waiting")])) == [(None, "waiting", 0, None, 100.0)]


def test_running_job_with_nothing_stored_has_its_claim_from_the_row():
    rows = [job_row("running", attempt=1, worker=W, started=101.0)]
    assert edges(timeline_from_rows("j", rows)) == [
        (None, "waiting", 0, None, 100.0),
        ("waiting", "running", 1, W, 101.0),
    ]


def test_scheduled_job_promoted_then_claimed():
    rows = [
        job_row("running", attempt=1, worker=W, started=105.0),
        event_row(1, 104.0, "scheduled", "waiting", 0, reason="due"),
    ]
    assert edges(timeline_from_rows("j", rows)) == [
        (None, "scheduled", 0, None, 100.0),
        ("scheduled", "waiting", 0, None, 104.0),
        ("waiting", "running", 1, W, 105.0),
    ]


def test_timeline_stored_whole_comes_out_as_stored():
    # the rule before the enqueue was taken from the row: every event stored, the first with
    # no from_status
    rows = [
        job_row("complete", attempt=1, worker=W, started=101.0, finished=102.0),
        event_row(1, 100.0, None, "waiting", 0, reason="enqueued"),
        event_row(2, 101.0, "waiting", "running", 1, worker=W),
        event_row(3, 102.0, "running", "complete", 1, worker=W),
    ]
    assert edges(timeline_from_rows("j", rows)) == [
        (None, "waiting", 0, None, 100.0),
        ("waiting", "running", 1, W, 101.0),
        ("running", "complete", 1, W, 102.0),
    ]


def test_claim_stored_then_plain_completion_adds_only_the_completion():
    # claimed under the rule that stored the claim, completed under the one that does not
    rows = [
        job_row("complete", attempt=1, worker=W, started=101.0, finished=102.0),
        event_row(1, 101.0, "waiting", "running", 1, worker=W),
    ]
    assert edges(timeline_from_rows("j", rows)) == [
        (None, "waiting", 0, None, 100.0),
        ("waiting", "running", 1, W, 101.0),
        ("running", "complete", 1, W, 102.0),
    ]


def test_a_stored_claim_of_an_earlier_attempt_does_not_hide_the_current_one():
    rows = [
        job_row("running", attempt=2, worker="worker-2", started=110.0),
        event_row(1, 101.0, "waiting", "running", 1, worker=W),
        event_row(2, 103.0, "running", "waiting", 1, worker=W, reason="lease expired; rescued"),
    ]
    assert [e[:4] for e in edges(timeline_from_rows("j", rows))] == [
        (None, "waiting", 0, None),
        ("waiting", "running", 1, W),
        ("running", "waiting", 1, W),
        ("waiting", "running", 2, "worker-2"),
    ]


def test_missing_job_row_gives_the_stored_events_only():
    rows = [event_row(1, 101.0, "running", "failed", 1, worker=W)]
    assert edges(timeline_from_rows("j", rows)) == [("running", "failed", 1, W, 101.0)]
    assert timeline_from_rows("j", []) == []


def test_only_a_plain_completion_goes_unstored():
    assert not stores_run_events(Status.COMPLETE, None, None)
    assert stores_run_events(Status.COMPLETE, None, "done early")
    assert stores_run_events(Status.COMPLETE, {"type": "E"}, None)
    for status in (Status.FAILED, Status.RETRYING, Status.WAITING, Status.SCHEDULED, Status.CANCELLED):
        assert stores_run_events(status, None, None)
