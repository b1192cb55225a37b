"""The worker's arithmetic, pure: how many jobs to claim now (slots, prefetch, backpressure), and
how long to back off after a failure. No I/O, so each rule is unit-tested on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .units import format_duration


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
    *,
    concurrency: int,
    prefetch: int,
    batch_size: int,
    running: int,
    prefetched: int,
    unflushed: int,
    found_work: bool,
    may_claim_ahead: bool = True,
) -> ClaimPlan:
    """The next claim of a worker with ``running`` jobs running, ``prefetched`` claimed ahead
    and ``unflushed`` claimed and not yet written back; ``found_work``: the last claim took
    jobs, so more are likely ready; ``may_claim_ahead``: false for a while after a claim ahead
    found nothing it could take (the ready jobs hold limits that keep them from being
    claimed ahead), so a busy worker waits for a free slot instead of asking again."""
    # backpressure: jobs claimed and not yet written back (running, claimed ahead, or finished
    # with the outcome still to write) stay under one batch beyond the slots and the prefetch,
    # so claims never outrun the database's writes
    in_flight = concurrency + prefetch + batch_size - unflushed
    free = min(concurrency - running, in_flight)
    room = min(prefetch - prefetched, batch_size, in_flight)
    # claimed ahead only while busy, and topped up once half is used: fewer, fuller claims
    ahead = free <= 0 and found_work and may_claim_ahead and room > 0 and prefetched <= prefetch // 2
    want = min(free, batch_size)
    extra = max(0, min(room, in_flight - want)) if found_work else 0
    return ClaimPlan(free=free, room=room, ahead=ahead, want=want, extra=extra)


class Backoff:
    """Exponential backoff after consecutive failures (the store unreachable: a restart, a
    failover): ``first``, twice that, four times … up to ``cap``; a success starts it over.
    The worker's one backoff: the claim loop, the start-up and the outcome writes each keep
    one, with their own ``first`` and ``cap``."""

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


#: the statuses of work not done yet, in the order a worker names them
PENDING = ("waiting", "retrying", "scheduled", "running")


def work_left(queues: Iterable[Any], names: list[str] | None) -> dict[str, int]:
    """The jobs per status of the queues named (all when None), from ``list_queues()``."""
    left = dict.fromkeys(PENDING, 0)
    for queue in queues:
        if names is None or queue.name in names:
            for status, count in queue.counts.items():
                left[status] = left.get(status, 0) + count
    return left


def still_to_do(left: dict[str, int], due: float | None, now: float, horizon: float) -> bool:
    """``--until-empty``: a job is waiting, retrying or running, or one is due within ``horizon``."""
    return bool(left["waiting"] or left["retrying"] or left["running"]) or (due is not None and due - now <= horizon)


def describe_left(left: dict[str, int], due: float | None, now: float) -> str | None:
    """What a worker leaves when it exits with nothing ready ("900 retrying; the next is due in
    1s"), or None when nothing is left: "nothing ready now" is not "nothing left"."""
    pending = [f"{left[s]} {s}" for s in PENDING if left.get(s)]
    if not pending:
        return None
    when = f"; the next is due in {format_duration(max(due - now, 0.0))}" if due is not None else ""
    return ", ".join(pending) + when
