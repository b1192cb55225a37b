"""The store's rules (``floodway.store.rules``), without a database: admission, acquire,
cancel, retry by hand, rescue and purge decide the same for both backends because both ask
these functions."""

from __future__ import annotations

import pytest

from floodway.errors import ConfigError, TransitionError
from floodway.jobs import Status
from floodway.limits import LimitSpec, Rate
from floodway.store.rules import (
    Admission,
    CancelAction,
    admit_one,
    cancel_action,
    check_retryable,
    lease_rescue,
    purgeable,
    worker_rescue,
)

NOW = 1_000.0


def fresh() -> list:
    return [0.0, 0.0, 0, 0, None]  # tat, paused_until, running, admitted, learned


def admission(*specs: LimitSpec, **states: list) -> Admission:
    a = Admission({s.name: s for s in specs}, NOW)
    for name, state in states.items():
        a.states[(name, "k")] = state
    return a


def test_a_rate_admits_its_burst_then_holds_until_the_next_slot():
    a = admission(LimitSpec("api", rate=Rate(10, 1.0), burst=2), api=fresh())
    assert a.admit("j1", [["api", "k"]])
    assert a.admit("j2", [["api", "k"]])
    assert not a.admit("j3", [["api", "k"]])
    assert a.blocked_ids == ["j3"]
    assert a.wake_at == pytest.approx(NOW + 0.1)
    assert a.states[("api", "k")][2:4] == [2, 2]  # running, admitted
    assert a.dirty == {("api", "k")}


def test_a_horizon_books_the_next_tokens_one_interval_apart_and_wakes_for_half_of_it():
    a = admission(LimitSpec("api", rate=Rate(10, 1.0), burst=2), api=fresh())
    a.horizon = 0.3
    for n in range(5):
        assert a.admit(f"j{n}", [["api", "k"]])
    assert not a.admit("j5", [["api", "k"]])
    # the burst passes now; the next three are booked 0.1 s apart, within the horizon
    assert "j0" not in a.start_at and "j1" not in a.start_at
    assert [a.start_at[f"j{n}"] for n in (2, 3, 4)] == pytest.approx([NOW + 0.1, NOW + 0.2, NOW + 0.3])
    # the next token (NOW + 0.4) is past the horizon: look again when half of it is free
    assert a.wake_at == pytest.approx(NOW + 0.4 - 0.15)
    assert a.states[("api", "k")][0] == pytest.approx(NOW + 0.5)  # as if j4 came at NOW + 0.3


def test_without_a_horizon_nothing_is_booked():
    a = admission(LimitSpec("api", rate=Rate(10, 1.0), burst=2), api=fresh())
    assert a.admit("j1", [["api", "k"]]) and a.admit("j2", [["api", "k"]])
    assert not a.admit("j3", [["api", "k"]])
    assert a.start_at == {} and a.wake_at == pytest.approx(NOW + 0.1)


def test_a_job_holding_two_rates_takes_both_tokens_at_the_later_moment():
    slow = fresh()
    slow[0] = NOW + 0.2  # its next token (burst 1) is due at NOW + 0.2
    a = admission(LimitSpec("fast", rate=Rate(100, 1.0)), LimitSpec("slow", rate=Rate(10, 1.0)), fast=fresh())
    a.states[("slow", "k")] = slow
    a.horizon = 0.5
    assert a.admit("j1", [["fast", "k"], ["slow", "k"]])
    assert a.start_at["j1"] == pytest.approx(NOW + 0.2)
    assert a.states[("fast", "k")][0] == pytest.approx(NOW + 0.21)  # taken at NOW + 0.2, not now
    assert a.states[("slow", "k")][0] == pytest.approx(NOW + 0.3)


def test_a_paused_key_books_nothing_ahead():
    paused = fresh()
    paused[1] = NOW + 0.01
    a = admission(LimitSpec("api", rate=Rate(10, 1.0)), api=paused)
    a.horizon = 1.0
    assert not a.admit("j1", [["api", "k"]])
    assert a.start_at == {} and a.wake_at == NOW + 0.01


def test_a_pause_holds_until_it_ends_and_comes_before_the_other_checks():
    paused = fresh()
    paused[1] = NOW + 30
    a = admission(LimitSpec("api", rate=Rate(100, 1.0), concurrency=5), api=paused)
    assert not a.admit("j1", [["api", "k"]])
    assert a.wake_at == NOW + 30
    assert not a.dirty


