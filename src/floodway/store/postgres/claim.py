"""The PostgreSQL store's claim: SKIP LOCKED over fairness groups in turn, limits admitted for the
whole batch under row locks taken in key order, queue caps under advisory locks."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from typing import Any, Iterable

import psycopg

from ...jobs import Job
from ...limits import LimitSpec
from ...quota import Learned
from ..base import (
    ClaimedJobs,
    served_stamps,
)
from ..base import job_from_row as _job_from_row
from ..rules import CLAIM_FROM, Admission
from ..sql import LANE_DEMAND, in_dialect
from .connection import (
    PostgresConnection,
    _Deferred,
    _pipelined,
)
from .queries import (
    _J,
    _JOB_COLUMNS,
    _NS_FAIR,
    _NS_QUEUE,
    KEY_RUNNING,
    LOCK_KEYS,
    _ready_heads,
)

#: how long the store goes straight to the full claim after the plain-group claim found other
#: fairness groups (tenants, limits) in play
_FAST_CLAIM_RECHECK = 1.0
#: how soon the one-group claim is tried again after it declined once (doubling while it
#: declines in a row, up to ``_FAST_CLAIM_RECHECK``)
_HELD_CLAIM_RETRY = 0.01
_LANE_DEMAND = in_dialect(LANE_DEMAND, "%s")
#: how many fairness groups' limits a store remembers (see ``_choose``'s fetch)
_GROUPS_REMEMBERED = 4096
_HEAD_COLUMNS = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
#: a claimed job's columns as an UPDATE ... FROM returns them (qualified: the FROM list has an id too)
_UPDATED_COLUMNS = ", ".join(f"jobs.{c.strip()}" for c in _JOB_COLUMNS.split(","))
#: the head jobs of the first page of fairness groups, for the prelude: as many per group as
#: ``_choose`` reads on its first visit (its ``per``), each group's row first with that count
#: (and NULL jobs for a group with none ready)
_FIRST_HEADS = (
    "WITH g AS (SELECT key, row_number() OVER (ORDER BY served_at, key) AS ord FROM "
    "(SELECT key, served_at FROM fair_keys ORDER BY served_at, key LIMIT %(page)s) f), "
    "n AS (SELECT LEAST(100, GREATEST(1, ceil(%(total)s::float8 / GREATEST(count(*), 1)))::int "
    "+ CASE WHEN count(*) = 1 THEN 1 ELSE 0 END) AS per FROM g) "
    "SELECT g.key, n.per, {cols} FROM g CROSS JOIN n LEFT JOIN LATERAL ({heads}) j ON true "
    "ORDER BY g.ord, j.priority DESC, j.run_at, j.seq"
)
_GROUP_READY = "j.status = 'waiting' AND NOT j.paused AND j.fair_key = g.key"

#: the one-group claim's candidates: the ready jobs of the only fairness group, while it is the
#: only one and no queue is capped or paused
_HELD_CANDIDATES = (
    f"j.{CLAIM_FROM} AND NOT j.paused AND j.fair_key = (SELECT grp FROM gate) AND (SELECT one AND NOT capped FROM gate)"
)
#: The one-group claim (see ``PostgresClaim._held_claim``): of the first ``%(n)s`` ready jobs of
#: the only fairness group, as many as the limit keys they all hold admit, admitted and booked
#: together in one statement, by ``rules.Admission``'s rule: the first ``%(first)s`` for now
#: (within each key's cap and burst, and with one rate among the keys, its tokens booked up to
#: ``%(horizon)s`` seconds ahead, each job with the moment it may start), the rest as jobs
#: claimed ahead (at most half the cap in use and half the burst's time booked once admitted).
#: Only keys of a plain kind: unpaused, a declared rate and cap (none learned, no lanes, floor
#: or ceiling). The full claim would admit the same jobs and book the same; where none passes,
#: nothing is claimed (the first column is false) and the full claim decides. The key rows are
#: locked after the jobs, in key order, as the full claim locks them.
_HELD_CLAIM = (
    "WITH gate AS (SELECT (SELECT count(*) FROM (SELECT 1 FROM fair_keys LIMIT 2) f) = 1 AS one, "
    "(SELECT key FROM fair_keys LIMIT 1) AS grp, "
    "EXISTS (SELECT 1 FROM queues WHERE paused OR max_concurrency IS NOT NULL) AS capped), "
    "cand AS ({cand}), "
    "held AS (SELECT count(*) AS n, count(DISTINCT limits) AS kinds, min(limits) AS limits FROM cand), "
    "pairs AS (SELECT DISTINCT p->>0 AS name, p->>1 AS key FROM held, jsonb_array_elements(held.limits::jsonb) p "
    "WHERE held.kinds = 1), "
    f"rows AS (SELECT limit_name, key, tat, paused_until, {KEY_RUNNING} AS running, admitted, learned FROM limit_keys "
    "WHERE (limit_name, key) IN (SELECT name, key FROM pairs) ORDER BY limit_name, key FOR UPDATE), "
    "booked AS (SELECT r.limit_name, r.key, r.running, r.admitted, l.concurrency, l.burst, "
    "CASE WHEN l.rate_count > 0 AND l.rate_period > 0 THEN 1.0 / (l.rate_count / l.rate_period) END AS interval, "
    "r.learned IS NULL AND NOT l.adaptive AND l.bounds IS NULL AND r.paused_until <= %(now)s AS plain, "
    "GREATEST(r.tat, %(now)s) AS base FROM rows r JOIN limits l ON l.name = r.limit_name), "
    # a job's tokens are booked ahead only where one key holds a rate (the rule books several
    # rates for the latest of their moments, which moves the others' times unevenly)
    "hz AS (SELECT CASE WHEN count(interval) <= 1 THEN %(horizon)s ELSE 0 END AS h FROM booked), "
    # how many of the jobs each key admits now (its cap, its burst's time), and how many with
    # headroom left (half its cap, half its burst's time); less a margin for rounding: the rule
    # adds the interval job by job
    "room AS (SELECT b.plain, "
    "CASE WHEN b.concurrency IS NULL THEN %(n)s ELSE b.concurrency - b.running END AS cap_now, "
    "CASE WHEN b.concurrency IS NULL THEN %(n)s ELSE b.concurrency / 2 - b.running END AS cap_ahead, "
    "CASE WHEN b.interval IS NULL THEN %(n)s ELSE floor((b.interval * b.burst * (1 - 1e-9) + (SELECT h FROM hz) "
    "- %(n)s * b.base * 1e-15 - (b.base - %(now)s)) / b.interval) END AS rate_now, "
    "CASE WHEN b.interval IS NULL THEN %(n)s ELSE floor((b.interval * floor(b.burst / 2) * (1 - 1e-9) "
    "- %(n)s * b.base * 1e-15 - (b.base - %(now)s)) / b.interval) END AS rate_ahead FROM booked b), "
    # the first %(first)s jobs are admitted by the rule for now, the rest by the rule for jobs
    # claimed ahead (as the full claim's walk admits them)
    "fit AS (SELECT (SELECT n FROM held) AS n, LEAST(min(cap_now), min(rate_now)) AS now_k, "
    "LEAST(min(cap_ahead), min(rate_ahead)) AS ahead_k, count(*) AS keys, bool_and(plain) AS plain FROM room), "
    "dec AS (SELECT CASE WHEN n > 0 AND keys > 0 AND keys = (SELECT count(*) FROM pairs) AND plain THEN "
    "GREATEST(0, LEAST(n, CASE WHEN now_k < %(first)s THEN now_k ELSE GREATEST(%(first)s, ahead_k) END))::int "
    "ELSE 0 END AS k FROM fit), "
    "lk AS (UPDATE limit_keys k SET running = k.running + d.k, admitted = b.admitted + d.k, "
    "tat = CASE WHEN b.interval IS NULL THEN k.tat ELSE b.base + b.interval * d.k END "
    "FROM booked b, dec d WHERE d.k > 0 AND k.limit_name = b.limit_name AND k.key = b.key), "
    # the moment the rate's token of the job in place rn falls due: later than now, the job
    # was booked ahead and starts then
    "pick AS (SELECT x.id, CASE WHEN r.base + r.interval * (x.rn - r.burst) > %(now)s "
    "THEN r.base + r.interval * (x.rn - r.burst) END AS at "
    "FROM (SELECT id, row_number() OVER (ORDER BY priority DESC, run_at, seq) AS rn FROM cand) x "
    "LEFT JOIN (SELECT base, interval, burst FROM booked WHERE interval IS NOT NULL LIMIT 1) r "
    "ON (SELECT h FROM hz) > 0 WHERE x.rn <= (SELECT k FROM dec)), "
    "c AS (UPDATE jobs j SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
    "lease_until = %(lease)s, started_at = COALESCE(pick.at, %(now)s), updated_at = %(now)s, "
    "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
    "throttled_since = NULL FROM pick WHERE j.id = pick.id RETURNING j.seq, pick.at AS start_at, "
    + ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
    + ") "
    "SELECT d.k > 0, (SELECT one AND NOT capped FROM gate) AND ((SELECT n FROM held) = 0 OR (SELECT count(*) FROM rows) < "
    "(SELECT count(*) FROM pairs p JOIN limits l ON l.name = p.name)) AS absent, "
    # a job of the first %(first)s held back by a rate (not a cap): woken when half the horizon's
    # tokens are free, as the rule wakes it (its token is due where the next booking would be)
    "CASE WHEN d.k > 0 AND d.k < LEAST((SELECT n FROM held), %(first)s) "
    "AND (SELECT min(rate_now) < min(cap_now) FROM room) THEN (SELECT max(b.base + b.interval * (d.k + 1 - b.burst)) "
    "FROM booked b WHERE b.interval IS NOT NULL) - (SELECT h FROM hz) / 2 END AS wake, c.start_at, "
    + ", ".join(f"c.{c.strip()}" for c in _JOB_COLUMNS.split(","))
    + " FROM dec d LEFT JOIN c ON true ORDER BY c.priority DESC, c.run_at, c.seq"
)
_HELD_CLAIM_BY_QUEUE = _HELD_CLAIM.format(
    cand=_ready_heads(_HELD_CANDIDATES, "%(n)s", "j.id, j.limits, j.priority, j.run_at, j.seq", by_queue=True)
)
_HELD_CLAIM = _HELD_CLAIM.format(
    cand=_ready_heads(_HELD_CANDIDATES, "%(n)s", "j.id, j.limits, j.priority, j.run_at, j.seq")
)


def _first_heads(by_queue: bool) -> str:
    """``_FIRST_HEADS`` for a claim limited to the ``%(queues)t`` parameter's queues or not."""
    return _FIRST_HEADS.format(
        cols=_HEAD_COLUMNS, heads=_ready_heads(_GROUP_READY, "(SELECT per FROM n)", by_queue=by_queue)
    )


