"""Where a fixed window really ends, learned per limit key from stated resets rounded up.

A destination that states its budget (``X-RateLimit-Remaining`` with ``X-RateLimit-Reset``
in epoch seconds, or the IETF ``RateLimit`` field's ``t`` in whole seconds) rounds the
window's end up to a whole second: the real end lies anywhere in ``(stated - 1, stated]``.
A key paused until the stated reset loses that part of every window: half a second on
average, an eighth of a 4 s window.

So each key keeps an interval ``(lo, hi]`` known to hold the end of its last window, and the
windows' length. Every window narrows it from both sides:

- from below, by any request the window took or refused (its end came after the request was
  sent): the one that spent the budget, and any refused as the window ran out;
- from above, by the first response of a later window (its end came before that response).

The pause that follows a spent budget ends at the *probe*: one request, early in what is still
unknown of the end (``PROBE_SHARE`` of the way in), then the key's steady pace. Taken, it
bounds the end from above; refused, from below, and the key waits until the latest instant
the end may be (no second probe in that window). Once the interval is narrower than
``KNOWN``, the pause simply ends at its latest instant. Windows of a fixed length follow each
other, so what one window taught is carried to the next (shifted by the length); a window that
contradicts it (a request refused after the learned end) starts the learning again from the
stated reset.

Everything here is pure, on a plain list stored in the key's learned state, so every worker on
every machine pauses until the same instant.
"""

from __future__ import annotations

import math

__all__ = [
    "KNOWN",
    "PROBE_SHARE",
    "EXACT_RESET",
    "check",
    "expected",
    "resume",
    "renewed",
    "stated_bounds",
    "reset_bounds",
]

#: a ``Retry-After`` in whole seconds (rounded up) says the reset comes within the second before
#: the instant it points to; a fractional one is taken as exact to within EXACT_RESET
EXACT_RESET = 0.05
#: an end known to within this many seconds is known: the pause ends at its latest instant
KNOWN = 0.03
#: a probe goes this share of the way into what is unknown of the end: a key paced at the
#: quota spends its budget just before the end, so the end lies near the interval's start
PROBE_SHARE = 0.25
#: a stated reset is rounded up to a whole second
ROUNDING = 1.0
#: a reset in seconds from a response is counted from the destination's answer, read up to
#: this much later
LATE = 0.05
#: a budget is paced to last until the learned end once it is known to within this (seconds)
UNSURE = 0.5

# the learned state, one list: [lo, hi, length, resume, stated]: the last window's end in
# (lo, hi], the windows' length (0: not known yet), when its pause ends (the probe's moment),
# and the reset that window stated
LO, HI, LENGTH, AT, STATED = range(5)


def stated_bounds(stated: float, sent: float, now: float) -> tuple[float, float]:
    """The end of a window that stated ``stated`` and took or refused a request sent at
    ``sent`` (answered by ``now``). A reset in epoch seconds is the end rounded up; one in
    seconds from the response (read as from ``now``) was counted from the moment the
    destination answered, as much as ``now - sent`` earlier."""
    whole = abs(stated - round(stated)) < 1e-6
    return max(stated - ROUNDING - (0.0 if whole else max(now - sent, 0.0)), sent), stated


def reset_bounds(now: float, wait: float) -> tuple[float, float]:
    """When the reset a refusal asks to wait ``wait`` for can come: within the second before
    ``now + wait`` for a wait in whole seconds or a reset at a whole epoch second (both rounded
    up), at it for a fractional one."""
    p = now + wait
    whole = abs(wait - round(wait)) < 1e-6 or abs(p - round(p)) < 1e-6
    tol = 1.0 if whole else EXACT_RESET
    return p - tol, p + 1e-3


def _length(end: list[float] | None, stated: float, length: float | None) -> float:
    """The windows' length: as the destination states it, else from two stated resets in epoch
    seconds (exact for windows of whole seconds), else what was known."""
    if length is not None and length > 0:
        return float(length)
    if end is None:
        return 0.0
    step = stated - end[STATED]
    whole = abs(stated - round(stated)) < 1e-6 and abs(end[STATED] - round(end[STATED])) < 1e-6
    if not end[LENGTH] and whole and step >= ROUNDING:
        return step
    return end[LENGTH]


