"""The learned-quota rules (floodway.quota) alone: pure functions, no database, no network.

The last tests drive the rules against a simulated destination (a GCRA bucket, the same
arithmetic a real leaky-bucket API uses) in simulated time, so the control loop's invariants —
it ends near the real rate, it refuses little, it follows a quota that changes — are checked
exactly and deterministically. The real-HTTP, real-process versions are in test_quota_http.py.
"""

from __future__ import annotations

import math

import pytest

from floodway import slow_start
from floodway.http_reports import REPORT_INTERVAL, Reports
from floodway.limits import LimitSpec
from floodway.quota import (
    APPROACH,
    DEEP_MIN,
    EARLY,
    HOLD,
    HUSH,
    HUSH_AFTER,
    IN_A_ROW,
    KEEP,
    MAX_RATE,
    MIN_CUT,
    PAST,
    PEAK_JUMP,
    PEAK_LEAD,
    PEAK_TIME,
    Learned,
    Observation,
    classify_wait,
    effective_burst,
    effective_rate,
    observe,
    overflow_retry,
)
from floodway.slow_start import EXIT_LATE, SLOW_EXIT, SLOW_START_DOUBLING, demonstrated, note
from floodway.store.base import HOLD_REASON, WINDOW_REASON, held_until, settled_tat

from .control_loop import NOW, simulate


def spec(**kw) -> LimitSpec:
    return LimitSpec.build("api", **kw)


# -- the effective rate ------------------------------------------------------------------------


def test_a_plain_limit_paces_at_its_declared_rate_until_something_is_learned():
    assert effective_rate(spec(rate="50/s"), None, 0, 0.0) == 50
    assert effective_rate(spec(rate="50/s"), None, 10**6, 1e6) == 50
    assert effective_rate(spec(concurrency=3), None, 0, 0.0) is None


def test_a_declared_rate_is_a_ceiling_unless_the_limit_is_adaptive():
    learned = Learned(rate=500.0, source="headers")
    assert effective_rate(spec(rate="50/s"), learned, 0, 0.0) == 50
    assert effective_rate(spec(rate="50/s", adaptive=True), learned, 0, 0.0) == 500
    assert effective_rate(spec(rate="50/s", adaptive=True, ceiling="100/s"), learned, 0, 0.0) == 100
    assert effective_rate(spec(adaptive=True, floor="20/s"), Learned(rate=1.0, source="headers"), 0, 0.0) == 20


def feed(s, learned, start: float, seconds: float, per_second: float):
    """Report ``per_second`` accepted responses every 0.1 s for ``seconds``."""
    for i in range(int(seconds * 10)):
        learned, _ = observe(s, learned, 0, Observation(now=start + i / 10, accepted=int(per_second / 10)))
    return learned


def test_an_adaptive_limit_without_a_rate_slow_starts_and_doubles_while_responses_come():
    s = spec(adaptive=True)
    first = effective_rate(s, None, 0, 100.0)
    assert 0 < first <= 10
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1))
    rates = []
    for second in range(3):
        learned = feed(s, learned, 100.0 + second, 1.0, 400.0)
        rates.append(effective_rate(s, learned, 0, 101.0 + second))
    assert rates == sorted(rates) and rates[-1] > 50 * first
    # after a quiet spell (nothing accepted lately) it starts again from the cautious rate
    assert effective_rate(s, learned, 0, 200.0) == first


def test_a_slow_start_reaches_any_quota_from_10_to_1000_per_second_soon_and_by_bounded_steps():
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.1, accepted=1, first_ok=100.0))
    learned = feed(s, learned, 100.2, 1.5, 400.0)
    reached = {
        q: next(t / 100 for t in range(0, 300) if effective_rate(s, learned, 0, 100 + t / 100) >= q)
        for q in (10, 200, 1000)
    }
    assert reached[10] <= 0.25 and reached[200] <= 1.1 and reached[1000] <= 1.55, reached
    # what a refusal heard at a worker's next report (REPORT_INTERVAL on) can have overshot by
    for t in (0.0, 0.5, 1.0):
        assert slow_start.pace(100.0, 100.0 + t + REPORT_INTERVAL) <= 1.5 * slow_start.pace(100.0, 100.0 + t)


def test_an_adaptive_declared_rate_holds_then_probes_above_while_traffic_flows():
    s = spec(rate="50/s", adaptive=True)
    learned = feed(s, None, 0.0, HOLD + 3, 50.0)
    assert effective_rate(s, learned, 0, HOLD * 0.9) == 50
    assert 50 < effective_rate(s, learned, 0, HOLD + 2.9) <= 3 * 50 * 1.01
    # an idle key holds
    assert effective_rate(s, learned, 0, 1000.0) == 50


def test_learned_rates_are_never_zero_nor_infinite():
    s = spec(adaptive=True)
    assert effective_rate(s, Learned(rate=1e-12, source="headers"), 0, 0.0) > 0
    assert effective_rate(s, Learned(rate=float("inf"), source="headers"), 0, 0.0) <= MAX_RATE
    huge = effective_rate(s, Learned(rate=5.0, source="429s", high=6.0), 10**12, 1e12)
    assert math.isfinite(huge) and huge <= MAX_RATE


def test_a_slow_start_counts_what_was_accepted_within_any_second_of_its_recent_reports():
    recent = None
    for at, n in [(10.0, 5), (10.02, 5), (10.5, 40), (11.0, 60), (11.4, 100)]:
        recent = note(recent, at, n)
    assert recent[0] == [10.0, 10.0]  # (reports this close together are kept as one)
    assert demonstrated(recent, 11.4) == 200.0  # (10.4, 11.4]: 40 + 60 + 100
    assert demonstrated(recent, 11.0) == 100.0  # (10.0, 11.0]: 40 + 60
    assert demonstrated(note(recent, 12.9, 0), 12.9) is None  # older than RECENT: forgotten
    assert demonstrated(None, 1.0) is None


#: a slow start from 100.0 whose pace is ~280/s here (5.8 doublings)
END = 100.0 + 5.8 * SLOW_START_DOUBLING


def _slow_start_until(s, end: float, per_report: int):
    """A slow start whose clock started at 100.0 (its first response, reported at 100.1), then
    eight reports of ``per_report`` accepted 0.125 s apart, the last at ``end`` - 0.025."""
    learned, _ = observe(s, None, 0, Observation(now=100.1, accepted=1, first_ok=100.0))
    assert learned.start == 100.0  # the clock starts at the first response, not its report
    for k in range(8):
        learned, _ = observe(s, learned, 0, Observation(now=end - 0.025 - (7 - k) * 0.125, accepted=per_report))
    return learned