def test_a_full_concurrency_cap_holds_with_no_wake_time():
    full = fresh()
    full[2] = 3
    a = admission(LimitSpec("api", concurrency=3), api=full)
    assert not a.admit("j1", [["api", "k"]])
    assert a.wake_at is None  # a finishing job frees the slot, not the clock
    assert a.blocked_ids == ["j1"]


def test_a_job_is_admitted_against_all_its_limits_or_none():
    full = fresh()
    full[2] = 1
    a = admission(LimitSpec("a", rate=Rate(10, 1.0)), LimitSpec("b", concurrency=1), a=fresh(), b=full)
    assert not a.admit("j1", [["a", "k"], ["b", "k"]])
    assert a.states[("a", "k")] == fresh()  # nothing charged to the limit that would have admitted
    assert not a.dirty


def test_a_limit_no_longer_declared_holds_nothing_back():
    a = admission()
    assert a.admit("j1", [["gone", "k"]])


def test_a_key_another_claimer_holds_is_tried_again_shortly():
    a = admission(LimitSpec("api", rate=Rate(10, 1.0)))
    assert not a.admit("j1", [["api", "k"]])
    assert a.wake_at == pytest.approx(NOW + Admission.BUSY_RETRY)


def test_admit_one_charges_the_cost_and_tells_when_to_come_back():
    spec = LimitSpec("api", rate=Rate(1, 1.0), burst=3)
    ok, at, tat = admit_one(spec, 0.0, 0.0, 0, None, NOW, cost=3)
    assert ok and at == NOW and tat is not None
    ok, at, new_tat = admit_one(spec, tat, 0.0, 3, None, NOW, cost=1)
    assert not ok and at > NOW and new_tat is None
    assert admit_one(spec, 0.0, NOW + 5, 0, None, NOW) == (False, NOW + 5, None)
    assert admit_one(LimitSpec("free", concurrency=2), 0.0, 0.0, 0, None, NOW) == (True, NOW, None)


def test_admit_one_books_the_next_slot_within_its_horizon_and_never_while_paused():
    spec = LimitSpec("api", rate=Rate(10, 1.0), burst=1)  # one token per 100 ms
    tat = NOW + 0.3  # the key's line is booked 300 ms ahead (its claims)
    assert admit_one(spec, tat, 0.0, 5, None, NOW)[:2] == (False, pytest.approx(NOW + 0.3))
    ok, at, new_tat = admit_one(spec, tat, 0.0, 5, None, NOW, horizon=1.0)
    assert ok and at == pytest.approx(NOW + 0.3) and new_tat == pytest.approx(tat + 0.1)  # next in line
    assert admit_one(spec, tat, 0.0, 5, None, NOW, horizon=0.1) == (False, pytest.approx(NOW + 0.3), None)
    assert admit_one(spec, tat, NOW + 0.5, 5, None, NOW, horizon=1.0) == (False, NOW + 0.5, None)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (Status.RUNNING, CancelAction.REQUEST),
        (Status.CANCELLED, CancelAction.NOTHING),
        (Status.WAITING, CancelAction.CANCEL),
        (Status.SCHEDULED, CancelAction.CANCEL),
        (Status.RETRYING, CancelAction.CANCEL),
    ],
)
def test_cancel_asks_a_running_job_and_cancels_a_waiting_one(status, action):
    assert cancel_action(status) is action


@pytest.mark.parametrize("status", [Status.COMPLETE, Status.FAILED])
def test_a_finished_job_cannot_be_cancelled(status):
    with pytest.raises(TransitionError):
        cancel_action(status)


@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED, Status.RETRYING])
def test_failed_cancelled_and_retrying_jobs_can_be_retried_by_hand(status):
    check_retryable("j", status)


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SCHEDULED, Status.WAITING, Status.COMPLETE])
def test_other_jobs_cannot_be_retried_by_hand(status):
    with pytest.raises(TransitionError, match="only failed, cancelled or retrying"):
        check_retryable("j", status)


def test_an_expired_lease_spends_the_attempt_and_ends_a_job_on_its_last_one():
    assert lease_rescue("w1", 1, 3, False)[:2] == (Status.WAITING, "lease expired; rescued")
    assert lease_rescue("w1", 3, 3, False)[0] is Status.FAILED
    target, _, error = lease_rescue("w1", 1, 3, True)
    assert target is Status.CANCELLED and error["type"] == "WorkerLost" and "w1" in error["message"]


