"""A slow start: how an adaptive limit with no rate finds the rate a destination accepts.

With nothing declared, the pace starts at SLOW_START per second and doubles every
SLOW_START_DOUBLING seconds, its clock starting at the first accepted response, until the first
refusal. Every request sent before that refusal was accepted, so what the destination accepted
over the last second is a measure of its quota, not a guess: a window that overflows has just
taken its whole quota. The slow start ends at that measure (never above SLOW_EXIT of the pace,
so the exit is always a cut), not at a fraction of the pace. A doubling pace overshoots by
much: halving it lands anywhere between a third of the quota and twice it.

The measure is counted by the time each worker process reported its responses (every tenth
of a second): at the first refusal, the other processes' latest responses are not reported yet, so
the reports that arrive within EXIT_LATE seconds after the exit still raise its pace (never
lowering it). Every worker holds off after the exit as long as after a halving: the window
that overflowed holds what the slow start's last, fastest moments sent, and stays full as long.

Everything here is pure, on a plain list stored in the key's learned state: ``[[at, count],
...]``, the accepted responses each report brought, over the last RECENT seconds.
"""

from __future__ import annotations

__all__ = ["SLOW_START", "SLOW_START_DOUBLING", "SLOW_EXIT", "EXIT_LATE", "note", "demonstrated", "exit_pace", "pace"]

#: an adaptive limit with no rate starts here (per second) and doubles every SLOW_START_DOUBLING
#: seconds until the first refusal: 200/s in about 1.1 s, 1,000/s in 1.5 s. The time spent
#: below the quota is lost for good, while an overshoot is bounded by how fast a refusal is
#: heard: within one report interval of a worker (a tenth of a second) the pace grows at most
#: 1.5 times
SLOW_START = 5.0
SLOW_START_DOUBLING = 0.2
#: the slow start's exit paces at no more than this share of the pace that overflowed
SLOW_EXIT = 0.8
#: reports arriving this long after the exit still count towards its measure
EXIT_LATE = 0.3
#: the span the measure covers, and how long reports are kept
SPAN = 1.0
RECENT = 1.5
#: reports closer together than this are kept as one
MERGE = 0.05


def note(recent: list[list[float]] | None, now: float, count: int) -> list[list[float]]:
    """The record with ``count`` responses accepted, reported at ``now``."""
    kept = [[at, n] for at, n in (recent or []) if now - RECENT < at <= now]
    if count <= 0:
        return kept
    if kept and now - kept[-1][0] < MERGE:
        kept[-1][1] += count
    else:
        kept.append([now, float(count)])
    return kept


def demonstrated(recent: list[list[float]] | None, now: float) -> float | None:
    """The most responses reported accepted within any SPAN seconds of the last RECENT
    seconds, per second (None: none reported)."""
    reports = [(at, n) for at, n in (recent or []) if now - RECENT < at <= now]
    if not reports:
        return None
    best = 0.0
    for at, _ in reports:
        best = max(best, sum(n for a, n in reports if at - SPAN < a <= at))
    return best / SPAN


def exit_pace(shown: float, overflowed: float) -> float:
    """The pace a slow start ends at: what the destination was shown to accept, never above
    SLOW_EXIT of the pace that ``overflowed``."""
    return min(shown, SLOW_EXIT * overflowed)


def pace(start: float, now: float) -> float:
    """The slow start's pace at ``now`` for a clock started at ``start``."""
    return SLOW_START * 2 ** min(max(now - start, 0.0) / SLOW_START_DOUBLING, 40.0)
