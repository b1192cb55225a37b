"""When a job whose rate tokens were booked ahead starts: at its token's moment, and never
closer to the job before it (in this process, on the same limits) than their tokens were.

A claim books the tokens of a binding limit ahead (``rules.Admission``'s horizon), one interval
apart, and each job waits for its moment. A process that stalls (CPU taken by others, a
collection, the first connections being opened) wakes its late jobs together: sent at once,
they land as a bunch, and a destination counting a sliding window sees more than the rate
plus the burst in the second that follows, though the bookings never exceeded it. So the jobs
after a stall keep the spacing of their bookings, and the lag this leaves shrinks by at most
``CATCH_UP`` of the time between two bookings, a share of the burst's tolerance in any second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Hashable

#: how fast a lag behind the bookings is made up: this share of the time between two bookings
#: (at 500/s, a lag of 50 ms is made up in 2.5 s, sending at most 2 % over the rate meanwhile)
CATCH_UP = 0.02
#: a lag is forgotten once this long has passed without a booked job starting (the window of
#: the destination's count has moved on)
FORGET_AFTER = 1.0


class BookedStarts:
    """The start of each booked job of one process, in booking order per group of limits.

    ``start(group, booked, now)`` -> when the job may start (>= ``booked``, and not before
    ``now``'s lag allows): the moment of the job's token plus the lag of the jobs before it,
    less what may be made up since. Pure: no clock of its own and no I/O.
    """

    def __init__(self, catch_up: float = CATCH_UP, forget_after: float = FORGET_AFTER):
        self.catch_up = catch_up
        self.forget_after = forget_after
        self._last: dict[Hashable, tuple[float, float]] = {}  # group -> (booked, started) of the last

    def start(self, group: Hashable, booked: float, now: float) -> float:
        at = booked
        last = self._last.get(group)
        if last is not None and booked >= last[0] and now - last[1] < self.forget_after:
            gap = booked - last[0]
            lag = last[1] - last[0]
            if lag > 0:
                at = max(at, booked + lag - self.catch_up * gap)
        start = max(at, now)
        if last is None or booked >= last[0]:
            self._last[group] = (booked, start)
        return start


async def until(moment: float) -> None:
    """Sleep until ``moment`` (``time.time()``): a loop's timer may fire a little early."""
    while (wait := moment - time.time()) > 0:
        await asyncio.sleep(max(wait, 0.001))


async def wait_booked(starts: BookedStarts, group: Hashable, booked: float) -> None:
    """Wait for a booked job's moment, then for the start ``starts`` gives it."""
    await until(booked)
    await until(starts.start(group, booked, time.time()))
