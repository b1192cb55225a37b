"""Commands on the rest: queues, workers, limits, stats, schedules, flows, the web server,
API tokens and the demo."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..jobs import Status
from ..store.base import QueueInfo, WorkerInfo
from ..units import iso, parse_duration

if TYPE_CHECKING:  # rich is imported where output is rendered: --json and worker runs skip it
    pass

from .core import EXIT_OK, State, UsageProblem, age, cli, console, emit, fail, styled


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
            table.add_row(
                name,
                "unlimited" if q.max_concurrency is None else str(q.max_concurrency),
                *(str(q.counts.get(s.value, 0)) for s in Status),
            )
        console().print(table)

    emit(
        state,
        [{"name": q.name, "max_concurrency": q.max_concurrency, "paused": q.paused, "counts": q.counts} for q in found],
        render,
    )


@cli.command()
@click.option("--all", "include_stopped", is_flag=True, help="Include stopped workers.")
@click.pass_obj
def workers(state: State, include_stopped: bool) -> None:
    """Show live workers: heartbeat age and running jobs."""
    found: list[WorkerInfo] = state.app().store.list_workers(include_stopped=include_stopped)
    now = time.time()
    data = [w.to_dict(now) for w in found]

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in ("id", "host", "pid", "queues", "running", "heartbeat", "started", "stopped"):
            table.add_column(name, no_wrap=name == "id")
        for w in found:
            table.add_row(
                Text(w.id),
                Text(w.hostname),
                str(w.pid),
                Text(",".join(w.queues) if w.queues else "all"),
                f"{w.running}/{w.concurrency}",
                age(w.heartbeat_at, now),
                age(w.started_at, now),
                age(w.stopped_at, now),
            )
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
    from ..stats import limit_dict

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
        for name in (
            "limit",
            "declared",
            "stored",
            "effective",
            "from",
            "budget now",
            "running",
            "429s",
            "429s/min",
            "pauses",
            "paused",
        ):
            table.add_column(name)
        for d in rows:
            in_code = (d["declared"] or {}).get("rate") or (
                "adaptive" if (d["declared"] or {}).get("adaptive") else "-"
            )
            if d["declared"] is None:
                in_code = "(not in this code)"
            stored_rate = (
                "(not stored yet)"
                if d.get("stored") is False
                else (d["rate"] or "-") + (" adaptive" if d["adaptive"] else "")
            )
            keys = d["keys"] or [
                {
                    "key": "",
                    "effective_rate": None,
                    "source": "",
                    "remaining": None,
                    "running": 0,
                    "throttled": 0,
                    "throttled_last_minute": 0,
                    "pauses": 0,
                    "paused_for": None,
                    "pause_reason": None,
                }
            ]
            for k in keys:
                label = d["name"] + (f" [{k['key']}]" if k["key"] else "")
                paused = f"{k['paused_for']:.1f}s ({k['pause_reason']})" if k["paused_for"] else ""
                effective = "" if k["effective_rate"] is None else f"{k['effective_rate']:.4g}/s"
                budget = "" if k["remaining"] is None else str(k["remaining"])
                table.add_row(
                    Text(label),
                    Text(in_code),
                    Text(stored_rate),
                    effective,
                    k["source"] + _window_end(k.get("window_end")),
                    budget,
                    str(k["running"]),
                    str(k["throttled"]),
                    str(k["throttled_last_minute"]),
                    str(k["pauses"]),
                    Text(paused, style="yellow"),
                )
                for lane in k.get("lanes") or []:  # a lane: its share, its rate now, active or idle
                    rate = "" if lane["effective_rate"] is None else f"{lane['effective_rate']:.4g}/s"
                    name = lane["lane"] or "(no lane)"
                    state_word = "active" if lane["active"] else "idle"
                    table.add_row(
                        Text(f"  lane {name} {lane['share']:.0%}"), "", "", rate, state_word, "", str(lane["running"])
                    )
        console().print(table)

    emit(state, data, render)


def _window_end(end: dict | None) -> str:
    """How closely a stated budget's window end is known (see floodway.window_ends)."""
    return "" if not end else f", window end ±{(end['by'] - end['after']) * 500:.0f} ms"


@limits.command("set")
@click.argument("name")
@click.option("--rate", help="New rate, e.g. 20/s, 100/min, 10/10s.")
@click.option("--burst", type=int, help="New burst.")
@click.option("--concurrency", type=int, help="New concurrency cap (0 removes it).")
@click.option(
    "--adaptive/--no-adaptive",
    default=None,
    help="Let the learned rate rise above --rate (a new --rate alone turns this off: your rate is the ceiling).",
)
@click.pass_obj
def limits_set(
    state: State, name: str, rate: str | None, burst: int | None, concurrency: int | None, adaptive: bool | None
) -> None:
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
    emit(
        state,
        spec.to_dict(),
        lambda d: click.echo(
            f"limit {name}: rate {d['rate'] or '-'}, burst {d['burst']}, concurrency {d['concurrency'] or '-'}"
            + (", adaptive" if d["adaptive"] else "")
        ),
    )


