"""The command group, its global options and what every command shares: loading the app,
printing (a table, or JSON with ``--json``), exit codes; ``worker`` and ``migrate``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..app import App
from ..errors import ConfigError, EnqueueError, FloodwayError
from ..hooks import LOOPS
from ..jobs import Status
from ..units import format_duration, iso

if TYPE_CHECKING:  # rich is imported where output is rendered: --json and worker runs skip it
    from rich.console import Console
    from rich.text import Text


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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
        #: --database given after the command (the group's own is read from click's context)
        self.database_after_command = False
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
@click.option(
    "--app", "app_spec", envvar="FLOODWAY_APP", metavar="MODULE:APP", help="The app to load (also FLOODWAY_APP)."
)
@click.option(
    "--database",
    envvar="FLOODWAY_DATABASE_URL",
    metavar="URL",
    help="Database URL, e.g. sqlite:///floodway.db (also FLOODWAY_DATABASE_URL).",
)
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
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=20, show_default=True, help="Jobs run at once by this process."
)
@click.option("--burst", is_flag=True, help="Exit when nothing is ready now or running (and say what is left).")
@click.option(
    "--until-empty",
    is_flag=True,
    help="Exit when no job is waiting, retrying or running and none is scheduled within --horizon.",
)
@click.option("--horizon", default="1m", show_default=True, help="With --until-empty: how far ahead to wait.")
@click.option("--lease", default="30s", show_default=True, help="Lease of a claimed job.")
@click.option("--grace", default="30s", show_default=True, help="Time running jobs get to finish on SIGTERM.")
@click.option("--poll-interval", default="100ms", show_default=True, help="Longest idle sleep.")
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    default=None,
    help="Jobs claimed ahead while every slot is busy (default: twice --concurrency, one claim batch; 0: none). "
    "A job that holds limits is claimed ahead only while they have headroom (half the cap and half the burst free).",
)
@click.option(
    "--book-ahead",
    default="50ms",
    show_default=True,
    help="How far ahead a claim books the tokens of a rate limit that binds (at most 1s; 0s: only the tokens free now).",
)
@click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default="auto",
    show_default=True,
    help="Event loop: uvloop when installed (auto), or the one named.",
)
@click.pass_obj
def worker(
    state: State,
    queues: str | None,
    concurrency: int,
    burst: bool,
    until_empty: bool,
    horizon: str,
    lease: str,
    grace: str,
    poll_interval: str,
    prefetch: int | None,
    book_ahead: str,
    loop: str,
) -> None:
    """Run a worker until SIGTERM/SIGINT (or until nothing is ready, with --burst, or until its
    queues are empty, with --until-empty)."""
    app = state.app(required=True)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if queues is not None and not queue_list:
        raise UsageProblem("--queues names no queue")
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("floodway").setLevel(logging.INFO)
    w = app.worker(
        queues=queue_list,
        concurrency=concurrency,
        burst=burst,
        until_empty=until_empty,
        horizon=horizon,
        lease=lease,
        grace=grace,
        poll_interval=poll_interval,
        prefetch=prefetch,
        book_ahead=book_ahead,
        loop=loop,
    )
    w.run()
    if state.as_json:
        click.echo(json.dumps({"worker": w.id, "processed": w.processed}))


@cli.command()
@click.pass_obj
def migrate(state: State) -> None:
    """Apply pending schema migrations."""
    app = state.app()
    from ..store import open_store

    store = open_store(app.database_url, migrate=False)
    try:
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    emit(
        state,
        {"applied": applied, "version": version},
        lambda d: click.echo(
            f"schema at version {d['version']}" + (f" (applied {d['applied']})" if d["applied"] else " (up to date)")
        ),
    )


# -- output helpers -------------------------------------------------------------------------
STATUS_NAMES = [s.value for s in Status]
FINAL_NAMES = [Status.COMPLETE.value, Status.FAILED.value, Status.CANCELLED.value]
STATUS_STYLES = {
    Status.SCHEDULED: "cyan",
    Status.WAITING: "blue",
    Status.RUNNING: "yellow",
    Status.RETRYING: "magenta",
    Status.FAILED: "bold red",
    Status.COMPLETE: "green",
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
        raise UsageProblem(f'{what} must be a JSON object such as {{"to": "ada@example.com"}}, got {_json_kind(value)}')
    return value


def _json_kind(value: Any) -> str:
    kinds = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return kinds.get(type(value), type(value).__name__)


# -- enqueueing -----------------------------------------------------------------------------


def _global_option_after_command(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command (``floodway status ID --json``) counts as if it
    came before it; given twice, the one after the command wins."""
    state = ctx.find_object(State)
    if state is None or value is None or value is False:
        return
    if param.name == "as_json":
        state.as_json = True
    elif param.name == "app_spec":
        state.app_spec = value
    elif param.name == "database":
        state.database = value
        state.database_after_command = True


def accept_global_options_after_commands(group: click.Group) -> None:
    """Give every command (and every command of a sub-group) the group's ``--json``, ``--app``
    and ``--database`` too, as scripts and people often write them last."""
    for command in group.commands.values():
        if isinstance(command, click.Group):  # its own options too: ``floodway limits --json``
            accept_global_options_after_commands(command)
        taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for decls, flag, help_text in (
            (("--json", "as_json"), True, "Print JSON for scripts (also before the command)."),
            (("--app", "app_spec"), False, "The app to load (also before the command)."),
            (("--database", "database"), False, "Database URL (also before the command)."),
        ):
            if decls[0] not in taken:
                command.params.append(
                    click.Option(
                        list(decls),
                        is_flag=flag,
                        default=False if flag else None,
                        expose_value=False,
                        callback=_global_option_after_command,
                        help=help_text,
                        metavar=None if flag else ("MODULE:APP" if decls[1] == "app_spec" else "URL"),
                    )
                )


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
