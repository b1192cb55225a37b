"""The ``floodway`` command line, run as real subprocesses against real SQLite files.

Each test writes a small app module (``cliapp.py``) into its ``tmp_path`` and runs
``python -m floodway`` with ``cwd=tmp_path`` so that ``--app cliapp:app`` imports it. Commands
that only read or change jobs get just ``--database``. Nothing sleeps and hopes: a condition
that takes time (a background worker registering) is polled until a bounded deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from .. import conftest

SRC = str(Path(__file__).resolve().parents[2] / "src")
TIMEOUT = 60.0

APP_SOURCE = textwrap.dedent(
    """
    import asyncio
    import os

    from floodway import App

    HERE = os.path.dirname(os.path.abspath(__file__))
    app = App("sqlite:///" + os.path.join(HERE, "jobs.db") + "?synchronous=normal")
    app.queue("emails", max_concurrency=2)


    @app.task
    def add(a: int, b: int) -> int:
        return a + b


    @app.task(retry=0)
    def boom(message: str):
        raise RuntimeError(message)


    @app.task(retry=0)
    def fails_once(marker: str) -> str:
        path = os.path.join(HERE, marker)
        if not os.path.exists(path):
            open(path, "w").close()
            raise RuntimeError("the first run fails")
        return "the second run works"


    @app.task
    async def loop_name() -> str:
        return type(asyncio.get_running_loop()).__module__


    @app.task(queue="emails")
    def send(to: str) -> dict:
        return {"sent": to}


    app.limit("api", rate="10/s", burst=2)
    app.limit("per-tenant", concurrency=2, key="{tenant}")


    @app.task(limits=["api", "per-tenant"])
    def call(tenant: str) -> str:
        return tenant


    @app.task
    async def checkout(ctx, order: int):
        await ctx.step("validate", lambda: order > 0, kind="data_transform")
        return await ctx.step("charge", lambda: f"charged {order}", kind="http_request")


    # yearly, so no tick lands inside a test and adds a job to a burst's count
    app.schedule(add, cron="0 0 1 1 *", args={"a": 1, "b": 2}, name="new-year")
    """
)


class Cli:
    """Runs ``python -m floodway`` in ``tmp_path`` against ``tmp_path/jobs.db``."""

    def __init__(self, path: Path):
        self.path = path
        # synchronous=normal: no fsync per commit, which keeps these many short processes fast
        self.url = f"sqlite:///{path / 'jobs.db'}?synchronous=normal"
        (path / "cliapp.py").write_text(APP_SOURCE)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOODWAY_")}
        self.env["PYTHONPATH"] = os.pathsep.join([SRC, str(path)])

    def argv(self, args: tuple[str, ...], *, app: bool, as_json: bool, database: bool) -> list[str]:
        argv = [sys.executable, "-m", "floodway"]
        if as_json:
            argv.append("--json")
        if app:
            argv += ["--app", "cliapp:app"]
        if database:
            argv += ["--database", self.url]
        return argv + list(args)

    def run(
        self,
        *args: str,
        app: bool = False,
        as_json: bool = False,
        database: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(args, app=app, as_json=as_json, database=database),
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    def run_all(self, commands: list[tuple[tuple[str, ...], bool]]) -> list[subprocess.CompletedProcess[str]]:
        """Run independent (args, with --app) commands side by side; results in the same order."""
        procs = [
            (
                args,
                subprocess.Popen(
                    self.argv(args, app=app, as_json=False, database=True),
                    cwd=self.path,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for args, app in commands
        ]
        results = []
        for args, proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
        return results

    def ok(self, *args: str, **kwargs: Any) -> str:
        proc = self.run(*args, **kwargs)
        assert proc.returncode == 0, f"floodway {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        return proc.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, as_json=True, **kwargs))

    def enqueue(self, task: str, args: dict[str, Any], *options: str) -> str:
        out = self.json("enqueue", task, "--args", json.dumps(args), *options, app=True)
        assert out["created"] is True
        return out["id"]

    def burst(self) -> int:
        """Run a worker until nothing is ready; return how many jobs it processed."""
        return self.json("worker", "--burst", "--poll-interval", "20ms", app=True)["processed"]

    def count(self) -> int:
        return sum(sum(q["counts"].values()) for q in self.json("queues"))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def wait_for(predicate: Callable[[], Any], message: str, timeout: float = TIMEOUT) -> Any:
    return conftest.wait_for(predicate, timeout, message)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- happy paths --------------------------------------------------------------------------------
def test_enqueue_worker_result_status_events_jobs(cli: Cli) -> None:
    job_id = cli.enqueue("add", {"a": 2, "b": 3})
    assert cli.json("enqueue", "add", "--args", '{"a": 1, "b": 1}', "--id", "fixed", app=True) == {
        "id": "fixed",
        "created": True,
    }
    assert "exists already" in cli.ok("enqueue", "add", "--args", '{"a": 1, "b": 1}', "--id", "fixed", app=True)

    assert cli.burst() == 2

    assert cli.json("result", job_id) == 5
    assert cli.ok("result", "fixed", "--wait", "--timeout", "5s").strip() == "2"

    status = cli.json("status", job_id)
    assert status["id"] == job_id
    assert (status["status"], status["attempt"], status["queue"], status["task"]) == ("complete", 1, "default", "add")
    assert status["finished_at"] and status["created_at"] and status["result"] == 5
    text = cli.ok("status", job_id)
    assert job_id in text and "complete" in text and "1 of 7" in text
    assert "throttled" in text and "s waiting on limits" in text  # the table shows throttled time

    timeline = cli.json("events", job_id)
    assert [(e["from"], e["to"]) for e in timeline] == [
        (None, "waiting"),
        ("waiting", "running"),
        ("running", "complete"),
    ]
    text = cli.ok("events", job_id)
    assert "waiting → running" in text and "enqueued" in text

    assert {j["id"] for j in cli.json("jobs")} == {job_id, "fixed"}
    assert len(cli.json("jobs", "--status", "complete", "--status", "failed", "--task", "add", "--limit", "1")) == 1
    text = cli.ok("jobs")
    assert job_id in text and "2 job(s)" in text


def test_enqueue_options_jobs_filters_and_queues(cli: Cli) -> None:
    job_id = cli.enqueue("send", {"to": "ada@example.com"}, "--delay", "1h", "--priority", "7", "--tenant", "acme")
    other = cli.enqueue("add", {"a": 1, "b": 2}, "--queue", "bulk")
    status = cli.json("status", job_id)
    assert (status["status"], status["queue"], status["priority"], status["tenant"]) == (
        "scheduled",
        "emails",
        7,
        "acme",
    )
    assert [j["id"] for j in cli.json("jobs", "--tenant", "acme", "--status", "SCHEDULED")] == [job_id]
    assert [j["id"] for j in cli.json("jobs", "--queue", "bulk")] == [other]

    queues = {q["name"]: q for q in cli.json("queues")}
    assert queues["emails"]["max_concurrency"] == 2 and queues["emails"]["counts"]["scheduled"] == 1
    assert queues["default"]["max_concurrency"] is None
    assert queues["bulk"]["counts"]["waiting"] == 1
    text = cli.ok("queues")
    assert "emails" in text and "unlimited" in text


def test_enqueue_file_500_lines_then_worker(cli: Cli, tmp_path: Path) -> None:
    lines = [json.dumps({"a": i, "b": 1}) for i in range(500)]
    lines[100:100] = ["", "   "]  # empty lines are skipped
    path = write_jsonl(tmp_path / "jobs.jsonl", lines)
    out = cli.json("enqueue-file", "add", str(path), "--batch-size", "64", app=True)
    assert out == {"task": "add", "file": str(path), "jobs": 500, "created": 500, "existing": 0}

    assert cli.burst() == 500

    done = cli.json("jobs", "--status", "complete", "--limit", "1000")
    assert sorted(j["result"] for j in done) == list(range(1, 501))
    assert cli.count() == 500


def test_enqueue_file_with_id_is_idempotent(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "jobs.jsonl", [json.dumps({"a": i, "b": i}) for i in range(20)])
    first = cli.json("enqueue-file", "add", str(path), "--id", "import", "--queue", "bulk", app=True)
    assert (first["created"], first["existing"]) == (20, 0)
    text = cli.ok("enqueue-file", "add", str(path), "--id", "import", "--batch-size", "3", app=True)
    assert "0 new, 20 existing" in text
    assert cli.count() == 20
    assert cli.json("status", "import-19")["args"] == {"a": 19, "b": 19}


@pytest.mark.parametrize(
    "bad, line, message",
    [
        ("{not json", 6, "not valid JSON"),
        ("[1, 2]", 6, "must be a JSON object"),
        ('{"a": NaN, "b": 1}', 6, "not valid JSON"),
        ('{"a": 1}', 96, "missing a required argument"),  # after nine batches of 10 good lines
    ],
)
def test_enqueue_file_bad_line_writes_nothing(cli: Cli, tmp_path: Path, bad: str, line: int, message: str) -> None:
    lines = [json.dumps({"a": i, "b": i}) for i in range(100)]
    lines.insert(line - 1, bad)
    path = write_jsonl(tmp_path / "jobs.jsonl", lines)
    proc = cli.run("enqueue-file", "add", str(path), "--batch-size", "10", app=True, as_json=True)
    assert proc.returncode == 2, proc.stderr
    assert f"line {line} of jobs.jsonl" in proc.stderr and message in proc.stderr
    assert proc.stdout == ""
    assert cli.count() == 0


def test_cancel_a_waiting_job(cli: Cli) -> None:
    job_id = cli.enqueue("add", {"a": 1, "b": 2})
    assert cli.json("cancel", job_id) == {"id": job_id, "status": "cancelled", "cancel_requested": False}
    assert "cancelled" in cli.ok("cancel", job_id)  # cancelling again is harmless
    proc = cli.run("result", job_id)
    assert proc.returncode == 1 and "cancelled" in proc.stderr
    assert cli.burst() == 0
    assert cli.json("status", job_id)["status"] == "cancelled"


def test_retry_a_failed_job(cli: Cli) -> None:
    job_id = cli.enqueue("fails_once", {"marker": "ran-once"})
    assert cli.burst() == 1

    assert cli.json("retry", job_id) == {"id": job_id, "status": "waiting"}
    assert [(e["from"], e["reason"]) for e in cli.json("events", job_id)][-2:] == [
        ("running", None),
        ("failed", "retried by user"),
    ]
    assert cli.burst() == 1
    assert cli.json("result", job_id) == "the second run works"

    proc = cli.run("retry", job_id)  # a complete job cannot run again
    assert proc.returncode == 1 and "complete" in proc.stderr  # well-formed, refused


def test_purge_old_complete_jobs(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "two.jsonl", ['{"a": 1, "b": 1}', '{"a": 2, "b": 2}'])
    assert cli.json("enqueue-file", "add", str(path), app=True)["created"] == 2
    failed = cli.enqueue("boom", {"message": "kaboom"})
    later = cli.enqueue("add", {"a": 0, "b": 0}, "--delay", "1h")
    assert cli.burst() == 3

    assert cli.json("purge", "--older-than", "1h")["purged"] == 0
    out = cli.json("purge", "--older-than", "0s")
    assert out["purged"] == 2 and out["statuses"] == ["complete"]
    assert {j["id"] for j in cli.json("jobs")} == {failed, later}
    assert "purged 1 failed job(s)" in cli.ok("purge", "--older-than", "0s", "--status", "failed")
    assert [j["id"] for j in cli.json("jobs")] == [later]


def test_workers_and_result_wait_with_a_running_worker(cli: Cli) -> None:
    job_id = cli.enqueue("add", {"a": 20, "b": 22})
    not_yet, timed_out = cli.run_all(
        [(("result", job_id), False), (("result", job_id, "--wait", "--timeout", "0.2"), False)]
    )
    assert not_yet.returncode == 1 and "waiting" in not_yet.stderr and "--wait" in not_yet.stderr
    assert timed_out.returncode == 1 and "still waiting" in timed_out.stderr

    worker = subprocess.Popen(
        cli.argv(("worker", "--poll-interval", "20ms"), app=True, as_json=False, database=True),
        cwd=cli.path,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert cli.json("result", job_id, "--wait", "--timeout", "30s") == 42
        live = wait_for(lambda: cli.json("workers"), "the worker to register")
        assert len(live) == 1
        assert live[0]["pid"] == worker.pid and live[0]["running"] == 0
        assert live[0]["heartbeat_age"] >= 0 and live[0]["stopped_at"] is None
        assert str(worker.pid) in cli.ok("workers")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=TIMEOUT) == 0
    assert cli.json("workers") == []
    assert cli.json("workers", "--all")[0]["stopped_at"] is not None


def test_read_commands_work_with_only_the_database_env_var(cli: Cli) -> None:
    job_id = cli.enqueue("add", {"a": 1, "b": 1})
    env = {"FLOODWAY_DATABASE_URL": cli.url}
    assert cli.json("status", job_id, database=False, env=env)["status"] == "waiting"
    assert cli.json("migrate", database=False, env=env)["applied"] == []


def test_basic_demo_exits_0(cli: Cli) -> None:
    # the Black Friday demo (the default) has its own tests in tests/test_demo.py
    out = cli.ok("demo", "--basic", database=False)
    assert "finished as expected" in out


# -- failures -------------------------------------------------------------------------------------
def test_result_of_a_failed_job_exits_1(cli: Cli) -> None:
    job_id = cli.enqueue("boom", {"message": "kaboom"})
    assert cli.burst() == 1
    proc = cli.run("result", job_id, as_json=True)
    assert proc.returncode == 1
    assert "RuntimeError: kaboom" in proc.stderr and proc.stdout == ""
    status = cli.json("status", job_id)
    assert status["status"] == "failed" and status["error"]["type"] == "RuntimeError"
    assert "RuntimeError: kaboom" in cli.ok("status", job_id)


def test_unknown_job_id_exits_1(cli: Cli) -> None:
    commands = ["status", "result", "events", "cancel", "retry"]
    for command, proc in zip(commands, cli.run_all([((c, "no-such-job"), False) for c in commands])):
        assert proc.returncode == 1, (command, proc.stderr)
        assert "no job with id 'no-such-job'" in proc.stderr and proc.stdout == "", command


USAGE_ERRORS: list[tuple[tuple[str, ...], bool, str]] = [
    # (arguments, with --app, expected on stderr)
    (("enqueue", "add", "--args", "{bad json"), True, "--args is not valid JSON"),
    (("enqueue", "add", "--args", "[1, 2]"), True, "must be a JSON object"),
    (("enqueue", "add", "--args", '{"a": 1}'), True, "missing a required argument"),
    (("enqueue", "add", "--args", '{"a": 1, "b": 2}', "--delay", "5 parsecs"), True, "cannot parse"),
    (("enqueue", "add", "--priority", "high"), True, "--priority"),
    (("enqueue", "no_such_task"), True, "unknown task 'no_such_task'"),
    (("enqueue-file", "no_such_task", "cliapp.py"), True, "unknown task 'no_such_task'"),
    (("enqueue-file", "add", "missing.jsonl"), True, "missing.jsonl"),
    (("enqueue", "add", "--args", '{"a": 1, "b": 2}'), False, "needs --app"),
    (("purge", "--older-than", "7 days"), False, "cannot parse '7 days'"),
    (("purge",), False, "--older-than"),
    (("purge", "--older-than", "1d", "--status", "waiting"), False, "'waiting' is not one of"),
    (("jobs", "--status", "bogus"), False, "'bogus' is not one of"),
    (("jobs", "--limit", "0"), False, "--limit"),
    (("result", "some-id", "--wait", "--timeout", "soon"), False, "cannot parse"),
    (("no-such-command",), False, "No such command"),
    (("worker", "--prefetch", "-1"), True, "--prefetch"),
    (("worker", "--loop", "trio"), True, "'trio' is not one of"),
    (("worker", "--book-ahead", "5s"), True, "book_ahead must be at most 1s"),
    (("worker", "--book-ahead", "soon"), True, "cannot parse 'soon'"),
]


def test_usage_errors_exit_2_and_write_nothing(cli: Cli) -> None:
    results = cli.run_all([(args, app) for args, app, _ in USAGE_ERRORS])
    for (args, _, message), proc in zip(USAGE_ERRORS, results):
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stdout == "", args
    assert cli.count() == 0


def test_unimportable_app_exits_2(cli: Cli) -> None:
    (cli.path / "broken.py").write_text("raise RuntimeError('import-time bug')\n")
    specs = ["no_such_module:app", "cliapp:nothing", "cliapp:add", "broken:app"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "floodway", "--app", spec, "--database", cli.url, "enqueue", "add"],
            cwd=cli.path,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    for spec, proc in zip(specs, procs):
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 2, (spec, err)
        assert f"--app '{spec}'" in err and out == "", (spec, err)


# -- limits, pause and resume ---------------------------------------------------------------------
def test_limits_list_and_set(cli: Cli) -> None:
    cli.enqueue("call", {"tenant": "acme"})
    assert cli.burst() == 1
    listed = {d["name"]: d for d in cli.json("limits", app=True)}
    assert listed["api"]["rate"] == "10/s" and listed["api"]["keys"][0]["admitted"] == 1
    assert listed["per-tenant"]["keys"][0]["key"] == "acme"
    assert "api" in cli.ok("limits", app=True)
    changed = cli.json("limits", "set", "api", "--rate", "20/s", "--burst", "4")
    assert (changed["rate"], changed["burst"]) == ("20/s", 4)
    # the change is in the store: a reader with only the database sees it, and a worker restart keeps it
    assert {d["name"]: d for d in cli.json("limits")}["api"]["rate"] == "20/s"
    cli.enqueue("call", {"tenant": "acme"})
    cli.burst()
    assert {d["name"]: d for d in cli.json("limits")}["api"]["rate"] == "20/s"


def test_limits_show_what_was_learned_and_reset_forgets_it(cli: Cli) -> None:
    from floodway import App
    from floodway.quota import Observation

    cli.enqueue("call", {"tenant": "acme"})  # declares the limits in the store
    app = App(cli.url)
    try:
        now = time.time()
        app.store.observe_limit("api", "", Observation(now=now, accepted=5))
        app.store.observe_limit("api", "", Observation(now=now + 0.5, token_at=now + 0.4, throttled=1, wait=1.0))
    finally:
        app.close()
    key = {d["name"]: d for d in cli.json("limits", app=True)}["api"]["keys"][0]
    assert key["source"] == "429s" and key["effective_rate"] < 10, key
    assert key["throttled"] == 1 and key["throttled_last_minute"] == 1 and key["cuts"] == 1 and key["pauses"] == 0
    table = cli.ok("limits", app=True)
    assert "429s" in table and "effective" in table
    assert cli.json("limits", "reset", "api")["forgotten"] == 1
    key = {d["name"]: d for d in cli.json("limits", app=True)}["api"]["keys"][0]
    assert key["source"] == "declared" and key["effective_rate"] == 10, key
    # the operator's rate is a ceiling: adaptive goes off unless asked for
    changed = cli.json("limits", "set", "api", "--rate", "5/s", "--adaptive")
    assert changed["adaptive"] is True
    assert cli.json("limits", "set", "api", "--rate", "6/s")["adaptive"] is False


@pytest.mark.parametrize(
    "args, message, code",
    [
        (("limits", "reset", "nope"), "unknown limit", 2),
        (("limits", "set", "api", "--rate", "fast"), "cannot parse", 2),
        (("limits", "set", "nope", "--rate", "1/s"), "unknown limit", 2),
        (("limits", "set", "api"), "give --rate", 2),
        (("pause",), "name one job", 2),
        (("pause", "x", "--queue", "q"), "name one job", 2),
        (("pause", "missing-job"), "no job", 1),  # well-formed: the job is not there
    ],
)
def test_limit_and_pause_usage_errors(cli: Cli, args: tuple[str, ...], message: str, code: int) -> None:
    cli.enqueue("call", {"tenant": "acme"})  # declares the limits in the store
    proc = cli.run(*args)
    assert proc.returncode == code and message in proc.stderr, (proc.returncode, proc.stderr)


def test_worker_runs_jobs_on_the_loop_it_is_given(cli: Cli) -> None:
    for loop, module in [("asyncio", "asyncio.unix_events"), ("uvloop", "uvloop"), ("auto", "uvloop")]:
        job_id = cli.enqueue("loop_name", {})
        assert cli.json("worker", "--burst", "--loop", loop, app=True)["processed"] == 1
        assert cli.json("result", job_id) == module, loop


def test_pause_and_resume_a_job_and_a_queue(cli: Cli) -> None:
    paused = cli.enqueue("add", {"a": 1, "b": 2})
    other = cli.enqueue("add", {"a": 2, "b": 2})
    assert cli.json("pause", paused)["paused"] is True
    assert cli.burst() == 1
    assert cli.json("status", paused)["status"] == "waiting"
    assert cli.json("result", other) == 4
    cli.ok("resume", paused)
    assert cli.burst() == 1 and cli.json("result", paused) == 3

    cli.ok("pause", "--queue", "emails")
    mail = cli.enqueue("send", {"to": "a@example.com"})
    assert cli.burst() == 0
    assert [q["paused"] for q in cli.json("queues") if q["name"] == "emails"] == [True]
    cli.ok("resume", "--queue", "emails")
    assert cli.burst() == 1 and cli.json("result", mail) == {"sent": "a@example.com"}


def test_stats_schedules_and_flow(cli: Cli) -> None:
    job = cli.enqueue("checkout", {"order": 7})
    assert cli.burst() == 1
    flow = cli.json("flow", job)
    assert flow["totalSteps"] == 2 and flow["completedSteps"] == 2
    assert flow["throttlingInsights"]["stepTypeDistribution"] == {"data_transform": 1, "http_request": 1}
    assert "validate" in cli.ok("flow", job)
    stats = cli.json("stats")
    assert stats["queues"]["default"]["depth"] == 0 and stats["queues"]["default"]["rate_out"] > 0
    assert "step:http_request:critical" in stats["limits"]
    [schedule] = cli.json("schedules")  # the worker wrote the app's schedule to the store
    assert (schedule["name"], schedule["cron"], schedule["args"]) == ("new-year", "0 0 1 1 *", {"a": 1, "b": 2})
    assert schedule["next_tick"] > schedule["last_tick"]
    assert cli.run("stats", "--window", "0s").returncode == 2
    assert cli.run("flow", "missing").returncode == 1