def test_a_slow_start_ends_at_what_the_destination_accepted_not_at_half_its_pace():
    s = spec(adaptive=True)
    learned = _slow_start_until(s, END, 25)  # 200 accepted within the last second
    pace = effective_rate(s, learned, 0, END)
    assert 250 < pace < 300
    learned, changed = observe(s, learned, 0, Observation(now=END, token_at=END - 0.01, throttled=1, wait=1.0))
    assert changed == "cut"
    # not half the pace (~139/s): the 200 accepted, climbing back to no more than 1.05 x that
    assert learned.rate == pytest.approx(200.0)
    assert effective_rate(s, learned, 0, END + APPROACH) <= 200 * 1.05
    # every worker still holds off as long as after a halving: the window is full
    assert learned.settle == pytest.approx(END + 0.5)
    assert learned.rate <= SLOW_EXIT * pace  # (the end of a slow start is always a cut)


def test_late_reports_just_after_a_slow_starts_end_raise_its_pace_and_never_lower_it():
    s = spec(adaptive=True)
    learned = _slow_start_until(s, END, 25)
    learned, _ = observe(s, learned, 0, Observation(now=END, token_at=END - 0.01, throttled=1, wait=1.0))
    assert learned.rate == pytest.approx(200.0)
    # another process's responses from before the end, reported just after it
    learned, changed = observe(s, learned, 0, Observation(now=END + 0.05, accepted=15))
    assert changed is None and learned.rate == pytest.approx(215.0) and learned.high >= 215.0
    learned, _ = observe(s, learned, 0, Observation(now=END + 0.15, accepted=1))
    assert learned.rate == pytest.approx(215.0)  # (a smaller count lowers nothing)
    # later reports are what the new pace sends: they measure nothing about the end
    learned, _ = observe(s, learned, 0, Observation(now=END + EXIT_LATE + 0.01, accepted=100))
    assert learned.rate == pytest.approx(215.0) and learned.exit == 0 and learned.recent is None
    # a declared rate is no slow start: its first refusal halves as before
    d = spec(rate="400/s", adaptive=True)
    declared = _slow_start_until(d, END, 25)
    declared, _ = observe(d, declared, 0, Observation(now=END, token_at=END - 0.01, throttled=1, wait=1.0))
    assert declared.exit == 0 and declared.rate < 200


# -- refusals ------------------------------------------------------------------------------


def test_a_short_wait_is_congestion_and_a_long_one_or_an_empty_budget_is_exhaustion():
    assert classify_wait(None, None) == "overflow"
    assert classify_wait(1.0, None) == "overflow"
    assert classify_wait(30.0, None) == "exhaustion"
    assert classify_wait(0.5, 0) == "exhaustion"


def test_a_request_refused_for_congestion_waits_what_was_asked_or_else_the_rounds_length():
    assert overflow_retry(1.0) == 1.0 and overflow_retry(0.3) == 0.3
    assert overflow_retry(1.0, "window") == 0.0  # held by the key until the window's reset
    # nothing stated (a bare 429, or a wait of 0): as long as the round its refusal belongs to
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=50, first_ok=99.5))
    learned, changed = observe(s, learned, 0, Observation(now=100.2, token_at=100.1, throttled=1, wait=1.0))
    assert changed == "cut"
    assert overflow_retry(None) == overflow_retry(0.0) == pytest.approx(learned.lock - 100.2)
    assert overflow_retry(None) < 1.0


def test_one_round_of_refusals_cuts_once():
    s = spec(rate="100/s")
    learned, changed = observe(s, None, 500, Observation(now=10.0, token_at=9.9, throttled=1))
    assert changed == "cut"
    cut = effective_rate(s, learned, 500, 10.0)
    assert 50 <= cut < 100
    # refusals of requests admitted before the cut belong to the same round
    for i in range(20):
        learned, changed = observe(s, learned, 500 + i, Observation(now=10.01 + i / 1000, token_at=9.95, throttled=1))
        assert changed is None
    assert effective_rate(s, learned, 520, 10.03) >= cut * 0.99
    assert learned.throttled == 21 and learned.cuts == 1


def test_a_cut_never_goes_below_what_the_destination_accepted():
    s = spec(rate="1000/s")
    learned = Learned()
    now = 100.0
    for i in range(20):  # 2 s of reports: 300 accepted per second
        learned, _ = observe(s, learned, 0, Observation(now=now + i * 0.1, accepted=30))
    learned, changed = observe(s, learned, 0, Observation(now=now + 2.0, token_at=now + 1.9, throttled=1))
    assert changed == "cut"
    assert effective_rate(s, learned, 0, 102.0) >= 0.9 * 300 * 0.9


def test_a_deep_cut_holds_every_worker_off_a_while_and_a_trim_hardly_at_all():
    """An overflowing window stays full whatever the new pace: the first cut (by half) holds
    admissions back for half the destination's wait; a small trim costs next to nothing."""
    s = spec(rate="100/s")
    learned = None
    for i in range(5):  # half a second measured, at a quarter of the pace
        learned, _ = observe(s, learned, 10 * (i + 1), Observation(now=9.5 + i / 10, accepted=5))
    learned, changed = observe(s, learned, 50, Observation(now=10.0, token_at=9.9, throttled=1, wait=1.0))
    assert changed == "cut" and learned.settle == pytest.approx(10.5)
    assert effective_rate(s, learned, 50, 10.0) <= 0.5 * 100
    assert settled_tat(s, 9.0, learned, 0, changed, 10.0) >= 10.5
    # a refusal of the same round changes nothing, so holds nothing back again
    assert settled_tat(s, 9.0, learned, 0, None, 10.2) == 9.0
    # a refusal long after, among many accepts: a trim, and a hold of a few milliseconds
    learned.lock = 0.0
    for i in range(30):
        learned, _ = observe(s, learned, 0, Observation(now=20.0 + i / 10, accepted=10))
    current = effective_rate(s, learned, 0, 23.0)
    learned, changed = observe(s, learned, 0, Observation(now=23.0, token_at=22.99, throttled=1, wait=1.0))
    assert changed == "cut" and effective_rate(s, learned, 0, 23.0) > 0.8 * current
    assert learned.settle - 23.0 <= 0.2


