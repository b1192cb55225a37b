"""Learned quotas: the rate a destination really accepts, learned per limit key and shared.

A declared rate is a ceiling and a starting point, never a promise. What the destination says
sets the *effective* rate that GCRA paces a key at:

- **headers**: a stated budget (``X-RateLimit-Remaining`` with a reset, the IETF ``RateLimit``
  fields, ``RateLimit-Policy``'s quota per window) paces the key so the remaining budget lasts
  until the reset (a reset is rounded up to a whole second: until the window's real end, once
  learned, see ``window_ends``; a spent budget pauses the key until that end); a usage header
  (``used/size`` of a leaky bucket whose leak rate is not stated) is steered so the bucket stays
  half full, at the leak rate measured from it;
- **429s**: a refusal that asks for a short wait (an overflowing bucket or sliding window, or a
  bare 429) is a *congestion signal*: the rate is cut, once per round (a refusal of a request
  admitted before the last cut belongs to the same round), never below what the destination was
  seen to accept (a declared pace refused before anything was measured, the drain's first bunch
  overflowing a small bucket, is only trimmed, and the rounds that follow are sized by the share
  of their requests refused, heard before what was accepted; one far above what the drain's first
  moments show accepted is cut towards that, halving at most, since it reads low, and climbs back
  as after a slow start's exit); then it climbs back towards the last rate that overflowed, holds
  just under it, and probes above it with a step that doubles while no refusal comes, so a quota
  that grows is found again. Requests refused in a row after a cut hold every worker off for a
  moment (a pause in the store; not at the edge of a drain's first window); a fixed window that
  the burst ran out early resets within it. After a trim, a refusal of a request admitted after
  that moment, or a round whose requests are nearly all refused, is a quota that *fell*: the pace
  halves and every worker holds off until the round ends; climbs, holds and probes then run
  quicker and never far ahead of what is accepted (one that overflows goes back to where the pace
  held), and once the destination accepts well past the lower quota, it came back: the pace
  returns to where it held before the fall;
- a refusal that asks for a long wait (or says the budget is 0) is an **exhaustion**: the key
  is paused for every worker until the reset (the store's ``pause_limit``), and no rate is cut;
- a **window**: refusals whose ``Retry-After`` points to one instant as time passes (a
  fixed-window quota that says nothing but its reset) end a budget. The key learns the
  window's ends and length, holds every worker until each reset, and paces the next window
  at what the last one accepted over its length (over what is left of it, when the key
  resumed late in it); a later refusal at the predicted end of a
  window is read as that window running out at once, not as congestion (``refused_windows``).

An ``adaptive`` limit may rise above its declared rate (to its ``ceiling``, if any); one with no
rate at all starts with a slow start that ends at what the destination accepted (``slow_start``).
Growth never runs beyond three times the rate the destination was seen to accept lately, so an
idle key does not drift upwards and a probe stays close to the evidence.

Everything here is pure: the stores keep a :class:`Learned` per key (one JSON column) and call
these functions inside their transactions, so every worker on every machine paces to the same
figure, and the rules are unit-tested without a database.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import refused_windows, slow_start, usage_bucket, window_ends
from .quota_state import ACCEPTED_WINDOW, Learned, Observation
from .slow_start import SLOW_START
from .window_ends import EXACT_RESET

if TYPE_CHECKING:
    from .limits import LimitSpec

__all__ = [
    "Learned",
    "Observation",
    "effective_rate",
    "observe",
    "ceiling_of",
    "floor_of",
    "OVERFLOW_WAIT",
    "classify_wait",
    "overflow_retry",
    "effective_burst",
    "spent_until",
]

#: a refusal asking to wait at most this long is congestion (slow down), a longer one is an
#: exhausted quota (stop until the reset). A bucket that overflowed by one request answers
#: ``Retry-After: 1`` (whole seconds, rounded up) although it has room again in 1/rate.
OVERFLOW_WAIT = 2.0
#: after a cut: climb back to just under the last overflow in APPROACH seconds, hold there for
#: HOLD, then probe above with a step starting at PROBE_STEP that doubles every PROBE_DOUBLING
#: seconds (never beyond three times the accepted rate)
APPROACH = 0.5
HOLD = 1.0
#: a probe that overflows again near the same rate doubles the next hold, up to this many HOLDs
#: (a plateau where the quota was found twice; a quota that changed is found again later)
MAX_HOLDS = 4
PROBE_STEP = 0.02
PROBE_DOUBLING = 0.5
#: the hold sits this far under the lowest rate seen to overflow
KEEP = 0.95
#: the destination accepting this many times the lowest rate seen to overflow, over a window
#: since the last cut, while the pace is past it too, shows that a quota that fell came back:
#: the pace returns to where it held before the fall (accepted, not merely sent: a sliding
#: window takes a probe past its quota plus its burst for a while before it refuses anything)
PAST = 1.1
#: ... until then each climb back and each hold take this share of APPROACH and HOLD (the
#: return is found only by a probe, and the time between probes is what it is found late by),
#: and so does the step's doubling once the lower quota is found (a fast probe still searching
#: for it would run past it and be refused a burst) ...
PEAK_TIME = 0.5
#: ... and a probe starts at this multiple of the last overflow (never past the midpoint to the
#: old pace, where a refused probe would be the way back: see _way_back) ...
PEAK_JUMP = 1.3
#: ... and runs no more than this share above what the destination accepts. What is accepted
#: reads a little under the truth (the other processes' newest acceptances are not reported
#: yet), and a probe led by less finds a quota that came back a window later
PEAK_LEAD = 0.5
#: one round cuts the rate by the share of requests refused lately, within these bounds (or by
#: CUT when too little was seen to tell) ...
MIN_CUT = 0.03
MAX_CUT = 0.5
WELL_ABOVE = 0.1
CUT = 0.8
FIRST_CUT = 0.5  # the first refusal ever, with nothing measured
#: ... unless a declared pace was accepted at this share of it over a whole window (see _cut): less
#: than all of it, since the other processes' latest responses are not reported yet
EDGE = 0.75
#: after a cut, further refusals start a new round only once half the destination's own wait
#: (its Retry-After, else one second) has passed: a sliding window remembers what was sent
#: before the cut for that long, though most of it is gone by half-time
LOCK_SHARE = 0.5
#: ... unless the pace is this many times what the destination accepted lately, or the
#: requests admitted since the cut are refused: at least DEEP_SHARE of them, DEEP_MIN and
#: DEEP_SPAN seconds of the pace (see _deep). DEEP_MIN is what a low pace needs: a fixed window
#: whose budget the declared burst ran out a few requests early refuses those few in a row
#: until its reset, and that is not a quota that fell
FAR_ABOVE = 1.5
#: a round whose requests go on being refused, HUSH_AFTER of them in a row after the cut's,
#: holds every worker off for HUSH seconds (a pause in the store: the tokens booked into it are
#: void), once per round. After a trim, both a fixed window that the burst ran out a little
#: early and a quota that fell refuse everything for a while; the first ends within HUSH, the
#: second does not, so a refusal of a request admitted after the hold is a quota that fell (see
#: _deep) and is found after a handful of refusals, not DEEP_MIN of them
HUSH_AFTER = 3
#: ... or this many refusals one process got in a row, none accepted between (see _far_above)
IN_A_ROW = 2 * HUSH_AFTER
HUSH = 0.15
#: ... except in a round begun this soon (seconds) after the key's first response: a sliding
#: window's first second took the drain's first bunch of requests, and refusals in a row as that
#: bunch ages out are the window's edge, not a quota that fell or a window run out early (and
#: a hold there is a share of the drain's first seconds lost)
EARLY = 1.5
DEEP_MIN = 10
DEEP_SPAN = 0.1
DEEP_SHARE = 0.75
#: ... but never below this share of the rate the destination was seen to accept lately
ACCEPTED_FLOOR = 0.9
#: growth never runs beyond this multiple of the accepted rate
EVIDENCE = 3.0
#: a declared pace's first rounds in a drain (see _far_above) are sized by what they refused,
#: once this many of their requests were ...
FAR_MIN = 5
#: ... and, but for the first (a trim at the drain's own pace), once this long has passed since
#: the cut: what is refused before was mostly sent before it (booked ahead at the pace cut), and
#: the count of what was accepted reads only the workers' first reports
SETTLED = 0.1
#: the lowest rate a learned limit falls to unless the limit declares a floor (one per minute)
DEFAULT_FLOOR = 1 / 60
#: a learned rate admits a burst of this many seconds of it (see effective_burst)
LEARNED_BURST = 0.025
LEARNED_BURST_EXTRA = 2
#: how much earlier than stated a reset comes, on average (resets are whole seconds)
RESET_ROUNDING = 0.5
#: the window ends a key remembers (their spacing measures the window's length)
WINDOW_ENDS = 6
#: a window's pace holds for one window, then rises by this share of it per window (so a quota
#: that grew is found again, and each window's end is seen and measured)
WINDOW_PROBE = 0.08
WINDOW_SHRINK = 0.2
#: the highest rate anything learned may reach (a sanity bound, not a limit anyone declares)
MAX_RATE = 1e6


def ceiling_of(spec: "LimitSpec") -> float:
    """The highest effective rate: the declared rate, unless the limit is adaptive."""
    if spec.rate is not None and not spec.adaptive:
        return spec.rate.per_second
    return spec.ceiling.per_second if spec.ceiling is not None else MAX_RATE


def floor_of(spec: "LimitSpec") -> float:
    return spec.floor.per_second if spec.floor is not None else min(DEFAULT_FLOOR, ceiling_of(spec))


def _clamp(spec: "LimitSpec", rate: float) -> float:
    if not math.isfinite(rate):
        rate = MAX_RATE
    return min(max(rate, floor_of(spec)), ceiling_of(spec))


def effective_rate(
    spec: "LimitSpec", learned: Learned | None, admitted: int, now: float, *, steady: bool = False
) -> float | None:
    """The rate (per second) GCRA paces this key at ``now``; None when the limit has no rate.

    Growth (a slow start, the climb back after a cut, a probe above the last overflow) runs
    on the clock but never beyond three times what the destination was seen to accept lately: an
    idle key does not drift upwards, and a probe cannot run far ahead of the evidence. With
    ``steady``, without the faster pace that spends a window resumed late (what a key's rate
    is shown as: that pace lasts until the window ends, and says nothing of the quota)."""
    if learned is None or learned.rate is None:
        if spec.rate is not None and not spec.adaptive:
            return _clamp(spec, spec.rate.per_second)
        if spec.rate is not None:
            # adaptive, nothing learned yet: hold the declared rate, then probe above it
            base = Learned(rate=spec.rate.per_second, since=learned.start if learned else now)
            return _clamp(spec, _grown(base, learned, now)[0])
        if not spec.adaptive:
            return None
        # a slow start: double every slow_start.SLOW_START_DOUBLING seconds until the first refusal (and
        # start again after a quiet spell: nothing accepted lately is no evidence of anything)
        if learned is None or learned.accepted_rate(now) is None:
            return _clamp(spec, SLOW_START)
        return _clamp(spec, slow_start.pace(learned.start, now))
    if learned.source in ("headers", "usage"):
        return _clamp(spec, learned.rate)
    if learned.source == "window":
        windows = (now - learned.since) / learned.win_w - 1 if learned.win_w > 0 else 0.0
        probed = learned.rate * (1 + WINDOW_PROBE * min(max(windows, 0.0), 10.0))
        return _clamp(spec, probed if steady else max(probed, refused_windows.rest_of_window(learned, now)))
    return _clamp(spec, _grown(learned, learned, now)[0])


def effective_burst(spec: "LimitSpec", learned: Learned | None, rate: float) -> int:
    """The GCRA burst at a learned rate: the declared burst, or LEARNED_BURST seconds of the rate
    plus LEARNED_BURST_EXTRA, whichever is more. A rate found at run time has no declared burst
    to match, and GCRA forgets the time a late claim lost beyond its burst: with a burst of one
    or two, every claim's round trip would be lost time, and the claims, not the quota, would
    set the pace. Held at KEEP of a destination's rate, this burst stays within the few extra
    requests a real API tolerates in a window."""
    if spec.rate is not None and not spec.adaptive and (learned is None or learned.rate is None):
        return spec.burst
    if learned is not None and learned.source == "headers" and learned.burst is not None:
        return learned.burst
    return max(spec.burst, min(int(rate * LEARNED_BURST) + LEARNED_BURST_EXTRA, 1000))


def _evidence(learned: Learned | None, now: float, at_least: float) -> float:
    """How far growth may go: EVIDENCE times the accepted rate (nothing beyond ``at_least`` when
    nothing was accepted lately)."""
    accepted = learned.accepted_rate(now) if learned is not None else None
    return max(at_least, EVIDENCE * accepted) if accepted else at_least


def _grown(base: Learned, learned: Learned | None, now: float) -> tuple[float, bool]:
    """(rate now, whether the hold was completed) after a cut (or a declared start): climb to
    just under the last overflow, hold, then probe above it."""
    rate = base.rate or SLOW_START
    top = max(KEEP * base.high, rate) if base.high else rate
    s = max(now - base.since, 0.0)
    pace = PEAK_TIME if base.peak else 1.0
    if top > rate:
        approach = APPROACH * pace
        if s < approach:
            return rate + (top - rate) * s / approach, False
        s -= approach
    climbing = base.over > top  # back towards a pace that overflowed, read low (see slow_start)
    hold = (
        slow_start.climb_hold(base.bucket, base.settle - base.since) if climbing else HOLD * (base.holds or 1.0) * pace
    )
    if s < hold:
        return top, False
    steps = min((s - hold) / (PROBE_DOUBLING * (pace if base.high else 1.0)), 40.0)
    probe = slow_start.climb(top, s - hold, base.over) if climbing else top * (1 + PROBE_STEP * (2**steps - 1))
    if base.peak and base.high:
        # a probe for a quota that fell starts well past where its return shows, not a small
        # step above the hold: if the quota came back, a window shows it within half a second;
        # if not, a sliding window refuses it from the moment it is full whatever the pace, so
        # it costs what a probe that climbed there does
        probe = max(probe, min(PEAK_JUMP * base.high, (base.high + base.peak) / 2))
    if base.peak and learned is not None:
        accepted = learned.accepted_rate(now, whole_window=True)
        if accepted:
            # (or than the pace that held: a hold after refusals in a row leaves a gap in
            # what was accepted for a whole window, and a probe led by it starts late)
            probe = min(probe, max(accepted, base.low or 0.0) * (1 + PEAK_LEAD))
    return max(top, min(probe, _evidence(learned, now, top))), True


def observe(spec: "LimitSpec", learned: Learned | None, admitted: int, obs: Observation) -> tuple[Learned, str | None]:
    """Apply one observation; returns the new state and what changed ("cut", "fell": a cut that
    also holds every worker off until the round ends, "pause": a hold alone, "headers",
    "usage", "window", "leak": a slow start's exit shown to be a bucket's, whose hold is void)
    or None."""
    now = obs.now
    current = effective_rate(spec, learned, admitted, now)
    began = obs.first_ok if obs.first_ok is not None and now - 1.0 < obs.first_ok < now else now
    state = learned if learned is not None else Learned(start=began)  # (the first response's time)
    if obs.accepted:
        state._count(state.ok, now, obs.accepted, ACCEPTED_WINDOW, since=obs.first_ok)
    bucket = False  # (a slow start's exit shown to be a bucket's: see slow_start)
    if spec.rate is None and (state.rate is None or state.exit):
        bucket = slow_start.follow(state, obs, lambda rate: _clamp(spec, rate))
    state.exhausted += obs.exhausted
    if obs.throttled:
        state.throttled += obs.throttled
        state._count(state.minute, now, obs.throttled, 60.0)
        state._count(state.no, now, obs.throttled, ACCEPTED_WINDOW)
    if obs.window:
        state.period = float(obs.window)
    if obs.renewed is not None and obs.renewed_reset is not None and obs.renewed_from is not None:
        state.reset_end = window_ends.renewed(
            window_ends.check(state.reset_end), obs.renewed, obs.renewed_reset, obs.renewed_from, state.period or None
        )
    if state.source == "window" and state.win_w > 0 and refused_windows.next_window(state, obs):
        _window_pace(spec, state)
    if obs.accepted:
        _came_back(spec, state, admitted, now, current)
        late = obs.first_ok is not None and obs.first_ok < state.budget_from and now < state.lock + state.win_w
        if state.source == "window" and state.win_w > 0 and (now < state.settle or late):
            # reported late (every worker reports on its own clock): the window that ran out
            state.win_q += obs.accepted
            _window_pace(spec, state)
        else:
            state.budget_ok += obs.accepted
    changed: str | None = None
    # (a refusal that states its budget is spent ends a window whose end window_ends learns)
    stated = obs.remaining == 0
    end = (
        refused_windows.end_of(state, now, obs.wait, obs.exhausted > 0)
        if obs.throttled and obs.wait and not stated
        else None
    )
    if end is not None and current is not None:
        changed = _window(spec, state, admitted, now, current, *end)
    elif obs.exhausted and obs.reset_at is not None and current is not None:
        changed = _exhausted(spec, state, admitted, now, current, obs.reset_at)
    elif obs.throttled and obs.token_at is not None and obs.token_at >= state.since and current is not None:
        if obs.token_at >= state.lock:
            changed = _cut(spec, state, admitted, now, current, obs.wait, obs.token_at)
        else:
            state.no_since += obs.throttled
            changed = _far_above(spec, state, admitted, now, current, obs.wait, obs.token_at, obs.in_a_row)
    elif not obs.throttled and obs.now >= state.seen:
        changed = _from_headers(spec, state, admitted, obs, current)
    return state, changed or ("leak" if bucket else None)


def _far_above(
    spec: "LimitSpec",
    state: Learned,
    admitted: int,
    now: float,
    current: float,
    wait: float | None,
    token_at: float,
    in_a_row: int,
) -> str | None:
    """Inside a round's lock two measurements still cut: most of what was admitted since the
    cut refused (the quota fell well below the pace), or a pace far above what the destination
    accepted lately (the first refusals of a drain, before anything was measured). "Admitted"
    goes up to this refusal's token: the tokens taken since (booked ahead, or sent late by a
    process whose jobs lag their bookings) have no answer yet, and counting them would put the
    cut off by several times that lag while the full window refuses everything."""
    answered = min(admitted - state.adm, current * max(0.0, token_at - state.since) + 1)
    deep = max(DEEP_MIN, DEEP_SPAN * current, DEEP_SHARE * answered)
    if state.source == "429s":
        if state.trim and (state.no_since >= deep or (state.hush and token_at >= state.hush)):
            return _deep(spec, state, admitted, now, current)
        # (refusals in a row: of requests spread over HUSH_AFTER of the pace's slots, not a bunch
        # that went out together. Or IN_A_ROW of one process's own answers, which it sees in
        # order: the count of tokens above reads high when the requests lag their tokens, as
        # they do on a busy database, and then a quota that fell was found a window late)
        spread = min(state.no_since, answered) >= HUSH_AFTER and state.no_since >= DEEP_SHARE * answered
        own = in_a_row >= IN_A_ROW and state.no_since >= HUSH_AFTER
        if not state.hush and (spread or own) and state.since - state.start >= EARLY:
            state.hush = state.settle = max(state.settle, now + HUSH)
            return "pause"
    settled = now - state.since >= SETTLED
    counted = (state.accepted_rate(now) or None) if settled else None
    refused = None
    if _by_refusals(spec, state) and min(state.no_since, answered / 2) >= FAR_MIN and (settled or state.trim):
        # a round begun by the drain's first bunch (trimmed) or by a cut sized like this one:
        # refusals are heard at once, acceptances a report later, and what the first tenths of
        # a second show accepted reads high, a bucket's slack with it. A bucket full at a pace
        # above its leak rate refuses the excess (a window that filled refuses all), so the
        # share of the tokens since the cut that was refused measures it too (the lower wins)
        refused = current * max(1.0 - state.no_since / max(answered, 1.0), 0.0)
    readings = [r for r in (counted, refused) if r is not None]
    if not readings or current <= FAR_ABOVE * min(readings):
        return None
    accepted = min(readings)
    # what a drain's first moments show accepted reads low, too (the workers' latest responses
    # are not reported yet, and their first requests went out late): at most a halving (a pace
    # still far above is cut again a tenth of a second on), and a cut only that count called
    # climbs back towards the pace refused as after a slow start's exit (see slow_start)
    new = _clamp(spec, max(accepted, FIRST_CUT * current))
    state.rate, state.since, state.adm, state.high, state.low = new, now, admitted, max(new, accepted * 1.05), None
    if refused is not None and current > FAR_ABOVE * refused:
        state.by_refusals = now  # (what was refused shows it far above: the next round too)
    else:
        state.over = max(state.over, current)
    state.lock, state.no_since, state.trim, state.hush = now + _lock(wait), 0, False, 0.0
    state.cuts += 1
    return "cut"


def _by_refusals(spec: "LimitSpec", state: Learned) -> bool:
    """Whether this round of a declared pace, in a drain's first moments, was begun by the trim
    of the drain's first bunch or by a cut sized by the share refused (see _far_above)."""
    return spec.rate is not None and state.by_refusals == state.since and state.since - state.start < EARLY