class _Admission(Admission):
    """Admission (``rules.Admission``) for one claim batch under row locks.

    ``lock`` loads and row-locks the state of every (limit, key) pair the batch may admit
    against, in key order; ``admit`` decides job by job in memory; ``write_back`` stores what
    changed. Pairs first seen after the batch's main lock are taken with SKIP LOCKED instead
    (a second round of blocking locks could deadlock against another claimer), and a job
    whose pair another claimer holds right now waits for the next claim.
    """

    def __init__(self, specs: dict[str, LimitSpec], now: float, horizon: float = 0.0):
        super().__init__(specs, now, horizon)
        self.unavailable: set[tuple[str, str]] = set()
        self._locked_once = False
        self._created = True
        self._parsed: dict[str, list] = {}
        #: each loaded pair's running jobs as read (write_back adds what the batch took)
        self.loaded: dict[tuple[str, str], int] = {}

    def held(self, raw: str | None) -> list:
        """The (limit, key) pairs of a job's ``limits`` column, parsed once per claim: the
        jobs of a fairness group hold the same ones."""
        if not raw:
            return []
        pairs = self._parsed.get(raw)
        if pairs is None:
            pairs = self._parsed[raw] = json.loads(raw)
        return pairs

    def needed(self, held: Iterable[Iterable[Any]]) -> list[tuple[str, str]]:
        """The pairs, in key order, whose state admitting jobs holding ``held`` (lists of
        (limit, key) pairs) reads."""
        needed: set[tuple[str, str]] = set()
        for pairs in held:
            for name, key in pairs:
                spec = self.specs.get(name)
                if spec is not None:  # a lane reads its key's row and its siblings'
                    needed.update(self.pairs(name, key) if spec.lanes else [(name, key)])
        return sorted(needed)

    def wanted(self, held: Iterable[Iterable[Any]]) -> list[tuple[str, str]]:
        """``needed``, less the pairs this batch has loaded or found busy already."""
        return [p for p in self.needed(held) if p not in self.states and p not in self.unavailable]

    def send_lock(self, cur: psycopg.Cursor, pairs: list[tuple[str, str]], *, create: bool = True) -> None:
        """Send the statements that load and row-lock ``pairs`` (read back by ``read_lock``):
        blocking locks in key order the first time in the batch, SKIP LOCKED after. Without
        ``create`` the rows are expected to exist (they did in the last claim): one that does
        not is left to ``lock``, which makes it."""
        names = [p[0] for p in pairs]
        keys = [p[1] for p in pairs]
        self._created = create
        if create:
            cur.execute(
                "INSERT INTO limit_keys (limit_name, key) SELECT n, k FROM unnest(%t::text[], %t::text[]) AS p(n, k) "
                "ORDER BY n, k ON CONFLICT DO NOTHING",
                (names, keys),
            )
        cur.execute(LOCK_KEYS.format(skip=" SKIP LOCKED" if self._locked_once else ""), (names, keys))
        self._locked_once = True

    def read_lock(self, cur: psycopg.Cursor, pairs: list[tuple[str, str]]) -> None:
        found = cur.fetchall()
        for name, key, tat, paused_until, running, admitted, learned in found:
            self.states[(name, key)] = [tat, paused_until, running, admitted, Learned.loads(learned)]
            self.loaded[(name, key)] = running
        if self._created:
            self.unavailable.update(p for p in pairs if p not in self.states)

    def lock(self, cur: psycopg.Cursor, rows: Iterable[tuple]) -> None:
        raw = (row[_J["limits"]] for row in rows)
        pairs = self.wanted(self.held(r) for r in raw if r)
        if pairs:
            self.send_lock(cur, pairs)
            self.read_lock(cur, pairs)

    def write_back(self, cur: psycopg.Cursor) -> None:
        if self.demanded:
            cur.executemany(_LANE_DEMAND, [(*pair, self.states[pair][1]) for pair in sorted(self.demanded)])
        if not self.dirty:
            return
        ordered = sorted(self.dirty)
        cur.execute(
            # running: the slots taken (see queries.RELEASE_SLOTS), so what this claim took is added
            "UPDATE limit_keys l SET tat = v.tat, running = l.running + v.taken, admitted = v.admitted "
            "FROM unnest(%t::text[], %t::text[], %t::float8[], %t::int8[], %t::int8[]) AS v(n, k, tat, taken, admitted) "
            "WHERE l.limit_name = v.n AND l.key = v.k",
            (
                [p[0] for p in ordered],
                [p[1] for p in ordered],
                [self.states[p][0] for p in ordered],
                [self.states[p][2] - self.loaded[p] for p in ordered],
                [self.states[p][3] for p in ordered],
            ),
        )