def test_a_declared_pace_refused_before_anything_was_measured_is_trimmed_then_cut_to_what_is_accepted():
    """A small bucket (a few requests, leaking the quota) overflows at the drain's first bunch:
    the burst, and every worker's first requests at once. Refused before a tenth of a second was
    measured, a declared pace is trimmed, not halved (a halving there cost a climb of seconds
    back to a quota the pace matched). Declared too high, the pace is cut to what the
    destination accepts as soon as that is measured."""
    s = spec(rate="200/s", burst=5)
    learned, _ = observe(s, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    learned, changed = observe(s, learned, 8, Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0))
    assert changed == "cut" and learned.settle <= NOW + 0.008
    assert effective_rate(s, learned, 8, NOW + 0.01) == pytest.approx(200 * (1 - MIN_CUT))
    # 2 x too high: half of what is sent is refused, and a tenth of a second on, measured, the
    # pace is cut to what was accepted
    high = spec(rate="400/s", burst=5)
    learned, _ = observe(high, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    learned, changed = observe(
        high, learned, 8, Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0)
    )
    assert changed == "cut" and effective_rate(high, learned, 8, NOW + 0.01) > 300
    admitted, t = 8, NOW + 0.008
    while changed != "cut" or t < NOW + 0.05:
        t += 0.01
        admitted += 4
        learned, _ = observe(high, learned, admitted, Observation(now=t, accepted=2, first_ok=t - 0.01))
        learned, changed = observe(
            high, learned, admitted, Observation(now=t, token_at=t - 0.005, throttled=1, wait=1.0)
        )
        assert t < NOW + 0.3, "never cut to what was accepted"
    assert effective_rate(high, learned, admitted, t) <= 1.1 * learned.accepted_rate(t)


def test_the_first_refusal_of_a_declared_pace_the_destination_took_is_a_trim_not_a_halving():
    """Declared exactly at the quota, a few requests sent late arrive bunched and overflow the
    window once it is full: the pace was taken for a whole window, so the first refusal trims
    it and holds nobody off. The same refusal of a pace the destination took only half of (a
    guess 2 x too high) still halves it and holds every worker off."""
    s = spec(rate="500/s", burst=5)
    learned = None
    # the first second: 500 accepted, of which the store has heard of 400 when the first
    # refusal comes (the other process's latest responses are not reported yet)
    for i in range(8):
        learned, _ = observe(s, learned, 50 * (i + 1), Observation(now=NOW + i / 10, accepted=50))
    admitted = 510
    learned, changed = observe(
        s, learned, admitted, Observation(now=NOW + 1.0, token_at=NOW + 0.99, throttled=1, wait=1.0)
    )
    assert changed == "cut"
    assert 0.9 * 500 <= effective_rate(s, learned, admitted, NOW + 1.0) < 500
    assert learned.settle <= NOW + 1.0
    # a few more refusals of the same bunch belong to the same round
    for k in range(20):
        learned, changed = observe(
            s, learned, admitted + k, Observation(now=NOW + 1.01 + k / 1000, token_at=NOW + 1.0, throttled=1, wait=1.0)
        )
        assert changed is None
    assert effective_rate(s, learned, admitted + 20, NOW + 1.1) >= 0.9 * 500

    high = spec(rate="1000/s", burst=5)
    learned = None
    for i in range(10):  # the destination took only 500 of the 1,000 sent per second
        learned, _ = observe(high, learned, 100 * (i + 1), Observation(now=NOW + i / 10, accepted=50))
    learned, changed = observe(
        high, learned, 1000, Observation(now=NOW + 1.0, token_at=NOW + 0.99, throttled=1, wait=1.0)
    )
    assert changed == "cut"
    assert effective_rate(high, learned, 1000, NOW + 1.0) <= 0.6 * 1000
    assert learned.settle > NOW + 1.0


def test_a_probe_that_overflowed_goes_back_to_what_was_accepted_not_a_trim_below_its_pace():
    """A probe's step doubles while nothing is refused, so by the time a refusal comes back it
    ran past the quota: the pace goes back to what the destination accepted, where a trim of
    the probe's pace would overflow again a moment later."""
    s = spec(adaptive=True)
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, cuts=3, holds=1.0)
    learned.ok = [22.0, 53.0, 0.0]
    t = 20.0
    while effective_rate(s, learned, 0, t) < 60.0:
        t += 0.01
    learned.ok = [t - 1.0, 53.0, 0.0]
    learned, changed = observe(s, learned, 0, Observation(now=t, token_at=t - 0.01, throttled=1, wait=1.0))
    assert changed == "cut" and effective_rate(s, learned, 0, t) == pytest.approx(53.0)


def test_a_refusal_before_the_probe_keeps_the_hold_the_probes_earned():
    """Probes that overflowed near the same rate earned a longer hold; a refusal that comes
    before the next probe (a trim that fell short) says nothing about where probes overflow."""
    s = spec(adaptive=True)
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, low=49.4, cuts=3, holds=4.0)
    learned.ok = [19.5, 50.0, 50.0]
    learned, changed = observe(s, learned, 0, Observation(now=20.6, token_at=20.59, throttled=1, wait=1.0))
    assert changed == "cut" and learned.holds == 4.0


def test_a_refused_request_after_the_cut_starts_a_new_round():
    s = spec(rate="100/s")
    learned, _ = observe(s, None, 0, Observation(now=1.0, token_at=0.9, throttled=1))
    first = effective_rate(s, learned, 0, 1.0)
    learned, changed = observe(s, learned, 5, Observation(now=2.2, token_at=2.1, throttled=1))
    assert changed == "cut" and effective_rate(s, learned, 5, 1.2) < first


def _steady_then_trimmed(s, rate: float):
    """Two seconds accepted at ``rate``, then one refusal: a trim (the floor of what was accepted
    keeps the cut small). Returns the state and the pace after the trim."""
    learned = None
    for i in range(20):
        learned, _ = observe(s, learned, int(i * rate / 10), Observation(now=10.0 + i / 10, accepted=int(rate / 10)))
    admitted = int(2 * rate)
    learned, changed = observe(s, learned, admitted, Observation(now=12.0, token_at=11.99, throttled=1, wait=1.0))
    assert changed == "cut" and learned.trim
    return learned, admitted, effective_rate(s, learned, admitted, 12.0)


