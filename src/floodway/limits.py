"""Limits: named rate limits and concurrency caps shared by every worker on a store.

This module holds the pure parts — parsing, key templates and the GCRA arithmetic — so they
can be tested exhaustively; the store applies them inside its transactions.

GCRA (the generic cell rate algorithm) keeps one number per limit key, the *theoretical
arrival time* (TAT). With an emission interval ``I = period / count`` and a burst ``b``, a
request at time ``now`` is admitted when ``max(TAT, now) - now <= I * (b - 1)``, and then
``TAT = max(TAT, now) + I``. In any window of length ``W`` at most ``b + W / I`` requests are
admitted — exact under bursts, with no buckets to refill and no background timers.
"""

from __future__ import annotations

import json
import math
import re
import string
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import ConfigError
from .inputs import check_name
from .units import parse_duration

__all__ = [
    "Rate",
    "LimitSpec",
    "gcra",
    "gcra_within",
    "gcra_settle",
    "concurrency_for",
    "resolve_key",
    "lane_key",
    "split_lane",
    "RecentPauses",
]

#: between a limit key and a lane in the key of a lane's state row: a control character, which
#: no lane name (``inputs.check_name``) may hold, so a lane row can never pass for a tenant key
LANE_SEP = "\x1f"
#: the lane of jobs that name none, when a limit's lanes leave part of its rate over
NO_LANE = ""
#: the furthest ahead a claim books rate tokens (``gcra_within``, a claim's ``horizon``): a
#: booked job waits in its worker under its lease, so the wait stays short beside any lease
MAX_HORIZON = 1.0
#: shares are floats: a sum this close to 1 is 1
_SHARE_SLACK = 1e-9


def lane_key(key: str, lane: str) -> str:
    """The key of one lane's state row: the limit key, then the lane (``NO_LANE`` for jobs
    that name none)."""
    return f"{key}{LANE_SEP}{lane}"


def split_lane(key: str) -> tuple[str, str | None]:
    """(limit key, lane) of a held key; the lane is None for a key that names no lane."""
    base, sep, lane = key.partition(LANE_SEP)
    return (base, lane) if sep else (key, None)