class PostgresClaim(PostgresConnection):
    """Claim ready jobs (with limit admission) and tell when the next one is due."""

    @staticmethod
    def _queue_sql(queues: list[str] | None) -> tuple[str, Any]:
        """The capped or paused queues this claim may take from that have ready jobs."""
        filt = " AND q.name = ANY(%t::text[])" if queues is not None else ""
        return (
            "SELECT q.name, q.max_concurrency, q.paused FROM queues q "
            f"WHERE (q.max_concurrency IS NOT NULL OR q.paused){filt} AND EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.queue = q.name AND j.status = 'waiting') ORDER BY q.name",
            (queues,) if queues is not None else None,
        )

    @staticmethod
    def _queue_room(cur: psycopg.Cursor, rows: list[tuple], *, wait: bool = True) -> dict[str, int]:
        """Free slots of each capped queue, counted from running jobs under a per-queue
        advisory lock (so two claimers cannot both fill the last slot); a paused queue has
        none. Only queues with ready jobs are locked. Without ``wait`` (the claim holds limit
        rows already, and waiting now could deadlock against a claimer that holds the queue's
        lock and waits for them) a queue whose lock is held elsewhere has no room this time."""
        if not rows:
            return {}
        room = {name: 0 for name, _, paused in rows if paused}
        capped = {name: cap for name, cap, paused in rows if not paused}
        if capped:
            names = sorted(capped)
            take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            cur.execute(
                f"SELECT n, {take}(%s, hashtext(n)) FROM (SELECT n FROM unnest(%t::text[]) AS n ORDER BY n) s",
                (_NS_QUEUE, names),
            )
            if not wait:  # (waiting, the count below is read with the locks: one round trip)
                for name, locked in cur.fetchall():
                    if not locked:
                        del capped[name]
                        room[name] = 0
                names = sorted(capped)
            cur.execute(
                "SELECT queue, COUNT(*) FROM jobs WHERE status = 'running' AND queue = ANY(%t::text[]) GROUP BY queue",
                (names,),
            )
            running = {q: int(c) for q, c in cur.fetchall()}
            room.update({q: cap - running.get(q, 0) for q, cap in capped.items()})
        return room

    def _claim_jobs(
        self, worker_id: str, queues: list[str] | None, limit: int, lease: float, ahead: int, horizon: float = 0.0
    ) -> ClaimedJobs:
        if queues is not None:
            queues = sorted(set(queues))  # each queue's jobs are read once (see _ready_heads)
        if time.monotonic() >= self._fast_claim_after:
            # every job this claim can take holds no limit, so the jobs ``ahead`` come with it
            fast, plain, capped = self._run(
                lambda cur: self._fast_claim(cur, worker_id, queues, limit + ahead, lease), what="claim"
            )
            if plain and not capped:
                return ClaimedJobs(fast)
            # tenants, limits or queue caps are in play (nothing was taken): the full claim
            # decides, and the plain-group claim is tried again a little later
            self._fast_claim_after = time.monotonic() + _FAST_CLAIM_RECHECK
        if time.monotonic() >= self._held_claim_after:
            held, ok, absent = self._run(
                lambda cur: self._held_claim(cur, worker_id, queues, limit, lease, ahead, horizon), what="claim"
            )
            if ok:
                self._held_claim_wait = 0.0
                return held
            if not absent:
                # more than one group, a queue cap, or a limit binding or of another kind: the
                # full claim decides, and this one is tried again a little later, the later the
                # more often it declined in a row (a key's time booked a moment ahead by a
                # claimer whose clock runs a little ahead passes again at once; a binding limit
                # stays binding). Nothing ready, or a key row the full claim makes first: at once.
                self._held_claim_wait = min(max(2 * self._held_claim_wait, _HELD_CLAIM_RETRY), _FAST_CLAIM_RECHECK)
                self._held_claim_after = time.monotonic() + self._held_claim_wait
        return self._run(lambda cur: self._claim(cur, worker_id, queues, limit, lease, ahead, horizon), what="claim")

    def _fast_claim(
        self, cur: psycopg.Cursor, worker_id: str, queues: list[str] | None, limit: int, lease: float
    ) -> Any:  # a _Deferred: _run reads it once the pipeline is done
        """The plain-group claim (``_FAST_CLAIM``) in one round trip with its COMMIT; returns
        (jobs, plain, capped)."""
        now = self._now()
        params: dict[str, Any] = {"now": now, "ns": _NS_FAIR, "n": limit, "w": worker_id, "lease": now + lease}
        if queues is not None:
            params["queues"] = queues
        # promoted first, in a statement of its own: a CTE's changes are invisible to its siblings
        cur.connection.cursor().execute(self._PROMOTE, params)
        cur.execute(self._FAST_CLAIM_BY_QUEUE if queues is not None else self._FAST_CLAIM, params)

        def claimed() -> tuple[list[Job], bool, bool]:
            rows = cur.fetchall()
            plain, capped = rows[0][0], rows[0][1]
            return [_job_from_row(r[2:]) for r in rows if r[2] is not None], plain, capped

        return _Deferred(claimed)

    def _held_claim(
        self,
        cur: psycopg.Cursor,
        worker_id: str,
        queues: list[str] | None,
        limit: int,
        lease: float,
        ahead: int = 0,
        horizon: float = 0.0,
    ) -> Any:  # a _Deferred: _run reads it once the pipeline is done
        """The one-group claim (``_HELD_CLAIM``) in one round trip with its COMMIT; returns
        (the claimed jobs, whether it decided, whether it lacked ready jobs or a key row); the
        jobs booked ahead (within ``horizon``) carry their moments in ``start_at``, and a job
        its rate held back the moment to look again in ``wake_at``. Undecided, it changed
        nothing."""
        now = self._now()
        params: dict[str, Any] = {
            "now": now,
            "ns": _NS_FAIR,
            "n": limit + ahead,
            "first": limit,
            "horizon": horizon,
            "w": worker_id,
            "lease": now + lease,
        }
        if queues is not None:
            params["queues"] = queues
        cur.connection.cursor().execute(self._PROMOTE, params)
        cur.execute(_HELD_CLAIM_BY_QUEUE if queues is not None else _HELD_CLAIM, params)

        def claimed() -> tuple[ClaimedJobs, bool, bool]:
            rows = cur.fetchall()
            got = [r for r in rows if r[4] is not None]
            start_at = {r[4]: float(r[3]) for r in got if r[3] is not None}
            wake = None if rows[0][2] is None else float(rows[0][2])
            jobs = ClaimedJobs((_job_from_row(r[4:]) for r in got), wake_at=wake, start_at=start_at)
            return jobs, bool(rows[0][0]), bool(rows[0][1])

        return _Deferred(claimed)

    def _claim(
        self,
        cur: psycopg.Cursor,
        worker_id: str,
        queues: list[str] | None,
        limit: int,
        lease: float,
        ahead: int = 0,
        horizon: float = 0.0,
    ) -> ClaimedJobs:
        now = self._now()
        conn = cur.connection
        page_size = max(limit + ahead, 32)
        queue_sql, queue_params = self._queue_sql(queues)
        admission = _Admission({}, now, horizon)
        # the limit rows the first groups' jobs held in the last claim, locked ahead of time
        # (not while queue caps are about: their locks come first)
        early_locks = [] if self._caps_seen else self._first_locks
        # the prelude in one round trip: promote due jobs, read caps, limits, the first groups,
        # and the first groups' head jobs with the limit rows they likely hold
        with _pipelined(conn):
            promote, caps, limits, groups, heads, locks = (conn.cursor() for _ in range(6))
            promote.execute(self._PROMOTE, {"now": now, "ns": _NS_FAIR})
            caps.execute(queue_sql, queue_params)
            limits.execute(
                "SELECT name, rate_count, rate_period, burst, concurrency, key, adaptive, bounds FROM limits"
            )
            groups.execute("SELECT key, served_at FROM fair_keys ORDER BY served_at, key LIMIT %s", (page_size,))
            heads.execute(
                _first_heads(queues is not None),
                {"page": page_size, "total": limit + ahead, "queues": queues},
            )
            if early_locks:
                admission.send_lock(locks, early_locks, create=False)
            cap_rows = caps.fetchall()
            admission.specs = {row[0]: LimitSpec.from_row(*row) for row in limits.fetchall()}
            first_page = groups.fetchall()
            early: dict[str, list[tuple]] = {}
            per = 0
            for row in heads.fetchall():
                per = row[1]
                early.setdefault(row[0], [])
                if row[2] is not None:
                    early[row[0]].append(row[2:])
            if early_locks:
                admission.read_lock(locks, early_locks)
        self._caps_seen = bool(cap_rows)
        room = self._queue_room(cur, cap_rows, wait=not early_locks)
        chosen, served, empty, many_groups = self._choose(
            cur, admission, room, queues, limit, first_page, page_size, ahead, (early, per)
        )
        lease_until = now + lease
        ids = [row[0] for row in chosen]
        if empty:
            self._drop_empty_groups(cur, empty)
        # the writes go out with the COMMIT, in one round trip: the claim's own UPDATE last,
        # its rows read back after the COMMIT was sent (see _Deferred)
        admission.write_back(cur)
        if admission.blocked_ids:
            cur.execute(
                "UPDATE jobs SET throttled_since = COALESCE(throttled_since, %s) WHERE id = ANY(%t::text[])",
                (now, admission.blocked_ids),
            )
        if served and many_groups:
            # fairness: least recently served first; SKIP LOCKED — a group another claimer
            # is stamping right now is being served anyway
            keys, stamps = served_stamps(served, now)
            cur.execute(
                "UPDATE fair_keys f SET served_at = s.at FROM unnest(%t::text[], %t::float8[]) AS s(key, at) "
                "WHERE f.key = s.key AND f.key IN "
                "(SELECT key FROM fair_keys WHERE key = ANY(%t::text[]) ORDER BY key FOR UPDATE SKIP LOCKED)",
                (keys, stamps, keys),
            )
        if not ids:
            return ClaimedJobs(wake_at=admission.wake_at)
        if admission.start_at:
            # a job whose tokens were booked ahead starts (and reads as started) at their moment
            at = admission.start_at
            cur.execute(
                "WITH c AS (UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
                "lease_until = %(lease)s, started_at = b.at, updated_at = %(now)s, "
                "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
                "throttled_since = NULL FROM unnest(%(ids)t::text[], %(ats)t::float8[]) AS b(job, at) "
                f"WHERE jobs.id = b.job AND {CLAIM_FROM} RETURNING {_UPDATED_COLUMNS}) "
                f"SELECT {_JOB_COLUMNS} FROM c",
                {"w": worker_id, "lease": lease_until, "now": now, "ids": ids, "ats": [at.get(i, now) for i in ids]},
            )
        else:
            cur.execute(
                "WITH c AS (UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = %(w)s, "
                "lease_until = %(lease)s, started_at = %(now)s, updated_at = %(now)s, "
                "throttled_seconds = throttled_seconds + COALESCE(%(now)s - throttled_since, 0), "
                f"throttled_since = NULL WHERE id = ANY(%(ids)t::text[]) AND {CLAIM_FROM} RETURNING {_JOB_COLUMNS}) "
                f"SELECT {_JOB_COLUMNS} FROM c",
                {"w": worker_id, "lease": lease_until, "now": now, "ids": ids},
            )

        def claimed() -> ClaimedJobs:
            by_id = {row[0]: row for row in cur.fetchall()}
            return ClaimedJobs(
                (_job_from_row(by_id[i]) for i in ids if i in by_id),
                wake_at=admission.wake_at,
                start_at=admission.start_at,
            )

        return _Deferred(claimed)  # type: ignore[return-value]

    def _choose(
        self,
        cur: psycopg.Cursor,
        admission: _Admission,
        room: dict[str, int],
        queues: list[str] | None,
        limit: int,
        first_page: list[tuple],
        page_size: int,
        ahead: int = 0,
        early: tuple[dict[str, list[tuple]], int] = ({}, 0),
    ) -> tuple[list[tuple], list[str], list[str], bool]:
        """Pick up to ``limit`` ready jobs, then up to ``ahead`` more to claim ahead:
        round-robin over fairness groups (least recently served first), then priority, then
        age; skipping full queues and jobs whose limits do not admit them now (or, claimed
        ahead, leave them no headroom). The same walk as the SQLite store's, fed by batched,
        row-locking (SKIP LOCKED) reads of each group's head rows.

        ``early``: the head rows of the first groups, read (and locked) in the prelude, and
        how many were read per group.

        Returns (chosen rows, groups served, groups found empty, whether >1 group was seen).
        """
        groups: list[str] = []
        more_groups = True
        last: tuple[float, str] | None = None

        def load_groups(rows: list[tuple] | None = None) -> None:
            nonlocal more_groups, last
            if rows is None:
                cur.execute(
                    "SELECT key, served_at FROM fair_keys WHERE (served_at, key) > (%s, %s) "
                    "ORDER BY served_at, key LIMIT %s",
                    (last[0], last[1], page_size),  # type: ignore[index]  # set by the first page
                )
                rows = cur.fetchall()
            if rows:
                last = (rows[-1][1], rows[-1][0])
            more_groups = len(rows) == page_size
            groups.extend(r[0] for r in rows)

        pending: dict[str, deque] = {}
        fetched_ids: dict[str, list[str]] = {}
        exhausted: set[str] = set()
        inactive: set[str] = set()
        empty: list[str] = []
        chosen: list[tuple] = []
        served: list[str] = []

        def fetch(batch: list[str], per: int) -> None:
            full = sorted(q for q, left in room.items() if left <= 0)
            where = _GROUP_READY
            params: dict[str, Any] = {"groups": batch, "per": per}
            skip = ""
            if full:
                params["full"] = full
                if queues is not None:
                    skip = "%(full)t::text[]"
                else:
                    where += " AND NOT (j.queue = ANY(%(full)t::text[]))"
            if queues is not None:
                params["queues"] = queues
            seen = [i for g in batch for i in fetched_ids.get(g, ())]
            if seen:
                where += " AND NOT (j.id = ANY(%(seen)t::text[]))"
                params["seen"] = seen
            cols = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
            heads = _ready_heads(where, "%(per)s", by_queue=queues is not None, skip=skip)
            cur.execute(
                f"SELECT g.key, {cols} FROM unnest(%(groups)t::text[]) WITH ORDINALITY AS g(key, ord) "
                f"CROSS JOIN LATERAL ({heads}) j ORDER BY g.ord, j.priority DESC, j.run_at, j.seq",
                params,
            )
            # the limit rows these groups' jobs held last time are locked in the same round
            # trip, after the jobs (as ``lock`` would): a group's jobs hold the same limits
            known = admission.wanted(held for g in batch if (held := self._group_limits.get(g)))
            if known:
                early = cur.connection.cursor()
                admission.send_lock(early, known)
            got: dict[str, list[tuple]] = {g: [] for g in batch}
            for row in cur.fetchall():
                got[row[0]].append(row[1:])
            if known:
                admission.read_lock(early, known)
            take(got, per, full)

        def take(got: dict[str, list[tuple]], per: int, full: list[str]) -> None:
            if len(self._group_limits) > _GROUPS_REMEMBERED:
                self._group_limits.clear()
            for group, rows in got.items():
                if rows and rows[0][_J["limits"]]:
                    self._group_limits[group] = admission.held(rows[0][_J["limits"]])
            for group, rows in got.items():
                pending.setdefault(group, deque()).extend(rows)
                fetched_ids.setdefault(group, []).extend(r[0] for r in rows)
                if len(rows) < per:
                    exhausted.add(group)
                    if not fetched_ids[group] and queues is None and not full:
                        empty.append(group)
            admission.lock(cur, (r for rows in got.values() for r in rows))

        load_groups(first_page)
        total = limit + ahead
        budget = max(200, total * 20)
        i = 0
        cycle_progress = False
        while len(chosen) < total and budget > 0:
            if i >= len(groups):
                if more_groups:
                    load_groups()
                    if i < len(groups):
                        continue
                if not cycle_progress:
                    break
                i, cycle_progress = 0, False
                continue
            group = groups[i]
            i += 1
            if group in inactive:
                continue
            heads = pending.get(group)
            if not heads:
                if group in exhausted:
                    inactive.add(group)
                    continue
                if group not in fetched_ids:
                    # the first visit: fetch heads for this group and the next unfetched ones
                    batch = [g for g in groups[i - 1 : i - 1 + page_size] if g not in fetched_ids and g not in inactive]
                    first, per = early
                    if group in first:  # read in the prelude
                        got = {g: first.pop(g) for g in batch if g in first}
                        take(got, per, [])
                        # every group fits in the first page, so the next claim's first page
                        # holds the same ones: it locks their limit rows in its prelude
                        held = (admission.held(r[_J["limits"]]) for rows in got.values() for r in rows[:1])
                        self._first_locks = [] if more_groups else admission.needed(held)
                    else:
                        remaining_slots = total - len(chosen)
                        per = max(1, math.ceil(remaining_slots / len(batch))) + (1 if len(batch) == 1 else 0)
                        fetch(batch, min(per, 100))
                else:
                    fetch([group], min(max(total - len(chosen), 1) + 1, 100))
                heads = pending.get(group)
                if not heads:
                    inactive.add(group)
                    continue
            row = heads.popleft()
            budget -= 1
            cycle_progress = True
            queue = row[_J["queue"]]
            if queue in room and room[queue] <= 0:
                continue  # its queue filled during this claim; the next fetch skips it
            raw = row[_J["limits"]]
            limits = admission.held(raw)
            if limits and not admission.admit(row[0], limits, ahead=len(chosen) >= limit):
                # this group's head is held back by a limit (or, ahead, has no headroom): serve others
                inactive.add(group)
                continue
            if queue in room:
                room[queue] -= 1
            chosen.append(row)
            served.append(group)  # once per job: served_stamps orders groups by their last
        return chosen, served, empty, len(groups) > 1

    def _drop_empty_groups(self, cur: psycopg.Cursor, keys: list[str]) -> None:
        """Delete fairness groups that have no ready job — only under the exclusive advisory
        lock (try, never wait), and re-checked in a fresh statement after it, so a group
        being made ready by a transaction in flight is never lost."""
        cur.execute(
            "SELECT k FROM unnest(%t::text[]) AS k WHERE pg_try_advisory_xact_lock(%s, hashtext(k))",
            (sorted(set(keys)), _NS_FAIR),
        )
        locked = [r[0] for r in cur.fetchall()]
        if locked:
            cur.execute(
                "DELETE FROM fair_keys f WHERE f.key = ANY(%t::text[]) AND NOT EXISTS "
                "(SELECT 1 FROM jobs j WHERE j.status = 'waiting' AND NOT j.paused AND j.fair_key = f.key)",
                (locked,),
            )

    def next_due(self, queues: list[str] | None) -> float | None:
        # paused jobs and queues are not work to wait for
        extra = " AND NOT paused AND NOT (queue = ANY(ARRAY(SELECT name FROM queues WHERE paused)))"
        params: dict[str, Any] = {}
        if queues is not None:
            extra += " AND queue = ANY(%(q)t::text[])"
            params["q"] = queues
        rows = self._read(
            f"SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE status = 'waiting'{extra}) THEN 0 ELSE "
            f"(SELECT MIN(run_at) FROM jobs WHERE status IN ('scheduled', 'retrying'){extra}) END",
            params or None,
        )
        value = rows[0][0] if rows else None
        return None if value is None else float(value)
