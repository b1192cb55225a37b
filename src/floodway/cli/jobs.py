"""Commands on jobs: enqueue (one, or a JSONL file), status, result, list, events, retry,
cancel, purge, pause and resume."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click

from ..app import Task
from ..enqueueing import check_shaping
from ..errors import EnqueueError, FloodwayError, JobCancelled, JobFailed
from ..jobs import Event, Job, Status
from ..units import format_duration, iso, parse_duration

if TYPE_CHECKING:  # rich is imported where output is rendered: --json and worker runs skip it
    pass

from .bulk import filter_options, run_bulk
from .core import (
    FINAL_NAMES,
    STATUS_NAMES,
    State,
    UsageProblem,
    age,
    cli,
    console,
    emit,
    error_summary,
    fail,
    parse_json_object,
    styled,
    when,
)

#: the shaping options of both enqueue commands, as ``App.enqueue`` takes them
SHAPING_OPTIONS = [
    click.option(
        "--unique-for",
        metavar="DURATION",
        help="Dedupe: an enqueue of the same key within this window returns the first job.",
    ),
    click.option(
        "--unique-key",
        metavar="TEMPLATE",
        help="The dedupe key from the args, e.g. '{order_id}' (default: all the args).",
    ),
    click.option(
        "--unique-while",
        metavar="active",
        help="'active': dedupe while the first job is unfinished (instead of --unique-for).",
    ),
    click.option(
        "--debounce",
        metavar="DURATION",
        help="Fold enqueues of one key into one job that runs this long after the last.",
    ),
    click.option("--debounce-key", metavar="TEMPLATE", help="The debounce key from the args (default: the task)."),
    click.option(
        "--debounce-max", metavar="DURATION", help="A debounced job runs at most this long after the first enqueue."
    ),
    click.option("--lane", help="The reserved lane of the task's limits to run on."),
]


def shaping_options(fn: Any) -> Any:
    for option in reversed(SHAPING_OPTIONS):
        fn = option(fn)
    return fn


def _shaping(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The dedupe and debounce options given (by their ``App.enqueue`` names) and the lane."""
    lane = options.pop("lane")
    return options, lane


def _existing(kind: str | None, job_id: str) -> str:
    """What a command says when its enqueue made nothing and returned ``job_id``."""
    if kind == "debounce":
        return f"folded into job {job_id} (debounced: it runs with these args); nothing created"
    if kind == "unique":
        return f"deduplicated: existing job {job_id}; nothing created"
    return f"job {job_id} exists already; nothing created"


@cli.command()
@click.argument("task")
@click.option(
    "--args", "args_json", default="{}", show_default=True, metavar="JSON", help="The job's arguments as a JSON object."
)
@click.option("--id", "job_id", help="Job id; if a job with this id exists, nothing is created.")
@click.option("--delay", metavar="DURATION", help="Run after this long, e.g. 5s, 10m, 1h.")
@click.option("--queue", help="Queue (default: the task's).")
@click.option("--priority", type=int, help="Higher runs first (default: the task's).")
@click.option("--tenant", help="Tenant the job belongs to.")
@shaping_options
@click.pass_obj
def enqueue(
    state: State,
    task: str,
    args_json: str,
    job_id: str | None,
    delay: str | None,
    queue: str | None,
    priority: int | None,
    tenant: str | None,
    **shaping: Any,
) -> None:
    """Enqueue one job of TASK and print its id (or the job a dedupe or debounce key returned)."""
    args = parse_json_object(args_json, "--args")
    app = state.app(required=True)
    shaping, lane = _shaping(shaping)
    the_task: Task = app.get_task(task)
    policy = the_task.key_policy_for(shaping)
    handle = app.enqueue(
        the_task, args, id=job_id, queue=queue, delay=delay, priority=priority, tenant=tenant, lane=lane, **shaping
    )
    result: dict[str, Any] = {"id": handle.id, "created": handle.created}
    if policy is not None and not handle.created:
        result["folded" if policy.kind == "debounce" else "deduplicated"] = True
    emit(
        state,
        result,
        lambda d: click.echo(
            f"enqueued job {d['id']}" if d["created"] else _existing(policy.kind if policy else None, d["id"])
        ),
    )


