"""``floodway forecast``: when each queue and limit key will drain, and what if."""

from __future__ import annotations

from typing import Any

import click

from ..forecast import format_eta
from ..units import parse_duration
from .core import State, cli, console, emit


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _eta(row: dict[str, Any]) -> str:
    if not row["drains"]:
        return "will not drain" if row["rate_used"] is not None else "—"
    if row["eta_low"] is None and row["eta_high"] is None:
        return row["eta"]
    return f"{row['eta']} ({format_eta(row['eta_low'])}–{format_eta(row['eta_high']) if row['eta_high'] else '?'})"


@cli.command()
@click.option("--queue", help="Only this queue (and where --add puts its jobs; default: default).")
@click.option("--limit", help="Only this limit's keys (and the limit --rate is for).")
@click.option("--key", help="Only this key of --limit.")
@click.option("--rate", help="What if --limit (or its --key) were paced at this rate: 20/s, 1200/min.")
@click.option("--add", type=int, default=0, help="What if this many jobs were added (to --queue, and --tenant's key).")
@click.option("--tenant", help="The tenant --add's jobs are for.")
@click.option("--workers", type=int, help="What if this many workers ran (scales service only when workers bind).")
@click.option("--window", default="60s", show_default=True, help="Rates are measured over this long.")
@click.pass_obj
def forecast(
    state: State,
    queue: str | None,
    limit: str | None,
    key: str | None,
    rate: str | None,
    add: int,
    tenant: str | None,
    workers: int | None,
    window: str,
) -> None:
    """When will the backlog be done: an ETA with a range per queue and limit key, the rate it
    used and why; with --rate, --add or --workers, what if (nothing is changed)."""
    data = state.app().forecast(
        parse_duration(window, name="--window", allow_zero=False),
        queue=queue,
        limit=limit,
        key=key,
        rate=rate,
        add=add,
        tenant=tenant,
        workers=workers,
    )

    def render(_: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        columns = ("backlog", "served/s", "in/s", "limit/s", "binds", "ETA (range)", "short/s")
        queues = Table(title="queues" + (f" — what if {data['what_if']}" if data["what_if"] else ""))
        limits = Table(title="limit keys")
        for table, first in ((queues, ("queue",)), (limits, ("limit", "key", "share/s"))):
            for name in (*first, *columns):
                table.add_column(
                    name, justify="left" if name in ("queue", "limit", "key", "binds", "ETA (range)") else "right"
                )
        for row in data["queues"]:
            queues.add_row(Text(row["queue"]), *_cells(row))
        for row in data["limits"]:
            limits.add_row(Text(row["limit"]), Text(row["key"]), _rate(row["fair_share"]), *_cells(row))
        out = console()
        out.print(queues)
        out.print(limits)
        for row in data["queues"]:
            out.print(Text(f"{row['queue']}: " + "; ".join(row["why"])))
        if data["workers"] is not None:
            out.print(f"{data['workers']} live worker(s); rates over the last {data['window_seconds']:g}s")

    emit(state, data, render)


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(row["backlog"]),
        _rate(row["served_rate"]),
        _rate(row["arrival_rate"]),
        _rate(row["limit_rate"]),
        row["binds"] or "",
        _eta(row),
        _rate(row["shortfall_per_second"]) if row["shortfall_per_second"] else "",
    )