def _deep(spec: "LimitSpec", state: Learned, admitted: int, now: float, current: float) -> str:
    """A quota that fell well below the pace: the cut sized from what was accepted before (a
    trim) leaves a sliding window full, and it refuses all it is sent until the old pace ages
    out of it. Halve the pace, hold every worker off until the round's lock ends (sending into
    the full window only refuses), and climb from the new pace, not back towards the old one."""
    new = _clamp(spec, current * FIRST_CUT)
    # the pace that held, as the round's trim found it: neither the trimmed pace (the fall's
    # first refusal trims it, and a way back to it leaves the old quota a few percent short
    # until a probe climbs the rest) nor a probe's, which may have run past what was accepted
    state.peak = max(state.peak or 0.0, state.high or current)
    state.rate, state.source, state.since, state.adm = new, "429s", now, admitted
    state.high, state.low, state.no_since, state.trim = None, None, 0, False  # the new quota is not located yet
    state.over = 0.0
    state.hush = 0.0
    state.settle = max(state.settle, state.lock)
    state.cuts += 1
    return "fell"


#: see _exhausted
EXHAUSTED_MARGIN = 1.15


def _exhausted(
    spec: "LimitSpec", state: Learned, admitted: int, now: float, current: float, reset_at: float
) -> str | None:
    """A quota spent before its reset: pace the next budget so it lasts until the next reset —
    what was accepted since the last reset, spread over the time from then to this reset. (The
    key is paused until the reset as well; after it, jobs come back at this pace, not all at
    once.) The pace holds through the next window, then probes upwards as after any cut: a
    probe that ran ahead would only spend the budget early and end its window in refusals."""
    began = state.budget_from or state.start
    span = reset_at - began
    if not state.budget_ok or span <= 0:
        return None
    # (a little more than was counted: the other processes' latest responses are not reported yet)
    pace = min(EXHAUSTED_MARGIN * state.budget_ok / span, current)
    state.rate, state.source, state.adm = _clamp(spec, pace), "429s", admitted
    state.since = reset_at + span  # held flat until the next window ends
    state.high, state.low, state.lock, state.trim = None, None, reset_at, False
    state.budget_from, state.budget_ok, state.over = reset_at, 0, 0.0
    state.cuts += 1
    return "cut"


