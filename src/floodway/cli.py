"""The ``floodway`` command line.

``floodway --app module:app COMMAND``; ``--app`` may come from ``FLOODWAY_APP``. Commands that
only read or change jobs also work with just a database (``--database`` or
``FLOODWAY_DATABASE_URL``). Every command takes ``--json`` for scripts and prints a readable
table otherwise. Exit codes: 0 ok, 1 failed (a job failed or is not found, the database is
unreachable, full or read-only), 2 usage error (bad arguments or configuration).
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NoReturn

import click
from click.core import ParameterSource

from .app import App, Task
from .errors import ConfigError, EnqueueError, FloodwayError, JobCancelled, JobFailed
from .jobs import Event, Job, Status
from .store.base import QueueInfo, WorkerInfo
from .units import format_duration, iso, parse_duration
from .worker import LOOPS

if TYPE_CHECKING:  # rich is imported where output is rendered: --json and worker runs skip it
    from rich.console import Console
    from rich.text import Text

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageProblem(click.UsageError):
    """A bad argument: exit code 2 with a clear message."""


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``) and return the App."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise UsageProblem(f"--app {spec!r}: expected module:attribute, e.g. myproject.jobs:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing user code
        raise UsageProblem(f"--app {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise UsageProblem(f"--app {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(app, App):
        raise UsageProblem(f"--app {spec!r}: {attribute!r} is a {type(app).__name__}, not a floodway App")
    return app


class State:
    """What the group options resolve to, shared by the commands."""

    def __init__(self, app_spec: str | None, database: str | None, as_json: bool):
        self.app_spec = app_spec
        self.database = database
        self.as_json = as_json
        self._app: App | None = None

    def app(self, *, required: bool = False) -> App:
        if self._app is None:
            if self.app_spec:
                self._app = load_app(self.app_spec)
                if self.database:
                    self._app = _rebind(self._app, self.database)
            elif required:
                raise UsageProblem("this command needs --app module:app (or FLOODWAY_APP)")
            else:
                self._app = App(self.database)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def _rebind(app: App, database: str) -> App:
    app.database_url = database
    app.close()
    return app


def emit(state: State, data: Any, render: Any = None) -> None:
    """Print ``data`` as JSON with ``--json``, else through ``render`` (or as JSON)."""
    if state.as_json or render is None:
        click.echo(json.dumps(data, indent=None if state.as_json else 2, default=str))
    else:
        render(data)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", "app_spec", envvar="FLOODWAY_APP", metavar="MODULE:APP",
              help="The app to load (also FLOODWAY_APP).")
@click.option("--database", envvar="FLOODWAY_DATABASE_URL", metavar="URL",
              help="Database URL, e.g. sqlite:///floodway.db (also FLOODWAY_DATABASE_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, database: str | None, as_json: bool, verbose: int) -> None:
    """floodway: durable, rate-limit-aware background jobs."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = State(app_spec, database, as_json)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.option("--queues", help="Comma-separated queues to take jobs from (default: all).")
@click.option("--concurrency", type=click.IntRange(min=1), default=20, show_default=True,
              help="Jobs run at once by this process.")
@click.option("--burst", is_flag=True, help="Exit when nothing is ready or running.")
@click.option("--lease", default="30s", show_default=True, help="Lease of a claimed job.")
@click.option("--grace", default="30s", show_default=True, help="Time running jobs get to finish on SIGTERM.")
@click.option("--poll-interval", default="100ms", show_default=True, help="Longest idle sleep.")
@click.option("--prefetch", type=click.IntRange(min=0), default=None,
              help="Jobs claimed ahead while every slot is busy (default: as many as --concurrency; 0: none). "
                   "Only jobs that hold no limit are claimed ahead.")
@click.option("--loop", type=click.Choice(LOOPS), default="auto", show_default=True,
              help="Event loop: uvloop when installed (auto), or the one named.")