def _refuse_in_a_row(s, learned, admitted, start, spacing, count, lag=0.005):
    """``count`` requests sent ``spacing`` apart from ``start``, all refused (each answer ``lag``
    after its token); stops at the first change. Returns (learned, what changed, its index,
    the time of its answer)."""
    changed, i, now = None, 0, start
    for i in range(1, count + 1):
        token = start + i * spacing
        now = token + lag
        learned, changed = observe(s, learned, admitted + i, Observation(now=now, token_at=token, throttled=1))
        if changed:
            break
    return learned, changed, i, now


def test_refusals_in_a_row_after_a_trim_hold_every_worker_off_briefly_without_cutting():
    """Requests refused in a row after a trim: a fixed window the burst ran out early, or a
    quota that fell. Both refuse everything for a while; HUSH_AFTER of them in a row hold every
    worker off for HUSH (a pause in the store), and the pace stays where the trim put it."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 12.0, 0.01, 10)
    assert changed == "pause" and i == HUSH_AFTER
    assert learned.settle == pytest.approx(now + HUSH) and learned.hush == learned.settle
    assert effective_rate(s, learned, admitted + i, now) == pytest.approx(trimmed)
    # the store pauses the key until then (every worker's booked tokens before it are void)
    assert held_until(learned, changed, now) == (pytest.approx(now + HUSH), HOLD_REASON)
    assert settled_tat(s, 0.0, learned, admitted + i, changed, now) >= now + HUSH
    # the requests already on their way when the hold began are refused too: no second hold
    learned, changed, _, _ = _refuse_in_a_row(s, learned, admitted + i, now, 0.01, 5)
    assert changed is None
    # a bunch sent together (one token) is one request late, not refusals in a row
    bunch, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    for k in range(DEEP_MIN - 1):
        bunch, changed = observe(s, bunch, admitted, Observation(now=12.01 + k / 1000, token_at=12.0, throttled=1))
        assert changed is None
    assert not bunch.hush


def test_refusals_in_a_row_at_the_edge_of_a_drains_first_window_hold_nobody_off():
    """A sliding window's first second took the drain's first bunch of requests (the burst, and
    the requests every worker sent at once): as it slides, the requests behind that bunch are
    refused in a row. That is the window's edge, not a quota that fell: a round begun within
    EARLY of the key's first response trims, and holds nobody off, however many follow."""
    s = spec(rate="200/s", burst=5)
    learned, admitted = None, 0
    for i in range(10):  # the first second, all of it accepted
        admitted += 20
        learned, _ = observe(
            s, learned, admitted, Observation(now=10.0 + (i + 1) / 10, accepted=20, first_ok=10.0 + i / 10)
        )
    assert learned.start == pytest.approx(10.0)
    learned, changed = observe(s, learned, admitted, Observation(now=11.0, token_at=10.99, throttled=1, wait=1.0))
    assert changed == "cut" and learned.trim and 11.0 - learned.start < EARLY
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 11.0, 0.005, 3 * HUSH_AFTER)
    assert changed is None and not learned.hush and learned.settle <= 11.0
    # the same refusals in a round begun later hold every worker off (a quota may have fallen)
    later, admitted, _ = _steady_then_trimmed(s, 200.0)
    assert 12.0 - later.start >= EARLY
    later, changed, i, _ = _refuse_in_a_row(s, later, admitted, 12.0, 0.005, 3 * HUSH_AFTER)
    assert changed == "pause" and i == HUSH_AFTER


def test_one_process_refused_in_a_row_holds_off_though_the_tokens_taken_read_more():
    """Requests that lag their tokens (a busy database, a process behind its bookings) leave
    tokens with no answer yet, so refusals spread over the tokens taken since a trim never
    reach DEEP_SHARE of them. One process's own answers come in order: IN_A_ROW of them refused
    with none accepted between hold every worker off as well, and the quota that fell is found."""
    s = spec(rate="100/s")

    def refused(in_a_row):
        learned, admitted, _ = _steady_then_trimmed(s, 100.0)
        for i in range(1, 2 * IN_A_ROW + 1):
            token = 12.0 + 0.02 * i  # half the tokens taken since the trim are answered
            obs = Observation(now=token + 0.005, token_at=token, throttled=1, in_a_row=in_a_row(i))
            learned, changed = observe(s, learned, admitted + 2 * i, obs)
            if changed:
                return learned, changed, i, admitted + 2 * i
        return learned, None, i, admitted + 2 * i

    # answers from processes that each saw an acceptance between them: no hold
    learned, changed, _, _ = refused(lambda i: 1)
    assert changed is None and not learned.hush
    # one process refused IN_A_ROW times in a row
    learned, changed, i, admitted = refused(lambda i: i)
    assert changed == "pause" and i == IN_A_ROW
    hush = learned.hush
    learned, changed = observe(s, learned, admitted + 1, Observation(now=hush + 0.005, token_at=hush, throttled=1))
    assert changed == "fell"


def test_a_process_counts_its_refusals_in_a_row_until_one_is_accepted():
    reports, pair = Reports(), ("api", "")
    assert [reports.refused(pair) for _ in range(3)] == [1, 2, 3]
    reports.add(pair, 1.0, None)
    assert reports.refused(pair) == 1
    assert reports.refused(("api", "other")) == 1  # each key on its own


def test_refusals_in_a_row_after_a_cut_sized_from_the_refused_share_hold_off_but_halve_nothing():
    """A cut sized from what was refused (no trim) already went down to what the destination
    accepted, and its window is still full of the old pace: refusals in a row after it hold
    every worker off a moment as well, but one after the hold halves nothing (the round's end,
    not a quota that fell, decides the next cut)."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    learned.trim = False  # as after a cut sized from the refused share
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 12.0, 0.01, 10)
    assert changed == "pause" and i == HUSH_AFTER
    hush = learned.hush
    learned, changed = observe(s, learned, admitted + i + 1, Observation(now=hush + 0.005, token_at=hush, throttled=1))
    assert changed is None and effective_rate(s, learned, admitted + i + 1, hush) == pytest.approx(trimmed)


def test_a_quota_that_falls_well_below_the_pace_halves_it_and_holds_off_until_the_round_ends():
    """A sliding window whose quota halves is full of the old pace: everything sent in the next
    half second is refused, whatever the trim, and the hold after the first refusals in a row
    ends before it drains. A refusal of a request admitted after the hold is a quota that fell:
    the pace halves, every worker holds off until the round's lock ends, and the climb starts
    from the new pace, not back towards the old one."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    assert trimmed >= 90
    held = learned.high  # the pace before the trim, within what was accepted
    assert held > trimmed
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 12.0, 0.01, 10)
    assert changed == "pause" and effective_rate(s, learned, admitted + i, now) == pytest.approx(trimmed)
    hush = learned.hush
    # the first request admitted after the hold is refused too
    learned, changed = observe(s, learned, admitted + i + 1, Observation(now=hush + 0.005, token_at=hush, throttled=1))
    assert changed == "fell"
    now = hush + 0.005
    assert effective_rate(s, learned, admitted + i + 1, now) == pytest.approx(trimmed / 2)
    # the way back, once the quota comes back, is to the pace that held, not the trimmed one
    # (its first refusal was the fall's)
    assert learned.peak == pytest.approx(held)
    assert learned.settle == pytest.approx(learned.lock) and learned.settle > now
    assert held_until(learned, changed, now) == (pytest.approx(learned.lock), HOLD_REASON)
    assert settled_tat(s, 0.0, learned, admitted + i + 1, changed, now) >= learned.lock
    # it climbs no higher than the new pace before a probe locates the quota
    assert effective_rate(s, learned, admitted + i + 1, now + 0.45 * HOLD) == pytest.approx(trimmed / 2)