def _jsonl_items(path: Path) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(line number, args, bytes read so far) per non-empty line; a bad line raises UsageProblem."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                yield number, parse_json_object(raw, f"line {number} of {path.name}"), fh.tell()


@cli.command("enqueue-file")
@click.argument("task")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--id",
    "job_id",
    help="Id prefix: the jobs get ID-0, ID-1, ... in file order, so enqueueing the same "
    "file again creates nothing twice (the file is then written in one transaction).",
)
@click.option("--queue", help="Queue (default: the task's).")
@click.option("--delay", metavar="DURATION", help="Run after this long, e.g. 5s, 10m, 1h.")
@click.option("--priority", type=int, help="Higher runs first (default: the task's).")
@click.option("--tenant", help="Tenant the jobs belong to.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Jobs written per transaction."
)
@shaping_options
@click.pass_obj
def enqueue_file(
    state: State,
    task: str,
    file: Path,
    job_id: str | None,
    queue: str | None,
    delay: str | None,
    priority: int | None,
    tenant: str | None,
    batch_size: int,
    **shaping: Any,
) -> None:
    """Enqueue one job of TASK per line of FILE (JSON lines: one JSON object of args per line).

    The whole file is checked before anything is written: a bad line exits with status 2,
    names the line, and enqueues nothing. Empty lines are skipped.
    """
    app = state.app(required=True)
    the_task: Task = app.get_task(task)
    shaping, lane = _shaping(shaping)
    options: dict[str, Any] = dict(queue=queue, delay=delay, priority=priority, tenant=tenant)
    # the options are checked before the file is read; each line is checked below
    app.check_enqueue_options(the_task, id=job_id, count=1 if job_id is not None else None, lane=lane, **options)
    policy = check_shaping(the_task, shaping, id=job_id, delay=delay, start_at=None)
    options.update(shaping, lane=lane)

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    count = created = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=state.as_json,
    ) as bar:
        # 1. check every line before writing any, with exactly the validation enqueue applies
        size = file.stat().st_size
        checking = bar.add_task(f"checking {file.name}", total=size)
        for number, args, position in _jsonl_items(file):
            try:
                app._encode_args(the_task, args)
            except EnqueueError as exc:
                raise UsageProblem(f"line {number} of {file.name}: {exc}") from None
            count += 1
            bar.update(checking, completed=position)
        bar.update(checking, completed=size)
        # 2. write them, batch_size jobs per transaction
        if job_id is not None:
            batch_size = max(count, 1)  # enqueue_many numbers the ids from 0 in each call
        writing = bar.add_task(f"enqueueing {count} job(s)", total=count)
        items = (args for _, args, _ in _jsonl_items(file))
        written = 0
        while batch := list(itertools.islice(items, batch_size)):
            try:
                handles = app.enqueue_many(the_task, batch, id=job_id, **options)
            except FloodwayError:
                if written:  # e.g. the database failed mid-file: say what is in already
                    click.echo(f"note: {written} of {count} job(s) were enqueued before this error", err=True)
                raise
            written += len(batch)
            created += sum(h.created for h in handles)
            bar.advance(writing, len(batch))
    # without an id or key an item is always new; with a key, "existing" ones were deduplicated
    # or folded into another job (an earlier one, or one made from an earlier line)
    how = {"unique": "deduplicated", "debounce": "folded"}.get(policy.kind if policy else "", "existing")
    emit(
        state,
        {"task": the_task.name, "file": str(file), "jobs": count, "created": created, "existing": count - created},
        lambda d: click.echo(
            f"enqueued {d['jobs']} job(s) of {d['task']} from {file.name}: {d['created']} new, {d['existing']} {how}"
        ),
    )