def test_a_dead_worker_gives_its_attempt_back_a_silent_one_does_not():
    target, _, _, give_back = worker_rescue("w1", 3, 3, False, 0, dead=True)
    assert target is Status.WAITING and give_back
    target, _, _, give_back = worker_rescue("w1", 3, 3, False, 0, dead=False)
    assert target is Status.FAILED and not give_back


def test_only_finished_jobs_are_purged():
    assert purgeable(["complete", Status.FAILED]) == [Status.COMPLETE, Status.FAILED]
    with pytest.raises(ConfigError, match="only finished jobs"):
        purgeable(["waiting"])


def test_status_guards_are_made_from_the_transition_table():
    from floodway.store.rules import CLAIM_FROM, IS_RUNNING, PROMOTE_FROM, guard

    assert CLAIM_FROM == "status = 'waiting'"
    assert PROMOTE_FROM == "status IN ('retrying', 'scheduled')"
    assert IS_RUNNING == "status = 'running'"
    with pytest.raises(TransitionError):  # complete is final: no guard can be written for leaving it
        guard(Status.WAITING, Status.COMPLETE)


def test_the_database_checks_the_same_status_list_as_the_code():
    import re
    from importlib import resources

    folder = resources.files("floodway.store") / "migrations"
    for backend in ("sqlite", "postgres"):
        script = (folder / backend / "0009_status_check.sql").read_text()
        for listed in re.findall(r"status\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", script):
            assert sorted(v.strip(" '\n") for v in listed.split(",")) == sorted(s.value for s in Status), backend


def test_sqlite_due_index_covers_the_statuses_promotion_reads():
    """SQLite uses a partial index only for a query that repeats its WHERE term: jobs_due's is
    the promotion guard, which the due-job queries state."""
    import re
    from importlib import resources

    from floodway.store.rules import PROMOTE_FROM
    from floodway.store.sqlite.claim import _DUE_RETRY, _DUE_SCHEDULED

    script = (resources.files("floodway.store") / "migrations" / "sqlite" / "0012_lighter_enqueue.sql").read_text()
    (condition,) = re.findall(r"CREATE INDEX jobs_due ON jobs \(status, run_at\) WHERE (.*);", script)
    assert condition == PROMOTE_FROM
    assert PROMOTE_FROM in _DUE_SCHEDULED and PROMOTE_FROM in _DUE_RETRY


# -- enqueue keys ------------------------------------------------------------------------------
def test_a_dedupe_window_returns_the_job_until_it_expires_whatever_its_status():
    from floodway.jobs import EnqueueKey
    from floodway.store.rules import KeyMatch, match_enqueue_key

    key = EnqueueKey("unique", "k", window=60)
    for status in Status:
        assert match_enqueue_key(key, status, expires_at=100.0, now=99.0) is KeyMatch.EXISTING
        assert match_enqueue_key(key, status, expires_at=100.0, now=100.0) is KeyMatch.NEW
    assert match_enqueue_key(key, None, expires_at=100.0, now=50.0) is KeyMatch.NEW  # purged


def test_unique_while_unfinished_ignores_the_window():
    from floodway.jobs import EnqueueKey
    from floodway.store.rules import KeyMatch, match_enqueue_key

    key = EnqueueKey("unique", "k", while_unfinished=True)
    for status in Status:
        expected = KeyMatch.NEW if status.is_final else KeyMatch.EXISTING
        assert match_enqueue_key(key, status, expires_at=None, now=1e12) is expected


def test_a_debounce_folds_only_into_a_job_that_has_not_started():
    from floodway.jobs import EnqueueKey
    from floodway.store.rules import KeyMatch, match_enqueue_key

    key = EnqueueKey("debounce", "k", window=5)
    folds = {s for s in Status if match_enqueue_key(key, s, None, 0.0) is KeyMatch.FOLD}
    assert folds == {Status.SCHEDULED, Status.WAITING}
    assert match_enqueue_key(key, None, None, 0.0) is KeyMatch.NEW


def test_a_debounced_run_waits_the_window_after_the_last_enqueue_but_at_most_max_wait():
    from floodway.jobs import EnqueueKey
    from floodway.store.rules import debounce_run_at

    assert debounce_run_at(EnqueueKey("debounce", "k", window=5), first_at=0.0, now=10.0) == 15.0
    bounded = EnqueueKey("debounce", "k", window=5, max_wait=12)
    assert debounce_run_at(bounded, first_at=0.0, now=4.0) == 9.0
    assert debounce_run_at(bounded, first_at=0.0, now=10.0) == 12.0
