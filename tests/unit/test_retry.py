import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floodway import Retry
from floodway.errors import ConfigError


def test_defaults_are_six_retries_with_backoff():
    r = Retry()
    assert r.attempts == 6 and r.max_attempts == 7
    assert r.factor == 2 and r.initial == 1.0 and r.max is None and r.jitter is False
    assert [r.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_exponential_with_cap():
    r = Retry(attempts=6, backoff="exponential", initial="1s", max="60s")
    assert [r.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_fixed():
    r = Retry(attempts=3, backoff="fixed", initial="500ms")
    assert [r.delay(n) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]


def test_factor():
    assert Retry(initial=2, factor=3).delay(3) == 18


def test_jitter_multiplies_by_one_to_two():
    r = Retry(initial=10, jitter=True)
    rng = random.Random(7)
    delays = [r.delay(1, rng) for _ in range(200)]
    assert all(10 <= d < 20 for d in delays)
    assert len(set(delays)) > 100


def test_int_shorthand_and_zero():
    assert Retry.coerce(0).max_attempts == 1
    assert Retry.coerce(3).attempts == 3
    base = Retry(attempts=1, initial="3s", backoff="fixed")
    assert Retry.coerce(5, base) == Retry(attempts=5, initial=3, backoff="fixed")
    assert Retry.coerce(None, base) is base


def test_round_trip_through_storage():
    r = Retry(attempts=4, backoff="fixed", initial="250ms", max="2s", factor=3, jitter=True)
    assert Retry.from_dict(r.to_dict()) == r


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": -1},
        {"attempts": 1.5},
        {"attempts": True},
        {"backoff": "linear"},
        {"initial": "-1s"},
        {"initial": "soon"},
        {"max": "x"},
        {"factor": 0.5},
        {"factor": "2"},
    ],
)
def test_bad_policies(kwargs):
    with pytest.raises(ConfigError):
        Retry(**kwargs)


def test_bad_coerce():
    with pytest.raises(ConfigError):
        Retry.coerce("3")


@given(
    st.floats(min_value=0, max_value=3600),
    st.floats(min_value=1, max_value=10),
    st.one_of(st.none(), st.floats(min_value=0, max_value=86400)),
    st.integers(min_value=1, max_value=5000),
)
def test_delays_are_finite_monotone_and_capped(initial, factor, cap, n):
    r = Retry(initial=initial, factor=factor, max=cap)
    d1, d2 = r.delay(n), r.delay(n + 1)
    assert 0 <= d1 <= d2
    if cap is not None:
        assert d2 <= cap