def check_lanes(name: str, lanes: object) -> tuple[tuple[str, float], ...]:
    """A limit's lanes: ``{"interactive": 0.2, "backfill": 0.8}`` -> sorted (lane, share)
    pairs. Each share is a number in (0, 1] and they sum to at most 1."""
    if not isinstance(lanes, Mapping) or not lanes:
        raise ConfigError(f"limit {name!r}: lanes must be a non-empty dict of lane name -> share, got {lanes!r}")
    out: list[tuple[str, float]] = []
    for lane, share in lanes.items():
        check_name(lane, f"limit {name!r}: lane name")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share):
            raise ConfigError(f"limit {name!r}: lane {lane!r}: the share must be a number, got {share!r}")
        if share <= 0 or share > 1:
            raise ConfigError(f"limit {name!r}: lane {lane!r}: the share must be > 0 and <= 1, got {share!r}")
        out.append((lane, float(share)))
    total = sum(share for _, share in out)
    if total > 1 + _SHARE_SLACK:
        raise ConfigError(f"limit {name!r}: the lanes' shares sum to {total:g}, more than 1")
    return tuple(sorted(out))


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|m|min|h|d)\s*$")
_PERIOD_WORDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``period`` seconds (``"50/s"``, ``"100/min"``, ``"10/10s"``)."""

    count: float
    period: float

    @classmethod
    def parse(cls, value: "str | Rate", *, name: str = "rate") -> "Rate":
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a rate such as '50/s', '100/min' or '10/10s', got {value!r}")
        match = _RATE.match(value)
        if not match:
            raise ConfigError(f"{name}: cannot parse {value!r}; use e.g. '50/s', '100/min' or '10/10s'")
        count = float(match.group(1))
        multiple = float(match.group(2)) if match.group(2) else 1.0
        period = multiple * _PERIOD_WORDS[match.group(3)]
        if count <= 0 or period <= 0:
            raise ConfigError(f"{name}: {value!r} must allow at least some requests per period")
        return cls(count, period)

    @property
    def per_second(self) -> float:
        return self.count / self.period

    @property
    def interval(self) -> float:
        """Seconds between two admissions at the steady rate (GCRA's emission interval)."""
        return self.period / self.count

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        if self.period == 1:
            return f"{count}/s"
        if self.period == 60:
            return f"{count}/min"
        period = int(self.period) if self.period == int(self.period) else self.period
        return f"{count}/{period}s"


@dataclass(frozen=True)
class LimitSpec:
    """A named limit: a GCRA ``rate`` with ``burst`` and/or a ``concurrency`` cap, optionally
    per value of ``key`` (a template over the job's args and tenant, e.g. ``"{tenant}"``)."""

    name: str
    rate: Rate | None = None
    burst: int = 1
    concurrency: int | None = None
    key: str | None = None
    adaptive: bool = False
    #: the learned rate never falls below ``floor`` nor rises above ``ceiling`` (see ``quota``)
    floor: Rate | None = None
    ceiling: Rate | None = None
    #: reserved lanes: (lane, share of the rate and of the concurrency), sorted by lane
    lanes: tuple[tuple[str, float], ...] = ()

    @property
    def lane_shares(self) -> dict[str, float]:
        """Each lane's share, with ``NO_LANE`` for the rest when the shares leave some over
        (jobs that name no lane run on it); empty when the limit has no lanes."""
        shares = dict(self.lanes)
        rest = 1.0 - sum(shares.values())
        if shares and rest > _SHARE_SLACK:
            shares[NO_LANE] = rest
        return shares

    @classmethod
    def build(
        cls,
        name: str,
        *,
        rate: "str | Rate | None" = None,
        burst: int = 1,
        concurrency: int | None = None,
        key: str | None = None,
        adaptive: bool = False,
        floor: "str | Rate | None" = None,
        ceiling: "str | Rate | None" = None,
        lanes: "Mapping[str, float] | tuple[tuple[str, float], ...] | None" = None,
    ) -> "LimitSpec":
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ConfigError(f"limit name must be a non-empty string, got {name!r}")
        parsed = Rate.parse(rate, name=f"limit {name!r}: rate") if rate is not None else None
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"limit {name!r}: burst must be an int >= 1, got {burst!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigError(f"limit {name!r}: concurrency must be an int >= 1, got {concurrency!r}")
        if not isinstance(adaptive, bool):
            raise ConfigError(f"limit {name!r}: adaptive must be True or False, got {adaptive!r}")
        if parsed is None and concurrency is None and not adaptive:
            raise ConfigError(
                f"limit {name!r}: give a rate, a concurrency, or both (or adaptive=True to learn the rate)"
            )
        if key is not None:
            template_fields(key, where=f"limit {name!r}: key")
        low = Rate.parse(floor, name=f"limit {name!r}: floor") if floor is not None else None
        high = Rate.parse(ceiling, name=f"limit {name!r}: ceiling") if ceiling is not None else None
        if low is not None and high is not None and low.per_second > high.per_second:
            raise ConfigError(f"limit {name!r}: the ceiling {high} is below the floor {low}")
        if parsed is not None and high is not None and not adaptive and high.per_second < parsed.per_second:
            raise ConfigError(f"limit {name!r}: the ceiling {high} is below the declared rate {parsed}")
        if parsed is not None and low is not None and low.per_second > parsed.per_second:
            raise ConfigError(f"limit {name!r}: the floor {low} is above the declared rate {parsed}")
        shares = check_lanes(name, dict(lanes) if isinstance(lanes, tuple) else lanes) if lanes is not None else ()
        return cls(name, parsed, burst, concurrency, key, adaptive, low, high, shares)

    def to_dict(self) -> dict[str, Any]:
        # "lanes" only when there are some: the stored declaration of a limit without lanes
        # stays what it was, so declaring it again changes nothing (and forgets nothing learned)
        lanes = {"lanes": dict(self.lanes)} if self.lanes else {}
        return {
            "name": self.name,
            "rate": str(self.rate) if self.rate else None,
            "rate_count": self.rate.count if self.rate else None,
            "rate_period": self.rate.period if self.rate else None,
            "burst": self.burst,
            "concurrency": self.concurrency,
            "key": self.key,
            "adaptive": self.adaptive,
            "floor": str(self.floor) if self.floor else None,
            "ceiling": str(self.ceiling) if self.ceiling else None,
            **lanes,
        }

    @classmethod
    def from_row(
        cls,
        name: str,
        rate_count: float | None,
        rate_period: float | None,
        burst: int,
        concurrency: int | None,
        key: str | None,
        adaptive: Any,
        bounds: str | None = None,
    ) -> "LimitSpec":
        rate = Rate(rate_count, rate_period) if rate_count and rate_period else None
        floor = ceiling = None
        lanes: tuple[tuple[str, float], ...] = ()
        if bounds:
            low, high, *shares = bounds.split("|", 2)
            floor = Rate.parse(low) if low else None
            ceiling = Rate.parse(high) if high else None
            if shares:
                lanes = tuple(sorted((lane, float(share)) for lane, share in json.loads(shares[0]).items()))
        return cls(name, rate, burst, concurrency, key, bool(adaptive), floor, ceiling, lanes)

    @property
    def bounds(self) -> str | None:
        """The limit's shape beyond rate, burst and concurrency, as stored in the ``bounds``
        column: the floor and ceiling, then the lanes as JSON when it has some
        (``"1/min|500/s"``, ``"||{"backfill": 0.8, "interactive": 0.2}"``; None when none is
        set). Rates hold no ``|``, so the lanes are whatever follows the second one."""
        if self.floor is None and self.ceiling is None and not self.lanes:
            return None
        text = f"{self.floor or ''}|{self.ceiling or ''}"
        return text + (f"|{json.dumps(dict(self.lanes), sort_keys=True)}" if self.lanes else "")


def template_fields(template: str, *, where: str = "key") -> list[str]:
    """The field names of a key template; raises ``ConfigError`` on a malformed one."""
    if not isinstance(template, str) or not template:
        raise ConfigError(f"{where}: expected a template such as '{{tenant}}', got {template!r}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: malformed template {template!r}: {exc}") from None
    fields = [f for _, f, _, _ in parts if f is not None]
    for f in fields:
        if not f or not all(p.isidentifier() for p in f.split(".")):
            raise ConfigError(
                f"{where}: {template!r} has an invalid field {{{f}}}; use names like {{tenant}} or {{account.id}}"
            )
    return fields


def resolve_key(template: str | None, args: Mapping[str, Any], tenant: str | None) -> str:
    """The key a job's ``args`` (and tenant) give a keyed limit: ``"{account.id}"`` -> ``"42"``.

    A field is looked up in the args (dotted names go into nested dicts); ``{tenant}`` falls
    back to the job's tenant. A missing field raises ``ConfigError``.
    """
    if template is None:
        return ""
    values: dict[str, str] = {}
    for f in template_fields(template):
        value: Any = args
        found = True
        for part in f.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                found = False
                break
        if not found:
            if f == "tenant" and tenant is not None:
                value = tenant
            else:
                raise ConfigError(f"key template {template!r}: the job has no value for {{{f}}}")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"key template {template!r}: {{{f}}} is not a scalar")
        values[f] = str(value)
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


