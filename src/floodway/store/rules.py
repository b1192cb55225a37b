"""The rules the stores apply, as pure functions and state machines, with no SQL and no I/O.

A backend reads rows, asks these what to do, and writes the answer back; so each rule is
written once and unit-tested without a database:

- **status guards** (``guard``): the ``WHERE status ...`` of each status change, made from the
  transition table (``floodway.jobs.TRANSITIONS``);

- **admission** (``Admission.admit``): may a job that holds limits start now? A paused key
  holds it until the pause ends, a key at its concurrency cap until a job finishes, and the
  rate (declared, or learned from the destination) through GCRA until its next slot;
- **acquire** (``admit_one``): the same decision for one acquire outside a claim;
- **settlement** (``settle_one``): a call's real cost, known after it, credited or debited to
  its key's GCRA time;
- **cancel** (``cancel_action``): a running job is asked to stop, a cancelled one is left
  alone, any other unfinished job is cancelled at once;
- **retry by hand** (``check_retryable``): only a failed, cancelled or retrying job;
- **rescue** (``lease_rescue``, ``worker_rescue``): how a job whose worker went silent or died
  ends, and whether its attempt is given back;
- **purge** (``purgeable``): finished jobs only;
- **enqueue keys** (``match_enqueue_key``, ``debounce_run_at``): whether an enqueue with a
  dedupe or debounce key makes a job, returns the one its key stands for, or folds into it.
"""

from __future__ import annotations

import enum
from typing import Any, Iterable

from ..errors import ConfigError, TransitionError
from ..jobs import NOT_STARTED, UNFINISHED, EnqueueKey, Status, can_transition, check_transition
from ..limits import LimitSpec, gcra, gcra_settle
from ..liveness import FREE_LOST_RUNS
from ..quota import Learned
from .base import key_pace


def guard(target: Status, *sources: Status, column: str = "status") -> str:
    """The SQL condition of a status change to ``target`` from ``sources`` (``status IN
    (...)``), checked against the transition table: a guard for an edge the table does not
    have fails when the module is imported, so the stores' SQL cannot drift from the table."""
    for source in sources:
        check_transition(source, target)
    values = sorted(s.value for s in sources)
    if len(values) == 1:
        return f"{column} = '{values[0]}'"
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


#: the guards the stores' status changes are written with
CLAIM_FROM = guard(Status.RUNNING, Status.WAITING)  # a claim takes ready jobs (retrying is promoted first)
PROMOTE_FROM = guard(Status.WAITING, Status.SCHEDULED, Status.RETRYING)  # run_at came
IS_RUNNING = guard(Status.COMPLETE, Status.RUNNING)  # a run ends (finish, release, rescue) or renews its lease
IS_RUNNING_J = guard(Status.COMPLETE, Status.RUNNING, column="j.status")


#: one (limit, key) pair's state as admission reads and changes it:
#: [tat, paused_until, running, admitted, learned]
KeyState = list


class Admission:
    """Limit admission for one claim batch.

    The backend loads the state of each (limit, key) pair the batch's jobs hold (``states``),
    ``admit`` decides job by job in memory, and the backend writes back the ``dirty`` pairs in
    the same transaction. ``wake_at`` is the earliest moment a job held back by a rate or a
    pause could be admitted, so idle workers sleep exactly until then; ``blocked_ids`` are the
    jobs held back.
    """

    #: how soon to look again at a job whose key another claimer holds right now
    BUSY_RETRY = 0.005

    def __init__(self, specs: dict[str, LimitSpec], now: float):
        self.specs = specs
        self.now = now
        self.states: dict[tuple[str, str], KeyState] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.wake_at: float | None = None
        self.blocked_ids: list[str] = []

    def state(self, pair: tuple[str, str]) -> KeyState | None:
        """The pair's state, or None when another claimer holds it (a backend that loads
        lazily overrides this)."""
        return self.states.get(pair)

    def _held(self, job_id: str, until: float | None) -> bool:
        if until is not None:
            self.wake_at = until if self.wake_at is None else min(self.wake_at, until)
        self.blocked_ids.append(job_id)
        return False

    def admit(self, job_id: str, limits: Iterable[Any]) -> bool:
        """Admit the job against every limit it holds, or against none of them."""
        decisions: list[tuple[tuple[str, str], float | None]] = []
        for name, key in limits:
            spec = self.specs.get(name)
            if spec is None:
                continue  # a limit no longer in the store holds nothing back
            pair = (name, key)
            state = self.state(pair)
            if state is None:
                return self._held(job_id, self.now + self.BUSY_RETRY)
            if state[1] > self.now:
                return self._held(job_id, state[1])
            if spec.concurrency is not None and state[2] >= spec.concurrency:
                return self._held(job_id, None)  # a finishing job frees the slot
            new_tat = None
            rate, burst = key_pace(spec, state[4], state[3], self.now)
            if rate is not None:
                ok, new_tat, retry_at = gcra(state[0], self.now, rate, burst)
                if not ok:
                    return self._held(job_id, retry_at)
            decisions.append((pair, new_tat))
        for pair, new_tat in decisions:
            state = self.states[pair]
            state[2] += 1
            state[3] += 1
            if new_tat is not None:
                state[0] = new_tat
            self.dirty.add(pair)
        return True


