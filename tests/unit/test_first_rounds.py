"""A declared pace's first rounds in a drain, sized by the share of its requests refused.

A destination that refuses the drain's first bunch has little slack: a small bucket. Refusals
are heard at once and acceptances a report later, so the share of the tokens since the cut
that was refused measures how far above the bucket's leak rate the pace is, before the count
of what was accepted can (over its first tenths of a second, that count reads high, the
bucket's slack with it). A window that took the first bunch is never sized this way: a full
window refuses everything sent into it, whatever the pace.
"""

from __future__ import annotations

import json

import pytest

from floodway.quota import FAR_MIN, FIRST_CUT, Learned, Observation, effective_rate, observe

from .control_loop import NOW, simulate
from .test_quota import spec


def _first_bunch(s) -> Learned:
    """The drain's first five requests accepted, the sixth refused before anything was measured:
    a trim, and a round sized by what it refuses."""
    learned, _ = observe(s, None, 5, Observation(now=NOW + 0.005, accepted=5, first_ok=NOW))
    obs = Observation(now=NOW + 0.008, token_at=NOW + 0.006, throttled=1, wait=1.0)
    learned, changed = observe(s, learned, 8, obs)
    assert changed == "cut" and learned.by_refusals == learned.since
    assert effective_rate(s, learned, 8, NOW + 0.01) > 0.9 * s.rate.per_second  # only trimmed
    return learned


def _refused(s, learned: Learned | None, admitted: int, t: float) -> tuple[Learned, str | None]:
    """One request refused, reported at ``t``, its token taken a moment before."""
    return observe(s, learned, admitted, Observation(now=t, token_at=t - 0.002, throttled=1, wait=1.0))


def _accepted(s, learned: Learned | None, admitted: int, t: float, n: int) -> Learned:
    """A report of ``n`` accepted over the last hundredth of a second."""
    return observe(s, learned, admitted, Observation(now=t, accepted=n, first_ok=t - 0.01))[0]


def test_a_pace_twice_a_small_buckets_rate_is_cut_by_the_share_refused_before_a_count_is_read():
    s = spec(rate="400/s", burst=5)
    learned = _first_bunch(s)
    trimmed, trimmed_at = learned.rate, learned.since
    admitted, t, changed, refusals = 8, NOW + 0.008, None, 0
    while changed != "cut":  # 400/s sent, every other request refused, no report yet
        t += 0.005
        admitted += 2
        refusals += 1
        learned, changed = _refused(s, learned, admitted, t)
        assert t < trimmed_at + 0.1, "not cut before a count of what was accepted could be read"
    assert refusals >= FAR_MIN
    assert FIRST_CUT * trimmed <= learned.rate <= 1.1 * 200  # about the half that was taken
    assert learned.over == 0  # measured, not read low: no climb back towards the pace refused
    assert learned.by_refusals == learned.since  # the next round is sized the same way


def test_few_refusals_after_the_first_bunch_do_not_cut():
    s = spec(rate="400/s", burst=5)
    learned = _first_bunch(s)
    admitted, t = 8, NOW + 0.008
    for _ in range(FAR_MIN - 1):  # four refused, spread over a tenth of a second
        t += 0.025
        admitted += 10
        learned, changed = _refused(s, learned, admitted, t)
        assert changed is None
    assert effective_rate(s, learned, admitted, t) > 0.9 * 400


def test_a_window_that_took_the_first_bunch_is_not_sized_by_what_it_refuses_once_full():
    """The first refusal after a whole window was taken halves a pace twice the quota; the full
    window then refuses everything sent into it until the old pace ages out, which says nothing
    of the new pace: no second halving within the round."""
    s = spec(rate="400/s", burst=5)
    learned = None
    for k in range(1, 11):  # 200 a second accepted over half a second, then the window is full
        learned, _ = observe(s, learned, 20 * k, Observation(now=NOW + 0.05 * k, accepted=10, first_ok=NOW))
    admitted, t = 200, NOW + 0.5
    learned, changed = _refused(s, learned, admitted, t)
    assert changed == "cut" and learned.by_refusals == 0
    halved, cut_at = learned.rate, learned.since
    while t < cut_at + 0.4:  # every request sent after the cut refused
        t += 0.005
        admitted += 1
        learned, changed = _refused(s, learned, admitted, t)
        assert changed not in ("cut", "fell"), (t - cut_at, learned.rate)
    assert learned.rate == pytest.approx(halved)