def check_cost(cost: object, burst: int, name: str = "limit") -> int:
    """A request's cost must be a whole number of tokens the limit can ever admit at once."""
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigError(f"{name}: cost must be an int >= 1, got {cost!r}")
    if cost > burst:
        raise ConfigError(f"{name}: a cost of {cost} can never pass a burst of {burst}; raise the burst")
    return cost


def gcra(tat: float, now: float, rate: Rate, burst: int, cost: int = 1) -> tuple[bool, float, float]:
    """One GCRA decision (``cost`` must be 1..burst: see ``check_cost``).

    Returns ``(admitted, new_tat, retry_at)``: when admitted, store ``new_tat``; when not,
    nothing changes and ``retry_at`` is the earliest moment the same request would pass.
    """
    interval = rate.interval
    tolerance = interval * (burst - 1)
    base = max(tat, now)
    new_tat = base + interval * cost
    allow_at = new_tat - interval - tolerance  # the earliest `now` at which this passes
    # a few units in the last place of slack: Unix times are large, and the sums above round
    if allow_at <= now + _slack(now, base):
        return True, new_tat, now
    return False, tat, allow_at


def gcra_within(
    tat: float, now: float, rate: Rate, burst: int, horizon: float, cost: int = 1
) -> tuple[bool, float, float]:
    """A GCRA decision that may book a token up to ``horizon`` seconds ahead.

    Returns ``(admitted, new_tat, at)``: admitted now (``at == now``), or booked for ``at``, the
    earliest moment the request passes, when that is within ``now + horizon`` — the caller then
    makes the request no earlier than ``at``, and ``new_tat`` is the state as if it came then;
    when not admitted, nothing changes and ``at`` is the earliest moment it would pass.

    Booking ahead keeps GCRA's bound (at most ``b + W / I`` requests in any window ``W``,
    counted at their booked moments) while a limit is taken in batches: a claim every
    ``horizon / 2`` books the calls of the next moments, paced one interval apart, instead of
    claiming every interval for the one token just freed — and a claim that comes later than
    ``burst`` intervals after the last no longer loses the tokens of the gap.
    """
    ok, new_tat, at = gcra(tat, now, rate, burst, cost)
    if ok or at > now + horizon + _slack(now, at):
        return ok, new_tat, at
    ok, new_tat, _ = gcra(tat, at, rate, burst, cost)
    return ok, new_tat, at


