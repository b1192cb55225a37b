"""The rules the stores apply, as pure functions and state machines, with no SQL and no I/O.

A backend reads rows, asks these what to do, and writes the answer back; so each rule is
written once and unit-tested without a database:

- **status guards** (``guard``): the ``WHERE status ...`` of each status change, made from the
  transition table (``floodway.jobs.TRANSITIONS``);

- **admission** (``Admission.admit``): may a job that holds limits start now? A paused key
  holds it until the pause ends, a key at its concurrency cap until a job finishes, and the
  rate (declared, or learned from the destination) through GCRA until its next slot;
- **lanes** (``lane_pace``, ``lane_window``): a limit's reserved lanes split a key's rate and
  concurrency by share among the lanes with demand, lending an idle lane's share to the rest;
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
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import ConfigError, TransitionError
from ..jobs import NOT_STARTED, UNFINISHED, EnqueueKey, Status, can_transition, check_transition
from ..limits import LANE_SEP, LimitSpec, Rate, gcra, gcra_settle, gcra_within, lane_key, remaining, split_lane
from ..liveness import FREE_LOST_RUNS
from ..quota import Learned
from .base import LaneInfo, key_pace


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
#: [tat, paused_until, running, admitted, learned]. A lane's row (``limits.lane_key``) is never
#: paused (a pause holds the whole key, on the key's own row): its ``paused_until`` column holds
#: the lane's last demand instead, the moment a job of the lane was last held back.
KeyState = list

#: a lane stays active this long at least after its last demand
LANE_MIN_WINDOW = 1.0


@dataclass(frozen=True)
class LanePace:
    """What one lane of a key may use now: its part of the key (its share over the shares of
    the active lanes), and the rate, burst and concurrency that part gives."""

    part: float
    rate: Rate | None
    burst: int
    concurrency: int | None


def lane_window(rate: Rate | None, share: float) -> float:
    """How long a lane counts as active after its last demand (a job of it held back): two of
    its own admission intervals at its share of the key's rate, and at least
    ``LANE_MIN_WINDOW``. A backlogged lane never goes idle between two of its admissions; a
    lane whose jobs all pass as they come stays idle, taking only what it uses."""
    if rate is None:
        return LANE_MIN_WINDOW
    return max(LANE_MIN_WINDOW, 2.0 * rate.interval / share)


def lane_active(demand_at: float, now: float, window: float) -> bool:
    return demand_at > 0 and now - demand_at <= window


def lane_pace(
    shares: Mapping[str, float],
    lane: str,
    active: Iterable[str],
    rate: Rate | None,
    burst: int,
    concurrency: int | None,
) -> LanePace:
    """One lane's pace: ``share / (sum of the shares of the active lanes)`` of the key's rate
    (declared or learned) and concurrency (at least 1 slot). The lane asking is active. An
    idle lane's share is lent to the active ones in proportion to theirs, and comes back the
    moment its demand does: the others' next admission is paced at their smaller part.

    The burst is at least 2: the key's own GCRA (at its full rate and burst) is a gate every
    admission also passes, so the lanes together never exceed the key; a lane's second token
    only lets it take the next slot of the key after another lane took the one it wanted,
    instead of losing that slot's time for good.
    """
    if lane not in shares:
        raise ConfigError(f"lane {lane!r} is not one of {sorted(shares)}")
    total = shares[lane] + sum(shares[other] for other in set(active) if other != lane and other in shares)
    part = min(1.0, shares[lane] / total)
    lane_rate = Rate(rate.per_second * part, 1.0) if rate is not None else None
    cap = max(1, math.floor(concurrency * part + 1e-9)) if concurrency is not None else None
    return LanePace(part, lane_rate, max(2, math.ceil(burst * part - 1e-9)), cap)


class Admission:
    """Limit admission for one claim batch.

    The backend loads the state of each (limit, key) pair the batch's jobs hold (``states``),
    ``admit`` decides job by job in memory, and the backend writes back the ``dirty`` pairs in
    the same transaction. ``wake_at`` is the earliest moment a job held back by a rate or a
    pause could be admitted, so idle workers sleep exactly until then; ``blocked_ids`` are the
    jobs held back.

    ``horizon``: a job held back only by rates whose next tokens fall within this many seconds
    is admitted now with tokens booked for that moment (``limits.gcra_within``), and
    ``start_at`` says when it may start (its calls then come paced one interval apart, as if
    each had been claimed at its moment). A job held back further is woken for when half the
    horizon's tokens are free, so a binding limit is claimed in batches of about
    ``horizon / 2`` seconds of its rate rather than one token per claim.
    """

    #: how soon to look again at a job whose key another claimer holds right now
    BUSY_RETRY = 0.005

    def __init__(self, specs: dict[str, LimitSpec], now: float, horizon: float = 0.0):
        self.specs = specs
        self.now = now
        self.horizon = horizon
        #: job id -> the moment its booked tokens fall due, for jobs admitted ahead of now
        self.start_at: dict[str, float] = {}
        self.states: dict[tuple[str, str], KeyState] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.wake_at: float | None = None
        self.blocked_ids: list[str] = []
        #: lane rows whose last demand changed (written with the rest, see ``KeyState``)
        self.demanded: set[tuple[str, str]] = set()

    def pairs(self, name: str, key: str) -> list[tuple[str, str]]:
        """The pairs whose state admitting a job that holds (name, key) reads: the pair, and
        for a lane the key's own row and every lane's row of that key."""
        spec = self.specs.get(name)
        base, lane = split_lane(key)
        if spec is None or not spec.lanes or lane is None:
            return [(name, key)]
        return sorted({(name, base), (name, key), *((name, lane_key(base, other)) for other in spec.lane_shares)})

    def state(self, pair: tuple[str, str]) -> KeyState | None:
        """The pair's state, or None when another claimer holds it (a backend that loads
        lazily overrides this)."""
        return self.states.get(pair)

    def _held(self, job_id: str, until: float | None) -> bool:
        if until is not None:
            self.wake_at = until if self.wake_at is None else min(self.wake_at, until)
        self.blocked_ids.append(job_id)
        return False

    def admit(self, job_id: str, limits: Iterable[Any], *, ahead: bool = False) -> bool:
        """Admit the job against every limit it holds, or against none of them.

        ``ahead``: the job is claimed ahead (the worker starts it when a slot frees, a moment
        later), so it is admitted only where that wait cannot matter (``_headroom``); a job
        refused here is not held back (it is simply not claimed ahead)."""
        if ahead:
            return self._admit_ahead(limits)
        decisions: list[tuple[tuple[str, str], float | None, int]] = []
        paced: list[tuple[int, Rate, int]] = []  # (index in decisions, rate, burst)
        at = self.now  # when the job's tokens fall due: now, or booked within the horizon
        for name, key in limits:
            spec = self.specs.get(name)
            if spec is None:
                continue  # a limit no longer in the store holds nothing back
            if spec.lanes and LANE_SEP in key:
                if not self._admit_lane(job_id, spec, name, key, decisions):
                    return False
                continue
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
                ok, new_tat, due = gcra_within(state[0], self.now, rate, burst, self.horizon)
                if not ok:
                    # woken when half the horizon's tokens are free: the next claim books a batch
                    return self._held(job_id, due - self.horizon / 2)
                if due > at:
                    at = due
                paced.append((len(decisions), rate, burst))
            decisions.append((pair, new_tat, 1))
        if at > self.now:
            # every rate the job holds takes its token at the same moment, the latest one due
            for index, rate, burst in paced:
                pair = decisions[index][0]
                ok, new_tat, _ = gcra(self.states[pair][0], at, rate, burst)
                if not ok:  # (a token due by `at` passes at `at`; rounding aside)
                    return self._held(job_id, at)
                decisions[index] = (pair, new_tat, 1)
            self.start_at[job_id] = at
        for pair, new_tat, running in decisions:
            state = self.states[pair]
            state[2] += running
            state[3] += 1
            if new_tat is not None:
                state[0] = new_tat
            self.dirty.add(pair)
        return True

    def _admit_ahead(self, limits: Iterable[Any]) -> bool:
        """Admission of a job claimed ahead: each limit it holds must have headroom left
        once the job is admitted: no lanes (a lane's share moves with its demand), no pause,
        at most half the key's concurrency cap in use, and at least half its burst (at the
        rate in force, declared or learned) still free. The cap is never exceeded (a job
        claimed ahead holds its slot); the rate is kept at admission, and a job that waits a
        moment in the worker can at worst land together with calls admitted after it: with
        the jobs ahead at most half the burst, a moment's burst of at most 1.5 times the
        declared one. A burst of 1 never has headroom: such a job runs when admitted."""
        decisions: list[tuple[tuple[str, str], float | None]] = []
        for name, key in limits:
            spec = self.specs.get(name)
            if spec is None:
                continue
            state = self.state((name, key)) if not spec.lanes else None
            if state is None or state[1] > self.now:
                return False
            if spec.concurrency is not None and 2 * (state[2] + 1) > spec.concurrency:
                return False
            new_tat = None
            rate, burst = key_pace(spec, state[4], state[3], self.now)
            if rate is not None:
                ok, new_tat, _ = gcra(state[0], self.now, rate, burst)
                if not ok or 2 * remaining(new_tat, self.now, rate, burst) < burst:
                    return False
            decisions.append(((name, key), new_tat))
        for pair, new_tat in decisions:
            state = self.states[pair]
            state[2] += 1
            state[3] += 1
            if new_tat is not None:
                state[0] = new_tat
            self.dirty.add(pair)
        return True

    def _admit_lane(
        self,
        job_id: str,
        spec: LimitSpec,
        name: str,
        key: str,
        decisions: list[tuple[tuple[str, str], float | None, int]],
    ) -> bool:
        """A job on a lane of a key: the key's pause, the key's concurrency cap and then the
        lane's part of it, the lane's GCRA at its part of the rate, and the key's GCRA at the
        full rate. The lane's row counts its running jobs (a finished job gives its slot back
        there); the key's row its GCRA state, pause and learned rate."""
        base, lane = split_lane(key)
        assert lane is not None
        shares = spec.lane_shares
        states: dict[str, KeyState] = {}
        for other in {*shares, lane}:
            state = self.state((name, lane_key(base, other)))
            if state is None:
                return self._held(job_id, self.now + self.BUSY_RETRY)
            states[other] = state
        key_state = self.state((name, base))
        if key_state is None:
            return self._held(job_id, self.now + self.BUSY_RETRY)
        own = states[lane]

        def held(until: float | None) -> bool:
            # demand: a job of the lane was held back, so the lane is active (it wants more
            # than it gets); a lane whose jobs pass as they come takes only what it uses, and
            # lends the rest of its share
            own[1] = self.now
            self.demanded.add((name, key))
            return self._held(job_id, until)

        if key_state[1] > self.now:
            return held(key_state[1])
        rate, burst = key_pace(spec, key_state[4], key_state[3], self.now)
        windows = {other: lane_window(rate, share) for other, share in shares.items()}
        active = [other for other in shares if other == lane or lane_active(states[other][1], self.now, windows[other])]
        # a lane the limit no longer declares (its jobs were enqueued before a change) is
        # paced by the key alone
        pace = lane_pace(shares, lane, active, rate, burst, spec.concurrency) if lane in shares else None
        # the earliest moment another active lane goes idle, lending its share back
        idle_at = min((states[o][1] + windows[o] for o in active if o != lane), default=None)
        if spec.concurrency is not None:
            running = key_state[2] + sum(state[2] for state in states.values())
            # a slot is held for a whole run: a lane with jobs running keeps its part of the
            # slots even when none of its jobs waits
            holding = [o for o in shares if o in active or states[o][2] > 0]
            cap = (
                lane_pace(shares, lane, holding, rate, burst, spec.concurrency).concurrency if lane in shares else None
            )
            if running >= spec.concurrency or (cap is not None and own[2] >= cap):
                return held(idle_at)  # a finishing job (or an idle lane) frees a slot
        lane_tat = key_tat = None
        if rate is not None:
            if pace is not None and pace.rate is not None:
                ok, lane_tat, retry_at = gcra(own[0], self.now, pace.rate, pace.burst)
                if not ok:
                    return held(retry_at if idle_at is None else min(retry_at, idle_at))
                turn = self._lane_turn(spec, rate, shares, active, lane, states)
                if turn is not None:
                    return held(turn)
            # while another lane is idle, one slot of the key's burst stays free for it: its
            # next job passes at once instead of waiting behind the lanes that borrowed its share
            reserve = 1 if burst > 1 and any(other not in active for other in shares) else 0
            ok, key_tat, retry_at = gcra(key_state[0], self.now, rate, burst - reserve)
            if not ok:
                return held(retry_at)
        decisions.append(((name, base), key_tat, 0))
        decisions.append(((name, key), lane_tat, 1))
        return True

    def _lane_turn(
        self, spec: LimitSpec, rate: Rate, shares: Mapping[str, float], active: list[str], lane: str, states: dict
    ) -> float | None:
        """Whose turn is it? When the key's own GCRA admits fewer than its rate (claims come
        slower than its interval, or a burst is spent), every backlogged lane has credit, and
        the order of the claim's walk would split the key's slots. So the lanes take turns by
        their GCRA times (a virtual clock): a lane goes only when its time is not past another
        active lane's next time; then each gets its part of what the key admits. None: its
        turn; else when to look again."""

        def lead(name: str) -> float:
            pace = lane_pace(shares, name, active, rate, spec.burst, None).rate
            assert pace is not None
            return (max(states[name][0], self.now) - self.now) / pace.interval

        mine = lead(lane)
        for other in active:
            if other != lane and other in shares and mine > lead(other) + 0.5:
                return self.now + rate.interval
        return None