@pytest.mark.parametrize("declared, real", [("100/s", 50), ("200/s", 50), ("400/s", 200), ("800/s", 200)])
def test_a_small_bucket_declared_two_or_four_times_too_high_drains_at_its_rate_from_the_first_second(declared, real):
    """Against a bucket of five requests leaking ``real`` a second (the whole control loop, two
    workers' reports interleaved): from the second second on, at least 0.95 of the rate accepted
    every second, and no more refused over the drain than the bucket leaks in 0.6 s."""
    per_second, refused, _ = simulate(lambda t: real, spec(rate=declared, burst=5), seconds=5.0, report_every=0.1)
    assert min(per_second[1:]) >= 0.95 * real, per_second
    assert refused <= 0.6 * real, (refused, per_second)


def test_a_cut_in_the_first_second_reads_a_small_buckets_count_over_the_time_since_the_drain_began():
    """Spread over a whole window, what a destination took in the drain's first second reads low
    by the share of the second gone: right for a window, which takes its quota and its burst at
    once, not for a bucket that refused the first bunch (it takes its rate from the start)."""
    s = spec(rate="400/s", burst=5)
    learned = _first_bunch(s)
    admitted, t, cuts = 8, NOW + 0.008, []
    while len(cuts) < 2:  # 200/s taken, one request in nine refused
        t += 0.01
        admitted += 3
        learned = _accepted(s, learned, admitted, t, 2)
        if round((t - NOW) * 100) % 3 == 0:
            learned, changed = _refused(s, learned, admitted, t)
            if changed == "cut":
                cuts.append((t - NOW, learned.rate))
        assert t < NOW + 1.0, cuts
    assert cuts[1][0] < 1.0 and cuts[1][1] >= 0.85 * 200, cuts


def test_a_later_round_does_not_read_the_refusals_of_what_was_sent_before_its_cut():
    """Jobs booked ahead at the pace just cut still go out for a moment, into a bucket the cut
    left full: their refusals, in the round's first tenth of a second, say nothing of the new
    pace. Read with them, a pace at the rate was halved."""
    s = spec(rate="400/s", burst=5)
    learned = _first_bunch(s)
    admitted, t, changed = 8, NOW + 0.008, None
    while changed != "cut":  # the first round: half of 400/s refused
        t += 0.005
        admitted += 2
        learned, changed = _refused(s, learned, admitted, t)
    paced, cut_at = learned.rate, learned.since
    assert learned.by_refusals == cut_at and learned.over == 0
    for k in range(1, 7):  # six refused within 0.05 s of the cut: sent at the old pace
        t = cut_at + 0.008 * k
        admitted += 2
        learned, changed = _refused(s, learned, admitted, t)
        assert changed is None
    while t < cut_at + 0.3:  # then the new pace taken, with one more refused now and then
        t += 0.01
        admitted += 2
        learned = _accepted(s, learned, admitted, t, 2)
        if round((t - cut_at) * 100) % 8 == 0:
            learned, changed = _refused(s, learned, admitted, t)
            assert changed is None, (t - cut_at, learned.rate)
    assert learned.rate == pytest.approx(paced)


def test_a_learned_state_stored_by_an_older_version_still_loads():
    """Without the marks of a drain's first rounds (a state stored before them), and with a
    field since removed: the state loads, the marks unset."""
    stored = json.loads(_first_bunch(spec(rate="400/s", burst=5)).dumps())
    del stored["by_refusals"], stored["small_bucket"]
    stored["ok_since"] = 7
    learned = Learned.loads(json.dumps(stored))
    assert learned is not None and learned.rate == stored["rate"]
    assert learned.by_refusals == 0.0 and learned.small_bucket is False