@limits.command("reset")
@click.argument("name")
@click.option("--key", help="Only this key of a keyed limit (default: every key).")
@click.pass_obj
def limits_reset(state: State, name: str, key: str | None) -> None:
    """Forget what floodway learned about limit NAME: the declared rate holds again."""
    forgotten = state.app().reset_learned(name, key)
    emit(
        state,
        {"limit": name, "key": key, "forgotten": forgotten},
        lambda d: click.echo(f"limit {name}: forgot what {forgotten} key(s) had learned"),
    )


@limits.command("resume")
@click.argument("name")
@click.option("--key", help="Only this key of a keyed limit (default: every key).")
@click.pass_obj
def limits_resume(state: State, name: str, key: str | None) -> None:
    """End the pause of limit NAME now (after a 429 whose reset you know is over)."""
    ended = state.app().resume_limit(name, key)
    emit(
        state,
        {"limit": name, "key": key, "resumed": ended},
        lambda d: click.echo(f"limit {name}: {ended} paused key(s) resumed"),
    )


@cli.command()
@click.option(
    "--window",
    default="60s",
    show_default=True,
    help="Rates count the jobs of this long, over the time since the first of them.",
)
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
            queues.add_row(
                Text(name + (" (paused)" if q["paused"] else "")),
                str(q["depth"]),
                str(q["running"]),
                f"{q['rate_in']:.2f}",
                f"{q['rate_out']:.2f}",
            )
        limits = Table(title="limits")
        for name in ("limit", "rate", "depth", "running", "in/s", "out/s", "429s", "paused keys"):
            limits.add_column(name, justify="left" if name in ("limit", "rate", "paused keys") else "right")
        for name, lim in data["limits"].items():
            limits.add_row(
                Text(name),
                lim["rate"] or "",
                str(lim["depth"]),
                str(lim["running"]),
                f"{lim['rate_in']:.2f}",
                f"{lim['rate_out']:.2f}",
                str(lim["rate_limited"]),
                Text(", ".join(lim["paused_keys"])),
            )
        out = console()
        out.print(queues)
        out.print(limits)
        out.print(f"{data['workers']} live worker(s)")

    emit(state, data, render)


@cli.command()
@click.pass_obj
def schedules(state: State) -> None:
    """List cron schedules with their last and next tick."""
    from ..schedule import next_fire

    found = state.app().store.list_schedules()
    now = time.time()
    data: list[dict[str, Any]] = []
    for info in found:
        tick, problem = next_fire(info, now)  # a stored schedule that cannot fire still lists
        data.append(
            {
                "name": info.name,
                "task": info.task,
                "cron": info.cron,
                "tz": info.tz,
                "args": info.args,
                "missed": info.missed,
                "last_tick": iso(info.last_tick),
                "next_tick": iso(tick),
                "error": problem,
            }
        )

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in ("name", "task", "cron", "tz", "missed", "last tick", "next tick"):
            table.add_column(name)
        for d in data:
            table.add_row(
                Text(d["name"]),
                Text(d["task"]),
                Text(d["cron"]),
                Text(d["tz"]),
                Text(d["missed"]),
                d["last_tick"] or "",
                d["next_tick"] or Text(f"never: {d['error']}", style="red"),
            )
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
            table.add_row(
                Text(st["stepId"]),
                st["stepType"],
                st["status"],
                "yes" if st["critical"] else "no",
                f"{st['duration']:.1f}",
                f"{st['totalStepTime']:.1f}",
                f"{st['throttlingOverhead']:.1f}",
                str(st["retryCount"]),
            )
        out = console()
        out.print(table)
        insights = data["throttlingInsights"]
        out.print(
            f"{data['completedSteps']}/{data['totalSteps']} steps complete, {data['failedSteps']} failed; "
            f"average throttling overhead {insights['averageThrottlingOverhead']:.1f} ms; "
            f"{insights['totalRetries']} retries"
        )

    emit(state, data, render)