def spent_until(
    learned: Learned | None, now: float, stated: float, sent: float, paused: float = 0.0
) -> tuple[float, Learned]:
    """A stated budget is spent: (when the key's pause ends, the new learned state). Not the
    stated reset, rounded up to a whole second, but the window's real end as learned across
    windows, or one probe request early in what is unknown of it (see ``window_ends``)."""
    state = learned if learned is not None else Learned(start=now)
    until, state.reset_end = window_ends.resume(
        window_ends.check(state.reset_end), now, stated, sent, state.period or None, paused
    )
    return until, state


def _window_pace(spec: "LimitSpec", state: Learned) -> None:
    """Pace at what the last window that ran out accepted over the window's length (as now known)."""
    w = refused_windows.length(state, state.budget_from, state.budget_from + state.win_w)
    if w > 0:
        state.win_w = w
        state.rate = _clamp(spec, state.win_q / w)


def _window(
    spec: "LimitSpec",
    state: Learned,
    admitted: int,
    now: float,
    current: float,
    n: int,
    lo: float,
    hi: float,
    fresh: bool,
) -> str:
    """A fixed window ran out: hold every worker until its end, and pace the next window at
    what this one accepted over the window's length."""
    paced = state.rate if state.source == "window" else None
    ends = [] if fresh or not state.ends else [list(e) for e in state.ends]
    same = bool(ends) and int(ends[-1][0]) == n
    if same:
        ends[-1] = [n, lo, hi]
    else:
        ends = (ends + [[n, lo, hi]])[-WINDOW_ENDS:]
    state.ends = ends
    while len(state.ends) > 1 and refused_windows.length_range(state) is None:
        state.ends = state.ends[1:]  # ends that no single length explains: the windows changed
    # a window seen for the first time: every worker waits all the destination asked. Known
    # windows: until the middle of what is still unknown of the reset (the evidence of earlier
    # windows bounds it); a request refused there narrows it from below, the first accepted
    # one from above (refused_windows.next_window)
    state.settle = (lo + hi) / 2 if hi - lo > 2 * EXACT_RESET and not fresh and len(ends) > 1 else hi
    if same:
        return "window"
    w = refused_windows.length(state, state.budget_from or state.start, hi)
    if w <= 0 or not state.budget_ok:
        return "window"
    q = float(state.budget_ok)
    if paced is not None:
        # a window paced at `current` that ran out this long before its end: the quota is that
        # pace over the part of the window it lasted, from its start or from the resume when
        # that came later (a count can miss the latest reports of other workers, or start
        # late; the pace cannot), and one window's end never takes more than a WINDOW_SHRINK
        # of the pace away
        sent = now - max(state.settle - w, state.since)
        q = max(q, current * min(max(sent, 0.0), w), (1 - WINDOW_SHRINK) * paced * w)
    state.win_q, state.win_w = q, w
    state.rate, state.source, state.since, state.adm = _clamp(spec, state.win_q / w), "window", state.settle, admitted
    state.high = state.low = None
    state.lock, state.trim = hi, False
    state.budget_from, state.budget_ok = state.settle, 0
    state.cuts += 1
    return "window"