# -- reading jobs ---------------------------------------------------------------------------
def _print_job(job: Job) -> None:
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("task", job.task),
        ("status", styled(job.status)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("tenant", job.tenant or ""),
        ("args", json.dumps(job.args)),
        ("created", when(job.created_at, now)),
        ("run at", when(job.run_at, now)),
        ("started", when(job.started_at, now)),
        ("finished", when(job.finished_at, now)),
        ("updated", when(job.updated_at, now)),
        ("worker", job.worker_id or ""),
        ("throttled", f"{job.throttled_seconds:.3f}s waiting on limits"),
    ]
    if job.cancel_requested:
        rows.append(("cancel", "requested; the worker stops it at its next heartbeat"))
    if job.status is Status.COMPLETE:
        rows.append(("result", json.dumps(job.result)))
    if job.error:
        rows.append(("error", Text(error_summary(job.error, 500), style="red")))
    for name, value in rows:
        if value != "":
            table.add_row(name, value if isinstance(value, Text) else Text(str(value)))
    console().print(table)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def status(state: State, job_id: str) -> None:
    """Show a job: status, attempt, queue, task, times and error."""
    job = state.app().handle(job_id).job()
    emit(state, job.to_dict(), lambda d: _print_job(job))


@cli.command()
@click.argument("job_id", metavar="ID")
@click.option("--wait", is_flag=True, help="Wait for the job to finish.")
@click.option("--timeout", metavar="DURATION", help="Wait at most this long, e.g. 30s or 30 (seconds); implies --wait.")
@click.pass_obj
def result(state: State, job_id: str, wait: bool, timeout: str | None) -> None:
    """Print a finished job's result as JSON (exit 1 if it failed or was cancelled)."""
    seconds = _seconds(timeout, "--timeout") if timeout is not None else None
    handle = state.app().handle(job_id)
    if not wait and seconds is None:
        job = handle.job()
        if not job.status.is_final:
            fail(f"job {job_id} is {job.status}, not finished yet (use --wait to wait for it)")
        seconds = 0.0
    try:
        value = handle.result(timeout=seconds)
    except JobFailed as exc:
        fail(f"job {job_id} failed: {error_summary(exc.error, 500) or 'no error recorded'}")
    except JobCancelled:
        fail(f"job {job_id} was cancelled")
    except TimeoutError:
        fail(f"job {job_id} is still {handle.status()} after {format_duration(seconds or 0.0)}")
    click.echo(json.dumps(value, indent=None if state.as_json else 2))


def _seconds(value: str, name: str) -> float:
    """A duration option: ``30s``, ``500ms``, ``2m``, or a bare number of seconds."""
    try:
        number = float(value)
    except ValueError:
        return parse_duration(value, name=name)
    return parse_duration(number, name=name)


@cli.command()
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUS_NAMES, case_sensitive=False),
    help="Only jobs with this status (repeatable).",
)
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--tenant", help="Only jobs of this tenant.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many.")
@click.pass_obj
def jobs(
    state: State, statuses: tuple[str, ...], queue: str | None, task: str | None, tenant: str | None, limit: int
) -> None:
    """List jobs, newest first."""
    found = state.app().store.list_jobs(
        status=[s.lower() for s in statuses] or None, queue=queue, task=task, tenant=tenant, limit=limit
    )

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table(title=None, show_lines=False)
        for name in ("id", "task", "queue", "status", "attempt", "tenant", "created", "updated", "error"):
            table.add_column(name, no_wrap=name in ("id", "status"))
        for job in found:
            table.add_row(
                Text(job.id),
                Text(job.task),
                Text(job.queue),
                styled(job.status),
                f"{job.attempt}/{job.max_attempts}",
                Text(job.tenant or ""),
                age(job.created_at, now),
                age(job.updated_at, now),
                Text(error_summary(job.error, 60), style="red"),
            )
        out = console()
        out.print(table)
        more = " (--limit reached; there may be more)" if len(found) == limit else ""
        out.print(f"{len(found)} job(s){more}")

    emit(state, [job.to_dict() for job in found], render)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def events(state: State, job_id: str) -> None:
    """Show a job's timeline: every status change, oldest first."""
    timeline: list[Event] = state.app().handle(job_id).events()

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(f"job {job_id}"))
        for name in ("at", "change", "attempt", "worker", "reason / error"):
            table.add_column(name)
        for e in timeline:
            change = Text(f"{e.from_status.value if e.from_status else 'new'} → ")
            change.append_text(styled(e.to_status))
            detail = Text(e.reason or "")
            if e.error:
                detail.append(("; " if e.reason else "") + error_summary(e.error, 80), style="red")
            table.add_row(iso(e.at), change, str(e.attempt), Text(e.worker_id or ""), detail)
        console().print(table)

    emit(state, [e.to_dict() for e in timeline], render)