def _carried(end: list[float], lo: float, hi: float) -> tuple[float, float, bool] | None:
    """The learned end carried to the window whose end lies in (lo, hi]: (its bounds, whether
    it is the same window); None when nothing carries (an unknown length, or a contradiction)."""
    length = end[LENGTH]
    mid = ((lo + hi) - (end[LO] + end[HI])) / 2
    k = round(mid / length) if length > 0 else (0 if max(lo, end[LO]) < min(hi, end[HI]) else None)
    if k is None:
        return None
    a, b = end[LO] + k * length, end[HI] + k * length
    if max(lo, a) >= min(hi, b):
        return None
    return max(lo, a), min(hi, b), k == 0


def _plan(lo: float, hi: float) -> float:
    return hi if hi - lo <= KNOWN else lo + PROBE_SHARE * (hi - lo)


def resume(
    end: list[float] | None,
    now: float,
    stated: float,
    sent: float,
    length: float | None = None,
    paused: float = 0.0,
) -> tuple[float, list[float]]:
    """A window's budget is spent (``stated``: the reset it stated, ``sent``: when the request
    that found it spent was sent; ``paused``: the key's pause now, never shortened): (when the
    key's pause ends, the new learned state)."""
    lo, hi = stated_bounds(stated, sent, now)
    w = _length(end, stated, length)
    carried = _carried([*end[:LENGTH], w, *end[LENGTH + 1 :]], lo, hi) if end is not None else None
    if end is not None and carried is not None:
        lo, hi, same = carried
        if same and sent >= end[AT]:
            # the probe (or a pause's first request) found the window still open: wait until
            # its latest end, no second probe
            at = max(hi, paused)
            return at, [lo, hi, w, at, stated]
        if same and now >= end[AT]:
            at = max(end[AT], now, paused)
            return at, [lo, hi, w, end[AT], stated]
    at = max(_plan(lo, hi), now, paused)
    return at, [lo, hi, w, at, stated]


def _bounds(stated: float) -> tuple[float, float]:
    """The end of a window that stated ``stated``, with nothing else known: a reset in seconds
    from a response is counted from the destination's answer, a little before it was read."""
    whole = abs(stated - round(stated)) < 1e-6
    return stated - ROUNDING - (0.0 if whole else LATE), stated


def renewed(
    end: list[float] | None, at: float, reset: float, before: float, length: float | None = None
) -> list[float]:
    """A process read the first response of a new window at ``at`` (it stated ``reset``; the
    responses before it ``before``): the window that stated ``before`` ended before ``at``.
    Returns the new learned state (what was learned, carried to that window, when it agrees)."""
    lo, hi = _bounds(before)
    w = _length(end, reset, length) if end is not None else float(length or 0.0)
    if not w and abs(reset - round(reset)) < 1e-6 and abs(before - round(before)) < 1e-6 and reset - before >= 1:
        w = reset - before
    carried = _carried([*end[:LENGTH], w, *end[LENGTH + 1 :]], lo, hi) if end is not None else None
    if carried is not None and carried[0] < at:
        lo, hi = carried[0], min(carried[1], at)
    else:
        hi = min(hi, at)
    return [lo, hi, w, hi, before]


def expected(end: list[float] | None, stated: float) -> float | None:
    """The earliest instant the window that states ``stated`` may end, when what was learned
    bounds it to within UNSURE (None: not learned well enough; a reset rounded up says nothing
    closer than the second before it)."""
    if end is None:
        return None
    lo, hi = _bounds(stated)
    carried = _carried(end, lo, hi)
    return carried[0] if carried is not None and carried[1] - carried[0] <= UNSURE else None


def check(end: object) -> list[float] | None:
    """A stored learned state, or None when it is not one (forgotten, never fatal)."""
    if not isinstance(end, list) or len(end) != 5:
        return None
    try:
        out = [float(v) for v in end]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None