def _lock(wait: float | None) -> float:
    return LOCK_SHARE * min(wait if wait is not None and wait > 0 else 1.0, OVERFLOW_WAIT)


def overflow_retry(wait: float | None, changed: str | None = None) -> float:
    """How long a request refused for congestion waits before it takes a token again: what the
    destination asked, or, when it stated nothing, as long as the round its refusal belongs to
    (the retry is paced like any request; waiting a whole second more only delays it, and the
    last of a drain's jobs with it). At a fixed window's end (``changed`` "window"), nothing:
    the key is held for every worker until the window's learned reset, and the request queues
    for a token like the rest (its own rounded-up wait sent it up to a second after them)."""
    if changed == "window":
        return 0.0
    return wait if wait is not None and wait > 0 else _lock(None)


def _cut(
    spec: "LimitSpec", state: Learned, admitted: int, now: float, current: float, wait: float | None, token_at: float
) -> str:
    held = False
    # a climb back (after a slow start's exit, or a cut far above what was accepted) overflowed:
    # what it took over the last second is its average, far under a bucket's leak rate; the pace
    # it had a moment before is not (see slow_start). A refusal of a request sent before the
    # climb began is the held pace's
    climbing = state.over and state.rate and state.source == "429s" and _grown(state, state, token_at)[1]
    climbed = _grown(state, state, token_at - slow_start.CLIMB_LAG)[0] if climbing else 0.0
    if state.rate is not None and state.source == "429s":
        _, held = _grown(state, state, now)
        if held:
            state.low = max(KEEP * state.high, state.rate) if state.high else state.rate
        # a probe that overflowed near where the last one did: hold longer there next time
        near = held and state.high is not None and current <= state.high * 1.1
        if state.peak is not None and (current >= state.peak or _way_back(state, current)):
            state.peak = None  # the way back to it overflowed, or it was reached
        # (while a quota that fell may come back, the probes keep a short hold; a refusal before
        # the probe, after a trim that fell short, says nothing about the probe's place)
        if held or state.peak is not None:
            state.holds = min(state.holds * 2, MAX_HOLDS) if near and state.peak is None else 1.0
    if state.low is not None and current <= state.low * 1.01:
        state.low = None  # the quota fell below what held before
    state.over = 0.0
    accepted = state.accepted_rate(now, whole_window=True)
    refused = state.accepted_rate(now, state.no, whole_window=True) or 0.0
    share = refused / (accepted + refused) if accepted else None
    if state.small_bucket and now - state.start < ACCEPTED_WINDOW:
        # (a destination that refused the drain's first bunch is a small bucket, taking its rate
        # from the start: spread over a whole window, the count reads a share of that rate)
        accepted = state.accepted_rate(now) or accepted
    # a rate the destination was seen to take for a whole window is at its edge, not far above
    # it: the first refusal there is jitter (requests sent a little late arrive bunched), so it
    # trims like any later one instead of halving the pace and holding every worker off
    edge = spec.rate is not None and accepted is not None and accepted >= EDGE * current
    # a declared pace refused before anything was measured: the drain's first bunch (the burst,
    # and every worker's first requests at once) overflowed a small bucket, which says nothing
    # of the rate. A trim; a pace far above what is then accepted is cut to it once measured
    # (see _far_above)
    bunch = share is None and spec.rate is not None and state.rate is None
    state.by_refusals = now if bunch else 0.0  # (see _far_above)
    state.small_bucket = state.small_bucket or bunch
    first = not bunch and (share is None or (not state.cuts and not edge))
    if first:
        # the first refusal (a slow start's end, a declared rate found too high) or nothing
        # measured yet (a learned pace): a multiplicative cut, and no aim much above it, since
        # how far the pace overshot is unknown
        new = current * (CUT if state.cuts else FIRST_CUT)
        high = min(current, new * 1.25, (accepted or current) * 1.05)
        new = min(new, high)
        shown = slow_start.demonstrated(state.recent, now) if spec.rate is None and state.rate is None else None
        if shown:  # a slow start's end: what the destination took over the last second
            new, high = max(new, slow_start.exit_pace(shown, current)), max(high, min(current, shown * 1.05))
            state.exit = state.over = current
            state.leaked, state.bucket = 0, False
    elif share is not None and share >= WELL_ABOVE:
        # a good share refused: the pace was well above the quota, and what the destination
        # accepted (its capacity plus a little burst) is the best estimate of it
        new = min(current * (1 - min(share, MAX_CUT)), accepted or current)
        high = min(current, (accepted or current) * 1.05)
    else:
        # just crossing the quota (one refusal among many, or jitter at its edge): a trim; and
        # the climb back aims no higher than what the destination took (a probe may have run
        # well past it before the first refusal came back)
        new = current * (1 - max(share or 0.0, MIN_CUT))  # (no share: the first bunch)
        high = min(current, (accepted or current) * 1.05)
        if held and accepted:
            # a probe's step doubles while nothing is refused, so it ran past the quota by the
            # time the refusal came back: back to what was accepted (or what held before)
            new = min(new, max(accepted, state.low or 0.0))
    held_at = state.low if held and state.peak is not None else None
    searching = held_at is not None and held_at < current
    if held_at is not None and searching:
        # a probe for a quota that fell overflowed. What was accepted is no guide here: a
        # sliding window takes its quota plus its burst, and at a low pace a report or two
        # more or less is a tenth of a window. Back to where the pace held, so the window
        # drains (every request sent above the quota is refused until it does), and the climb
        # aims halfway between that and the probe's pace
        new, high = held_at, max(held_at, min(high, (held_at + current) / 2))
    if climbed:
        new, high = max(new, KEEP * climbed), max(high, climbed)
    sized = new
    if state.low is not None and state.low < current:
        new = max(new, state.low)
    if accepted and not searching:
        new = max(new, accepted * ACCEPTED_FLOOR)
    new = _clamp(spec, min(new, current))
    # a trim, or a cut that what was held or accepted before the round kept small: if the
    # quota fell, the refusals go on (see _deep)
    state.trim = new > sized * 1.01 or (not first and (share or 0.0) < WELL_ABOVE)
    state.rate, state.source, state.since, state.adm = new, "429s", now, admitted
    state.high = max(new, high)
    state.lock, state.no_since, state.hush = now + _lock(wait), 0, 0.0
    if first:  # (a slow start's overflow holds off as long as a halving's: see slow_start)
        state.settle = now + _settle(current, min(new, current * FIRST_CUT) if state.exit else new, wait)
    state.cuts += 1
    return "cut"


