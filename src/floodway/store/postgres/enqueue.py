"""The PostgreSQL store's enqueue: one statement over arrays, or COPY streamed while the jobs are made."""

from __future__ import annotations

import itertools
import operator
from typing import Any, Iterable, Iterator

import psycopg
from psycopg import errors as pg_errors

from ...errors import JobIdTaken, StoreError
from ...jobs import NewJob, Status, check_transition
from ..base import (
    EnqueueResult,
)
from .connection import (
    CHANNEL,
    PostgresConnection,
    _Deferred,
    _scalar,
)
from .queries import (
    _LOCKED_FAIR_KEYS,
    _NS_FAIR,
)

#: what an enqueue writes to ``jobs``: (column, PostgreSQL type, the NewJob attribute)
_ENQUEUE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "text", "id"),
    ("task", "text", "task"),
    ("args", "text", "args_json"),
    ("queue", "text", "queue"),
    ("status", "text", "status.value"),
    ("priority", "int", "priority"),
    ("max_attempts", "int", "max_attempts"),
    ("retry", "text", "retry_json"),
    ("run_at", "float8", "run_at"),
    ("tenant", "text", "tenant"),
    ("limits", "text", "limits_json"),
    ("fair_key", "text", "fair_key"),
    ("state_key", "text", "shared_state"),
    ("batch_key", "text", "batch_key"),
    ("trace", "text", "trace"),
)


#: a NewJob's row in that order, read in one call per job
_ENQUEUE_ROW = operator.attrgetter(*(attr for _, _, attr in _ENQUEUE_COLUMNS))


#: from this many jobs with new ids up, an enqueue streams them with COPY (``enqueue_new``):
#: below it, the one-statement insert's single round trip wins. They go in chunks of
#: ``_COPY_CHUNK``, each sent as soon as it is made.
_COPY_MIN_JOBS = 100


_COPY_CHUNK = 100


#: what COPY's text format needs escaped in a value (its delimiter, row end and escape)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    """A value in COPY's text format (``\\N`` is NULL)."""
    if value is None:
        return "\\N"
    if type(value) is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if type(value) is float:
        return repr(value)  # the shortest text that reads back as the same double
    return str(int(value))


def _enqueue_columns(jobs: list[NewJob]) -> Iterator[tuple[str, str, tuple, bool]]:
    """Each column an enqueue writes to ``jobs``: (name, PostgreSQL type, the jobs' values, whether
    they are all the same). A column with one value for every job (the task, queue, retry
    policy... of one ``enqueue_many`` call) is then sent or formatted once."""
    for (name, kind, _), column in zip(_ENQUEUE_COLUMNS, zip(*map(_ENQUEUE_ROW, jobs))):
        if kind == "float8":
            column = tuple(map(float, column))  # an int instant would make an int array
        yield name, kind, column, column.count(column[0]) == len(column)


def _copy_text(jobs: list[NewJob], now: float) -> str:
    """The rows of ``jobs`` for ``COPY jobs (<_ENQUEUE_COLUMNS>, created_at, updated_at)``.

    Columns with one value for every job are formatted once; psycopg's ``write_row`` would
    format every field of every row, three times the client time of a 1,000-job enqueue.
    """
    columns: list[Iterable[str]] = []
    for _, _, column, same in _enqueue_columns(jobs):
        columns.append(itertools.repeat(_copy_value(column[0]), len(column)) if same else map(_copy_value, column))
    stamp = _copy_value(float(now))
    columns += [itertools.repeat(stamp, len(jobs)), itertools.repeat(stamp, len(jobs))]
    return "\n".join(map("\t".join, zip(*columns))) + "\n"