@click.pass_obj
def worker(state: State, queues: str | None, concurrency: int, burst: bool, lease: str, grace: str,
           poll_interval: str, prefetch: int | None, loop: str) -> None:
    """Run a worker until SIGTERM/SIGINT (or until idle, with --burst)."""
    app = state.app(required=True)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if queues is not None and not queue_list:
        raise UsageProblem("--queues names no queue")
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("floodway").setLevel(logging.INFO)
    w = app.worker(queues=queue_list, concurrency=concurrency, burst=burst, lease=lease,
                   grace=grace, poll_interval=poll_interval, prefetch=prefetch, loop=loop)
    w.run()
    if state.as_json:
        click.echo(json.dumps({"worker": w.id, "processed": w.processed}))


@cli.command()
@click.pass_obj
def migrate(state: State) -> None:
    """Apply pending schema migrations."""
    app = state.app()
    from .store import open_store

    store = open_store(app.database_url, migrate=False)
    try:
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    emit(state, {"applied": applied, "version": version},
         lambda d: click.echo(f"schema at version {d['version']}" + (f" (applied {d['applied']})" if d["applied"] else " (up to date)")))


# -- output helpers -------------------------------------------------------------------------
STATUS_NAMES = [s.value for s in Status]
FINAL_NAMES = [Status.COMPLETE.value, Status.FAILED.value, Status.CANCELLED.value]
STATUS_STYLES = {
    Status.SCHEDULED: "cyan", Status.WAITING: "blue", Status.RUNNING: "yellow",
    Status.RETRYING: "magenta", Status.FAILED: "bold red", Status.COMPLETE: "green",
    Status.CANCELLED: "dim",
}


def console(*, stderr: bool = False) -> Console:
    """A rich console; piped output gets a wide line so ids are never folded."""
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con.width = 200
    return con


def styled(status: Status | str) -> Text:
    from rich.text import Text

    status = Status(status)
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


def age(ts: float | None, now: float | None = None) -> str:
    """``3.2s ago`` or ``in 5.0s``; empty for None."""
    if ts is None:
        return ""
    delta = (now or time.time()) - ts
    return f"{format_duration(delta)} ago" if delta >= 0 else f"in {format_duration(-delta)}"


def when(ts: float | None, now: float | None = None) -> str:
    """``2024-05-01T10:00:00.000+00:00 (3.2s ago)``; empty for None."""
    return "" if ts is None else f"{iso(ts)} ({age(ts, now)})"


