"""The drain forecast, pure: which rate binds, the range, arrivals, will-not-drain, what-if."""

from __future__ import annotations

import pytest

from floodway.errors import ConfigError
from floodway.forecast import BINDING, Observed, WhatIf, arrivals, check_what_if, forecast, format_eta, service

WIDTH = 0.5
SPAN = 60.0
N = int(SPAN / WIDTH)


def steady(per_second: float, since: int = 0) -> list[int]:
    """Jobs per bucket at a steady rate from bucket ``since`` on."""
    per_bucket = per_second * WIDTH
    return [0] * since + [round(per_bucket)] * (N - since)


def burst(count: int) -> list[int]:
    return [count] + [0] * (N - 1)


def test_service_rate_counts_from_the_first_job():
    rate, spread = service(steady(20, since=N - 20), WIDTH, SPAN)
    assert rate == pytest.approx(20, rel=0.05)
    assert spread == pytest.approx(0, abs=1e-9)


def test_a_bulk_enqueue_is_not_a_stream_of_arrivals():
    assert arrivals(burst(10_000), WIDTH, SPAN) == 0
    assert arrivals(steady(6), WIDTH, SPAN) == pytest.approx(6)


def test_a_bulk_enqueue_straddling_two_buckets_is_not_a_stream_either():
    # 400 jobs enqueued across a bucket boundary, the forecast made a moment later
    straddling = [0] * (N - 3) + [200, 200, 0]
    assert arrivals(straddling, WIDTH, SPAN) == 0
    assert arrivals([0] * (N - 6) + [200, 200, 0, 0, 0, 0], WIDTH, SPAN) == 0
    # a stream that began 3 s ago is one
    assert arrivals(steady(6, since=N - 6), WIDTH, SPAN) == pytest.approx(6)


def test_the_limit_binds_when_service_reaches_it():
    result = forecast(Observed(1000, burst(1200), steady(19.8, since=N - 20), WIDTH, SPAN, limit_rate=20))
    assert result.binds == "limit" and result.rate_used == 20
    assert result.eta_seconds == pytest.approx(50)
    assert result.eta_low is not None and result.eta_high is not None
    assert result.eta_low <= result.eta_seconds <= result.eta_high
    assert any("limit binds" in line for line in result.why)


def test_the_workers_bind_below_the_limit():
    result = forecast(Observed(600, burst(900), steady(10), WIDTH, SPAN, limit_rate=100))
    assert result.binds == "workers" and result.rate_used == pytest.approx(10, rel=0.02)
    assert result.eta_seconds == pytest.approx(60, rel=0.02)


