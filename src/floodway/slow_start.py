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

**A bucket reads low.** A leaky bucket overflows as soon as the pace passes its leak rate, so
what it took over the last second is the ramp's average, a third of that rate or so. The two
cannot be told apart at the first refusal, but they can just after it: a bucket goes on taking
its leak rate from the requests still in flight, while a window that overflowed refuses nearly
all of them until its oldest requests age out (``leaks``). A bucket shown so voids the exit's
hold (it has room again at once). Then the pace *climbs*: it doubles every CLIMB_DOUBLING
seconds towards SLOW_EXIT of the pace that overflowed, at once for a bucket, else after the
hold and CLIMB_HOLD more (a window still emptying of the ramp's last second would take a climb
past its quota). A window is full at the exit pace and refuses the climb at once; a bucket
takes it up to its leak rate. The climb's overflow is cut to just under the pace it had
CLIMB_LAG before the refused request was sent, not to what was accepted over the last second,
which for a climb is again its average. A declared pace cut to what a drain's first moments
showed accepted (which reads low the same way) climbs back like this too.

Everything here is pure: a plain list stored in the key's learned state, ``[[at, count],
...]``, the accepted responses each report brought over the last RECENT seconds, and the few
fields of the exit (``exit``, ``over``, ``leaked``, ``bucket``).
"""

from __future__ import annotations

from typing import Callable

from .quota_state import Learned, Observation

__all__ = [
    "SLOW_START",
    "SLOW_START_DOUBLING",
    "SLOW_EXIT",
    "EXIT_LATE",
    "note",
    "demonstrated",
    "exit_pace",
    "follow",
    "leaks",
    "climb_hold",
    "climb",
    "pace",
]

#: an adaptive limit with no rate starts here (per second) and doubles every SLOW_START_DOUBLING
#: seconds until the first refusal: 200/s in about 1.1 s, 1,000/s in 1.5 s. The time spent
#: below the quota is lost for good, while an overshoot is bounded by how fast a refusal is
#: heard: within one report interval of a worker (a tenth of a second) the pace grows at most
#: 1.5 times
SLOW_START = 5.0
SLOW_START_DOUBLING = 0.2
#: the slow start's exit paces at no more than this share of the pace that overflowed
SLOW_EXIT = 0.8
#: after the exit, the climb doubles the pace every CLIMB_DOUBLING seconds (a refusal is heard
#: within a tenth of a second, while the pace grows 15 %); its overflow is cut to KEEP of the
#: pace it had CLIMB_LAG seconds before the refused request was sent (a bucket of a few
#: requests' slack takes a climb past its leak rate for that long) ...
CLIMB_DOUBLING = 0.5
CLIMB_LAG = 0.2
#: ... and it begins CLIMB_HOLD seconds after the exit's hold, unless a bucket was shown: at
#: least LEAK_MIN responses accepted after the exit, and refusals no more than LEAK_SHARE times
#: as many (a bucket takes its leak rate of a pace well above it, a window that overflowed
#: a twentieth or less)
CLIMB_HOLD = 1.0
LEAK_MIN = 3
LEAK_SHARE = 2.0
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


def follow(state: Learned, obs: Observation, clamp: Callable[[float], float]) -> bool:
    """Keep a slow start's recent accepted reports; just after its exit, the late reports of
    what was accepted before it raise the pace it ended at (within ``clamp``), and responses
    accepted after it tell a bucket. Whether this one showed a bucket (the exit's hold is void)."""
    now, accepted = obs.now, obs.accepted
    if state.exit and (state.source != "429s" or now - state.since > EXIT_LATE):
        state.exit, state.recent = 0.0, None
        return False
    shown_bucket = False
    if state.exit and accepted and obs.first_ok is not None and obs.first_ok > state.since:
        state.leaked += accepted
        if not state.bucket and leaks(state.leaked, state.no_since):
            state.bucket, state.settle, shown_bucket = True, min(state.settle, now), True
    state.recent = note(state.recent, now, accepted)
    shown = demonstrated(state.recent, now)
    if state.exit and state.rate is not None and shown and exit_pace(shown, state.exit) > state.rate:
        state.rate = clamp(exit_pace(shown, state.exit))
        state.high = max(state.high or 0.0, min(state.exit, shown * 1.05))
    return shown_bucket


def leaks(accepted: int, refused: int) -> bool:
    """Whether the responses accepted and refused after a slow start's exit (within its round)
    show a bucket: it goes on taking its leak rate while a window that overflowed refuses
    nearly everything until its oldest requests age out."""
    return accepted >= LEAK_MIN and LEAK_SHARE * accepted >= refused


def climb_hold(bucket: bool, settle: float) -> float:
    """How long after the exit the climb waits: not at all once a bucket is shown, else the
    exit's ``settle`` and CLIMB_HOLD more, so a window is full at the exit pace first."""
    return 0.0 if bucket else max(settle, 0.0) + CLIMB_HOLD


def climb(top: float, since: float, overflowed: float) -> float:
    """The climb's pace ``since`` seconds after it began at ``top``: doubling every
    CLIMB_DOUBLING seconds, never above SLOW_EXIT of the pace that ``overflowed``."""
    return min(top * 2 ** min(max(since, 0.0) / CLIMB_DOUBLING, 40.0), SLOW_EXIT * overflowed)


def pace(start: float, now: float) -> float:
    """The slow start's pace at ``now`` for a clock started at ``start``."""
    return SLOW_START * 2 ** min(max(now - start, 0.0) / SLOW_START_DOUBLING, 40.0)