def error_summary(error: dict[str, Any] | None, width: int = 120) -> str:
    if not error:
        return ""
    message = str(error.get("message") or "").strip().splitlines()
    text = f"{error.get('type') or 'Error'}: {message[0] if message else ''}".rstrip(": ")
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object (NaN/Infinity refused) or raise ``UsageProblem``."""

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageProblem(f"{what} is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise UsageProblem(
            f'{what} must be a JSON object such as {{"to": "ada@example.com"}}, got {_json_kind(value)}'
        )
    return value


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null", int: "a number",
             float: "a number"}
    return kinds.get(type(value), type(value).__name__)


# -- enqueueing -----------------------------------------------------------------------------
@cli.command()
@click.argument("task")
@click.option("--args", "args_json", default="{}", show_default=True, metavar="JSON",
              help="The job's arguments as a JSON object.")
@click.option("--id", "job_id", help="Job id; if a job with this id exists, nothing is created.")
@click.option("--delay", metavar="DURATION", help="Run after this long, e.g. 5s, 10m, 1h.")
@click.option("--queue", help="Queue (default: the task's).")
@click.option("--priority", type=int, help="Higher runs first (default: the task's).")
@click.option("--tenant", help="Tenant the job belongs to.")
@click.pass_obj
def enqueue(state: State, task: str, args_json: str, job_id: str | None, delay: str | None,
            queue: str | None, priority: int | None, tenant: str | None) -> None:
    """Enqueue one job of TASK and print its id."""
    args = parse_json_object(args_json, "--args")
    app = state.app(required=True)
    handle = app.enqueue(task, args, id=job_id, queue=queue, delay=delay, priority=priority, tenant=tenant)
    emit(state, {"id": handle.id, "created": handle.created},
         lambda d: click.echo(f"enqueued job {d['id']}" if d["created"]
                              else f"job {d['id']} exists already; nothing created"))


def _jsonl_items(path: Path) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(line number, args, bytes read so far) per non-empty line; a bad line raises UsageProblem."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                yield number, parse_json_object(raw, f"line {number} of {path.name}"), fh.tell()


@cli.command("enqueue-file")
@click.argument("task")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "job_id",
              help="Id prefix: the jobs get ID-0, ID-1, ... in file order, so enqueueing the same "
                   "file again creates nothing twice (the file is then written in one transaction).")
@click.option("--queue", help="Queue (default: the task's).")
@click.option("--delay", metavar="DURATION", help="Run after this long, e.g. 5s, 10m, 1h.")
@click.option("--priority", type=int, help="Higher runs first (default: the task's).")
@click.option("--tenant", help="Tenant the jobs belong to.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Jobs written per transaction.")
@click.pass_obj
def enqueue_file(state: State, task: str, file: Path, job_id: str | None, queue: str | None,
                 delay: str | None, priority: int | None, tenant: str | None, batch_size: int) -> None:
    """Enqueue one job of TASK per line of FILE (JSON lines: one JSON object of args per line).

    The whole file is checked before anything is written: a bad line exits with status 2,
    names the line, and enqueues nothing. Empty lines are skipped.
    """
    app = state.app(required=True)
    the_task: Task = app.get_task(task)
    options: dict[str, Any] = dict(queue=queue, delay=delay, priority=priority, tenant=tenant)
    # the options are checked before the file is read; each line is checked below
    app.check_enqueue_options(the_task, id=job_id, count=1 if job_id is not None else None, **options)

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    count = created = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=state.as_json) as bar:
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
    emit(state, {"task": the_task.name, "file": str(file), "jobs": count, "created": created,
                 "existing": count - created},
         lambda d: click.echo(f"enqueued {d['jobs']} job(s) of {d['task']} from {file.name}: "
                              f"{d['created']} new, {d['existing']} existing"))


# -- reading jobs ---------------------------------------------------------------------------
def _print_job(job: Job) -> None:
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("id", job.id), ("task", job.task), ("status", styled(job.status)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"), ("queue", job.queue),
        ("priority", str(job.priority)), ("tenant", job.tenant or ""),
        ("args", json.dumps(job.args)),
        ("created", when(job.created_at, now)), ("run at", when(job.run_at, now)),
        ("started", when(job.started_at, now)), ("finished", when(job.finished_at, now)),
        ("updated", when(job.updated_at, now)), ("worker", job.worker_id or ""),
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
@click.option("--timeout", metavar="DURATION",
              help="Wait at most this long, e.g. 30s or 30 (seconds); implies --wait.")
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
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_NAMES, case_sensitive=False),
              help="Only jobs with this status (repeatable).")
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--tenant", help="Only jobs of this tenant.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many.")
@click.pass_obj
def jobs(state: State, statuses: tuple[str, ...], queue: str | None, task: str | None, tenant: str | None,
         limit: int) -> None:
    """List jobs, newest first."""
    found = state.app().store.list_jobs(status=[s.lower() for s in statuses] or None, queue=queue,
                                        task=task, tenant=tenant, limit=limit)

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table(title=None, show_lines=False)
        for name in ("id", "task", "queue", "status", "attempt", "tenant", "created", "updated", "error"):
            table.add_column(name, no_wrap=name in ("id", "status"))
        for job in found:
            table.add_row(Text(job.id), Text(job.task), Text(job.queue), styled(job.status),
                          f"{job.attempt}/{job.max_attempts}", Text(job.tenant or ""),
                          age(job.created_at, now), age(job.updated_at, now),
                          Text(error_summary(job.error, 60), style="red"))
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
@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def retry(state: State, job_id: str) -> None:
    """Run a failed, cancelled or retrying job again now, with fresh attempts."""
    new_status = state.app().handle(job_id).retry()
    emit(state, {"id": job_id, "status": new_status.value},
         lambda d: click.echo(f"job {job_id} is {d['status']} again"))


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def cancel(state: State, job_id: str) -> None:
    """Cancel a job (a running one is stopped by its worker at the next heartbeat)."""
    new_status = state.app().handle(job_id).cancel()
    requested = new_status is Status.RUNNING
    emit(state, {"id": job_id, "status": new_status.value, "cancel_requested": requested},
         lambda d: click.echo(f"job {job_id} is running: cancellation requested, its worker stops it "
                              "at the next heartbeat" if requested else f"job {job_id} cancelled"))


@cli.command()
@click.option("--older-than", required=True, metavar="DURATION",
              help="Delete jobs that finished longer ago than this, e.g. 7d, 12h, 0s.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(FINAL_NAMES, case_sensitive=False),
              default=(Status.COMPLETE.value,), show_default=True, help="Which finished jobs (repeatable).")
@click.pass_obj
def purge(state: State, older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs (and their timelines)."""
    cutoff = time.time() - parse_duration(older_than, name="--older-than")
    chosen = sorted({s.lower() for s in statuses})
    removed = state.app().store.purge(older_than=cutoff, statuses=chosen)
    emit(state, {"purged": removed, "statuses": chosen, "finished_before": iso(cutoff)},
         lambda d: click.echo(f"purged {removed} {'/'.join(chosen)} job(s) finished before {d['finished_before']}"))