# -- changing jobs --------------------------------------------------------------------------
def _filtered(given: dict[str, Any]) -> bool:
    return any(value for value in given.values())


@cli.command()
@click.argument("job_id", metavar="[ID]", required=False)
@filter_options
@click.pass_obj
def retry(state: State, job_id: str | None, **given: Any) -> None:
    """Run a failed, cancelled or retrying job again now, with fresh attempts; without an ID,
    every job the filter options match (see ``floodway bulk``)."""
    if job_id is None:
        return run_bulk(state, "retry", **given)
    if _filtered(given):
        raise UsageProblem("name one job (ID) or give filter options, not both")
    new_status = state.app().handle(job_id).retry()
    emit(
        state, {"id": job_id, "status": new_status.value}, lambda d: click.echo(f"job {job_id} is {d['status']} again")
    )


@cli.command()
@click.argument("job_id", metavar="[ID]", required=False)
@filter_options
@click.pass_obj
def cancel(state: State, job_id: str | None, **given: Any) -> None:
    """Cancel a job (a running one is stopped by its worker at the next heartbeat); without an
    ID, every job the filter options match."""
    if job_id is None:
        return run_bulk(state, "cancel", **given)
    if _filtered(given):
        raise UsageProblem("name one job (ID) or give filter options, not both")
    new_status = state.app().handle(job_id).cancel()
    requested = new_status is Status.RUNNING
    emit(
        state,
        {"id": job_id, "status": new_status.value, "cancel_requested": requested},
        lambda d: click.echo(
            f"job {job_id} is running: cancellation requested, its worker stops it at the next heartbeat"
            if requested
            else f"job {job_id} cancelled"
        ),
    )


@cli.command()
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Delete jobs that finished longer ago than this, e.g. 7d, 12h, 0s.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(FINAL_NAMES, case_sensitive=False),
    default=(Status.COMPLETE.value,),
    show_default=True,
    help="Which finished jobs (repeatable).",
)
@click.pass_obj
def purge(state: State, older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs (and their timelines)."""
    cutoff = time.time() - parse_duration(older_than, name="--older-than")
    chosen = sorted({s.lower() for s in statuses})
    removed = state.app().store.purge(older_than=cutoff, statuses=chosen)
    emit(
        state,
        {"purged": removed, "statuses": chosen, "finished_before": iso(cutoff)},
        lambda d: click.echo(f"purged {removed} {'/'.join(chosen)} job(s) finished before {d['finished_before']}"),
    )


# -- queues and workers ---------------------------------------------------------------------


def _pause_target(job_id: str | None, queue: str | None) -> dict[str, str | None]:
    if (job_id is None) == (queue is None):
        raise UsageProblem("name one job (ID) or one queue (--queue Q)")
    return {"job_id": job_id, "queue": queue}


@cli.command()
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--queue", help="Pause a whole queue instead of one job.")
@click.pass_obj
def pause(state: State, job_id: str | None, queue: str | None) -> None:
    """Pause a job or a queue: nothing paused is claimed; a running job finishes its current
    record, checkpoints and waits."""
    target = _pause_target(job_id, queue)
    state.app().store.set_paused(**target, paused=True)
    emit(
        state,
        {**target, "paused": True},
        lambda d: click.echo(f"paused {'job ' + job_id if job_id else 'queue ' + str(queue)}"),
    )


@cli.command()
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--queue", help="Resume a whole queue instead of one job.")
@click.pass_obj
def resume(state: State, job_id: str | None, queue: str | None) -> None:
    """Resume a paused job or queue."""
    target = _pause_target(job_id, queue)
    state.app().store.set_paused(**target, paused=False)
    emit(
        state,
        {**target, "paused": False},
        lambda d: click.echo(f"resumed {'job ' + job_id if job_id else 'queue ' + str(queue)}"),
    )


# -- stats, schedules, flows ---------------------------------------------------------------