def test_refusals_that_go_on_without_a_hold_still_halve_the_pace():
    """Refusals of requests admitted before the hold ended (late ones, from a process that did
    not see the hold yet) count as before: most of what was admitted since the cut refused,
    DEEP_MIN of them at least, is a quota that fell."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 12.0, 0.01, 10)
    assert changed == "pause"
    learned, changed, k, now = _refuse_in_a_row(s, learned, admitted + i, 12.0 + i / 100, 0.01, 20)
    assert changed == "fell" and i + k <= DEEP_MIN + 1
    assert effective_rate(s, learned, admitted + i + k, now) == pytest.approx(trimmed / 2)


def test_a_fixed_window_that_ran_out_a_few_requests_early_is_not_a_fall():
    """At 50/s a declared burst runs a fixed window's budget out a few requests before its
    reset: those few are refused in a row (every worker holds off a moment), then the next
    window accepts. That is no quota that fell, and the pace stays where the trim put it."""
    s = spec(rate="50/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 50.0)
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted, 12.0, 0.02, 7)
    assert changed == "pause"
    learned, changed, _, _ = _refuse_in_a_row(s, learned, admitted + i, now, 0.02, 7 - i)
    assert changed is None
    # the window resets within the hold: what is sent after it is accepted
    for k in range(10):
        learned, changed = observe(s, learned, admitted + 8 + k, Observation(now=learned.hush + 0.1 * k, accepted=5))
        assert changed is None
    assert effective_rate(s, learned, admitted + 20, learned.hush + 1.0) >= trimmed


def test_a_quota_that_falls_is_halved_as_soon_even_when_requests_go_out_late():
    """Requests that go out a tenth of a second after their tokens (a process whose jobs lag
    their bookings after a stall): ten more tokens are taken by the time each refusal comes
    back. The count goes up to the refused request's token, so the hold and the halving come
    after as few refusals as without the lag."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    learned, changed, i, now = _refuse_in_a_row(s, learned, admitted + 10, 12.0, 0.01, 12, lag=0.1)
    assert changed == "pause" and i == HUSH_AFTER
    learned, changed, k, now = _refuse_in_a_row(s, learned, admitted + 10 + i, 12.0 + i / 100, 0.01, 12, lag=0.1)
    assert changed == "fell" and i + k <= DEEP_MIN + 1
    assert effective_rate(s, learned, admitted + i + k + 10, now) == pytest.approx(trimmed / 2)


def test_a_few_refusals_after_a_trim_are_the_same_round_and_cut_nothing_more():
    """After a probe crossed the quota a sliding window refuses some of what comes next, as its
    old entries age out: a share of the requests admitted since the cut, not most of them."""
    s = spec(rate="100/s")
    learned, admitted, trimmed = _steady_then_trimmed(s, 100.0)
    for i in range(1, 41):  # 40 admitted since the cut, every fourth refused
        if i % 4 == 0:
            learned, changed = observe(
                s, learned, admitted + i, Observation(now=12.0 + i / 100, token_at=12.0 + i / 100 - 0.005, throttled=1)
            )
            assert changed is None
    assert effective_rate(s, learned, admitted + 40, 12.4) >= trimmed


def test_a_quota_that_fell_and_comes_back_is_followed_back_to_the_pace_that_held_before():
    """After a fall, probes find the lower quota (and overflow near it, holding briefly), and
    never run far ahead of what the destination accepts: a sliding window takes a probe past its
    quota a while before it refuses, and one run far past it is refused a burst. Once the
    destination accepts PAST x the last overflow while the pace is past it too, the quota came
    back: the pace returns to where it held before the fall at once, not step by step."""
    s = spec(rate="100/s", adaptive=True, ceiling="400/s")
    learned = Learned(rate=50.0, source="429s", since=20.0, high=56.0, peak=100.0, cuts=3)
    learned.ok = [19.5, 50.0, 50.0]
    top = KEEP * 56.0
    # the climb back and the hold are short while a quota that fell may come back: the return
    # is found only by a probe, and the time between probes is what it is found late by
    climb = APPROACH * PEAK_TIME
    assert effective_rate(s, learned, 0, 20.0 + 0.8 * climb) == pytest.approx(50 + (top - 50) * 0.8)
    assert effective_rate(s, learned, 0, 20.0 + climb + HOLD * PEAK_TIME * 0.9) == pytest.approx(top)
    assert effective_rate(s, learned, 0, 20.0 + climb + HOLD * PEAK_TIME * 1.1) > top
    # the probe runs quicker than after a plain cut, but no more than PEAK_LEAD above what the
    # destination accepts
    plain = Learned(rate=50.0, source="429s", since=20.0, high=56.0, cuts=3, ok=[21.3, 53.0, 0.0])
    learned.ok = [21.3, 53.0, 0.0]
    probe = effective_rate(s, learned, 0, 22.3)
    assert effective_rate(s, plain, 0, 22.3) < probe == pytest.approx(53.0 * (1 + PEAK_LEAD))
    # a window counting PAST x the last overflow while the pace is not past it is a report
    # arriving in a chunk, not a return; nor is one begun before the last cut (it still counts
    # what was accepted before the fall)
    learned.ok, learned.holds = [20.9, 70.0, 0.0], 4.0  # (a long hold: the pace is not past it)
    assert effective_rate(s, learned, 0, 21.0) < PAST * 56.0
    calm, _ = observe(s, Learned(**learned.__dict__), 0, Observation(now=21.0, accepted=1))
    assert calm.peak == 100.0 and effective_rate(s, calm, 0, 21.0) < PAST * 56.0
    learned.holds = 1.0
    # after the hold, the probe starts well past where the return shows
    assert effective_rate(s, learned, 0, 21.05) == pytest.approx(PEAK_JUMP * 56.0) and PEAK_JUMP > PAST
    # ... but never past the midpoint to the old pace (refused there, it would forget it)
    near = Learned(**{**learned.__dict__, "peak": 70.0})
    assert effective_rate(s, near, 0, 21.05) == pytest.approx((56.0 + 70.0) / 2)
    early = Learned(**{**learned.__dict__, "rate": 62.0, "since": 21.8, "ok": [21.5, 66.0, 60.0]})
    assert effective_rate(s, early, 0, 22.0) >= PAST * 56.0
    early, _ = observe(s, early, 0, Observation(now=22.0, accepted=1))
    assert early.peak == 100.0 and effective_rate(s, early, 0, 22.0) < 0.8 * 100.0
    # accepted past it, and the pace past it: back to the pace before the fall at once
    learned.ok = [21.5, 66.0, 60.0]
    assert effective_rate(s, learned, 0, 22.0) > PAST * 56.0
    back, _ = observe(s, learned, 0, Observation(now=22.0, accepted=1))
    assert back.peak is None and effective_rate(s, back, 0, 22.0) == pytest.approx(100.0)
    # without a pace remembered from before a fall, the same evidence only lets the probe step up
    plain.ok = [21.5, 66.0, 60.0]
    stepped, _ = observe(s, plain, 0, Observation(now=22.0, accepted=1))
    assert effective_rate(s, stepped, 0, 22.0) < 0.8 * 100.0