# -- queues and workers ---------------------------------------------------------------------
@cli.command()
@click.pass_obj
def queues(state: State) -> None:
    """Show each queue with its concurrency cap and its jobs per status."""
    found: list[QueueInfo] = state.app().store.list_queues()

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        table.add_column("queue")
        table.add_column("cap", justify="right")
        for s in Status:
            table.add_column(styled(s), justify="right")
        for q in found:
            name = Text(q.name)
            if q.paused:
                name.append(" (paused)", style="yellow")
            table.add_row(name, "unlimited" if q.max_concurrency is None else str(q.max_concurrency),
                          *(str(q.counts.get(s.value, 0)) for s in Status))
        console().print(table)

    emit(state, [{"name": q.name, "max_concurrency": q.max_concurrency, "paused": q.paused, "counts": q.counts}
                 for q in found],
         render)


@cli.command()
@click.option("--all", "include_stopped", is_flag=True, help="Include stopped workers.")
@click.pass_obj
def workers(state: State, include_stopped: bool) -> None:
    """Show live workers: heartbeat age and running jobs."""
    found: list[WorkerInfo] = state.app().store.list_workers(include_stopped=include_stopped)
    now = time.time()
    data = [
        {"id": w.id, "hostname": w.hostname, "pid": w.pid, "queues": w.queues, "concurrency": w.concurrency,
         "running": w.running, "started_at": iso(w.started_at), "heartbeat_at": iso(w.heartbeat_at),
         "heartbeat_age": round(now - w.heartbeat_at, 3), "stopped_at": iso(w.stopped_at)}
        for w in found
    ]

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in ("id", "host", "pid", "queues", "running", "heartbeat", "started", "stopped"):
            table.add_column(name, no_wrap=name == "id")
        for w in found:
            table.add_row(Text(w.id), Text(w.hostname), str(w.pid), Text(",".join(w.queues) if w.queues else "all"),
                          f"{w.running}/{w.concurrency}", age(w.heartbeat_at, now), age(w.started_at, now),
                          age(w.stopped_at, now))
        out = console()
        out.print(table)
        out.print(f"{len(found)} worker(s)")

    emit(state, data, render)


