"""The starts of jobs whose rate tokens were booked ahead (``floodway.worker_pacing``): at
their moments, and after a stall never closer together than their bookings, the lag made up
slowly."""

from __future__ import annotations

from floodway.worker_pacing import BookedStarts

G = (("api", ""),)


def test_jobs_on_time_start_at_their_moments():
    starts = BookedStarts()
    assert [starts.start(G, 10 + k * 0.002, 10 + k * 0.002) for k in range(5)] == [10 + k * 0.002 for k in range(5)]


def test_after_a_stall_the_late_jobs_keep_the_spacing_of_their_bookings():
    # bookings 2 ms apart; the process stalls, and wakes at 10.050 with all of them due
    starts = BookedStarts(catch_up=0.0)
    booked = [10 + k * 0.002 for k in range(30)]
    got = [starts.start(G, b, 10.050) for b in booked]
    assert got[0] == 10.050
    gaps = [b - a for a, b in zip(got, got[1:])]
    assert min(gaps) >= 0.002 - 1e-9  # no bunch: as far apart as their tokens
    assert all(s >= b for s, b in zip(got, booked))  # none before its moment


def test_the_lag_is_made_up_at_most_catch_up_of_each_gap():
    starts = BookedStarts(catch_up=0.1)
    starts.start(G, 10.0, 10.05)  # 50 ms late
    t, prev, booked = 10.05, 10.0, 10.0
    for _ in range(200):
        booked += 0.002
        start = starts.start(G, booked, t)
        assert start - t >= -1e-12
        assert start - prev >= 0.002 * (1 - 0.1) - 1e-9  # spacing shrinks by catch_up at most
        prev = t = start
    assert t - booked < 0.05  # the lag went down ...
    assert starts.start(G, booked + 1.0, booked + 1.0) == booked + 1.0  # ... and is gone


def test_a_lag_is_forgotten_after_a_pause_and_groups_are_apart():
    starts = BookedStarts(forget_after=1.0)
    starts.start(G, 10.0, 10.2)
    assert starts.start((("other", ""),), 10.001, 10.001) == 10.001
    assert starts.start(G, 12.0, 12.0) == 12.0  # nothing started for more than a second
