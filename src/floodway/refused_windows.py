"""A fixed window told only by its refusals: the ``Retry-After`` of each points to one instant.

A destination whose quota is a fixed window and that states nothing but its reset (a 429 with a
``Retry-After`` to the window's end) is found by its refusals: a sliding window's wait moves on
with the clock, a fixed window's stays put. Once found, the key remembers its last few window
ends, each as an interval ``(lo, hi]`` known to hold it (a wait is whole seconds, rounded up),
and the window's length as bounded by their spacing; a refusal at a predicted end is that
window running out, not congestion. ``quota`` paces each next window at what the last one
accepted over this length.

Everything here is pure, on the key's learned state.
"""

from __future__ import annotations

import math

from .quota_state import Learned, Observation
from .window_ends import EXACT_RESET, reset_bounds

__all__ = ["rest_of_window", "end_of", "next_window", "length", "length_range", "predict"]


def rest_of_window(learned: Learned, now: float) -> float:
    """The pace that spends a window's budget in what is left of it, when the key resumed late
    in it (0: it did not). The first window a key sees is waited out as long as its refusal
    asked, up to a second past its real end (a whole-second ``Retry-After`` is rounded up);
    paced at its budget over a whole window from there, a quarter of a 4 s window's budget
    was never spent. A fixed window takes its budget at any pace, so the window's earliest
    possible end is aimed at: running out a little early costs a pause until the end and a
    few refusals, not the budget. Never more than twice the window's own pace."""
    if not learned.ends or learned.win_w <= 0 or learned.win_q <= 0:
        return 0.0
    end = learned.ends[-1][1] + learned.win_w  # the earliest end of the window resumed in
    left = end - learned.since
    if now >= end or left >= learned.win_w:
        return 0.0
    return learned.win_q / max(left, learned.win_w / 2)


def end_of(state: Learned, now: float, wait: float, exhausted: bool) -> tuple[int, float, float, bool] | None:
    """Whether a refusal asking to wait ``wait`` marks the end of a fixed window: (the window's
    number, the end's bounds, whether it starts a new series of windows), or None (not known
    to be one: congestion, or an exhaustion seen for the first time as such).

    The end lies in ``(now + wait - 1, now + wait]`` for a wait in whole seconds. A key whose
    windows are known matches the refusal against the next ends its windows predict; one that
    is not yet known to have windows needs proof: a wait of more than a second, or refusals
    pointing to one instant across more than the rounding of their waits (a sliding window's
    ``Retry-After`` moves on with the clock; a fixed window's stays put)."""
    lo, hi = reset_bounds(now, wait)
    tol = hi - lo
    if state.ends:
        last = int(state.ends[-1][0])
        for n in range(last, last + 4):
            bounds = predict(state, n)
            if bounds is not None and max(lo, bounds[0]) < min(hi, bounds[1]):
                return n, max(lo, bounds[0]), min(hi, bounds[1]), False
        return 1, lo, hi, True  # off every predicted end: the windows moved, start again
    if exhausted or lo - now >= 1 - 1e-6:
        # a reset more than a second away whatever the rounding (an exhaustion, or a wait of
        # 2 s): a sliding window or a bucket that overflowed asks for a second at most
        state.pend = None
        return 1, lo, hi, True
    pend = state.pend
    if pend is not None and max(lo, pend[1]) < min(hi, pend[2]):
        a, b = max(lo, pend[1]), min(hi, pend[2])
        if now - pend[0] > tol + 2 * EXACT_RESET:  # (a clock's rounding must not pass for proof)
            state.pend = None
            return 1, a, b, True
        state.pend = [pend[0], a, b]
        return None
    state.pend = [now, lo, hi]
    return None


def next_window(state: Learned, obs: Observation) -> bool:
    """A windowed key between refusals: the first response accepted after a window's end bounds
    it from above (the reset came before it), and each window predicted to have begun starts
    its own count (a window that runs out measures itself alone). True: the end moved."""
    ends, moved = state.ends, False
    if ends and obs.first_ok is not None and ends[-1][1] < obs.first_ok < ends[-1][2]:
        ends[-1][2], moved = obs.first_ok, True
    step = state.win_w
    if state.budget_from and obs.now >= state.budget_from + step:
        state.budget_from += step * math.floor((obs.now - state.budget_from) / step)
        state.budget_ok = 0
    return moved


def length(state: Learned, began: float, end: float) -> float:
    """The window's length: from the ends seen, else from ``began`` to ``end``. With one end
    seen, nearer its shortest: a pace a little high runs the next window out early, and that
    refusal measures the window; a pace too low is never corrected by anything."""
    length = length_range(state)
    if length is None or not math.isfinite(length[1]):
        return end - began
    share = 0.5 if state.ends and len(state.ends) > 1 else 0.25
    return length[0] + share * (length[1] - length[0])


def length_range(state: Learned) -> tuple[float, float] | None:
    """The window's length, as bounded by the ends seen (None: one end only, and no start to
    measure the first window from)."""
    ends = state.ends or []
    low, high = 0.0, math.inf
    for i, (ka, la, ha) in enumerate(ends):
        for kb, lb, hb in ends[i + 1 :]:
            if kb > ka:
                low, high = max(low, (lb - ha) / (kb - ka)), min(high, (hb - la) / (kb - ka))
    if math.isfinite(high):
        return (low, high) if low < high else None
    if len(ends) == 1 and ends[0][0] == 1 and 0 < state.start < ends[0][1]:
        # the first window measured from the key's first report: windows that start at the
        # first request (as most do) are this long; a later window corrects it
        return max(ends[0][1] - state.start, 0.0), ends[0][2] - state.start + EXACT_RESET
    return None


def predict(state: Learned, n: int) -> tuple[float, float] | None:
    """Where window ``n`` ends, from the ends seen and the window's length; None: unknown."""
    length = length_range(state)
    lo, hi, found = -math.inf, math.inf, False
    for k, a, b in state.ends or []:
        if k == n:
            lo, hi, found = max(lo, a), min(hi, b), True
        elif k < n and length is not None:
            lo, hi, found = max(lo, a + (n - k) * length[0]), min(hi, b + (n - k) * length[1]), True
    return (lo, hi) if found and lo < hi else None
