"""The global options (``--json``, ``--app``, ``--database``) work after the command as well as
before it, in every command and sub-command, in one process (click's runner, a real SQLite file)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from floodway import App
from floodway.cli import cli


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    app = App(url)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    app.enqueue(add, {"a": 1, "b": 2}, id="job-1")
    app.close()
    return url


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env={"FLOODWAY_APP": "", "FLOODWAY_DATABASE_URL": ""})


def test_json_and_database_after_the_command_mean_the_same_as_before_it(url):
    before = invoke("--json", "--database", url, "status", "job-1")
    after = invoke("status", "job-1", "--json", "--database", url)
    mixed = invoke("--database", url, "status", "--json", "job-1")
    assert before.exit_code == after.exit_code == mixed.exit_code == 0, after.output
    assert json.loads(after.output)["id"] == "job-1"
    assert json.loads(before.output) == json.loads(after.output) == json.loads(mixed.output)


def test_a_sub_command_and_a_sub_group_take_them_too(url):
    listed = invoke("limits", "--json", "--database", url)
    assert listed.exit_code == 0, listed.output
    assert isinstance(json.loads(listed.output), list)
    tokens = invoke("token", "list", "--database", url, "--json")
    assert tokens.exit_code == 0, tokens.output
    assert json.loads(tokens.output) == []


def test_without_json_the_output_stays_a_table(url):
    table = invoke("queues", "--database", url)
    assert table.exit_code == 0, table.output
    with pytest.raises(json.JSONDecodeError):
        json.loads(table.output)


def test_an_app_named_after_the_command_is_loaded(url, tmp_path, monkeypatch):
    (tmp_path / "trailing_app.py").write_text(
        f"from floodway import App\napp = App({url!r})\n\n@app.task\ndef add(a: int, b: int) -> int:\n    return a + b\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = invoke("enqueue", "add", "--args", '{"a": 2, "b": 3}', "--app", "trailing_app:app", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["created"] is True
    bad = invoke("enqueue", "add", "--app", "no_such_module:app")
    assert bad.exit_code == 2 and "cannot import" in bad.output


def test_every_command_lists_them_in_its_help():
    def leaves(group: click.Group):
        for command in group.commands.values():
            yield command
            if isinstance(command, click.Group):
                yield from leaves(command)

    for command in leaves(cli):
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"--json", "--app", "--database"} <= opts, command.name
