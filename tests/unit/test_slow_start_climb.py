"""After a slow start's exit: telling a bucket from a window, and the climb back to the rate.

A bucket overflows as soon as the pace passes its leak rate, so the exit's measure (what was
accepted over the last second) reads it low; a window is full when it refuses, and reads right.
"""

from __future__ import annotations

import copy

import pytest

from floodway import slow_start
from floodway.quota import KEEP, PROBE_STEP, Learned, Observation, effective_rate, observe
from floodway.slow_start import (
    CLIMB_DOUBLING,
    CLIMB_HOLD,
    CLIMB_LAG,
    EXIT_LATE,
    LEAK_MIN,
    SLOW_EXIT,
    SLOW_START_DOUBLING,
)
from floodway.store.base import settled_tat

from .control_loop import NOW, simulate
from .test_quota import _slow_start_until, spec

#: a slow start that took 200 within its last second and overflowed at ~640/s
END = 100.0 + 7 * SLOW_START_DOUBLING


def _exit() -> tuple[Learned, float]:
    """The slow start's exit at END: the pace that overflowed is kept for the climb."""
    s = spec(adaptive=True)
    learned = _slow_start_until(s, END, 25)
    pace = effective_rate(s, learned, 0, END)
    learned, changed = observe(s, learned, 0, Observation(now=END, token_at=END - 0.01, throttled=1, wait=1.0))
    assert changed == "cut" and learned.rate == pytest.approx(200.0) and learned.over == pytest.approx(pace)
    assert learned.settle > END + 0.3  # every worker holds off as after a halving
    return learned, pace


def _keep_accepting(learned: Learned, start: float, until: float, per_second: float) -> Learned:
    """Reports of ``per_second`` accepted every 0.1 s: the evidence growth needs."""
    s = spec(adaptive=True)
    at = start
    while at < until:
        learned, _ = observe(s, learned, 0, Observation(now=at, accepted=round(per_second / 10), first_ok=at - 0.09))
        at += 0.1
    return learned


def test_what_follows_a_slow_starts_exit_shows_a_bucket_when_it_goes_on_taking_requests():
    assert slow_start.leaks(LEAK_MIN, 0)
    assert slow_start.leaks(LEAK_MIN, 6)  # a bucket takes its leak rate of a pace up to 3 x it
    assert not slow_start.leaks(LEAK_MIN, 7)
    assert not slow_start.leaks(LEAK_MIN - 1, 0)  # too few to tell


def test_a_window_refusing_what_was_in_flight_after_a_slow_starts_exit_keeps_its_hold_then_is_climbed():
    s = spec(adaptive=True)
    learned, pace = _exit()
    settle = learned.settle
    for i in range(6):  # a window that overflowed refuses everything sent after it filled
        obs = Observation(now=END + 0.01 + i * 0.004, token_at=END + 0.001 * (i + 1), throttled=1, wait=1.0)
        learned, changed = observe(s, learned, 0, obs)
        assert changed is None
    # responses accepted before the exit, reported just after it, show nothing
    learned, changed = observe(s, learned, 0, Observation(now=END + 0.05, accepted=5, first_ok=END - 0.05))
    assert changed is None and not learned.bucket and learned.settle == settle
    learned = _keep_accepting(learned, END + EXIT_LATE + 0.05, settle + CLIMB_HOLD + 5.0, 400)
    top = effective_rate(s, learned, 0, settle + CLIMB_HOLD - 0.01)
    assert top == pytest.approx(learned.rate)  # held at the exit pace until the window is full at it
    # then the climb doubles the pace every CLIMB_DOUBLING, towards SLOW_EXIT of what overflowed
    assert effective_rate(s, learned, 0, settle + CLIMB_HOLD + CLIMB_DOUBLING) == pytest.approx(2 * top, rel=0.02)
    assert effective_rate(s, learned, 0, settle + CLIMB_HOLD + 5.0) == pytest.approx(SLOW_EXIT * pace)