# -- limits and pauses ---------------------------------------------------------------------
@cli.group(invoke_without_command=True)
@click.pass_context
def limits(ctx: click.Context) -> None:
    """Show each limit: declared rate (in the code and in the store), the effective rate each key
    is paced at and where it came from (declared, 429s, headers, usage), 429s, pauses."""
    if ctx.invoked_subcommand is not None:
        return
    from .stats import limit_dict

    state: State = ctx.obj
    app = state.app()
    now = time.time()
    found = app.store.list_limits()
    data = [limit_dict(info, now, app.limits.get(info.spec.name)) for info in found]
    stored = {info.spec.name for info in found}
    for name, spec in sorted(app.limits.items()):
        if name not in stored:  # declared in code, not yet written by a worker or an enqueue
            data.append({**spec.to_dict(), "declared": spec.to_dict(), "stored": False, "keys": []})

    def render(rows: list[dict[str, Any]]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in ("limit", "declared", "stored", "effective", "from", "budget now", "running", "429s",
                     "429s/min", "pauses", "paused"):
            table.add_column(name)
        for d in rows:
            in_code = (d["declared"] or {}).get("rate") or ("adaptive" if (d["declared"] or {}).get("adaptive") else "-")
            if d["declared"] is None:
                in_code = "(not in this code)"
            stored_rate = "(not stored yet)" if d.get("stored") is False else (d["rate"] or "-") + (
                " adaptive" if d["adaptive"] else "")
            keys = d["keys"] or [{"key": "", "effective_rate": None, "source": "", "remaining": None, "running": 0,
                                  "throttled": 0, "throttled_last_minute": 0, "pauses": 0, "paused_for": None,
                                  "pause_reason": None}]
            for k in keys:
                label = d["name"] + (f" [{k['key']}]" if k["key"] else "")
                paused = f"{k['paused_for']:.1f}s ({k['pause_reason']})" if k["paused_for"] else ""
                effective = "" if k["effective_rate"] is None else f"{k['effective_rate']:.4g}/s"
                budget = "" if k["remaining"] is None else str(k["remaining"])
                table.add_row(Text(label), Text(in_code), Text(stored_rate), effective, k["source"], budget,
                              str(k["running"]), str(k["throttled"]), str(k["throttled_last_minute"]),
                              str(k["pauses"]), Text(paused, style="yellow"))
        console().print(table)

    emit(state, data, render)


@limits.command("set")
@click.argument("name")
@click.option("--rate", help="New rate, e.g. 20/s, 100/min, 10/10s.")
@click.option("--burst", type=int, help="New burst.")
@click.option("--concurrency", type=int, help="New concurrency cap (0 removes it).")
@click.option("--adaptive/--no-adaptive", default=None,
              help="Let the learned rate rise above --rate (a new --rate alone turns this off: your rate is the ceiling).")
@click.pass_obj
def limits_set(state: State, name: str, rate: str | None, burst: int | None, concurrency: int | None,
               adaptive: bool | None) -> None:
    """Change limit NAME for every worker, now, without a restart (what was learned is forgotten)."""
    changes: dict[str, Any] = {}
    if adaptive is not None:
        changes["adaptive"] = adaptive
    if rate is not None:
        changes["rate"] = rate
    if burst is not None:
        changes["burst"] = burst
    if concurrency is not None:
        changes["concurrency"] = concurrency or None
    if not changes:
        raise UsageProblem("limits set: give --rate, --burst, --concurrency or --adaptive/--no-adaptive")
    spec = state.app().set_limit(name, **changes)
    emit(state, spec.to_dict(), lambda d: click.echo(
        f"limit {name}: rate {d['rate'] or '-'}, burst {d['burst']}, concurrency {d['concurrency'] or '-'}"
        + (", adaptive" if d["adaptive"] else "")))


@limits.command("reset")
@click.argument("name")
@click.option("--key", help="Only this key of a keyed limit (default: every key).")
@click.pass_obj
def limits_reset(state: State, name: str, key: str | None) -> None:
    """Forget what floodway learned about limit NAME: the declared rate holds again."""
    forgotten = state.app().reset_learned(name, key)
    emit(state, {"limit": name, "key": key, "forgotten": forgotten},
         lambda d: click.echo(f"limit {name}: forgot what {forgotten} key(s) had learned"))


@limits.command("resume")
@click.argument("name")
@click.option("--key", help="Only this key of a keyed limit (default: every key).")
@click.pass_obj
def limits_resume(state: State, name: str, key: str | None) -> None:
    """End the pause of limit NAME now (after a 429 whose reset you know is over)."""
    ended = state.app().resume_limit(name, key)
    emit(state, {"limit": name, "key": key, "resumed": ended},
         lambda d: click.echo(f"limit {name}: {ended} paused key(s) resumed"))


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
    emit(state, {**target, "paused": True},
         lambda d: click.echo(f"paused {'job ' + job_id if job_id else 'queue ' + str(queue)}"))


@cli.command()
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--queue", help="Resume a whole queue instead of one job.")
@click.pass_obj
def resume(state: State, job_id: str | None, queue: str | None) -> None:
    """Resume a paused job or queue."""
    target = _pause_target(job_id, queue)
    state.app().store.set_paused(**target, paused=False)
    emit(state, {**target, "paused": False},
         lambda d: click.echo(f"resumed {'job ' + job_id if job_id else 'queue ' + str(queue)}"))


# -- stats, schedules, flows ---------------------------------------------------------------
@cli.command()
@click.option("--window", default="60s", show_default=True, help="Rates are averaged over this long.")
@click.pass_obj
def stats(state: State, window: str) -> None:
    """Depth, running jobs, and rates in and out per queue and per limit."""
    data = state.app().stats(parse_duration(window, name="--window", allow_zero=False))

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        queues = Table(title="queues")
        for name in ("queue", "depth", "running", "in/s", "out/s"):
            queues.add_column(name, justify="left" if name == "queue" else "right")
        for name, q in data["queues"].items():
            queues.add_row(Text(name + (" (paused)" if q["paused"] else "")), str(q["depth"]), str(q["running"]),
                           f"{q['rate_in']:.2f}", f"{q['rate_out']:.2f}")
        limits = Table(title="limits")
        for name in ("limit", "rate", "depth", "running", "in/s", "out/s", "429s", "paused keys"):
            limits.add_column(name, justify="left" if name in ("limit", "rate", "paused keys") else "right")
        for name, lim in data["limits"].items():
            limits.add_row(Text(name), lim["rate"] or "", str(lim["depth"]), str(lim["running"]),
                           f"{lim['rate_in']:.2f}", f"{lim['rate_out']:.2f}", str(lim["rate_limited"]),
                           Text(", ".join(lim["paused_keys"])))
        out = console()
        out.print(queues)
        out.print(limits)
        out.print(f"{data['workers']} live worker(s)")

    emit(state, data, render)


@cli.command()
@click.pass_obj
def schedules(state: State) -> None:
    """List cron schedules with their last and next tick."""
    from .schedule import next_fire

    found = state.app().store.list_schedules()
    now = time.time()
    data: list[dict[str, Any]] = []
    for info in found:
        tick, problem = next_fire(info, now)  # a stored schedule that cannot fire still lists
        data.append({"name": info.name, "task": info.task, "cron": info.cron, "tz": info.tz, "args": info.args,
                     "missed": info.missed, "last_tick": iso(info.last_tick), "next_tick": iso(tick),
                     "error": problem})

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in ("name", "task", "cron", "tz", "missed", "last tick", "next tick"):
            table.add_column(name)
        for d in data:
            table.add_row(Text(d["name"]), Text(d["task"]), Text(d["cron"]), Text(d["tz"]), Text(d["missed"]),
                          d["last_tick"] or "", d["next_tick"] or Text(f"never: {d['error']}", style="red"))
        console().print(table)

    emit(state, data, render)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def flow(state: State, job_id: str) -> None:
    """A flow's steps with their throttling metrics, and its flow-level insights."""
    app = state.app()
    app.handle(job_id).job()  # JobNotFound -> exit 1
    data = app.flow_insights(job_id)

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(f"flow {job_id} ({data['status']})"))
        for name in ("step", "type", "status", "critical", "duration ms", "total ms", "overhead ms", "retries"):
            table.add_column(name, justify="right" if "ms" in name or name == "retries" else "left")
        for st in data["steps"]:
            table.add_row(Text(st["stepId"]), st["stepType"], st["status"], "yes" if st["critical"] else "no",
                          f"{st['duration']:.1f}", f"{st['totalStepTime']:.1f}", f"{st['throttlingOverhead']:.1f}",
                          str(st["retryCount"]))
        out = console()
        out.print(table)
        insights = data["throttlingInsights"]
        out.print(f"{data['completedSteps']}/{data['totalSteps']} steps complete, {data['failedSteps']} failed; "
                  f"average throttling overhead {insights['averageThrottlingOverhead']:.1f} ms; "
                  f"{insights['totalRetries']} retries")

    emit(state, data, render)


