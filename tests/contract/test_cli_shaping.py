"""The shaping options of ``floodway enqueue`` and ``floodway enqueue-file``, on both backends, in
one process (click's runner, the real ``main`` for exit codes): what the output says when an
enqueue returned an existing job, and bad values exiting non-zero with the library's message
and writing nothing."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from floodway import App
from floodway.cli import cli
from floodway.cli.core import EXIT_USAGE, main
from floodway.limits import split_lane

APP = """
from floodway import App

app = App({url!r})
app.limit("hub", rate="100/s", lanes={{"interactive": 0.2, "backfill": 0.5}})

@app.task
def sync_order(order_id: int, note: str = "") -> None:
    return None

@app.task(limits=["hub"])
def refresh(contact: str, name: str = "") -> str:
    return name
"""


@pytest.fixture
def env(database_url, tmp_path, monkeypatch) -> SimpleNamespace:
    module = f"shaping_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP.format(url=database_url))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLOODWAY_APP", f"{module}:app")
    monkeypatch.delenv("FLOODWAY_DATABASE_URL", raising=False)
    app = App(database_url)
    yield SimpleNamespace(app=app, tmp=tmp_path, spec=f"{module}:app")
    app.close()


def invoke(env: SimpleNamespace, *args: str) -> click.testing.Result:
    result = CliRunner().invoke(cli, [*args, "--app", env.spec])
    assert result.exit_code == 0, result.output
    return result


def fails(env: SimpleNamespace, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``floodway ARGS`` through the real entry point; it must exit as a usage error."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "--app", env.spec])
    assert exited.value.code == EXIT_USAGE
    return capsys.readouterr().err


def total(env: SimpleNamespace) -> int:
    return sum(env.app.store.count_jobs().values())


def test_a_deduplicated_enqueue_says_which_job_it_returned(env):
    options = ("--unique-for", "10m", "--unique-key", "{order_id}")
    first = json.loads(invoke(env, "enqueue", "sync_order", "--args", '{"order_id": 7}', *options, "--json").output)
    assert first["created"] is True
    again = invoke(env, "enqueue", "sync_order", "--args", '{"order_id": 7, "note": "x"}', *options)
    assert f"deduplicated: existing job {first['id']}" in again.output
    as_json = invoke(env, "enqueue", "sync_order", "--args", '{"order_id": 7}', *options, "--json").output
    assert json.loads(as_json) == {"id": first["id"], "created": False, "deduplicated": True}
    while_active = ("--unique-while", "active")
    made = json.loads(invoke(env, "enqueue", "sync_order", "--args", '{"order_id": 8}', *while_active, "--json").output)
    assert (
        f"existing job {made['id']}"
        in invoke(env, "enqueue", "sync_order", "--args", '{"order_id": 8}', *while_active).output
    )
    assert total(env) == 2


def test_a_folded_enqueue_says_so_and_the_job_takes_the_last_args(env):
    options = ("--debounce", "1h", "--debounce-key", "{contact}", "--debounce-max", "2h")
    first = json.loads(
        invoke(env, "enqueue", "refresh", "--args", '{"contact": "c1", "name": "Ada"}', *options, "--json").output
    )
    folded = invoke(env, "enqueue", "refresh", "--args", '{"contact": "c1", "name": "Grace"}', *options)
    assert f"folded into job {first['id']}" in folded.output
    job = env.app.store.get_job(first["id"])
    assert job.args == {"contact": "c1", "name": "Grace"}
    assert any(
        (e.reason or "").startswith("debounced: 1 later enqueue(s) folded") for e in env.app.store.events(job.id)
    )


def test_a_lane_is_passed_on(env):
    made = json.loads(
        invoke(env, "enqueue", "refresh", "--args", '{"contact": "c"}', "--lane", "interactive", "--json").output
    )
    assert split_lane(env.app.store.get_job(made["id"]).limits[0][1])[1] == "interactive"


def test_enqueue_file_with_a_key_counts_the_deduplicated_and_folded(env):
    path = env.tmp / "orders.jsonl"
    path.write_text("\n".join(json.dumps({"order_id": n}) for n in (1, 2, 1, 3, 2)) + "\n")
    out = invoke(env, "enqueue-file", "sync_order", str(path), "--unique-for", "1h", "--batch-size", "2")
    assert "3 new, 2 deduplicated" in out.output
    again = invoke(env, "enqueue-file", "sync_order", str(path), "--unique-for", "1h", "--json")
    assert json.loads(again.output)["created"] == 0
    contacts = env.tmp / "contacts.jsonl"
    contacts.write_text("\n".join(json.dumps({"contact": c, "name": str(i)}) for i, c in enumerate("abab")) + "\n")
    out = invoke(env, "enqueue-file", "refresh", str(contacts), "--debounce", "1h", "--debounce-key", "{contact}")
    assert "2 new, 2 folded" in out.output
    laned = invoke(env, "enqueue-file", "refresh", str(contacts), "--lane", "backfill", "--json")
    assert json.loads(laned.output)["created"] == 4
    assert total(env) == 3 + 2 + 4


BAD = [
    (["--unique-for", "soon"], "cannot parse 'soon' as a duration"),
    (["--unique-key", "{order_id}"], "unique_key needs unique_for"),
    (["--unique-for", "1m", "--unique-key", "{nope}"], "names {nope}, which is not an argument"),
    (["--unique-while", "forever"], "unique_while must be one of ['active']"),
    (["--unique-for", "1m", "--debounce", "5s"], "not both"),
    (["--debounce-key", "{order_id}"], "needs debounce="),
    (["--debounce", "10s", "--debounce-max", "5s"], "debounce_max (5s) must be at least the debounce (10s)"),
    (["--debounce", "10s", "--delay", "1m"], "a debounced job runs when its window ends"),
    (["--unique-for", "1m", "--id", "mine"], "pass id= or a unique key, not both"),
    (["--lane", "interactive"], "none of the job's limits"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_value_exits_non_zero_with_the_message_and_writes_nothing(env, capsys, options, message):
    err = fails(env, capsys, "enqueue", "sync_order", "--args", '{"order_id": 1}', *options)
    assert message in err, err
    path = env.tmp / "items.jsonl"
    path.write_text('{"order_id": 1}\n{"order_id": 2}\n')
    err = fails(env, capsys, "enqueue-file", "sync_order", str(path), *options)
    assert message in err, err
    assert total(env) == 0
