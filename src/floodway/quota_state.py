"""The learned part of a limit key's state, and what responses say about it: pure data.

``Learned`` is stored as JSON beside the key's GCRA state (one column), so every worker on every
machine paces to the same figure; ``Observation`` is what one worker process's responses said
between two reports. The rules that turn one into the other are in ``quota``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["ACCEPTED_WINDOW", "Learned", "Observation"]

#: the accepted rate is measured over about this many seconds (a destination's burst inflates
#: what a shorter window sees)
ACCEPTED_WINDOW = 1.0


@dataclass
class Observation:
    """What one or more responses of one worker process said about a limit key."""

    now: float
    #: the time the refused request's token was issued (throttles only)
    token_at: float | None = None
    wait: float | None = None  # the wait a refusal asked for (its Retry-After or reset)
    throttled: int = 0  # refusals (429s, or the statuses the user named) ...
    exhausted: int = 0  # ... of which meant an exhausted quota (no cut: a pause)
    accepted: int = 0  # responses that were not refusals, since the last observation ...
    first_ok: float | None = None  # ... the first of them
    remaining: int | None = None
    limit: int | None = None
    reset_at: float | None = None
    window: float | None = None
    used: float | None = None  # a leaky bucket's fill ...
    size: float | None = None  # ... and its size (``X-Shopify-Shop-Api-Call-Limit: used/size``)
    leak: float | None = None  # ... and its leak per second, when stated (GraphQL's restoreRate)
    renewed: float | None = None  # the first response of a later window a process saw ...
    renewed_reset: float | None = None  # ... the reset it stated ...
    renewed_from: float | None = None  # ... and the one the responses before it stated (window_ends.renewed)
    in_a_row: int = 0  # refusals this process got in a row, this one included (throttles only)


@dataclass
class Learned:
    """The learned part of one limit key's state, stored as JSON beside its GCRA state."""

    rate: float | None = None  # the base rate (per second) set at `since`
    start: float = 0.0  # the first response the key reported (a slow start's clock)
    source: str | None = None  # "429s", "headers", "usage", "window"
    since: float = 0.0  # when `rate` was set; a refusal of an older token is the same round
    adm: int = 0  # the key's admissions at `since`: growth is counted in traffic
    high: float | None = None  # the lowest rate recently seen to overflow
    low: float | None = None  # the highest rate recently held without a refusal
    seen: float = 0.0  # the newest header observation applied (older ones are stale)
    lock: float = 0.0  # until when refusals belong to the last cut's round
    no_since: int = 0  # refusals of requests admitted since the last cut, inside its round
    trim: bool = False  # whether the last cut was a trim (see _deep)
    small_bucket: bool = False  # a declared pace's first bunch was refused: little slack (_cut)
    by_refusals: float = 0.0  # a round (its `since`) that a cut is sized in by the share refused (_far_above)
    hush: float = 0.0  # the end of the hold this round took after refusals in a row (0: none)
    throttled: int = 0  # refusals, all time
    exhausted: int = 0  # refusals that meant an exhausted quota
    cuts: int = 0  # rounds that cut the rate
    minute: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # [start, this, last] 429s
    ok: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # [start, this, last] accepted
    no: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # [start, this, last] refused
    usage: list[float] | None = None  # [used, at, admissions] at the last usage sample
    leak: float | None = None  # the measured leak rate of a usage bucket
    burst: int | None = None  # the burst that fits a stated quota per window (see _stated_pace)
    settle: float = 0.0  # no admission before this: what the last cut's overshoot costs
    budget_from: float = 0.0  # when the current budget window began (the last exhaustion's reset)
    budget_ok: int = 0  # responses accepted since then (whatever cuts came between)
    holds: float = 1.0  # the next hold lasts this many HOLDs (see MAX_HOLDS)
    peak: float | None = None  # the pace that held before the quota fell (see _deep)
    ends: list[list[float]] | None = None  # [[window number, lo, hi], ...]: recent window ends, each in (lo, hi]
    pend: list[float] | None = None  # [first seen, lo, hi]: the instant refusals point to, not yet a window
    win_q: float = 0.0  # requests accepted in the last window that ran out ...
    win_w: float = 0.0  # ... and that window's length
    period: float = 0.0  # the window's length as the destination states it
    reset_end: list[float] | None = None  # where a stated budget's window really ends (window_ends)
    recent: list[list[float]] | None = None  # a slow start's recent accepted reports (slow_start)
    exit: float = 0.0  # the pace that overflowed when the slow start ended at `since` (0: none)
    over: float = 0.0  # a pace that overflowed, climbed back towards until the climb overflows (slow_start)
    leaked: int = 0  # responses accepted after the slow start's exit, within its round ...
    bucket: bool = False  # ... enough to show a bucket overflowed, not a window (see slow_start)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | None) -> "Learned | None":
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None  # an unreadable learned state is forgotten, never fatal

    # -- counters ---------------------------------------------------------------------------
    def throttled_last_minute(self, now: float) -> int:
        start, this, last = self.minute
        if now - start >= 120:
            return 0
        if now - start >= 60:
            return int(round(this * max(0.0, 1 - (now - start - 60) / 60)))
        return int(round(this + last * (1 - (now - start) / 60)))

    def accepted_rate(
        self, now: float, bucket: list[float] | None = None, *, whole_window: bool = False
    ) -> float | None:
        """Responses accepted (or, given ``self.no``, refused) per second over about the last
        ACCEPTED_WINDOW (None: too little seen).

        With ``whole_window``, a count with nothing before it (a key's first window, or the
        first after a quiet spell) is still spread over a whole window: a destination's window
        or bucket takes its quota plus its burst in the first moments of a drain, which must
        not read as a rate several times its quota when a cut is sized. Growth reads the
        plain rate, so a slow start is not slowed by it."""
        start, this, last = self.ok if bucket is None else bucket
        age, width = now - start, ACCEPTED_WINDOW
        if start <= 0 or age >= 2 * width:
            return None
        if age >= width:
            return this / age
        kept = 1 - age / width  # the share of the last bucket still inside the window
        span = width if whole_window else age + (width * kept if last else 0.0)
        if age < 0.1 and not last:
            return None
        return (this + last * kept) / span if span >= 0.1 else None

    def _count(self, bucket: list[float], now: float, n: float, width: float, since: float | None = None) -> None:
        """Add ``n`` to a [start, this, last] bucket pair at ``now``. ``since``: when the first
        of them happened. A worker reports a tenth of a second of responses at once; the share that
        happened before the current bucket began belongs to the one before it, or a report
        landing just after the roll makes the rate read up to a tenth above what was accepted."""
        start = bucket[0]
        if now - start >= 2 * width:
            bucket[:] = [now, n, 0.0]
            return
        if now - start >= width:
            start += width
            bucket[:] = [start, 0.0, bucket[1]]
        early = 0.0
        if since is not None and since < start < now:
            early = n * (start - since) / (now - since)
        bucket[1] += n - early
        bucket[2] += early
