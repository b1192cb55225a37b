"""Parsing of the human-friendly values users pass at the boundary: durations and instants.

Every parser raises ``ConfigError`` with the offending value in the message, so a typo in
``delay="5 mins"`` is reported where it was written rather than deep inside a worker.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ConfigError

__all__ = ["parse_duration", "parse_instant", "format_duration", "retry_after_seconds"]

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)\s*$")

DurationLike = "str | int | float | timedelta"


def parse_duration(value: object, *, name: str = "duration", allow_zero: bool = True) -> float:
    """Return ``value`` as seconds.

    Accepts ``"500ms"``, ``"5s"``, ``"10m"``, ``"1h"``, ``"7d"``, a number of seconds or a
    ``timedelta``. Negative, infinite and unparseable values raise ``ConfigError``.
    """
    if isinstance(value, bool):  # bool is an int subclass; True seconds is never meant
        raise ConfigError(f"{name}: expected a duration such as '5s', got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ConfigError(f"{name}: cannot parse {value!r} as a duration; use e.g. '500ms', '5s', '10m', '1h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ConfigError(f"{name}: expected a duration such as '5s', got {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(f"{name}: {value!r} is not a finite duration")
    if seconds < 0:
        raise ConfigError(f"{name}: {value!r} is negative")
    if seconds == 0 and not allow_zero:
        raise ConfigError(f"{name}: {value!r} must be greater than zero")
    return seconds


def parse_instant(value: object, *, name: str = "start_at") -> float:
    """Return an aware ``datetime`` or ISO-8601 string as a Unix timestamp.

    Naive datetimes are refused: a job scheduled in "local time" on one machine runs at a
    different moment on a worker in another zone.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an ISO-8601 date-time") from None
    if not isinstance(value, datetime):
        raise ConfigError(f"{name}: expected an aware datetime or ISO-8601 string, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(
            f"{name}: {value.isoformat()} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc)) or an ISO string with an offset"
        )
    return value.timestamp()


def format_duration(seconds: float) -> str:
    """A short readable form of ``seconds`` for tables and logs."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


#: the first and last instants a ``datetime`` can show (years 1 and 9999), as Unix timestamps
_FIRST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
_LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp()


def iso(ts: float | None) -> str | None:
    """A Unix timestamp as an ISO-8601 UTC string (``None`` stays ``None``).

    Reading must never fail on what is stored: an instant beyond what a date can show (written
    before the ten-year bound on ``delay``, or by hand) shows as the first or last date there
    is, and one that is not a number at all (NaN) as ``None``."""
    if ts is None or ts != ts:
        return None
    return datetime.fromtimestamp(min(max(ts, _FIRST), _LAST), tz=timezone.utc).isoformat(timespec="milliseconds")


def retry_after_seconds(value: Any, now: float) -> float | None:
    """A ``RateLimited.retry_after`` (seconds, a duration string, a timedelta or an aware
    datetime) as seconds from ``now``; None when unknown or unreadable."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return None
            return max(0.0, value.timestamp() - now)
        return parse_duration(value, name="retry_after")
    except ConfigError:
        return None
