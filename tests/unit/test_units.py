from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floodway.errors import ConfigError
from floodway.units import parse_duration, parse_instant


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("10m", 600),
        ("1h", 3600),
        ("7d", 604800),
        ("1.5s", 1.5),
        (3, 3),
        (0.25, 0.25),
        (timedelta(minutes=2), 120),
        ("0s", 0),
        (" 2 min ", 120),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["-5s", -1, "5 parsecs", "", "s", "1e3s", float("nan"), float("inf"), True, None, [1], timedelta(seconds=-1)],
)
def test_bad_durations(value):
    with pytest.raises(ConfigError):
        parse_duration(value)


def test_zero_refused_where_it_makes_no_sense():
    with pytest.raises(ConfigError, match="greater than zero"):
        parse_duration("0s", name="lease", allow_zero=False)


def test_error_names_the_option():
    with pytest.raises(ConfigError, match="delay"):
        parse_duration("soon", name="delay")


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_duration_units_scale(n, unit):
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


@given(st.text())
def test_duration_parser_never_crashes(text):
    try:
        assert parse_duration(text) >= 0
    except ConfigError:
        pass


def test_instants():
    aware = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_instant(aware) == aware.timestamp()
    assert parse_instant("2030-01-02T03:04:05Z") == aware.timestamp()
    assert parse_instant("2030-01-02T04:04:05+01:00") == aware.timestamp()


@pytest.mark.parametrize("value", [datetime(2030, 1, 1), "2030-01-01T00:00:00", "tomorrow", 12345, None])
def test_bad_instants(value):
    with pytest.raises(ConfigError):
        parse_instant(value)
