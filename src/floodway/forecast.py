"""The drain forecast, pure: when will a backlog be done, and what if the rate, the backlog or
the workers changed. No database here: ``floodway.forecasting`` reads the store and hands this
module numbers; the tests hand it their own.

A subject (a queue, or one key of a limit) has a backlog (scheduled + waiting + retrying +
running), jobs created and finished per time bucket over a window, and maybe a limit rate (the
key's effective rate: declared or learned). The rate it will drain at is the one that binds:

- **the limit** when the observed service reaches it (within ``BINDING``): the limit holds the
  pace, so its rate is used; the observed spread can only make it slower;
- **the workers** when service stays below the limit (or there is no limit): the observed
  service rate is used, with its spread;
- with nothing finished yet, the limit's rate (or the key's fair share of its limit's service)
  is assumed, and the forecast says so.

Arrivals (jobs created per second, the median of the window's buckets so one bulk enqueue is
not mistaken for a stream) keep coming: the backlog shrinks at service − arrivals, and when
arrivals keep up with service it **will not drain**, short by the difference per second.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .limits import Rate

#: observed service within this fraction of the limit's rate means the limit binds
BINDING = 0.8
#: fewer full buckets than this give no spread: the range then comes from counting noise
MIN_BUCKETS = 3
#: how many parts the observed service is cut into to measure its spread
SUB_WINDOWS = 6
#: full buckets of creations needed before they count as a stream: a bulk enqueue that
#: straddles two buckets must never be the median (it needs at least five)
MIN_STREAM_BUCKETS = 5


@dataclass
class Observed:
    """What was seen of one subject: its backlog and its jobs per bucket of ``width`` seconds,
    the last bucket ending ``now``-ish (``span`` seconds of it observed)."""

    backlog: int
    created: list[int]
    finished: list[int]
    width: float
    #: the seconds of the window the buckets cover up to now (the last bucket may be partial)
    span: float
    #: the effective rate of the limit key (per second), None for a queue or a limit with no rate
    limit_rate: float | None = None
    #: seconds until the subject serves again (a limit key paused by the destination until a
    #: reset, or by hand); ``math.inf`` while paused with no end (a queue paused by hand)
    paused_for: float = 0.0


@dataclass
class WhatIf:
    """A change to forecast with, touching nothing: a limit's ``rate``, ``add`` jobs, ``workers``."""

    rate: float | None = None
    add: int = 0
    workers: int | None = None
    workers_now: int | None = None


@dataclass
class Forecast:
    backlog: int
    served_rate: float
    arrival_rate: float
    limit_rate: float | None
    #: the rate the ETA was worked out with, and which of "limit", "workers", "assumed" gave it
    rate_used: float | None
    binds: str | None
    eta_seconds: float | None
    eta_low: float | None
    eta_high: float | None
    drains: bool
    shortfall_per_second: float
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("served_rate", "arrival_rate", "limit_rate", "rate_used", "shortfall_per_second"):
            out[name] = None if out[name] is None else round(out[name], 3)
        for name in ("eta_seconds", "eta_low", "eta_high"):
            out[name] = None if out[name] is None else round(out[name], 1)
        return out


def check_what_if(rate: Any = None, add: Any = 0, workers: Any = None) -> tuple[float | None, int, int | None]:
    """A what-if's values, checked where they enter: ``rate`` a rate (``"20/s"``, or a positive
    number per second), ``add`` a whole number ≥ 0, ``workers`` a whole number ≥ 1."""
    per_second: float | None = None
    if rate is not None:
        if isinstance(rate, bool):
            raise ConfigError(f"rate: expected a rate such as '20/s', got {rate!r}")
        if isinstance(rate, (int, float)):
            if not math.isfinite(rate) or rate <= 0:
                raise ConfigError(f"rate: must be a positive number per second, got {rate!r}")
            per_second = float(rate)
        else:
            text = str(rate).strip()
            try:
                number = float(text)
            except ValueError:
                per_second = Rate.parse(text).per_second
            else:
                return check_what_if(number, add, workers)
    if isinstance(add, bool) or not isinstance(add, int) or add < 0:
        raise ConfigError(f"add: must be a whole number of jobs, 0 or more, got {add!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers: must be a whole number, 1 or more, got {workers!r}")
    return per_second, add, workers


def _observed_part(buckets: list[int], width: float, span: float) -> tuple[int, list[int]]:
    """The buckets from the first that saw a job to the one now falls in, and that first's index."""
    last = max(0, min(len(buckets), math.ceil(span / width)) - 1)
    first = next((i for i, n in enumerate(buckets[: last + 1]) if n), None)
    return (0, []) if first is None else (first, buckets[first : last + 1])


