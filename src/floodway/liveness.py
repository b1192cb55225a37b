"""Is the worker holding a job alive? Telling a dead worker in seconds, not a lease.

Each worker records, when it registers, which process table it lives in (``host_key``: the
host name, the boot id and the pid namespace) and its process start time. Every worker then
looks at the holders of running jobs about once a second (``PULSE``):

* **dead**: a holder in this same process table whose process no longer exists, or whose
  pid now belongs to another process (another start time): its jobs are rescued at once and
  spend no attempt (up to ``FREE_LOST_RUNS`` times per job, so a job that kills its worker
  still ends ``failed``).
* **stale**: a holder on another host whose heartbeat is older than ``STALE_AFTER``: it may
  be dead or cut off; its jobs are rescued at once, spending an attempt as a lease expiry
  does. Only a worker whose own heartbeats have been written without a gap for
  ``STALE_AFTER`` judges others stale, so a database outage (every heartbeat late) is not
  mistaken for dead workers.
* **frozen**: a holder in this process table, alive, with a stale heartbeat (stopped,
  swapping, stuck): its lease is the safety net; the job is rescued when it expires.
* **alive**: anything else.

A run's own ownership is bounded the same way: a worker whose heartbeat chain broke for
``STALE_AFTER`` may have lost its jobs, so its runs stop making side effects until a renewal
proves otherwise (``Context.ensure_owned``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

#: how often a worker writes its heartbeat and looks for dead holders (seconds)
PULSE = 1.0
#: a worker whose heartbeat is older than this is presumed dead by workers on other hosts
STALE_AFTER = 6.0
#: runs lost with a dead worker that spend no attempt; beyond, each spends one
FREE_LOST_RUNS = 3

DEAD, STALE, FROZEN, ALIVE = "dead", "stale", "frozen", "alive"


@lru_cache(maxsize=1)
def host_key() -> str:
    """This process table: host name, boot id and pid namespace (two containers with the same
    host name do not share pids)."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    return "/".join(parts)


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of
    /proc/PID/stat), or None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may contain spaces or ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def has_proc() -> bool:
    return start_time(os.getpid()) is not None


@dataclass
class LeaseHolder:
    """A worker id holding running jobs, with what the store knows of that worker."""

    worker_id: str
    running: int
    lease_until: float | None  # the earliest lease of its jobs
    host_key: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    heartbeat_at: float | None = None
    stopped_at: float | None = None
    #: the store's clock when it answered (heartbeats and leases are on that clock)
    observed_at: float = 0.0


def verdict(holder: LeaseHolder, *, here: str, judge_stale: bool) -> str:
    """``DEAD``, ``STALE``, ``FROZEN`` or ``ALIVE`` (see the module docstring). ``judge_stale``
    is False while the observer's own heartbeats are not proven to get through."""
    if holder.heartbeat_at is None:
        return ALIVE  # no worker row: only its lease can tell
    same_table = holder.host_key is not None and holder.host_key == here and holder.pid is not None
    if same_table and holder.pid is not None and holder.pid_start is not None and has_proc():
        if start_time(holder.pid) != holder.pid_start:
            return DEAD
    fresh = holder.observed_at - holder.heartbeat_at <= STALE_AFTER
    if fresh:
        return ALIVE
    if same_table:
        return FROZEN
    return STALE if judge_stale else FROZEN