def test_a_probe_for_a_quota_that_fell_is_led_by_the_pace_that_held_when_less_reads_accepted():
    """A hold after refusals in a row leaves a gap in what was accepted for a whole window: the
    probe runs PEAK_LEAD above the pace that held, not above that dip, or it starts late, and
    the quota's return is found late with it."""
    s = spec(rate="100/s")
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, low=50.0, peak=100.0, cuts=3)
    learned.ok = [20.2, 30.0, 0.0]  # 30/s read over the window: the hold's gap
    after_hold = 20.0 + (APPROACH + HOLD) * PEAK_TIME + 0.01
    assert learned.accepted_rate(after_hold, whole_window=True) * (1 + PEAK_LEAD) < PEAK_JUMP * 52.0
    assert effective_rate(s, learned, 0, after_hold) == pytest.approx(PEAK_JUMP * 52.0)
    # (and still no more than PEAK_LEAD above it)
    low = Learned(**{**learned.__dict__, "low": 40.0, "high": 60.0})
    assert 40.0 * (1 + PEAK_LEAD) < PEAK_JUMP * 60.0
    assert effective_rate(s, low, 0, after_hold) == pytest.approx(40.0 * (1 + PEAK_LEAD))


def test_the_pace_remembered_from_before_a_fall_is_the_one_that_held_not_a_probes():
    """A probe ran to 140/s past a quota the round's trim found at 110/s, then the quota fell:
    the way back, once it comes back, is to 110/s, not to the probe's pace."""
    s = spec(rate="400/s", adaptive=True)
    learned = Learned(rate=140.0, source="429s", since=10.0, high=110.0, trim=True, lock=10.5, cuts=2)
    learned.ok = [9.5, 100.0, 100.0]
    assert effective_rate(s, learned, 0, 10.1) == pytest.approx(140.0)
    changed = None
    for i in range(40):  # everything sent since the trim is refused
        learned, changed = observe(
            s, learned, 20 + i, Observation(now=10.1 + i / 400, token_at=10.01 + i / 400, throttled=1, wait=1.0)
        )
        if learned.peak is not None:
            break
    assert changed == "fell" and learned.peak == pytest.approx(110.0)
    assert effective_rate(s, learned, 0, learned.since) == pytest.approx(70.0)


def test_a_way_back_that_overflows_forgets_the_pace_from_before_the_fall():
    s = spec(rate="100/s", adaptive=True, ceiling="400/s")
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, peak=100.0, cuts=3)
    learned.ok = [22.5, 60.0, 50.0]
    learned, changed = observe(s, learned, 0, Observation(now=23.0, token_at=22.99, throttled=1, wait=1.0))
    assert changed == "cut" and learned.peak is None
    # a probe overflowing near the lower quota keeps it (the quota may still come back)
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, peak=100.0, cuts=3)
    learned.ok = [20.5, 50.0, 50.0]
    learned, changed = observe(s, learned, 0, Observation(now=21.3, token_at=21.29, throttled=1, wait=1.0))
    assert changed == "cut" and learned.peak == 100.0 and learned.holds == 1.0


def test_a_probe_for_a_quota_that_fell_goes_back_to_where_it_held_and_aims_halfway():
    """Searching a quota that fell, a probe overflowed: what was accepted over-reads a sliding
    window's quota (its burst; reports a tenth of a window apart), so the pace goes back to
    where it held, never to a floor of what was accepted, and the climb aims halfway to the
    probe's pace. The pace from before the fall is kept (the quota may still come back)."""
    s = spec(rate="100/s")
    learned = Learned(rate=50.0, source="429s", since=20.0, high=52.0, peak=100.0, cuts=3)
    learned.ok = [20.5, 70.0, 50.0]  # read as ~64/s accepted
    t = 20.0
    while effective_rate(s, learned, 0, t) < 58.0:
        t += 0.01
    current = effective_rate(s, learned, 0, t)
    learned, changed = observe(s, learned, 0, Observation(now=t, token_at=t - 0.01, throttled=1, wait=1.0))
    assert changed == "cut" and learned.peak == 100.0
    assert effective_rate(s, learned, 0, t) == pytest.approx(50.0)
    assert learned.high == pytest.approx((50.0 + current) / 2)
    # it climbs back to just under that, not to the probe's pace
    assert effective_rate(s, learned, 0, t + APPROACH + 0.01) == pytest.approx(KEEP * learned.high, rel=0.01)