# -- web server and API tokens -------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-body", type=click.IntRange(min=1024), default=1_000_000, show_default=True,
              help="Largest request body accepted, in bytes (larger ones get 413).")
@click.option("--max-bulk", type=click.IntRange(min=1), default=None,
              help="Most jobs one bulk enqueue request may carry (more get 413). Default: the api_max_bulk setting (10000).")
@click.option("--api-rate", metavar="RATE", default=None,
              help="Requests per token, e.g. 50/s, or 'off'; more get 429 with Retry-After. Default: the api_rate setting (50/s).")
@click.option("--api-burst", type=click.IntRange(min=1), default=None,
              help="Requests a token may make back to back. Default: the api_burst setting (200).")
@click.option("--proxy-headers", is_flag=True,
              help="Trust X-Forwarded-Proto/-For from --forwarded-allow-ips (behind a TLS-terminating proxy: "
                   "the session cookie becomes Secure).")
@click.option("--forwarded-allow-ips", metavar="IPS", default=None,
              help="Comma-separated proxy addresses trusted with --proxy-headers ('*' for any; default 127.0.0.1).")
@click.pass_obj
def web(state: State, host: str, port: int, max_body: int, max_bulk: int | None, api_rate: str | None,
        api_burst: int | None, proxy_headers: bool, forwarded_allow_ips: str | None) -> None:
    """Serve the REST API (/api, /openapi.json), the live dashboard (/), /metrics and /healthz.

    Every route but /healthz needs a token: make one with `floodway token create`.
    """
    if forwarded_allow_ips is not None and not proxy_headers:
        raise UsageProblem("--forwarded-allow-ips needs --proxy-headers")
    app = state.app()
    from .config import _rate_or_off
    from .web import prepare, serve

    rate = app.settings.api_rate if api_rate is None else _rate_or_off(api_rate, "--api-rate")
    # open (and migrate) the store now: a database that cannot be used is a one-line error here,
    # not a traceback from inside the server's start-up
    prepare(app)
    click.echo(f"floodway web: dashboard and API on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    serve(app, host=host, port=port, max_body=max_body, max_bulk=max_bulk, api_rate=rate, api_burst=api_burst,
          proxy_headers=proxy_headers, forwarded_allow_ips=forwarded_allow_ips)