class PostgresEnqueue(PostgresConnection):
    """Enqueue: one multi-row statement, or COPY for large batches."""

    def enqueue_new(self, jobs: Iterable[NewJob], queues: dict[str, int | None] | None = None) -> list[EnqueueResult]:
        """Stream the jobs into the ``jobs`` table with COPY while they are being made.

        Making a job (checking and encoding its args) costs the client about as much as
        writing it costs the server, and the two overlap: the server inserts one chunk while
        the next is made. COPY also writes a page of rows per heap WAL record where ``INSERT
        ... SELECT`` writes one per row, and skips the conflict check. Together they take about
        two fifths off a 1,000-job enqueue. Fewer than ``_COPY_MIN_JOBS`` jobs take the
        one-round-trip insert instead. A clash (nothing was written) falls back to that
        insert too, which skips the existing id.
        """
        source = iter(jobs)
        made = list(itertools.islice(source, _COPY_MIN_JOBS))
        if len(made) < _COPY_MIN_JOBS:
            return self.enqueue(made, queues)
        queues = queues or {}
        columns = ", ".join(name for name, _, _ in _ENQUEUE_COLUMNS)

        def go(cur: psycopg.Cursor) -> None:
            now = self._now()
            with cur.copy(f"COPY jobs ({columns}, created_at, updated_at) FROM STDIN") as copy:
                # a retried transaction first sends again what the failed one had made
                for start in range(0, len(made), _COPY_CHUNK):
                    copy.write(self._copy_chunk(made[start : start + _COPY_CHUNK], now))
                while chunk := list(itertools.islice(source, _COPY_CHUNK)):
                    made.extend(chunk)
                    copy.write(self._copy_chunk(chunk, now))
            cur.execute(*self._after_copy_statement(made, queues))

        try:
            self._run(go, what="enqueue", pipeline=False)
        except StoreError as exc:
            if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise
            return self.enqueue(made + list(source), queues)
        return [EnqueueResult(job.id, True) for job in made]

    @staticmethod
    def _copy_chunk(jobs: list[NewJob], now: float) -> str:
        for status in {job.status for job in jobs}:
            check_transition(None, status)  # raised inside the COPY: nothing is written
        return _copy_text(jobs, now)

    def enqueue(
        self, jobs: list[NewJob], queues: dict[str, int | None] | None = None, *, owner: str | None = None
    ) -> list[EnqueueResult]:
        if any(job.enqueue_key is not None for job in jobs):
            return self.enqueue_keyed(jobs, queues)
        for status in {job.status for job in jobs}:
            check_transition(None, status)  # all or nothing: refuse before writing
        if not jobs:
            return []
        first: dict[str, NewJob] = {}
        for job in jobs:
            first.setdefault(job.id, job)
        fresh = list(first.values())

        def go(cur: psycopg.Cursor) -> set[str]:
            cur.execute(*self._enqueue_statement(fresh, queues or {}, self._now()))
            # the ids are read with the COMMIT's round trip
            return _Deferred(lambda: set(_scalar(cur)))  # type: ignore[return-value]

        def go_owned(cur: psycopg.Cursor) -> set[str]:
            cur.execute(*self._enqueue_statement(fresh, queues or {}, self._now()))
            made = set(_scalar(cur))
            others = sorted(job.id for job in fresh if job.id not in made)
            if others:
                # after the insert: ON CONFLICT waited for any concurrent insert of these ids to
                # commit, and this statement's snapshot sees it; raising rolls the insert back
                cur.execute(
                    "SELECT min(id) FROM jobs WHERE id = ANY(%s) AND tenant IS DISTINCT FROM %s", (others, owner)
                )
                taken = _scalar(cur)
                if taken is not None:
                    raise JobIdTaken(taken)
            return made

        if owner is not None:
            created = self._run(go_owned, what="enqueue", pipeline=False)
        else:
            created = self._run(go, what="enqueue", single=True)  # one statement: one round trip
        if len(created) == len(jobs):
            return [EnqueueResult(job.id, True) for job in jobs]
        results, seen = [], set()
        for job in jobs:
            ok = job.id in created and job.id not in seen
            seen.add(job.id)
            results.append(EnqueueResult(job.id, ok))
        return results

    @staticmethod
    def _enqueue_prelude(fresh: list[NewJob], queues: dict[str, int | None]) -> tuple[list[str], list[Any]]:
        """The CTEs (and their parameters) every enqueue statement starts with: the queue rows,
        and the fairness groups its waiting jobs make ready, under their shared locks. Spare
        queue or group rows (for a job that existed already) are harmless: a claim drops an
        empty group's row."""
        ctes: list[str] = []
        params: list[Any] = []
        if queues:
            names = sorted(queues)
            ctes.append(
                "q AS (INSERT INTO queues (name, max_concurrency) "
                "SELECT * FROM unnest(%t::text[], %t::int[]) ON CONFLICT DO NOTHING)"
            )
            params += [names, [queues[n] for n in names]]
        ready_groups = sorted({j.fair_key for j in fresh if j.status is Status.WAITING})
        if ready_groups:
            ctes.append(
                f"fl AS ({_LOCKED_FAIR_KEYS}), "
                "fk AS (INSERT INTO fair_keys (key) SELECT k FROM fl ON CONFLICT DO NOTHING)"
            )
            params += [_NS_FAIR, ready_groups]
        return ctes, params

    @staticmethod
    def _enqueue_epilogue(fresh: list[NewJob], ctes: list[str], params: list[Any], *, created_only: bool) -> str:
        """Add the CTE that writes the jobs' segments (``created_only``: those of the jobs the
        ``ins`` CTE created) and the parameters of the returned select expression, which
        notifies the jobs' queues."""
        segments = [row for j in fresh if j.segments for row in j.segment_rows()]
        if segments:
            join = " JOIN ins ON ins.id = s.j" if created_only else ""
            ctes.append(
                "seg AS (INSERT INTO segments (job_id, arg, idx, data) SELECT s.j, s.a, s.i, s.d "
                f"FROM unnest(%t::text[], %t::text[], %t::int[], %t::text[]) AS s(j, a, i, d){join})"
            )
            params += [list(c) for c in zip(*segments)]
        params += [CHANNEL, sorted({j.queue for j in fresh})]
        return "(SELECT count(pg_notify(%s, q)) FROM unnest(%t::text[]) AS q)"

    @classmethod
    def _enqueue_statement(
        cls, fresh: list[NewJob], queues: dict[str, int | None], now: float
    ) -> tuple[str, list[Any]]:
        """One statement that writes a whole enqueue: the prelude (``_enqueue_prelude``), the
        jobs and their segments, and notifies the jobs' queues. No event row: the job row is
        the enqueue (see ``timeline_from_rows``).

        Its one row holds the array of the ids it created (``ON CONFLICT (id) DO NOTHING``
        skips the others, and with them their segments). A column with one value for every
        job is sent once rather than as an array of copies; the rest are unnested from arrays.
        """
        ctes, params = cls._enqueue_prelude(fresh, queues)
        select: list[str] = []
        unnested: list[str] = []
        arrays: list[list[Any]] = []
        for name, kind, column, same in _enqueue_columns(fresh):
            if same:
                select.append(f"%s::{kind}")
                params.append(column[0])
            else:
                select.append(f"u.{name}")
                unnested.append(name)
                arrays.append(list(column))
        select.append("%s::float8, %s::float8")  # created_at, updated_at
        params += [now, now]
        source = ""
        if unnested:
            types = ", ".join(f"%t::{kind}[]" for name, kind, _ in _ENQUEUE_COLUMNS if name in unnested)
            source = f" FROM unnest({types}) AS u({', '.join(unnested)})"
            params += arrays
        columns = ", ".join(name for name, _, _ in _ENQUEUE_COLUMNS)
        ctes.append(
            f"ins AS (INSERT INTO jobs ({columns}, created_at, updated_at) SELECT {', '.join(select)}{source} "
            "ON CONFLICT (id) DO NOTHING RETURNING id)"
        )
        notify = cls._enqueue_epilogue(fresh, ctes, params, created_only=True)
        # the select list of a row without FROM is evaluated once, whatever ``ins`` holds: the
        # notifications go out at commit. A spare one (the queue of a job that existed already)
        # wakes a worker once, harmlessly.
        return f"WITH {', '.join(ctes)} SELECT ARRAY(SELECT id FROM ins), {notify}", params

    @classmethod
    def _after_copy_statement(cls, fresh: list[NewJob], queues: dict[str, int | None]) -> tuple[str, list[Any]]:
        """What an enqueue writes besides jobs that COPY wrote already (``enqueue_new``, every
        one of them new): the prelude, their segments, and the notifications."""
        ctes, params = cls._enqueue_prelude(fresh, queues)
        notify = cls._enqueue_epilogue(fresh, ctes, params, created_only=False)
        return f"{'WITH ' if ctes else ''}{', '.join(ctes)} SELECT {notify}", params