def service(buckets: list[int], width: float, span: float) -> tuple[float, float]:
    """Jobs per second since the first bucket that saw one, and the spread (standard deviation)
    of the full buckets' rates; with too few full buckets, the counting noise (√n over the time)."""
    first, part = _observed_part(buckets, width, span)
    if not part:
        return 0.0, 0.0
    # from the first job, in the middle of its bucket on average, to now
    elapsed = max(span - (first + 0.5) * width, width / 2)
    total = sum(part)
    rate = total / elapsed
    full = part[1:-1]
    if len(full) >= MIN_BUCKETS:
        # the rate's spread over a few sub-windows: a slowdown or a burst shows, a bucket's noise not
        size = max(1, len(full) // SUB_WINDOWS)
        chunks = [full[i : i + size] for i in range(0, len(full) - size + 1, size)]
        return rate, statistics.pstdev(sum(c) / (len(c) * width) for c in chunks)
    return rate, math.sqrt(total) / elapsed


def arrivals(buckets: list[int], width: float, span: float) -> float:
    """Jobs created per second as a stream: the median bucket since the first that saw one, so
    a backlog enqueued at once does not read as arrivals that go on."""
    _, part = _observed_part(buckets, width, span)
    full = part[:-1]  # the last bucket is partial
    if len(full) < MIN_STREAM_BUCKETS:
        return 0.0
    return statistics.median(full) / width


def forecast(obs: Observed, what_if: WhatIf | None = None, *, fair_share: float | None = None) -> Forecast:
    """The ETA of one subject, with its range and the reasons for the rate it used."""
    what_if = what_if or WhatIf()
    why: list[str] = []
    backlog = obs.backlog + what_if.add
    if what_if.add:
        why.append(f"{what_if.add} jobs added to the backlog of {obs.backlog}")
    served, spread = service(obs.finished, obs.width, obs.span)
    arriving = arrivals(obs.created, obs.width, obs.span)
    limit = obs.limit_rate
    limit_bound = limit is not None and served > 0 and served >= BINDING * limit
    if what_if.rate is not None:
        why.append(f"limit rate set to {what_if.rate:g}/s (was {'none' if limit is None else f'{limit:g}/s'})")
    new_limit = what_if.rate if what_if.rate is not None else limit

    binds: str | None
    if served > 0 and limit_bound:
        binds = "limit"
        rate = new_limit if new_limit is not None else served
        low, high = max(min(served - spread, rate), 0.0), rate
        if what_if.rate is not None and new_limit is not None and limit is not None and new_limit > limit:
            why.append("the limit bound; assumes the workers keep up with the new rate")
        else:
            why.append(f"the limit binds: served {served:.3g}/s of {limit:g}/s")
        if what_if.workers is not None:
            why.append("the limit binds, not the workers: more workers do not drain it sooner")
    elif served > 0:
        binds = "workers"
        rate, low, high = served, max(served - spread, 0.0), served + spread
        why.append(
            f"the workers bind: served {served:.3g}/s"
            + (f", below the limit's {limit:g}/s" if limit is not None else " (no rate limit)")
        )
        if what_if.workers is not None and what_if.workers_now:
            scale = what_if.workers / what_if.workers_now
            rate, low, high = rate * scale, low * scale, high * scale
            why.append(f"service scaled by {what_if.workers}/{what_if.workers_now} workers")
        if new_limit is not None:
            rate, low, high = min(rate, new_limit), min(low, new_limit), min(high, new_limit)
    else:
        binds = "assumed" if (new_limit is not None or fair_share) else None
        options = [r for r in (new_limit, fair_share) if r]
        rate = min(options) if options else 0.0
        low = high = rate
        if binds:
            why.append(f"nothing finished in the window: assumes {rate:.3g}/s (the limit's rate or the fair share)")
        else:
            why.append("nothing finished in the window and no rate limit: no rate to forecast with")

    if arriving:
        why.append(f"arrivals go on at {arriving:.3g}/s")
    paused = obs.paused_for
    if paused == math.inf and backlog:
        why.append("paused: will not drain until it is resumed")
        return Forecast(backlog, served, arriving, limit, rate or None, binds, None, None, None, False, 0.0, why)
    if paused > 0 and backlog:
        # nothing is served until the pause ends, and arrivals pile up meanwhile
        why.append(f"paused for {paused:.3g}s more: the ETA starts when the pause ends")
        backlog += round(arriving * paused)
    if backlog == 0:
        return Forecast(0, served, arriving, limit, rate or None, binds, 0.0, 0.0, 0.0, True, 0.0, why)
    if not rate:
        return Forecast(backlog, served, arriving, limit, None, binds, None, None, None, False, arriving, why)
    net, net_low, net_high = rate - arriving, low - arriving, high - arriving
    if net <= 0:
        why.append(f"will not drain: arrivals outpace service by {-net:.3g}/s")
        return Forecast(backlog, served, arriving, limit, rate, binds, None, None, None, False, -net, why)
    wait = paused if backlog else 0.0
    eta = wait + backlog / net
    return Forecast(
        backlog,
        served,
        arriving,
        limit,
        rate,
        binds,
        eta,
        wait + backlog / net_high if net_high > 0 else eta,
        wait + backlog / net_low if net_low > 0 else None,
        True,
        0.0,
        why,
    )


def format_eta(seconds: float | None) -> str:
    """``"3m 20s"``, ``"2h 5m"``; ``"—"`` when there is none."""
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"