def admit_one(
    spec: LimitSpec, tat: float, paused_until: float, admitted: int, learned: Any, now: float, cost: int = 1
) -> tuple[bool, float, float | None]:
    """Admission of one acquire outside a claim (``ctx.acquire``): (admitted, when, the key's
    new GCRA time or None when it does not change). Refused: ``when`` is the moment to try
    again (the pause's end, or the rate's next slot)."""
    if paused_until > now:
        return False, paused_until, None
    rate, burst = key_pace(spec, Learned.loads(learned), admitted, now)
    if rate is None:
        return True, now, None
    ok, new_tat, retry_at = gcra(tat, now, rate, burst, cost)
    if not ok:
        return False, retry_at, None
    return True, now, new_tat


def settle_one(spec: LimitSpec, tat: float, admitted: int, learned: Any, now: float, delta: float) -> float | None:
    """A key's new GCRA time once a call's real cost is known (``delta`` = actual - charged
    tokens), at the key's pace now (declared or learned); None when nothing changes (no rate,
    or nothing to settle)."""
    if not delta:
        return None
    rate, _ = key_pace(spec, Learned.loads(learned), admitted, now)
    if rate is None:
        return None
    return gcra_settle(tat, now, rate, delta)


class CancelAction(enum.Enum):
    #: the job runs: ask its worker to stop it (the worker ends it as ``cancelled``)
    REQUEST = "request"
    #: already cancelled: nothing to do
    NOTHING = "nothing"
    #: not running and not finished: cancel it now
    CANCEL = "cancel"


def cancel_action(status: Status) -> CancelAction:
    """What cancelling a job in ``status`` does; a finished job raises ``TransitionError``."""
    if status is Status.RUNNING:
        return CancelAction.REQUEST
    if status is Status.CANCELLED:
        return CancelAction.NOTHING
    check_transition(status, Status.CANCELLED)
    return CancelAction.CANCEL


def check_retryable(job_id: str, status: Status) -> None:
    """Retry by hand: only a failed, cancelled or retrying job goes back to ``waiting``."""
    if not can_transition(status, Status.WAITING) or status in (Status.RUNNING, Status.SCHEDULED):
        raise TransitionError(f"job {job_id} is {status}; only failed, cancelled or retrying jobs can be retried")


def worker_rescue(
    owner: str, attempt: int, max_attempts: int, cancel_requested: bool, lost_runs: int, *, dead: bool
) -> tuple[Status, str, dict[str, Any], bool]:
    """How a running job of a worker found dead or silent ends: (target status, reason, error,
    whether its attempt is given back). One rule for both backends' ``rescue_worker``."""
    if dead:
        message = f"worker {owner} died (its process is gone); the job was rescued"
    else:
        message = f"worker {owner} stopped sending heartbeats; the job was rescued"
    error = {"type": "WorkerLost", "message": message, "traceback": None}
    # the worker died, not (as far as we can tell) the job: no attempt is spent, up to a bound,
    # so a job that kills its worker each time still ends
    give_back = dead and lost_runs < FREE_LOST_RUNS
    if cancel_requested:
        return Status.CANCELLED, "worker lost; cancellation requested", error, False
    if not give_back and attempt >= max_attempts:
        return Status.FAILED, "worker lost on the last attempt", error, False
    reason = "worker died; rescued" if dead else "worker silent; rescued"
    return Status.WAITING, reason + ("" if give_back else " (an attempt spent)"), error, give_back


def lease_rescue(
    owner: str, attempt: int, max_attempts: int, cancel_requested: bool
) -> tuple[Status, str, dict[str, Any]]:
    """How a running job whose lease expired ends: (target status, reason, error). Its attempt
    is spent: the worker may still be alive and have been running it."""
    error = {
        "type": "WorkerLost",
        "message": f"worker {owner} stopped renewing its lease; the job was rescued",
        "traceback": None,
    }
    if cancel_requested:
        return Status.CANCELLED, "lease expired; cancellation requested", error
    if attempt >= max_attempts:
        # a job that keeps killing its worker must not loop forever
        return Status.FAILED, "lease expired on the last attempt", error
    return Status.WAITING, "lease expired; rescued", error


def purgeable(statuses: Iterable[Status | str]) -> list[Status]:
    """The statuses a purge deletes: finished ones only (an unfinished job is never purged)."""
    wanted = [Status(s) for s in statuses]
    for s in wanted:
        if not s.is_final:
            raise ConfigError(f"purge: only finished jobs can be purged, not {s}")
    return wanted


class KeyMatch(enum.Enum):
    #: make the job, and point the key at it
    NEW = "new"
    #: return the job the key stands for; make nothing (a dedupe window)
    EXISTING = "existing"
    #: fold into the job the key stands for: it takes this enqueue's arguments and its run
    #: moves to ``debounce_run_at`` (a debounce)
    FOLD = "fold"


def match_enqueue_key(key: EnqueueKey, status: Status | None, expires_at: float | None, now: float) -> KeyMatch:
    """What an enqueue with ``key`` does, given the job its key stands for now: its ``status``
    (None when there is no such job, or it was purged) and the end of its dedupe window."""
    if status is None:
        return KeyMatch.NEW
    if key.kind == "debounce":
        # a job that has started runs with the arguments it had: later enqueues make the next one
        return KeyMatch.FOLD if status in NOT_STARTED else KeyMatch.NEW
    if key.while_unfinished:
        return KeyMatch.EXISTING if status in UNFINISHED else KeyMatch.NEW
    return KeyMatch.EXISTING if expires_at is not None and now < expires_at else KeyMatch.NEW


def debounce_run_at(key: EnqueueKey, first_at: float, now: float) -> float:
    """When a debounced job runs: ``window`` after the last enqueue, but never later than
    ``max_wait`` after the first, so a steady stream of enqueues still runs."""
    at = now + key.window
    return at if key.max_wait is None else min(at, first_at + key.max_wait)
