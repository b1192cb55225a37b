"""Learning where a fixed window really ends (floodway.window_ends) from resets rounded up to a
whole second: pure functions on a controlled clock, against simulated windows whose real ends
are known exactly. The real-HTTP, real-process version is in tests/contract/test_quota_http.py.
"""

from __future__ import annotations

import math
import random

import pytest

from floodway import window_ends as we
from floodway.http_reports import Reports
from floodway.limits import LimitSpec
from floodway.quota import Learned, Observation, observe, spent_until

RTT = 0.004  # a loopback round trip


def drive(e0: float, length: float, windows: int, spent_before: float, *, ietf: bool = False, seed: int = 0):
    """Simulated windows ending at e0 + k * length, each budget spent ``spent_before`` seconds
    before its end (at most, jittered). Yields per window: (real end, when the key resumed,
    how many requests went out before the real end after the budget was spent, the state)."""
    rng = random.Random(seed)
    end: list[float] | None = None

    def stated(e: float, t: float) -> float:
        return t + math.ceil(e - t) if ietf else float(math.ceil(e))

    for k in range(windows):
        e = e0 + k * length
        sent = e - rng.uniform(0.001, spent_before)
        now = sent + RTT
        at, end = we.resume(end, now, stated(e, sent), sent, length if ietf else None)
        early = 0
        while at < e:  # a request sent at `at` finds the window still open: refused
            early += 1
            assert early == 1, "a second request went out early in one window"
            at, end = we.resume(end, at + RTT, stated(e, at), at, length if ietf else None)
        assert at >= e - 1e-9
        # the first response of the next window, read a round trip later
        first = at + RTT
        end = we.renewed(end, first, stated(e + length, at), stated(e, sent), length if ietf else None)
        yield e, at, early, end


@pytest.mark.parametrize("ietf", [False, True], ids=["epoch-reset", "seconds-reset"])
@pytest.mark.parametrize("phase", [0.02, 0.37, 0.5, 0.91, 0.999])
def test_the_learned_end_holds_the_real_end_and_narrows_to_within_a_round_trip(phase, ietf):
    results = list(drive(1_000_000.0 + phase, 4.0, 8, 0.01, ietf=ietf))
    for e, at, _, end in results:
        assert end is not None
        lo, hi = end[we.LO], end[we.HI]
        assert lo < e <= hi + 1e-9, (e, end)  # the real end always lies in the learned interval
    # after a few windows the pause ends within a few round trips of the real end, not at the
    # stated reset (up to a second later)
    lost = [at - e for e, at, _, _ in results[3:]]
    assert max(lost) <= we.KNOWN + 3 * RTT, lost
    early = sum(n for _, _, n, _ in results)
    assert early <= 3, early  # probes refused: a few while learning, never more than one a window


def test_a_budget_spent_long_before_the_end_is_probed_once_a_window():
    results = list(drive(2_000_000.63, 4.0, 10, 0.9, seed=3))
    assert all(n <= 1 for _, _, n, _ in results)
    e, at, _, end = results[-1]
    assert end is not None and end[we.HI] - end[we.LO] <= 0.2, end


def test_a_window_that_moved_is_learned_again():
    # windows learned at one phase, then the destination's windows start over half a second later
    *_, (_, _, _, end) = drive(3_000_000.2, 4.0, 6, 0.01)
    assert end is not None
    e = end[we.HI] + 4.0 + 0.5  # the next end, moved
    sent = e - 0.01
    at, end2 = we.resume(end, sent + RTT, float(math.ceil(e)), sent)
    # nothing learned contradicts this window yet: it may resume before the moved end, and then
    # exactly one request is refused, after which the key waits for what the reset states
    if at < e:
        at, end2 = we.resume(end2, at + RTT, float(math.ceil(e)), at)
    assert at >= e
    assert end2[we.LO] < e <= end2[we.HI]


def test_nothing_learned_resumes_at_one_probe_early_in_the_stated_second():
    at, end = we.resume(None, 100.2 + RTT, 101.0, 100.2)
    assert end[we.LO] == pytest.approx(100.2) and end[we.HI] == 101.0
    assert at == pytest.approx(100.2 + we.PROBE_SHARE * 0.8)


def test_a_pace_follows_the_learned_end_only_once_it_is_known_well():
    assert we.expected(None, 101.0) is None
    wide = [100.0, 101.0, 4.0, 101.0, 101.0]
    assert we.expected(wide, 105.0) is None
    narrow = [100.30, 100.32, 4.0, 100.32, 101.0]
    assert we.expected(narrow, 105.0) == pytest.approx(104.30)


def test_unreadable_learned_state_is_forgotten():
    assert we.check(None) is None
    assert we.check([1, 2]) is None
    assert we.check([1, 2, "x", 4, 5]) is None
    assert we.check([1, 2, float("nan"), 4, 5]) is None
    assert we.check([1, 2, 3, 4, 5]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_the_store_rule_keeps_the_learned_end_in_the_learned_state():
    until, learned = spent_until(None, 100.21, 101.0, 100.2)
    assert 100.2 < until < 101.0
    again = Learned.loads(learned.dumps())
    assert again is not None and again.reset_end == learned.reset_end
    # the first response of the next window, reported: the end came before it
    spec = LimitSpec.build("api", rate="50/s")
    obs = Observation(until + RTT, accepted=1, renewed=until + RTT, renewed_reset=105.0, renewed_from=101.0)
    state, _ = observe(spec, again, 0, obs)
    assert state.reset_end is not None
    assert state.reset_end[we.HI] == pytest.approx(until + RTT)
    assert state.reset_end[we.LENGTH] == 4.0  # two epoch resets: the windows' length


def test_a_process_reports_the_first_response_of_a_new_window_at_once():
    reports = Reports()
    pair = ("api", "")
    assert reports.add(pair, 10.0, {"remaining": 5, "reset_at": 11.0})  # the first report
    assert not reports.add(pair, 10.01, {"remaining": 4, "reset_at": 11.0})
    assert reports.add(pair, 10.02, {"remaining": 199, "reset_at": 15.0})  # a new window: at once
    accepted, fields, first = reports.take(pair, 10.03)
    assert accepted == 3 and first == 10.0
    assert (fields["renewed"], fields["renewed_reset"], fields["renewed_from"]) == (10.02, 15.0, 11.0)
    # seconds from the response (``t``): within a window the reset moves by less than a second
    assert not reports.add(pair, 10.1, {"remaining": 198, "reset_at": 15.7})
    assert "renewed" not in reports.take(pair, 10.2)[1]


def test_a_longer_pause_is_never_shortened_and_is_what_the_probe_is_measured_from():
    at, end = we.resume(None, 100.21, 101.0, 100.2, paused=100.9)
    assert at == 100.9 and end[we.AT] == 100.9
    # a request the window refused, sent before that pause ended, is no probe
    at, end = we.resume(end, 100.5, 101.0, 100.45, paused=100.9)
    assert at == 100.9 and end[we.LO] == pytest.approx(100.45)