@cli.group()
def token() -> None:
    """Create, list and revoke API tokens for the web API and dashboard."""


@token.command("create")
@click.option("--tenant", help="Bind the token to this tenant: it sees and touches only its jobs.")
@click.option("--admin", is_flag=True, help="An admin token: sees and changes everything.")
@click.option("--label", help="A note to recognise the token by.")
@click.pass_obj
def token_create(state: State, tenant: str | None, admin: bool, label: str | None) -> None:
    """Create a token and print it once (only its hash is stored)."""
    if admin == (tenant is not None):
        raise UsageProblem("token create: give --tenant NAME or --admin (one of them)")
    from .tokens import create_token

    secret, info = create_token(state.app().store, tenant=tenant, admin=admin, label=label)
    emit(state, {"token": secret, "id": info.id, "tenant": info.tenant, "admin": info.admin, "label": info.label,
                 "created_at": iso(info.created_at)},
         lambda d: click.echo(f"{secret}\n\ntoken {info.id} ({'admin' if admin else 'tenant ' + str(tenant)}) created; "
                              "it is shown only this once — store it now.", err=False))


@token.command("list")
@click.pass_obj
def token_list(state: State) -> None:
    """List tokens (never their secrets)."""
    found = state.app().store.list_tokens()
    data = [{"id": t.id, "tenant": t.tenant, "admin": t.admin, "label": t.label, "created_at": iso(t.created_at),
             "last_used_at": iso(t.last_used_at), "revoked_at": iso(t.revoked_at)} for t in found]

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table()
        for name in ("id", "scope", "label", "created", "last used", "revoked"):
            table.add_column(name)
        for t in found:
            table.add_row(Text(t.id), Text("admin" if t.admin else f"tenant {t.tenant}"), Text(t.label or ""),
                          age(t.created_at, now), age(t.last_used_at, now),
                          Text(age(t.revoked_at, now), style="red"))
        out = console()
        out.print(table)
        out.print(f"{len(found)} token(s)")

    emit(state, data, render)


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_obj
def token_revoke(state: State, token_id: str) -> None:
    """Revoke token ID: it stops working at once."""
    if not state.app().store.revoke_token(token_id):
        fail(f"no live token with id {token_id!r}")
    emit(state, {"id": token_id, "revoked": True}, lambda d: click.echo(f"token {token_id} revoked"))