def gcra_settle(tat: float, now: float, rate: Rate, delta: float) -> float:
    """A key's GCRA time once a call's real cost is known: ``delta`` = actual cost - the cost
    charged at admission, in tokens.

    A debt (``delta > 0``) is added from ``max(tat, now)``: the tokens were spent now, on top of
    whatever is still outstanding, and it may push the time past the burst so the next
    admissions wait until it is paid. A credit moves the time back, never before ``now``: a
    destination's bucket never holds less than nothing, so unused time is not banked.
    """
    return max(max(tat, now) + delta * rate.interval, now)


def _slack(*values: float) -> float:
    return max(1e-9, 16 * max(math.ulp(v) for v in values))


def remaining(tat: float, now: float, rate: Rate, burst: int) -> int:
    """How many requests would be admitted right now, back to back."""
    interval = rate.interval
    backlog = max(tat - now, 0.0)
    return max(0, int(math.floor((interval * burst - backlog + _slack(now, tat)) / interval)))


def concurrency_for(rate: "str | Rate", avg: "str | float") -> int:
    """The concurrency formula: the concurrency that keeps a rate-limited API busy without
    exceeding it — rate (per second) × average job time (seconds), rounded down, at least 1.

    >>> concurrency_for(rate="5/s", avg="500ms")
    2
    """
    r = Rate.parse(rate)
    seconds = parse_duration(avg, name="avg", allow_zero=False)
    return max(1, int(math.floor(r.per_second * seconds + 1e-9)))


#: how often a job looks again at a key this process holds (see ``RecentPauses.hold``)
HOLD_POLL = 0.01


class RecentPauses:
    """The paused-until instants of limit keys as a process's jobs see them: one store read
    per key serves every job that asks within ``fresh`` seconds of it.

    A job spending the token its admission took first checks that the key was not paused
    since; a read shared for ``fresh`` seconds sees a pause another process recorded at most
    that much later than a read of its own would (a pause can land just after any read
    anyway), and a pause this process records is seen at once (``forget``).
    """

    def __init__(self, read: Callable[[str, str], float], fresh: float = 0.05):
        self._read = read
        self._fresh_for = fresh
        self._seen: dict[tuple[str, str], tuple[float, float]] = {}  # pair -> (read at, until)
        self._forgot: dict[tuple[str, str], float] = {}  # pair -> when last forgotten
        self._held: dict[tuple[str, str], int] = {}  # pair -> refusals being told to the store
        self._lock = threading.Lock()

    def hold(self, name: str, key: str) -> None:
        """A refusal of this process is on its way to the store: until ``release``, the key
        reads as paused for a moment more at every check, so this process's jobs send nothing
        on it. The tokens its claims booked ahead were booked at the pace just refused; after
        the release they are void (the key "was paused since" their jobs were admitted) and
        each job takes a fresh token at the pace the refusal set. (Without the hold they went
        on for as long as the store write took, each into a window already full.)"""
        with self._lock:
            pair = (name, key)
            self._held[pair] = self._held.get(pair, 0) + 1
            self._forget(pair)

    def release(self, name: str, key: str) -> None:
        """The store has heard the refusal (or failed to): the next check reads it."""
        with self._lock:
            pair = (name, key)
            left = self._held.pop(pair, 0) - 1
            if left > 0:
                self._held[pair] = left
            self._forget(pair)

    def held_until(self, name: str, key: str) -> float | None:
        """While this process holds the key: the moment to look again (Unix time), else None."""
        return time.time() + HOLD_POLL if (name, key) in self._held else None

    def paused_until(self, name: str, key: str) -> float:
        pair = (name, key)
        now = time.monotonic()
        seen = self.fresh(name, key)  # (a key this process holds reads as paused there)
        if seen is not None:
            return seen
        until = self._read(name, key)
        with self._lock:
            # a read begun before a pause of this process may predate it: not shared
            if self._forgot.get(pair, -math.inf) < now:
                self._seen[pair] = (now, until)
        return until

    def fresh(self, name: str, key: str) -> float | None:
        """The key's paused-until instant when a reading still fresh has it, else None."""
        held = self.held_until(name, key)
        if held is not None:
            return held
        with self._lock:
            seen = self._seen.get((name, key))
        if seen is None or time.monotonic() - seen[0] > self._fresh_for:
            return None
        return seen[1]

    def forget(self, name: str, key: str) -> None:
        """This process changed the key's pause (or may have): the next check reads it."""
        with self._lock:
            self._forget((name, key))

    def _forget(self, pair: tuple[str, str]) -> None:
        """(Under the lock.) Drop the reading, and keep none begun before now."""
        self._seen.pop(pair, None)
        self._forgot[pair] = time.monotonic()