# -- web server and API tokens -------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=1_000_000,
    show_default=True,
    help="Largest request body accepted, in bytes (larger ones get 413).",
)
@click.option(
    "--max-bulk",
    type=click.IntRange(min=1),
    default=None,
    help="Most jobs one bulk enqueue request may carry (more get 413). Default: the api_max_bulk setting (10000).",
)
@click.option(
    "--api-rate",
    metavar="RATE",
    default=None,
    help="Requests per token, e.g. 50/s, or 'off'; more get 429 with Retry-After. Default: the api_rate setting (50/s).",
)
@click.option(
    "--api-burst",
    type=click.IntRange(min=1),
    default=None,
    help="Requests a token may make back to back. Default: the api_burst setting (200).",
)
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Trust X-Forwarded-Proto/-For from --forwarded-allow-ips (behind a TLS-terminating proxy: "
    "the session cookie becomes Secure).",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="IPS",
    default=None,
    help="Comma-separated proxy addresses trusted with --proxy-headers ('*' for any; default 127.0.0.1).",
)
@click.pass_obj
def web(
    state: State,
    host: str,
    port: int,
    max_body: int,
    max_bulk: int | None,
    api_rate: str | None,
    api_burst: int | None,
    proxy_headers: bool,
    forwarded_allow_ips: str | None,
) -> None:
    """Serve the REST API (/api, /openapi.json), the live dashboard (/), /metrics and /healthz.

    Every route but /healthz needs a token: make one with `floodway token create`.
    """
    if forwarded_allow_ips is not None and not proxy_headers:
        raise UsageProblem("--forwarded-allow-ips needs --proxy-headers")
    app = state.app()
    from ..config import _rate_or_off
    from ..web import prepare, serve

    rate = app.settings.api_rate if api_rate is None else _rate_or_off(api_rate, "--api-rate")
    # open (and migrate) the store now: a database that cannot be used is a one-line error here,
    # not a traceback from inside the server's start-up
    prepare(app)
    click.echo(f"floodway web: dashboard and API on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    serve(
        app,
        host=host,
        port=port,
        max_body=max_body,
        max_bulk=max_bulk,
        api_rate=rate,
        api_burst=api_burst,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
    )


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
    from ..tokens import create_token

    secret, info = create_token(state.app().store, tenant=tenant, admin=admin, label=label)
    emit(
        state,
        {
            "token": secret,
            "id": info.id,
            "tenant": info.tenant,
            "admin": info.admin,
            "label": info.label,
            "created_at": iso(info.created_at),
        },
        lambda d: click.echo(
            f"{secret}\n\ntoken {info.id} ({'admin' if admin else 'tenant ' + str(tenant)}) created; "
            "it is shown only this once — store it now.",
            err=False,
        ),
    )


@token.command("list")
@click.pass_obj
def token_list(state: State) -> None:
    """List tokens (never their secrets)."""
    found = state.app().store.list_tokens()
    data = [
        {
            "id": t.id,
            "tenant": t.tenant,
            "admin": t.admin,
            "label": t.label,
            "created_at": iso(t.created_at),
            "last_used_at": iso(t.last_used_at),
            "revoked_at": iso(t.revoked_at),
        }
        for t in found
    ]

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table()
        for name in ("id", "scope", "label", "created", "last used", "revoked"):
            table.add_column(name)
        for t in found:
            table.add_row(
                Text(t.id),
                Text("admin" if t.admin else f"tenant {t.tenant}"),
                Text(t.label or ""),
                age(t.created_at, now),
                age(t.last_used_at, now),
                Text(age(t.revoked_at, now), style="red"),
            )
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
@click.option(
    "--orders",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Orders waiting at OrderPlacementPavillion.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=200,
    show_default=True,
    help="FulfillmentsRUs' rate limit, in requests per second.",
)
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
        from ..demo.basic import run

        # FLOODWAY_DATABASE_URL may name a real database: only an explicit --database is used
        explicit = state.database_after_command or (
            ctx.parent is not None and ctx.parent.get_parameter_source("database") is ParameterSource.COMMANDLINE
        )
        code = run(state.database if explicit else None, console=console(stderr=True) if state.as_json else None)
        if state.as_json:
            click.echo(json.dumps({"ok": code == EXIT_OK}))
        sys.exit(code)
    if ctx.parent is not None and ctx.parent.get_parameter_source("database") is ParameterSource.COMMANDLINE:
        click.echo("note: the Black Friday demo always uses a throwaway SQLite file; --database is ignored", err=True)
    seconds = parse_duration(budget, name="--budget", allow_zero=False)
    if seconds < 0.5:
        raise UsageProblem(f"--budget {budget!r}: give each run at least 500ms")
    # the demo module reads these when imported, so the demo and its worker declare the same
    # limit and budget (the worker subprocess gets them from the demo)
    os.environ["BLACKFRIDAY_RATE"], os.environ["BLACKFRIDAY_BUDGET"] = repr(rate), budget
    from ..demo import blackfriday

    if (blackfriday.RATE, blackfriday.BUDGET) != (rate, budget):  # imported earlier with other values
        blackfriday = importlib.reload(blackfriday)
    code, figures = blackfriday.run(
        orders, crash=crash, live=not state.as_json, console=console(stderr=True) if state.as_json else console()
    )
    if state.as_json:
        click.echo(json.dumps(figures))
    sys.exit(code)