def _slack(value: float) -> float:
    return 1e-9 + 16 * math.ulp(value)


def lane_view(
    spec: LimitSpec, rate: float | None, burst: int, rows: Mapping[str, tuple[float, int, int]], now: float
) -> list[LaneInfo]:
    """Each lane of one key as the CLI, API and dashboard show it: its share, whether it is
    active, the rate it is paced at now (its part of the key's ``rate``), its running and
    admitted jobs. ``rows``: lane -> (last demand, running, admitted) of the lane rows stored."""
    pace = Rate(rate, 1.0) if rate else None
    shares = spec.lane_shares
    active = [
        lane
        for lane, share in shares.items()
        if lane in rows and lane_active(rows[lane][0], now, lane_window(pace, share))
    ]
    out = []
    for lane, share in shares.items():
        part = lane_pace(shares, lane, active, pace, burst, spec.concurrency)
        demand, running, admitted = rows.get(lane, (0.0, 0, 0))
        out.append(
            LaneInfo(
                lane=lane,
                share=share,
                active=lane in active,
                effective_rate=part.rate.per_second if part.rate is not None else None,
                concurrency=part.concurrency,
                running=running,
                admitted=admitted,
            )
        )
    return out


def admit_one(
    spec: LimitSpec,
    tat: float,
    paused_until: float,
    admitted: int,
    learned: Any,
    now: float,
    cost: int = 1,
    horizon: float = 0.0,
) -> tuple[bool, float, float | None]:
    """Admission of one acquire outside a claim (``ctx.acquire``): (admitted, when, the key's
    new GCRA time or None when it does not change). Admitted: ``when`` is now, or the moment
    booked for it up to ``horizon`` seconds ahead (``gcra_within``; never while the key is
    paused). Refused: ``when`` is the moment to try again (the pause's end, or the rate's next
    slot)."""
    if paused_until > now:
        return False, paused_until, None
    rate, burst = key_pace(spec, Learned.loads(learned), admitted, now)
    if rate is None:
        return True, now, None
    ok, new_tat, at = gcra_within(tat, now, rate, burst, horizon, cost)
    if not ok:
        return False, at, None
    return True, at, new_tat


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
