"""The worker's arithmetic, pure: how many jobs to claim now (slots, prefetch, backpressure), and
how long to back off after a failure. No I/O, so each rule is unit-tested on its own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimPlan:
    """What the claim loop does next.

    ``ahead``: every slot is busy and the store had work, so claim ``room`` jobs ahead now
    (a slot that comes free starts one at once instead of after a claim's round trip);
    otherwise, with ``free`` slots, claim ``want`` jobs for them and ``extra`` more ahead in
    the same claim (draining a backlog); with neither, wait.
    """

    free: int
    room: int
    ahead: bool
    want: int
    extra: int


def plan_claim(
    *, concurrency: int, prefetch: int, batch_size: int, running: int, prefetched: int, unflushed: int, found_work: bool
) -> ClaimPlan:
    """The next claim of a worker with ``running`` jobs running, ``prefetched`` claimed ahead
    and ``unflushed`` claimed and not yet written back; ``found_work``: the last claim took
    jobs, so more are likely ready."""
    # backpressure: jobs claimed and not yet written back (running, claimed ahead, or finished
    # with the outcome still to write) stay under one batch beyond the slots and the prefetch,
    # so claims never outrun the database's writes
    in_flight = concurrency + prefetch + batch_size - unflushed
    free = min(concurrency - running, in_flight)
    room = min(prefetch - prefetched, batch_size, in_flight)
    # claimed ahead only while busy, and topped up once half is used: fewer, fuller claims
    ahead = free <= 0 and found_work and room > 0 and prefetched <= prefetch // 2
    want = min(free, batch_size)
    extra = max(0, min(room, in_flight - want)) if found_work else 0
    return ClaimPlan(free=free, room=room, ahead=ahead, want=want, extra=extra)


class Backoff:
    """Exponential backoff after consecutive failures (the store unreachable: a restart, a
    failover): 0.2 s, 0.4 s, 0.8 s … up to ``cap``; a success starts it over."""

    def __init__(self, first: float = 0.2, cap: float = 5.0):
        self.first = first
        self.cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; how long to wait before trying again."""
        self.failures += 1
        return min(self.first * 2 ** (self.failures - 1), self.cap)

    def succeeded(self) -> None:
        self.failures = 0