def test_a_bucket_taking_what_was_in_flight_after_a_slow_starts_exit_voids_its_hold_and_is_climbed_at_once():
    s = spec(adaptive=True)
    learned, pace = _exit()
    learned, changed = observe(s, learned, 0, Observation(now=END + 0.01, token_at=END + 0.001, throttled=1, wait=1.0))
    assert changed is None
    learned, changed = observe(s, learned, 0, Observation(now=END + 0.02, accepted=2, first_ok=END + 0.005))
    assert changed is None and not learned.bucket  # (too few yet)
    obs = Observation(now=END + 0.03, token_at=END + 0.002, throttled=1, wait=1.0, accepted=1, first_ok=END + 0.025)
    learned, changed = observe(s, learned, 0, obs)
    assert changed == "leak" and learned.bucket and learned.settle == END + 0.03
    # the store gives the exit's hold back: admissions go on at once
    assert settled_tat(s, END + 0.5, learned, 0, changed, END + 0.03) == END + 0.03
    assert settled_tat(s, END + 0.01, learned, 0, changed, END + 0.03) == END + 0.01
    learned = _keep_accepting(learned, END + 0.1, END + 1.0, 200)
    assert effective_rate(s, learned, 0, END + CLIMB_DOUBLING) == pytest.approx(2 * learned.rate, rel=0.02)


def test_a_climbs_overflow_is_cut_to_just_under_the_pace_it_had_a_moment_before_not_to_its_average():
    s = spec(adaptive=True)
    learned, pace = _exit()
    for i, now in enumerate((END + 0.01, END + 0.02)):
        obs = Observation(now=now, token_at=END + 0.001, throttled=1, wait=1.0, accepted=2, first_ok=now - 0.005)
        learned, changed = observe(s, learned, 0, obs)
    assert learned.bucket
    learned = _keep_accepting(learned, END + 0.1, END + 0.75, 200)  # the climb's average
    now = END + 0.8
    before = copy.deepcopy(learned)
    climbed = effective_rate(s, before, 0, now - 0.01 - CLIMB_LAG)
    assert climbed > 1.5 * 200
    learned, changed = observe(s, learned, 0, Observation(now=now, token_at=now - 0.01, throttled=1, wait=1.0))
    assert changed == "cut" and learned.over == 0
    assert learned.rate == pytest.approx(KEEP * climbed)  # not the ~200/s accepted over the last second
    assert learned.high == pytest.approx(climbed)
    # from here it is an ordinary probe: a hold just under what overflowed, then small steps
    later = effective_rate(s, learned, 0, now + 1.0)
    assert later <= KEEP * climbed * (1 + 4 * PROBE_STEP)


@pytest.mark.parametrize("r", [50, 200])
def test_the_loop_with_no_rate_drains_a_bucket_near_its_leak_rate_within_three_seconds(r):
    per_second, refused, rates = simulate(lambda t: r, spec(adaptive=True), seconds=8, report_every=0.1)
    after = per_second[3:]
    # (the exit alone reads ~40 % of a bucket's leak rate: held there, then probed in small
    # steps, the pace took until the sixth second to reach it)
    assert sum(after) / len(after) >= 0.93 * r, per_second
    assert refused / (sum(per_second) + refused) <= 0.03, (refused, per_second)


@pytest.mark.parametrize("r", [50, 200])
def test_the_loop_with_no_rate_drains_a_sliding_window_at_its_quota_and_the_climb_costs_few_refusals(r):
    per_second, refused, rates = simulate(lambda t: r, spec(adaptive=True), seconds=8, report_every=0.1, window=True)
    after = per_second[2:]
    assert sum(after) / len(after) >= 0.95 * r, per_second
    assert refused / (sum(per_second) + refused) <= 0.03, (refused, per_second)
    assert 0.9 * r <= rates[-1] <= 1.1 * r, rates[-20:]


