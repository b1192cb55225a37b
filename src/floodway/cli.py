"""The ``floodway`` command line.

``floodway --app module:app COMMAND``; ``--app`` may come from ``FLOODWAY_APP``. Commands that
only read or change jobs also work with just a database (``--database`` or
``FLOODWAY_DATABASE_URL``). Every command takes ``--json`` for scripts and prints a readable
table otherwise. Exit codes: 0 ok, 1 job failed or not found, 2 usage error.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any, NoReturn

import click

from .app import App
from .errors import FloodwayError, JobNotFound

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


@cli.command()
@click.option("--queues", help="Comma-separated queues to take jobs from (default: all).")
@click.option("--concurrency", type=click.IntRange(min=1), default=20, show_default=True,
              help="Jobs run at once by this process.")
@click.option("--burst", is_flag=True, help="Exit when nothing is ready or running.")
@click.option("--lease", default="30s", show_default=True, help="Lease of a claimed job.")
@click.option("--grace", default="30s", show_default=True, help="Time running jobs get to finish on SIGTERM.")
@click.option("--poll-interval", default="100ms", show_default=True, help="Longest idle sleep.")
@click.pass_obj
def worker(state: State, queues: str | None, concurrency: int, burst: bool, lease: str, grace: str,
           poll_interval: str) -> None:
    """Run a worker until SIGTERM/SIGINT (or until idle, with --burst)."""
    app = state.app(required=True)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if queues is not None and not queue_list:
        raise UsageProblem("--queues names no queue")
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("floodway").setLevel(logging.INFO)
    w = app.worker(queues=queue_list, concurrency=concurrency, burst=burst, lease=lease,
                   grace=grace, poll_interval=poll_interval)
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: map floodway's errors to clear messages and exit codes."""
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
    except JobNotFound as exc:
        fail(str(exc), EXIT_FAILED)
    except FloodwayError as exc:
        fail(str(exc), EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