def test_a_probe_that_finds_the_lower_quota_past_an_undersized_overflow_keeps_the_pace_from_before():
    """Right after a fall the last overflow is sized from a window still full of the old pace
    (here 30/s under a lower quota of 50/s): the probe that finds the lower quota overflows
    well past PAST x that, but nearer it than the old pace, and the way back stays known."""
    s = spec(rate="100/s", adaptive=True, ceiling="400/s")
    learned = Learned(rate=30.0, source="429s", since=20.0, high=32.0, peak=100.0, cuts=3)
    learned.ok = [22.5, 50.0, 50.0]
    now = 20.0
    while effective_rate(s, learned, 0, now) < 50.0:
        now += 0.01
    assert effective_rate(s, learned, 0, now) > PAST * 32.0
    learned, changed = observe(s, learned, 0, Observation(now=now, token_at=now - 0.01, throttled=1, wait=1.0))
    assert changed == "cut" and learned.peak == 100.0


# -- headers ---------------------------------------------------------------------------------


def test_a_stated_budget_is_spread_until_its_reset():
    s = spec(adaptive=True)
    learned, changed = observe(s, None, 0, Observation(now=100.0, remaining=500, reset_at=110.0, limit=1000))
    # 500 over the 9.5 s until the reset comes, on average (a reset in whole seconds)
    assert changed == "headers" and effective_rate(s, learned, 0, 100.0) == pytest.approx(500 / 9.5)
    # an older observation never overwrites a newer one
    learned, changed = observe(s, learned, 0, Observation(now=99.0, remaining=10, reset_at=110.0))
    assert changed is None and effective_rate(s, learned, 0, 100.0) == pytest.approx(500 / 9.5)


def test_a_policy_quota_per_window_sets_the_rate():
    s = spec(rate="1000/s")
    learned, changed = observe(s, None, 0, Observation(now=1.0, limit=100, window=10.0))
    rate = effective_rate(s, learned, 0, 1.0)
    assert changed == "headers" and 9.5 <= rate <= 10


@pytest.mark.parametrize("limit,window", [(10, 1.0), (50, 1.0), (200, 1.0), (100, 10.0), (1, 1.0), (5000, 60.0)])
def test_a_policy_quota_is_paced_so_no_window_can_overflow(limit, window):
    """GCRA admits at most rate * window + burst in any window: that must fit the stated quota,
    while spending most of it."""
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=1.0, limit=limit, window=window))
    rate = effective_rate(s, learned, 0, 1.0)
    burst = effective_burst(s, learned, rate)
    assert burst >= 1
    if limit > 1:
        assert rate * window + burst <= limit + 1e-9
        assert rate * window >= 0.9 * limit - 1


def test_a_usage_header_measures_the_leak_and_steers_the_bucket_half_full():
    s = spec(adaptive=True)
    learned = None
    used, admitted, now = 0.0, 0, 0.0
    leak = 2.0  # Shopify's REST bucket: 40 deep, 2 per second
    rate = 5.0
    for step in range(200):  # 20 s in steps of 0.1 s
        now += 0.1
        sent = rate * 0.1
        admitted += int(round(sent))
        used = min(40.0, max(0.0, used + sent - leak * 0.1))
        learned, _ = observe(s, learned, admitted, Observation(now=now, used=used, size=40))
        rate = effective_rate(s, learned, admitted, now)
    assert 1.0 <= rate <= 4.0, rate
    assert used < 40


def test_a_usage_bucket_that_stays_empty_lets_the_pace_grow_to_a_fast_leak():
    s = spec(adaptive=True)
    learned = None
    level, admitted, now, sent = 0.0, 0, 0.0, 0.0
    leak = 200.0  # a fast bucket, 40 deep: while it stays empty, what it leaked is what was sent
    rate = 5.0
    rates = []
    for step in range(100):  # 10 s in steps of 0.1 s
        now += 0.1
        sent += rate * 0.1
        admitted_now = int(sent)
        level = min(40.0, max(0.0, level + (admitted_now - admitted) - leak * 0.1))
        admitted = admitted_now
        learned, _ = observe(s, learned, admitted, Observation(now=now, used=math.ceil(level), size=40))
        rate = effective_rate(s, learned, admitted, now)
        rates.append(rate)
    # it grows to the leak within a few seconds, and settles near it without filling the bucket
    assert max(rates[:50]) >= 0.9 * leak, rates[:50]
    assert 0.8 * leak <= rate <= 1.2 * leak, rates[-20:]
    assert level < 40


@pytest.mark.parametrize(
    "obs",
    [
        Observation(now=1.0, remaining=-5, reset_at=2.0),
        Observation(now=1.0, remaining=10, reset_at=0.5),
        Observation(now=1.0, limit=0, window=10.0),
        Observation(now=1.0, limit=10, window=0.0),
        Observation(now=1.0, used=50, size=0),
    ],
)
def test_nonsense_observations_change_nothing(obs):
    s = spec(rate="50/s")
    learned, changed = observe(s, None, 0, obs)
    assert changed is None and effective_rate(s, learned, 0, 1.0) == 50


def test_learned_state_survives_a_round_trip_and_garbage_is_forgotten():
    learned, _ = observe(spec(rate="50/s"), None, 0, Observation(now=1.0, token_at=0.5, throttled=1))
    again = Learned.loads(learned.dumps())
    assert again == learned
    assert Learned.loads("{not json") is None
    assert Learned.loads(None) is None


def test_the_accepted_rate_never_reads_above_what_was_accepted():
    # a steady 100/s reported every REPORT_INTERVAL, the reports' phase drifting against the
    # one-second buckets: each report's share from before a bucket began is counted in the one
    # before, so no reading is above the rate accepted (unsplit, one just after a roll read 119)
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1, first_ok=99.99))
    readings, at = [], 100.0
    while at < 110.0:
        first, at = at, at + REPORT_INTERVAL + 0.013
        learned, _ = observe(s, learned, 0, Observation(now=at, accepted=round(100 * (at - first)), first_ok=first))
        if at > 102.0:
            readings.append(learned.accepted_rate(at))
    assert readings and max(readings) <= 101.0 and min(readings) >= 90.0, (min(readings), max(readings))


def test_429s_in_the_last_minute_fade():
    learned = Learned()
    s = spec(rate="5/s")
    for i in range(6):
        learned, _ = observe(s, learned, 0, Observation(now=1000.0 + i, token_at=0.0, throttled=1))
    assert learned.throttled_last_minute(1010.0) == 6
    assert learned.throttled_last_minute(1200.0) == 0