def test_a_declared_pace_cut_to_what_a_drains_first_moments_accepted_climbs_back_towards_the_pace_refused():
    """Declared 2 x too high into a small bucket: what the drain's first tenths of a second show
    accepted reads low (responses not reported yet, first requests sent late), and the pace is
    cut to it. A probe's small steps took seconds back from there; it climbs as after a slow
    start's exit."""
    high = spec(rate="400/s", burst=5)
    learned, _ = observe(high, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    obs = Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0)
    learned, changed = observe(high, learned, 8, obs)
    refused_at = effective_rate(high, learned, 8, NOW + 0.01)
    admitted, t = 8, NOW + 0.008
    while changed != "cut" or t < NOW + 0.05:  # half refused, until it is measured
        t += 0.01
        admitted += 4
        learned, _ = observe(high, learned, admitted, Observation(now=t, accepted=2, first_ok=t - 0.01))
        obs = Observation(now=t, token_at=t - 0.005, throttled=1, wait=1.0)
        learned, changed = observe(high, learned, admitted, obs)
    assert learned.rate < 0.75 * refused_at and learned.over == pytest.approx(refused_at)
    cut_at = learned.since
    learned = _keep_accepting(learned, t + 0.1, cut_at + CLIMB_HOLD + 1.0, 200)
    top = effective_rate(high, learned, admitted, cut_at + CLIMB_HOLD - 0.01)
    assert top == pytest.approx(max(KEEP * learned.high, learned.rate))
    climbed = effective_rate(high, learned, admitted, cut_at + CLIMB_HOLD + CLIMB_DOUBLING)
    assert climbed == pytest.approx(min(2 * top, SLOW_EXIT * refused_at), rel=0.02)
    assert climbed > 1.2 * top  # (a probe: 1.02 x by now)


def test_a_pace_far_above_what_a_drains_first_moments_accepted_is_at_most_halved_at_a_time():
    """What the first tenths of a second show accepted reads low, most of all where jobs start
    late (a database's claims): a cut to it alone landed at 40 % of a quota the pace was only 2 x
    above. Each cut at most halves; a pace still far above is cut again a tenth of a second on."""
    high = spec(rate="800/s", burst=5)
    learned, _ = observe(high, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    obs = Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0)
    learned, changed = observe(high, learned, 8, obs)
    paces, admitted, t = [effective_rate(high, learned, 8, NOW + 0.01)], 8, NOW + 0.008
    while t < NOW + 0.6:  # 100/s accepted, the rest refused
        t += 0.01
        admitted += 8
        learned, _ = observe(high, learned, admitted, Observation(now=t, accepted=1, first_ok=t - 0.01))
        obs = Observation(now=t, token_at=t - 0.005, throttled=1, wait=1.0)
        learned, changed = observe(high, learned, admitted, obs)
        if changed == "cut":
            paces.append(learned.rate)
    assert len(paces) >= 3 and paces[-1] <= 1.5 * 100  # cut until near what is accepted ...
    assert all(b >= 0.5 * a * 0.999 for a, b in zip(paces, paces[1:])), paces  # ... by halvings at most


def test_a_refusal_of_what_was_sent_during_the_climbs_hold_takes_the_ordinary_cut():
    """The climb's cut (just under the pace it had a moment before) is for a climb that ran past
    the rate. A refusal of a request sent while the pace still held after a cut is the held
    pace's: it was too high, and it is cut by what was refused like any other."""
    high = spec(rate="800/s", burst=5)
    learned, _ = observe(high, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    obs = Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0)
    learned, changed = observe(high, learned, 8, obs)
    admitted, t = 8, NOW + 0.008
    while learned.over == 0:  # 100/s accepted, 300/s refused, until measured
        t += 0.01
        admitted += 4
        learned, _ = observe(high, learned, admitted, Observation(now=t, accepted=1, first_ok=t - 0.01))
        obs = Observation(now=t, token_at=t - 0.005, throttled=1, wait=1.0)
        learned, changed = observe(high, learned, admitted, obs)
        assert t < NOW + 0.3, "never cut to what was accepted"
    assert changed == "cut"
    cut_at = learned.since
    while learned.over:  # a third of what the held pace sends refused: it is cut again
        held = effective_rate(high, learned, admitted, t)
        t += 0.01
        admitted += 4
        learned, _ = observe(high, learned, admitted, Observation(now=t, accepted=2, first_ok=t - 0.01))
        obs = Observation(now=t, token_at=t - 0.005, throttled=1, wait=1.0)
        learned, changed = observe(high, learned, admitted, obs)
        assert t < cut_at + CLIMB_HOLD, "no cut before the climb would begin"
    assert changed == "cut" and learned.rate < KEEP * held * 0.99, (held, learned.rate)  # (a climb's: >= KEEP x held)
