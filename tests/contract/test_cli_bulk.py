"""Bulk actions on the command line, on both backends (click's runner; the real ``main`` for
exit codes): ``floodway bulk ACTION``, and ``retry`` / ``cancel`` with a filter instead of an id."""

from __future__ import annotations

import json

import pytest

from floodway import Status

from .test_cli_shaping import env, fails, invoke  # noqa: F401  (the fixture and the helpers)


def put(env, order_id: int, tenant: str | None = None) -> str:
    extra = ("--tenant", tenant) if tenant else ()
    args = json.dumps({"order_id": order_id})
    return json.loads(invoke(env, "enqueue", "sync_order", "--args", args, *extra, "--json").output)["id"]


def statuses(env) -> dict[str, int]:
    return {k: v for k, v in env.app.store.count_jobs().items() if v}


def test_cancel_and_retry_by_filter_with_a_dry_run_first(env):
    made = [put(env, n, "acme" if n < 4 else "globex") for n in range(6)]
    counted = json.loads(invoke(env, "cancel", "--tenant", "acme", "--dry-run", "--json").output)
    assert counted == {"action": "cancel", "count": 4, "dry_run": True}
    assert statuses(env) == {"waiting": 6}
    assert "cancelled 4 job(s)" in invoke(env, "cancel", "--tenant", "acme").output
    assert [env.app.store.get_job(i).status for i in made].count(Status.CANCELLED) == 4
    assert "retried 4 job(s)" in invoke(env, "retry", "--status", "cancelled", "--task", "sync_order").output
    assert statuses(env) == {"waiting": 6}
    assert "paused 6 job(s)" in invoke(env, "bulk", "pause", "--all").output
    assert "would resume 6 job(s)" in invoke(env, "bulk", "resume", "--all", "--dry-run").output


def test_purge_by_filter(env):
    for n in range(3):
        put(env, n)
    invoke(env, "cancel", "--all")
    assert "purged 3 job(s)" in invoke(env, "bulk", "purge", "--status", "cancelled").output
    assert statuses(env) == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (("retry",), "give a filter"),
        (("bulk", "purge", "--status", "waiting"), "only finished jobs"),
        (("cancel", "--created-before", "soon"), "created_before"),
        (("retry", "some-id", "--task", "sync_order"), "not both"),
    ],
)
def test_a_bad_filter_exits_2_and_writes_nothing(env, capsys, args, message):
    put(env, 1)
    assert message in fails(env, capsys, *args)
    assert statuses(env) == {"waiting": 1}