# -- demo -----------------------------------------------------------------------------------
@cli.command()
@click.option("--orders", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Orders waiting at OrderPlacementPavillion.")
@click.option("--rate", type=click.FloatRange(min=1), default=200, show_default=True,
              help="FulfillmentsRUs' rate limit, in requests per second.")
@click.option("--budget", default="3s", show_default=True, help="How long one run of the sync task lasts.")
@click.option("--crash", is_flag=True, help="SIGKILL the worker mid-run; another worker resumes the job.")
@click.option("--basic", is_flag=True, help="Run the basic demo instead: a few kinds of jobs, one worker.")
@click.pass_context
def demo(ctx: click.Context, orders: int, rate: float, budget: str, crash: bool, basic: bool) -> None:
    """Black Friday: sync orders to a rate-limited API in short runs, losing and repeating none.

    Starts two APIs on loopback and a worker subprocess, on a throwaway SQLite database; exits 1
    if any order is lost or sent twice. --json prints the final figures.
    """
    state: State = ctx.obj
    if basic:
        from .demo.basic import run

        # FLOODWAY_DATABASE_URL may name a real database: only an explicit --database is used
        explicit = ctx.parent is not None and ctx.parent.get_parameter_source("database") is ParameterSource.COMMANDLINE
        code = run(state.database if explicit else None, console=console(stderr=True) if state.as_json else None)
        if state.as_json:
            click.echo(json.dumps({"ok": code == EXIT_OK}))
        sys.exit(code)
    if ctx.parent is not None and ctx.parent.get_parameter_source("database") is ParameterSource.COMMANDLINE:
        click.echo("note: the Black Friday demo always uses a throwaway SQLite file; --database is ignored",
                   err=True)
    seconds = parse_duration(budget, name="--budget", allow_zero=False)
    if seconds < 0.5:
        raise UsageProblem(f"--budget {budget!r}: give each run at least 500ms")
    # the demo module reads these when imported, so the demo and its worker declare the same
    # limit and budget (the worker subprocess gets them from the demo)
    os.environ["BLACKFRIDAY_RATE"], os.environ["BLACKFRIDAY_BUDGET"] = repr(rate), budget
    from .demo import blackfriday

    if (blackfriday.RATE, blackfriday.BUDGET) != (rate, budget):  # imported earlier with other values
        blackfriday = importlib.reload(blackfriday)
    code, figures = blackfriday.run(orders, crash=crash, live=not state.as_json,
                                    console=console(stderr=True) if state.as_json else console())
    if state.as_json:
        click.echo(json.dumps(figures))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: map floodway's errors to clear messages and exit codes."""
    for stream in (sys.stdout, sys.stderr):
        # a stored string the terminal cannot show (a lone surrogate) is printed escaped, never
        # a traceback
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        cli.main(args=argv, prog_name="floodway", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", EXIT_FAILED)
    except click.UsageError as exc:
        click.echo(f"usage error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except (ConfigError, EnqueueError) as exc:  # the input was wrong: a usage error
        fail(str(exc), EXIT_USAGE)
    except FloodwayError as exc:  # the input was fine; the job, the store or the operation failed
        fail(str(exc), EXIT_FAILED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