def _came_back(spec: "LimitSpec", state: Learned, admitted: int, now: float, current: float | None) -> None:
    """A quota that fell came back: the pace, and what the destination accepted over a window
    since the last cut, are both PAST x the last overflow (reports come in chunks, so a count
    alone swings by one). The pace returns to where it held before the fall at once."""
    past = PAST * state.high if state.high is not None and state.source == "429s" else None
    if state.peak is None or past is None or state.peak <= past or current is None or current < past:
        return
    if now - state.since < ACCEPTED_WINDOW:
        return  # the window still counts what was accepted before the last cut, or the fall
    accepted = state.accepted_rate(now, whole_window=True)
    if accepted is None or accepted < past:
        return
    state.rate, state.since, state.adm = _clamp(spec, state.peak), now, admitted
    state.high, state.low, state.peak, state.holds, state.trim = None, None, None, 1.0, False


def _way_back(state: Learned, current: float) -> bool:
    """Whether a pace that overflowed was on the way back to the pace before a fall, not a probe
    still locating the lower quota: past PAST x the last overflow and nearer the old pace than
    the last overflow. (Right after a fall the last overflow is sized from a window still full
    of the old pace, well under the lower quota; a probe that finds the lower quota runs past
    it, and must not forget the old pace, or the quota's return is found step by step.)"""
    high, peak = state.high, state.peak
    return bool(high and peak and current > PAST * high and current > (high + peak) / 2)


