"""The PostgreSQL store's queue role after the claim: finish, heartbeat and the rescue of lost leases."""

from __future__ import annotations

import json

import psycopg

from ...jobs import Status, check_transition
from ...liveness import LeaseHolder
from ..base import (
    Outcome,
    Renewal,
    stores_run_events,
)
from ..rules import IS_RUNNING, IS_RUNNING_J, lease_rescue, worker_rescue
from .connection import (
    PostgresConnection,
    _pipelined,
)


class PostgresQueue(PostgresConnection):
    """Finish, heartbeat and rescue."""

    def finish(self, worker_id: str, outcomes: list[Outcome]) -> list[str]:
        if not outcomes:
            return []
        unique: dict[str, Outcome] = {}
        for o in outcomes:
            check_transition(Status.RUNNING, o.status)
            unique.setdefault(o.job_id, o)
        batch = list(unique.values())

        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            # one statement: the guarded update, the events, step slots and the finished jobs'
            # own state go; the slots come back as 's' rows to be released below
            cur.execute(
                "WITH o AS (SELECT * FROM unnest(%(ids)t::text[], %(attempts)t::int[], %(statuses)t::text[], "
                "%(results)t::text[], %(errors)t::text[], %(run_ats)t::float8[], %(back)t::int[], "
                "%(throttled)t::float8[], %(finals)t::bool[], %(reasons)t::text[], %(purge)t::bool[], "
                "%(events)t::bool[]) "
                "AS o(id, attempt, status, result, error, run_at, back, throttled, final, reason, purge, events)), "
                "u AS (UPDATE jobs j SET status = o.status, result = o.result, "
                "error = CASE WHEN o.status = 'complete' THEN NULL ELSE COALESCE(o.error, j.error) END, "
                "run_at = COALESCE(o.run_at, j.run_at), attempt = j.attempt - o.back, "
                "worker_id = CASE WHEN o.final THEN j.worker_id END, "
                "lease_until = NULL, cancel_requested = false, updated_at = %(now)s, "
                "throttled_seconds = j.throttled_seconds + o.throttled, "
                "finished_at = CASE WHEN o.final THEN %(now)s ELSE j.finished_at END "
                f"FROM o WHERE j.id = o.id AND {IS_RUNNING_J} AND j.worker_id = %(w)s "
                "AND j.attempt = o.attempt "
                "RETURNING j.id, j.limits, j.fair_key, j.state_key, j.queue, o.status, o.attempt, "
                "o.attempt - o.back AS ev_attempt, j.started_at, o.error, o.reason, o.purge, o.events), "
                # a plain completion stores no event (the row holds the run, see
                # ``stores_run_events``); any other end stores the run's start, then its end
                "e AS (INSERT INTO job_events (job_id, at, from_status, to_status, attempt, error, worker_id, reason) "
                "SELECT u.id, v.at, v.src, v.dst, v.attempt, v.error, %(w)s, v.reason FROM u CROSS JOIN LATERAL "
                "(VALUES (0, u.started_at, 'waiting', 'running', u.attempt, NULL, NULL), "
                "(1, %(now)s, 'running', u.status, u.ev_attempt, u.error, u.reason)) "
                "AS v(k, at, src, dst, attempt, error, reason) WHERE u.events ORDER BY u.id, v.k), "
                # each delete is gated on its table holding any row at all (a one-time check):
                # plain jobs use none of them, and probing an empty table once per job cost
                # a tenth of this statement
                "sl AS (DELETE FROM job_slots WHERE job_id IN (SELECT id FROM u) "
                "AND EXISTS (SELECT FROM job_slots) RETURNING limit_name, key), "
                "sg AS (DELETE FROM segments WHERE job_id IN (SELECT id FROM u WHERE purge) "
                "AND EXISTS (SELECT FROM segments)), "
                "st AS (DELETE FROM state WHERE key IN (SELECT 'job:' || id FROM u WHERE purge AND state_key IS NULL) "
                "AND EXISTS (SELECT FROM state)), "
                "lg AS (DELETE FROM ledger WHERE state_key IN "
                "(SELECT 'job:' || id FROM u WHERE purge AND state_key IS NULL) AND EXISTS (SELECT FROM ledger)) "
                "SELECT 'j', id, limits, fair_key, queue, status FROM u "
                "UNION ALL SELECT 's', limit_name, key, NULL, NULL, NULL FROM sl",
                {
                    "ids": [o.job_id for o in batch],
                    "attempts": [o.attempt for o in batch],
                    "statuses": [o.status.value for o in batch],
                    "results": [o.result_json for o in batch],
                    "errors": [json.dumps(o.error) if o.error else None for o in batch],
                    "run_ats": [float(o.run_at) if o.run_at is not None else None for o in batch],
                    "back": [0 if o.spend_attempt else 1 for o in batch],
                    "throttled": [float(o.throttled_seconds) for o in batch],
                    "finals": [o.status.is_final for o in batch],
                    "reasons": [o.reason for o in batch],
                    "purge": [o.status is Status.COMPLETE and o.purge_state for o in batch],
                    "events": [stores_run_events(o.status, o.error, o.reason) for o in batch],
                    "now": now,
                    "w": worker_id,
                },
            )
            rows = cur.fetchall()
            written: set[str] = set()
            held: list[list[str]] = []
            ready_groups, wake_queues, freed_queues = set(), set(), set()
            for tag, job_id, limits, fair_key, queue, status in rows:
                if tag == "s":
                    held.append([job_id, limits])  # a step slot: (limit_name, key)
                    continue
                written.add(job_id)
                if limits:
                    held.extend(json.loads(limits))
                    freed_queues.add(queue)  # a concurrency slot came free (see _release_limits)
                if status == Status.WAITING.value:
                    ready_groups.add(fair_key)
                    wake_queues.add(queue)
                elif status in (Status.SCHEDULED.value, Status.RETRYING.value):
                    wake_queues.add(queue)  # idle workers recompute when to look again
            if ready_groups or held or wake_queues:
                with _pipelined(cur.connection):
                    self._mark_fair_keys(cur, ready_groups)
                    self._release_limits(cur, held, wake=freed_queues - wake_queues)
                    self._notify(cur, wake_queues)
            return [o.job_id for o in batch if o.job_id in written]

        return self._run(go, what="finish")

    @staticmethod
    def _take_slots(cur: psycopg.Cursor, job_ids: list[str]) -> list[list[str]]:
        """Step slots still held by jobs that stopped running (a crash mid-step): deleted
        here, returned so ``_release_limits`` gives them back."""
        if not job_ids:
            return []
        cur.execute("DELETE FROM job_slots WHERE job_id = ANY(%t::text[]) RETURNING limit_name, key", (job_ids,))
        return [[name, key] for name, key in cur.fetchall()]

    def heartbeat(self, worker_id: str, job_ids: list[str], lease: float) -> Renewal:
        def go(cur: psycopg.Cursor) -> Renewal:
            now = self._now()
            cur.execute("UPDATE workers SET heartbeat_at = %s WHERE id = %s", (now, worker_id))
            if not job_ids:
                return Renewal()
            cur.execute(
                f"UPDATE jobs SET lease_until = %s WHERE worker_id = %s AND {IS_RUNNING} "
                "AND lease_until >= %s AND id = ANY(%t::text[]) RETURNING id, cancel_requested",
                (now + lease, worker_id, now, sorted(job_ids)),
            )
            rows = cur.fetchall()
            return Renewal({r[0] for r in rows if r[1]}, set(job_ids) - {r[0] for r in rows})

        return self._run(go, what="heartbeat")

    def rescue_expired(self) -> list[str]:
        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            cur.execute(
                "SELECT id, attempt, max_attempts, worker_id, cancel_requested, limits, fair_key, queue, started_at "
                "FROM jobs WHERE status = 'running' AND lease_until < %s ORDER BY id FOR UPDATE SKIP LOCKED",
                (now,),
            )
            expired = cur.fetchall()
            if not expired:
                return []
            events, held, ready, wake = [], [], [], set()
            ids, targets, errors, finals = [], [], [], []
            for job_id, attempt, max_attempts, owner, cancel_requested, limits, fair_key, queue, started in expired:
                if limits:
                    held.extend(json.loads(limits))
                target, reason, error = lease_rescue(owner, attempt, max_attempts, bool(cancel_requested))
                if target is Status.WAITING:
                    ready.append(fair_key)
                    wake.add(queue)
                if held:
                    wake.add(queue)
                ids.append(job_id)
                targets.append(target.value)
                errors.append(json.dumps(error))
                finals.append(target.is_final)
                # the claim stored no event: the run's start goes in with its end
                events.append(self._event(job_id, started, Status.WAITING, Status.RUNNING, attempt, worker_id=owner))
                events.append(
                    self._event(
                        job_id, now, Status.RUNNING, target, attempt, error=error, worker_id=owner, reason=reason
                    )
                )
            cur.execute(
                "UPDATE jobs j SET status = v.status, worker_id = CASE WHEN v.final THEN j.worker_id END, "
                "lease_until = NULL, error = v.error, "
                "updated_at = %s, finished_at = CASE WHEN v.final THEN %s ELSE NULL END "
                "FROM unnest(%t::text[], %t::text[], %t::text[], %t::bool[]) AS v(id, status, error, final) "
                f"WHERE j.id = v.id AND {IS_RUNNING_J}",
                (now, now, ids, targets, errors, finals),
            )
            self._insert_events(cur, events)
            held.extend(self._take_slots(cur, ids))
            self._mark_fair_keys(cur, ready)
            self._release_limits(cur, held)
            self._notify(cur, wake)
            return ids

        return self._run(go, what="rescue")

    def lease_holders(self) -> list[LeaseHolder]:
        rows = self._read(
            "SELECT j.worker_id, COUNT(*), MIN(j.lease_until), w.host_key, w.pid, w.pid_start, w.heartbeat_at, "
            "w.stopped_at FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id "
            "WHERE j.status = 'running' AND j.worker_id IS NOT NULL "
            "GROUP BY j.worker_id, w.host_key, w.pid, w.pid_start, w.heartbeat_at, w.stopped_at"
        )
        now = self._now()
        # each row holds the fields before observed_at, in order
        return [LeaseHolder(r[0], int(r[1]), *r[2:], observed_at=now) for r in rows]  # type: ignore[misc]

    def rescue_worker(self, worker_id: str, *, dead: bool, heartbeat_before: float | None = None) -> list[str]:
        def go(cur: psycopg.Cursor) -> list[str]:
            now = self._now()
            # the worker row locked: a heartbeat of that worker waits for this rescue, or wins
            cur.execute("SELECT heartbeat_at FROM workers WHERE id = %s FOR UPDATE", (worker_id,))
            row = cur.fetchone()
            if heartbeat_before is not None and (row is None or row[0] >= heartbeat_before):
                return []  # it spoke meanwhile: alive after all
            if dead:
                cur.execute("UPDATE workers SET stopped_at = COALESCE(stopped_at, %s) WHERE id = %s", (now, worker_id))
            cur.execute(
                "SELECT id, attempt, max_attempts, cancel_requested, limits, fair_key, queue, started_at, lost_runs "
                "FROM jobs WHERE status = 'running' AND worker_id = %s ORDER BY id FOR UPDATE SKIP LOCKED",
                (worker_id,),
            )
            lost = cur.fetchall()
            if not lost:
                return []
            events, held, ready, wake = [], [], [], set()
            ids, targets, errors, finals, back = [], [], [], [], []
            for job_id, attempt, max_attempts, cancel_requested, limits, fair_key, queue, started, lost_runs in lost:
                if limits:
                    held.extend(json.loads(limits))
                    wake.add(queue)
                target, reason, error, give_back = worker_rescue(
                    worker_id, attempt, max_attempts, bool(cancel_requested), lost_runs, dead=dead
                )
                if target is Status.WAITING:
                    ready.append(fair_key)
                    wake.add(queue)
                ids.append(job_id)
                targets.append(target.value)
                errors.append(json.dumps(error))
                finals.append(target.is_final)
                back.append(int(give_back))
                # the claim stored no event: the run's start goes in with its end
                events.append(
                    self._event(job_id, started, Status.WAITING, Status.RUNNING, attempt, worker_id=worker_id)
                )
                events.append(
                    self._event(
                        job_id,
                        now,
                        Status.RUNNING,
                        target,
                        attempt - int(give_back),
                        error=error,
                        worker_id=worker_id,
                        reason=reason,
                    )
                )
            cur.execute(
                "UPDATE jobs j SET status = v.status, worker_id = CASE WHEN v.final THEN j.worker_id END, "
                "lease_until = NULL, error = v.error, attempt = j.attempt - v.back, lost_runs = j.lost_runs + %s, "
                "updated_at = %s, finished_at = CASE WHEN v.final THEN %s ELSE NULL END "
                "FROM unnest(%t::text[], %t::text[], %t::text[], %t::bool[], %t::int[]) "
                "AS v(id, status, error, final, back) "
                f"WHERE j.id = v.id AND {IS_RUNNING_J}",
                (int(dead), now, now, ids, targets, errors, finals, back),
            )
            self._insert_events(cur, events)
            held.extend(self._take_slots(cur, ids))
            self._mark_fair_keys(cur, ready)
            self._release_limits(cur, held)
            self._notify(cur, wake)
            return ids

        return self._run(go, what="rescue")