# -- the control loop against a simulated destination ---------------------------------------------


@pytest.mark.parametrize("r", [50, 200])
@pytest.mark.parametrize("declared", ["2x", "unknown", "4x adaptive"])
def test_the_loop_finds_a_leaky_bucket_rate_and_refuses_little(r, declared):
    s = {
        "2x": spec(rate=f"{2 * r}/s", burst=5),
        "unknown": spec(adaptive=True),
        "4x adaptive": spec(rate=f"{4 * r}/s", burst=5, adaptive=True),
    }[declared]
    per_second, refused, rates = simulate(lambda t: r, s, seconds=20)
    total = sum(per_second)
    # after the first few seconds it drains at >= 93 % of the real rate, and the refusals stay
    # a small share of what was sent
    steady = per_second[7:]
    assert sum(steady) / len(steady) >= 0.95 * r, steady
    # a start 4 x too high costs a burst of refusals before anything is measured; after that
    # they stay rare
    assert refused / (total + refused) <= 0.10, (refused, total)
    # the effective rate ends within a band of the real one
    assert 0.85 * r <= rates[-1] <= 1.2 * r, rates[-30:]


def test_the_loop_follows_a_quota_that_halves_then_doubles():
    r = 100.0

    def real(t: float) -> float:
        return r if t < 10 else (r / 2 if t < 20 else r)

    per_second, refused, rates = simulate(real, spec(rate=f"{2 * r:.0f}/s", burst=5, adaptive=True), seconds=35)
    # three windows (seconds) after each change the drain is within 10 % of the new rate
    assert all(abs(n - r / 2) <= 0.1 * r / 2 + 5 for n in per_second[13:20]), per_second[10:20]
    assert sum(per_second[26:35]) / 9 >= 0.9 * r, per_second[20:35]


def test_an_exhausted_quota_paces_the_next_budget_over_its_window():
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1))
    for i in range(10):  # 200 accepted in the first second of a 4 s window, then exhausted
        learned, _ = observe(s, learned, 0, Observation(now=100.1 + i / 10, accepted=20))
    learned, changed = observe(s, learned, 200, Observation(now=101.0, throttled=1, exhausted=1, reset_at=104.0))
    assert changed == "cut" and learned.exhausted == 1
    # 201 accepted between 100 and the reset at 104: about 50/s, starting at the reset
    assert 45 <= effective_rate(s, learned, 200, 104.1) <= 60


def test_a_budget_learned_from_an_exhaustion_holds_through_the_next_window_then_is_measured_again():
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1))
    for i in range(10):
        learned, _ = observe(s, learned, 0, Observation(now=100.1 + i / 10, accepted=20))
    learned, _ = observe(s, learned, 200, Observation(now=101.0, throttled=1, exhausted=1, reset_at=104.0))
    paced = effective_rate(s, learned, 200, 104.1)
    # no probe runs ahead inside the next window (it would only spend the budget early)
    for i in range(20):
        learned, _ = observe(s, learned, 200, Observation(now=104.2 + i / 5, accepted=10))
    assert effective_rate(s, learned, 400, 107.9) == pytest.approx(paced)
    # the next exhaustion measures that window (104 to 108) alone: 200 accepted in 4 s
    learned, changed = observe(s, learned, 400, Observation(now=107.9, throttled=1, exhausted=1, reset_at=108.0))
    assert changed == "cut" and 45 <= effective_rate(s, learned, 400, 108.1) <= 60


def test_refusals_pointing_to_one_reset_are_a_fixed_window_whose_next_window_is_paced():
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1))
    for i in range(10):  # 200 accepted by 102 of a 4 s window that ends at 104.0
        learned, _ = observe(s, learned, 0, Observation(now=100.2 + i / 5, accepted=20))
    # a refusal at 102.3 asks for 2 s (rounded up from 1.7): more than a second, a window
    learned, changed = observe(s, learned, 200, Observation(now=102.3, token_at=102.29, throttled=1, wait=2.0))
    assert changed == "window" and learned.source == "window"
    assert 104.3 <= learned.settle <= 104.31  # every worker held as long as asked, the first time ...
    assert settled_tat(s, 0.0, learned, 200, changed, 102.3) >= learned.settle
    # (a pause in the store: the tokens booked into what is left of the window are void, or
    # every one of them is sent and refused)
    assert held_until(learned, changed, 102.3) == (learned.settle, WINDOW_REASON)
    # ... then paced at about the window's quota over its length (50/s), not probing above it,
    # once the window resumed in (late: its end came by 104.3, maybe at 103.3) is over ...
    paced = effective_rate(s, learned, 200, 107.5)
    assert 40 <= paced <= 60
    assert effective_rate(s, learned, 200, 107.0) == paced
    # ... whose budget is spent in what is left of it, by its earliest end
    earliest = learned.ends[-1][1] + learned.win_w
    assert 104.3 < earliest < 107.0
    late = effective_rate(s, learned, 200, 104.5)
    assert paced < late <= 2 * paced
    assert late * (earliest - learned.settle) == pytest.approx(learned.win_q)
    # (a key's rate is shown without it: it lasts until the window ends, and says nothing of the quota)
    assert effective_rate(s, learned, 200, 104.5, steady=True) == paced
    # the first response accepted after the reset bounds the window's end from above
    learned, _ = observe(s, learned, 200, Observation(now=104.3, accepted=5, first_ok=104.05))
    assert learned.ends is not None and learned.ends[-1][2] == pytest.approx(104.05)
    # the next window that runs out, at its predicted end, is read as a window at once
    learned, changed = observe(s, learned, 400, Observation(now=107.95, token_at=107.94, throttled=1, wait=1.0))
    assert changed == "window" and learned.ends[-1][0] == 2
    assert 107.95 <= learned.settle <= 108.2
    assert held_until(learned, changed, 107.95) == (learned.settle, WINDOW_REASON)


def test_a_sliding_window_asking_a_second_each_time_is_never_taken_for_a_fixed_one():
    s = spec(adaptive=True)
    learned, _ = observe(s, None, 0, Observation(now=100.0, accepted=1))
    t = 100.0
    for i in range(40):  # Retry-After: 1 moves on with the clock
        t += 0.3
        learned, _ = observe(s, learned, i, Observation(now=t, accepted=10))
        learned, changed = observe(s, learned, i, Observation(now=t + 0.01, token_at=t, throttled=1, wait=1.0))
        assert changed != "window"
    assert learned.source == "429s" and not learned.ends