def test_the_range_follows_the_spread_of_service():
    noisy = [10 if i % 2 else 0 for i in range(N)]  # 10/s, as 0 or 20/s per bucket
    tight = forecast(Observed(100, burst(1), noisy, WIDTH, SPAN))
    assert tight.eta_high is not None and tight.eta_low is not None
    assert tight.eta_high / tight.eta_low < 1.2  # a bucket's noise is not a slowdown
    slowing = [10] * (N // 2) + [2] * (N // 2)  # 20/s, then 4/s
    result = forecast(Observed(100, burst(1), slowing, WIDTH, SPAN))
    assert result.eta_low is not None and result.eta_seconds is not None and result.eta_high is not None
    assert result.eta_low < result.eta_seconds < result.eta_high
    assert result.eta_high / result.eta_low > 2


def test_will_not_drain_when_arrivals_outpace_service():
    result = forecast(Observed(500, steady(30), steady(20), WIDTH, SPAN))
    assert not result.drains and result.eta_seconds is None
    assert result.shortfall_per_second == pytest.approx(10, rel=0.05)
    assert any("will not drain" in line for line in result.why)


def test_arrivals_slow_the_drain():
    result = forecast(Observed(100, steady(10), steady(20), WIDTH, SPAN))
    assert result.eta_seconds == pytest.approx(10, rel=0.05)


def test_nothing_finished_assumes_the_limit_or_the_fair_share():
    assumed = forecast(Observed(100, burst(100), [0] * N, WIDTH, SPAN, limit_rate=5))
    assert assumed.binds == "assumed" and assumed.eta_seconds == pytest.approx(20)
    shared = forecast(Observed(100, burst(100), [0] * N, WIDTH, SPAN, limit_rate=50), fair_share=10)
    assert shared.eta_seconds == pytest.approx(10)
    unknown = forecast(Observed(100, burst(100), [0] * N, WIDTH, SPAN))
    assert unknown.eta_seconds is None and unknown.rate_used is None


def test_a_paused_key_starts_its_eta_when_the_pause_ends():
    running = Observed(1000, burst(1200), steady(20, since=N - 20), WIDTH, SPAN, limit_rate=20)
    paused = Observed(1000, burst(1200), steady(20, since=N - 20), WIDTH, SPAN, limit_rate=20, paused_for=7.5)
    plain, waiting = forecast(running), forecast(paused)
    assert waiting.drains and plain.eta_seconds is not None and waiting.eta_seconds is not None
    assert waiting.eta_seconds == pytest.approx(plain.eta_seconds + 7.5)
    assert waiting.eta_low == pytest.approx((plain.eta_low or 0) + 7.5)
    assert any("paused for 7.5s" in reason for reason in waiting.why)


def test_arrivals_pile_up_while_paused():
    result = forecast(Observed(100, steady(2), steady(10), WIDTH, SPAN, limit_rate=10, paused_for=10))
    # 100 jobs plus 10 s of arrivals at 2/s, served at 10 − 2 per second, after the 10 s pause
    assert result.eta_seconds == pytest.approx(10 + 120 / 8)


def test_paused_with_no_end_will_not_drain():
    result = forecast(Observed(100, burst(100), steady(10), WIDTH, SPAN, paused_for=float("inf")))
    assert not result.drains and result.eta_seconds is None
    assert any("until it is resumed" in reason for reason in result.why)
    assert forecast(Observed(0, burst(1), steady(1), WIDTH, SPAN, paused_for=float("inf"))).drains


def test_an_empty_backlog_is_done():
    result = forecast(Observed(0, [0] * N, [0] * N, WIDTH, SPAN, limit_rate=5))
    assert result.drains and result.eta_seconds == 0


def test_what_if_a_faster_limit():
    obs = Observed(1000, burst(1000), steady(20, since=N - 20), WIDTH, SPAN, limit_rate=20)
    result = forecast(obs, WhatIf(rate=40))
    assert result.rate_used == 40 and result.eta_seconds == pytest.approx(25)
    assert any("workers keep up" in line for line in result.why)


def test_what_if_more_jobs():
    obs = Observed(1000, burst(1000), steady(20, since=N - 20), WIDTH, SPAN, limit_rate=20)
    assert forecast(obs, WhatIf(add=1000)).eta_seconds == pytest.approx(100)


def test_what_if_more_workers_scales_service_only_when_workers_bind():
    workers_bound = Observed(600, burst(600), steady(10), WIDTH, SPAN, limit_rate=100)
    result = forecast(workers_bound, WhatIf(workers=4, workers_now=2))
    assert result.rate_used == pytest.approx(20, rel=0.02)
    assert any("scaled by 4/2 workers" in line for line in result.why)
    capped = forecast(workers_bound, WhatIf(workers=40, workers_now=2))
    assert capped.rate_used == 100  # never past the limit
    limit_bound = Observed(600, burst(600), steady(20), WIDTH, SPAN, limit_rate=20)
    same = forecast(limit_bound, WhatIf(workers=8, workers_now=2))
    assert same.rate_used == 20
    assert any("more workers do not" in line for line in same.why)


def test_binding_threshold():
    just_below = forecast(Observed(10, burst(10), steady(20 * BINDING - 2), WIDTH, SPAN, limit_rate=20))
    assert just_below.binds == "workers"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": -5}, "positive"),
        ({"rate": "-5/s"}, "rate"),
        ({"rate": "fast"}, "cannot parse"),
        ({"rate": 0}, "positive"),
        ({"add": -5}, "add"),
        ({"add": 1.5}, "add"),
        ({"workers": 0}, "workers"),
        ({"workers": True}, "workers"),
    ],
)
def test_bad_what_if(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        check_what_if(**kwargs)


def test_good_what_if():
    assert check_what_if("20/s", 100, 4) == (20.0, 100, 4)
    assert check_what_if("1200/min") == (20.0, 0, None)
    assert check_what_if("2.5") == (2.5, 0, None)


def test_format_eta():
    assert format_eta(None) == "—"
    assert format_eta(42) == "42s"
    assert format_eta(200) == "3m 20s"
    assert format_eta(7500) == "2h 5m"
    assert format_eta(200_000) == "2d 7h"
