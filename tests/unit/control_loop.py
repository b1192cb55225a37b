"""The learned-quota rules driven as a control loop against a simulated destination.

Pure and in simulated time: GCRA admits requests at the effective rate, a destination takes or
refuses each one a little later, and two workers' reports of what was accepted arrive
interleaved. The destination is a bucket (GCRA allowing ``real(t)`` per second with a small
burst) or a sliding window of ``real(t)`` per second, the two a slow start cannot tell apart
at its first refusal.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from floodway.limits import LimitSpec, Rate, gcra
from floodway.quota import Observation, effective_rate, observe
from floodway.store.base import settled_tat

#: the simulated clock starts here, as a wall clock's would (the rules read a time near 0 as
#: "never")
NOW = 1000.0


class Bucket:
    """A leaky bucket of ``burst`` requests leaking ``real(t)`` per second."""

    def __init__(self, real: Callable[[float], float], burst: int) -> None:
        self.real, self.burst, self.tat = real, burst, NOW

    def take(self, at: float) -> bool:
        ok, tat, _ = gcra(self.tat, at, Rate(self.real(at - NOW), 1.0), self.burst)
        if ok:
            self.tat = tat
        return ok


class SlidingWindow:
    """At most ``real(t)`` requests within any second."""

    def __init__(self, real: Callable[[float], float]) -> None:
        self.real, self.taken = real, deque[float]()

    def take(self, at: float) -> bool:
        while self.taken and self.taken[0] <= at - 1.0:
            self.taken.popleft()
        if len(self.taken) >= self.real(at - NOW):
            return False
        self.taken.append(at)
        return True


def simulate(
    real: Callable[[float], float],
    declared: LimitSpec,
    *,
    seconds: float = 30.0,
    latency: float = 0.02,
    dest_burst: int = 5,
    report_every: float = 0.25,
    window: bool = False,
) -> tuple[list[int], int, list[float]]:
    """Drive the rules against a destination allowing ``real(t)`` per second (a bucket, or with
    ``window`` a sliding window) with an endless backlog. Each refusal carries half the
    accepted count not yet reported, the rest comes every ``report_every`` (no report says when
    its first acceptance was: what follows a slow start's exit never shows a bucket here).
    Returns per-second accepted counts, refusals, and the effective rate every 0.1 s."""
    dest = SlidingWindow(real) if window else Bucket(real, dest_burst)
    t, tat, admitted = NOW, NOW, 0
    learned = None
    in_flight: list[tuple[float, float]] = []
    unreported, last_report = 0, NOW
    accepted_at: list[float] = []
    refused = 0
    rates = []
    dt, step = 0.0002, 0
    while t < NOW + seconds:
        rate = effective_rate(declared, learned, admitted, t)
        while True:
            ok, new_tat, _ = gcra(tat, t, Rate(rate, 1.0), declared.burst)
            if not ok:
                break
            tat, admitted = new_tat, admitted + 1
            in_flight.append((t + latency / 2, t))
        arrived = [p for p in in_flight if p[0] <= t]
        in_flight = [p for p in in_flight if p[0] > t]
        for at, token_at in arrived:
            if dest.take(at):
                accepted_at.append(at)
                unreported += 1
            else:
                refused += 1
                half = unreported // 2
                unreported -= half
                obs = Observation(now=t + latency / 2, token_at=token_at, throttled=1, accepted=half)
                learned, changed = observe(declared, learned, admitted, obs)
                tat = settled_tat(declared, tat, learned, admitted, changed, t)
        if t - last_report >= report_every:
            learned, changed = observe(declared, learned, admitted, Observation(now=t, accepted=unreported))
            tat = settled_tat(declared, tat, learned, admitted, changed, t)
            unreported, last_report = 0, t
        if step % 500 == 0:
            rates.append(rate)
        step += 1
        t = NOW + step * dt
    per_second = [sum(1 for a in accepted_at if s <= a - NOW < s + 1) for s in range(int(seconds))]
    return per_second, refused, rates
