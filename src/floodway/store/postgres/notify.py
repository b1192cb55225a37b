"""The PostgreSQL store's notifications: LISTEN/NOTIFY wake-ups for idle workers, and ending frozen
sessions that hold locks."""

from __future__ import annotations

import time
from typing import Iterable

import psycopg
from psycopg import errors as pg_errors

from .connection import (
    CHANNEL,
    IDLE_IN_TRANSACTION_MS,
    PostgresConnection,
    log,
)

#: how often a listening worker looks for frozen floodway transactions to end (seconds)
_REAP_EVERY = 2.0


class PostgresNotify(PostgresConnection):
    """Wake idle workers on NOTIFY; end frozen transactions."""

    def _end_frozen_transactions(self, conn: psycopg.Connection) -> None:
        """End the transactions of floodway sessions whose client froze in the middle of them.

        A worker frozen inside a transaction (SIGSTOP, a paused VM, swap) keeps its row locks,
        and with them every other worker's claim, for as long as it stays frozen. The server's
        ``idle_in_transaction_session_timeout`` ends most of these, but not a session frozen
        right after sending a statement (the server is still reading the client's pipeline and
        no server timeout applies). Every listening worker therefore looks, every
        ``_REAP_EVERY`` seconds, for floodway sessions that have been waiting on their client
        inside a transaction for longer than ``IDLE_IN_TRANSACTION_MS`` — a healthy floodway
        transaction never waits on its own client that long — and terminates them: the frozen
        worker finds its connection gone when it thaws (a ``StoreError``; nothing it wrote in
        that transaction was committed), and its leases run out and are rescued as usual.
        Needs the right to signal the sessions' role (the same role, or ``pg_signal_backend``).
        """
        now = time.monotonic()
        if not self._may_reap or now < self._reap_at:
            return
        self._reap_at = now + _REAP_EVERY
        try:
            ended = conn.execute(
                # MATERIALIZED: the sessions are chosen first, and only those are signalled
                "WITH frozen AS MATERIALIZED (SELECT pid, extract(epoch FROM now() - xact_start)::float8 AS secs, "
                "left(query, 80) AS query FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND pid <> pg_backend_pid() AND wait_event = 'ClientRead' "
                "AND state IN ('active', 'idle in transaction') "
                "AND xact_start < now() - make_interval(secs => %s)) "
                "SELECT pid, secs, query FROM frozen WHERE pg_terminate_backend(pid)",
                (self._app_name, IDLE_IN_TRANSACTION_MS / 1000),
            ).fetchall()
        except pg_errors.InsufficientPrivilege as exc:
            self._may_reap = False
            log.warning(
                "cannot end frozen floodway transactions (%s); a frozen worker's locks "
                "last until it thaws or idle_in_transaction_session_timeout ends them",
                str(exc).strip(),
            )
            return
        for pid, seconds, query in ended:
            log.warning(
                "ended a floodway transaction frozen for %.0fs (server pid %s, at %r): its worker "
                "stopped responding while holding locks",
                seconds,
                pid,
                query,
            )

    def wait_for_jobs(self, timeout: float, queues: Iterable[str] | None = None) -> bool:
        """Block up to ``timeout`` seconds for a NOTIFY that work is ready (in ``queues``, or
        any). True when notified; False on timeout or while the server is unreachable (the
        caller's slow poll covers both). Call it from one thread at a time."""
        wanted = set(queues) if queues is not None else None
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._listener_lock:
            try:
                if self._closed:
                    return False
                if self._listener is None or self._listener.closed:
                    self._listener = self._connect(autocommit=True)
                    self._listener.execute(f"LISTEN {CHANNEL}")
                while True:
                    self._end_frozen_transactions(self._listener)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    for note in self._listener.notifies(timeout=min(left, _REAP_EVERY), stop_after=1):
                        if wanted is None or not note.payload or note.payload in wanted:
                            return True
                    if self._closed:
                        return False
            except psycopg.Error as exc:
                log.debug("LISTEN connection failed (%s); falling back to polling", exc)
                self._close_listener()
                time.sleep(max(0.0, min(deadline - time.monotonic(), 1.0)))
                return False
            finally:
                if self._closed:
                    self._close_listener()