def _settle(current: float, new: float, wait: float | None) -> float:
    """How long every worker holds off after a first cut (nothing measured yet), besides pacing
    slower: a window that overflowed stays full for a while whatever the new pace, and every
    request sent into it is refused. The first cut (by half) waits half the destination's wait
    (LOCK_SHARE of it). Later cuts are trims near the quota, where holding off would only
    waste it."""
    depth = max(0.0, 1 - new / current) if current > 0 else 0.0
    return _lock(wait) * min(1.0, depth / FIRST_CUT)


def _from_headers(
    spec: "LimitSpec", state: Learned, admitted: int, obs: Observation, current: float | None
) -> str | None:
    now = obs.now
    target: float | None = None
    burst: int | None = None
    source = "headers"
    if obs.remaining is not None and obs.reset_at is not None and obs.reset_at > now and obs.remaining > 0:
        # spend what is left evenly until the reset. A reset is stated in whole seconds (rounded
        # up, or an epoch second): on average it comes RESET_ROUNDING before the stated time, and
        # pacing to the stated one would leave that part of every window unspent. Reaching a
        # budget of 0 a little early costs nothing: the key is paused until the reset
        # (or, once learned, until the window's real end: see window_ends)
        end = window_ends.expected(window_ends.check(state.reset_end), obs.reset_at)
        target = obs.remaining / max((obs.reset_at - RESET_ROUNDING if end is None else end) - now, 0.05)
    elif obs.limit and obs.window:
        target, burst = _stated_pace(obs.limit, obs.window)
    elif obs.used is not None and obs.size:
        source = "usage"
        target = usage_bucket.steer(state, admitted, obs, current, MAX_RATE)
    if target is None or not math.isfinite(target) or target <= 0:
        return None
    state.rate, state.source, state.since, state.adm, state.seen = _clamp(spec, target), source, now, admitted, now
    state.high = state.low = None
    state.burst = burst
    return source


def _stated_pace(limit: int, window: float) -> tuple[float, int]:
    """The rate and burst for a quota stated as ``limit`` requests per ``window`` seconds.

    GCRA at rate r with burst b admits at most r * window + b in any span of ``window``, so
    (limit - b) / window never overflows the destination's window, sliding or fixed; a small
    burst (at most a twentieth of the quota, at least one) keeps that loss small while still
    absorbing the claims' round trips."""
    rate = limit / window
    burst = max(1, min(int(rate * LEARNED_BURST) + LEARNED_BURST_EXTRA, int(limit * 0.05)))
    return max(limit - burst, 1) / window, burst


def classify_wait(wait: float | None, remaining: int | None) -> str:
    """A refusal is an "overflow" (congestion: slow down) or an "exhaustion" (stop until the
    reset): a short or absent wait is the first, a long one or a stated budget of 0 the second."""
    if remaining == 0:
        return "exhaustion"
    if wait is not None and wait > OVERFLOW_WAIT:
        return "exhaustion"
    return "overflow"
