"""The drain forecast through the CLI (``floodway forecast``, a table and ``--json``, exit 2 on
bad input) and the REST API (``GET /api/forecast``: admin and tenant tokens, 400 on bad input,
in the OpenAPI document), on both backends."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Iterator

import pytest
from click.testing import CliRunner

from floodway import App
from floodway.cli import cli
from floodway.cli.core import EXIT_USAGE, main

from ..web_helpers import client, serving, tokens

pytestmark = pytest.mark.timeout(120)

APP = """
from floodway import App

app = App({url!r})
app.limit("api", rate="10/s", key="{{tenant}}")
app.queue("sync", max_concurrency=None)

@app.task(queue="sync", limits=["api"])
def pull(n: int) -> int:
    return n
"""


@pytest.fixture
def env(database_url, tmp_path, monkeypatch) -> Iterator[SimpleNamespace]:
    module = f"forecast_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP.format(url=database_url))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("FLOODWAY_DATABASE_URL", raising=False)
    app = App(database_url)
    app.limit("api", rate="10/s", key="{tenant}")
    app.queue("sync", max_concurrency=None)

    @app.task(queue="sync", limits=["api"])
    def pull(n: int) -> int:
        return n

    app.enqueue_many(pull, [{"n": i} for i in range(30)], tenant="acme")
    app.enqueue_many(pull, [{"n": i} for i in range(10)], tenant="globex")
    yield SimpleNamespace(app=app, spec=f"{module}:app")
    app.close()


def run(env: SimpleNamespace, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--app", env.spec])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_table_and_json(env):
    table = run(env, "forecast")
    assert "sync" in table and "acme" in table and "globex" in table and "assumed" in table
    data = json.loads(run(env, "forecast", "--json"))
    [sync] = data["queues"]
    assert sync["queue"] == "sync" and sync["backlog"] == 40
    what_if = json.loads(
        run(env, "forecast", "--limit", "api", "--rate", "20/s", "--add", "100", "--tenant", "acme", "--json")
    )
    [acme] = [r for r in what_if["limits"] if r["key"] == "acme"]
    assert acme["backlog"] == 130 and acme["rate_used"] == 20 and acme["eta_seconds"] == pytest.approx(6.5)
    assert what_if["what_if"] == {"rate": 20.0, "add": 100}
    assert sum(env.app.store.count_jobs().values()) == 40  # a what-if writes nothing


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "api", "--rate", "-5/s"], "rate"),
        (["--limit", "nope"], "unknown limit 'nope'"),
        (["--add", "-5"], "add"),
        (["--workers", "0"], "workers"),
    ],
)
def test_cli_bad_input_exits_2(env, capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        main(["forecast", *args, "--app", env.spec])
    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_api_admin_tenant_and_bad_input(env):
    with serving(env.app) as server:
        minted = tokens(env.app)
        with client(server, minted["admin"]) as admin, client(server, minted["acme"]) as acme:
            everything = admin.get("/api/forecast")
            assert everything.status_code == 200, everything.text
            assert {r["key"] for r in everything.json()["limits"]} == {"acme", "globex"}
            assert everything.json()["queues"][0]["backlog"] == 40
            faster = admin.get("/api/forecast", params={"limit": "api", "rate": "20/s", "key": "globex"})
            assert faster.status_code == 200, faster.text
            [globex] = faster.json()["limits"]
            assert globex["rate_used"] == 20 and globex["eta_seconds"] == pytest.approx(0.5)

            mine = acme.get("/api/forecast")
            assert mine.status_code == 200, mine.text
            assert [r["key"] for r in mine.json()["limits"]] == ["acme"]
            assert mine.json()["queues"][0]["backlog"] == 30 and mine.json()["workers"] is None
            more = acme.get("/api/forecast", params={"limit": "api", "add": "20"})
            assert [r["backlog"] for r in more.json()["limits"]] == [50]
            assert acme.get("/api/forecast", params={"tenant": "globex", "add": "1"}).status_code == 400

            for params, message in (
                ({"limit": "api", "rate": "-5/s"}, "rate"),
                ({"limit": "nope"}, "unknown limit"),
                ({"add": "-5"}, "add"),
                ({"add": "many"}, "whole number"),
                ({"workers": "0"}, "workers"),
            ):
                answer = admin.get("/api/forecast", params=params)
                assert answer.status_code == 400 and message in answer.json()["error"], (params, answer.text)
            assert acme.get("/api/forecast", params={"limit": "nope"}).status_code == 400

            document = admin.get("/openapi.json").json()
            assert "/api/forecast" in document["paths"]
            assert "Forecast" in document["components"]["schemas"]


def test_dashboard_shows_the_eta_beside_queues_and_limit_keys(env):
    with serving(env.app) as server:
        minted = tokens(env.app)
        with client(server, minted["admin"]) as admin, client(server, minted["acme"]) as acme:
            queues = admin.get("/ui/queues")
            assert queues.status_code == 200, queues.text
            assert "drains in" in queues.text and "data-eta" in queues.text
            assert ">2s<" in queues.text  # 40 jobs at two keys of 10/s
            limits = admin.get("/ui/limits").text
            assert limits.count("data-eta") == 2 and ">3s<" in limits and ">1s<" in limits
            assert "style=" not in limits and "<script" not in limits  # CSP: nothing inline
            mine = acme.get("/ui/limits").text
            assert mine.count("data-eta") == 1
