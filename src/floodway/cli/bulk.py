"""Bulk actions by filter on the command line: ``floodway bulk retry --status failed --task
sync_orders --tenant acme`` (and ``cancel``, ``pause``, ``resume``, ``purge``); ``floodway retry``
and ``floodway cancel`` without an ID take the same filter."""

from __future__ import annotations

from typing import Any, Callable

import click

from ..store.bulk import ACTIONS
from .core import STATUS_NAMES, State, cli, emit

#: the filter options, as ``App.bulk`` takes them
FILTER_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(STATUS_NAMES, case_sensitive=False),
        help="Jobs in this status (repeatable).",
    ),
    click.option("--task", help="Jobs of this task."),
    click.option("--queue", "job_queue", help="Jobs in this queue."),
    click.option("--tenant", help="Jobs of this tenant."),
    click.option("--created-after", metavar="ISO-8601", help="Jobs enqueued at or after this instant."),
    click.option("--created-before", metavar="ISO-8601", help="Jobs enqueued before this instant."),
    click.option("--error", "error_text", metavar="TEXT", help="Jobs whose error contains this text (any case)."),
    click.option("--all", "everything", is_flag=True, help="With no other filter: every job the action applies to."),
    click.option("--dry-run", is_flag=True, help="Only count the jobs it would act on."),
]


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(FILTER_OPTIONS):
        fn = option(fn)
    return fn


def run_bulk(state: State, action: str, **given: Any) -> None:
    """Act on the jobs the filter options match, and say how many."""
    dry_run = given.pop("dry_run")
    count = state.app().bulk(
        action,
        status=list(given["statuses"]) or None,
        task=given["task"],
        queue=given["job_queue"],
        tenant=given["tenant"],
        created_after=given["created_after"],
        created_before=given["created_before"],
        error=given["error_text"],
        all=given["everything"],
        dry_run=dry_run,
    )
    done = {"retry": "retried", "cancel": "cancelled", "pause": "paused", "resume": "resumed", "purge": "purged"}
    emit(
        state,
        {"action": action, "count": count, "dry_run": dry_run},
        lambda d: click.echo(f"would {action} {count} job(s)" if dry_run else f"{done[action]} {count} job(s)"),
    )


@cli.command()
@click.argument("action", type=click.Choice(ACTIONS))
@filter_options
@click.pass_obj
def bulk(state: State, action: str, **given: Any) -> None:
    """Retry, cancel, pause, resume or purge every job the filter matches, in chunks that never
    stall the workers (an empty filter needs --all)."""
    run_bulk(state, action, **given)
