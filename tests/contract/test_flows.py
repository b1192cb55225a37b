"""Flows: durable steps, per-kind throttling, metrics and insights, alerts, settings,
cron schedules, stats."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from floodway import App, Context, Status
from floodway.config import load_settings
from floodway.errors import ConfigError
from floodway.limits import Rate
from floodway.throttling import KIND_DEFAULTS, global_throttle, throttle_for

from ..conftest import running_worker, wait_for


def burst(app):
    app.worker(burst=True, poll_interval="10ms").run()


# -- throttling defaults -------------------------------------------------------------------


def test_per_kind_throttling_defaults_exactly():
    s = load_settings(env={}, pyproject=False)
    g = global_throttle(s)
    assert (g.concurrency, g.rate, g.attempts, g.backoff, g.delay) == (10, Rate(100, 60), 3, "exponential", 2.0)
    http = throttle_for("http_request", critical=False, settings=s)
    assert (http.concurrency, http.rate, http.attempts, http.backoff, http.delay) == (
        5,
        Rate(10, 10),
        3,
        "exponential",
        3.0,
    )
    crit = throttle_for("oauth_api_call", critical=True, settings=s)
    assert (crit.concurrency, crit.attempts) == (2, 5)
    for kind in ("sandbox_sync", "sandbox_async", "code_execution"):
        t = throttle_for(kind, critical=True, settings=s)
        assert (t.concurrency, t.rate, t.attempts, t.backoff, t.delay) == (3, Rate(20, 30), 2, "fixed", 5.0)
    for kind in ("data_transform", "conditional"):
        t = throttle_for(kind, critical=False, settings=s)
        assert (t.concurrency, t.rate, t.attempts, t.backoff, t.delay) == (15, Rate(50, 30), 2, "fixed", 1.0)
    ev = throttle_for("event_publish", critical=False, settings=s)
    assert (ev.concurrency, ev.rate, ev.attempts, ev.backoff, ev.delay) == (20, Rate(200, 60), 2, "fixed", 0.5)
    assert throttle_for("anything_else", critical=True, settings=s) == g
    assert set(KIND_DEFAULTS) >= {"http_request", "oauth_api_call", "sandbox_sync", "data_transform", "event_publish"}


def test_throttle_override_and_its_errors():
    s = load_settings(env={}, pyproject=False)
    t = throttle_for(
        "sandbox_sync", critical=True, settings=s, override={"concurrency": 1, "rate": "5/min", "delay": "250ms"}
    )
    assert (t.concurrency, t.rate, t.delay, t.attempts) == (1, Rate(5, 60), 0.25, 2)
    for bad in ({"concurrency": 0}, {"rate": "lots"}, {"colour": "red"}, {"backoff": "linear"}, {"attempts": 0}):
        with pytest.raises(ConfigError):
            throttle_for("http_request", critical=False, settings=s, override=bad)


# -- configuration precedence --------------------------------------------------------------


def test_settings_precedence(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[tool.floodway]\nglobal_concurrency = 4\nglobal_retry_attempts = 7\nwait_in_place = '3s'\n"
        "[tool.floodway.kinds.http_request]\nconcurrency = 9\n"
    )
    from_file = load_settings(env={}, pyproject=pyproject)
    assert (from_file.global_concurrency, from_file.global_retry_attempts, from_file.wait_in_place) == (4, 7, 3.0)
    env = {"FLOODWAY_GLOBAL_CONCURRENCY": "6", "FLOODWAY_KIND_HTTP_REQUEST__RETRY_ATTEMPTS": "8"}
    layered = load_settings(env=env, pyproject=pyproject)
    assert layered.global_concurrency == 6 and layered.global_retry_attempts == 7
    http = throttle_for("http_request", critical=False, settings=layered)
    assert (http.concurrency, http.attempts) == (9, 8)
    explicit = load_settings({"global_concurrency": 2}, env=env, pyproject=pyproject)
    assert explicit.global_concurrency == 2
    defaults = load_settings(env={}, pyproject=False)
    assert defaults.global_concurrency == 10 and defaults.global_rate_limit_period_ms == 60_000


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FLOODWAY_GLOBAL_CONCURRENCY": "many"}, "FLOODWAY_GLOBAL_CONCURRENCY='many' is not an integer"),
        ({"FLOODWAY_GLOBAL_CONCURRENCY": "0"}, "FLOODWAY_GLOBAL_CONCURRENCY='0' must be"),
        ({"FLOODWAY_GLOBAL_RATE_LIMIT_PERIOD_MS": "-5"}, "FLOODWAY_GLOBAL_RATE_LIMIT_PERIOD_MS"),
        ({"FLOODWAY_GLOBAL_RETRY_DELAY_MS": "soon"}, "FLOODWAY_GLOBAL_RETRY_DELAY_MS='soon'"),
        ({"FLOODWAY_WAIT_IN_PLACE": "forever"}, "FLOODWAY_WAIT_IN_PLACE"),
        ({"FLOODWAY_KIND_HTTP_REQUEST__SPEED": "9"}, "unknown step setting"),
        ({"FLOODWAY_GLOBAL_RETRY_BACKOFF": "linear"}, "FLOODWAY_GLOBAL_RETRY_BACKOFF"),
    ],
)
def test_invalid_environment_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_settings(env=env, pyproject=False)


def test_invalid_pyproject(tmp_path: Path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.floodway]\nglobal_concurrency = 'x'\n")
    with pytest.raises(ConfigError, match="global_concurrency"):
        load_settings(env={}, pyproject=bad)
    bad.write_text("[tool.floodway]\nnot_a_setting = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(env={}, pyproject=bad)
    bad.write_text("[tool.floodway\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(env={}, pyproject=bad)


def test_app_refuses_invalid_environment_at_start(monkeypatch, database_url):
    monkeypatch.setenv("FLOODWAY_GLOBAL_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="FLOODWAY_GLOBAL_CONCURRENCY"):
        App(database_url)


# -- steps -----------------------------------------------------------------------------------


def test_finished_steps_are_not_run_again(app):
    calls = []

    @app.task(retry=2)
    async def order(ctx: Context, order_id: int):
        a = await ctx.step("validate", lambda: calls.append("validate") or {"ok": order_id}, kind="data_transform")
        b = await ctx.step("charge", lambda: calls.append("charge") or "ch_1", kind="http_request")
        if ctx.attempt == 1:
            raise ConnectionError("lost after charging")
        c = await ctx.step("notify", lambda: calls.append("notify"), kind="event_publish", critical=False)
        return [a, b, c]

    h = app.enqueue(order, {"order_id": 7}, retry=2)
    with running_worker(app):
        assert h.result(timeout=30) == [{"ok": 7}, "ch_1", None]
    assert calls == ["validate", "charge", "notify"]
    insights = app.flow_insights(h.id)
    assert insights["totalSteps"] == 3 and insights["completedSteps"] == 3 and insights["failedSteps"] == 0
    assert insights["throttlingInsights"]["stepTypeDistribution"] == {
        "data_transform": 1,
        "http_request": 1,
        "event_publish": 1,
    }
    assert insights["throttlingInsights"]["globalDefaults"]["rateLimit"] == "100/60000ms"


def test_step_retries_then_non_critical_failure_lets_the_flow_go_on(app, monkeypatch):
    tries = []

    def flaky():
        tries.append(1)
        raise RuntimeError("webhook down")

    @app.task
    async def flow(ctx: Context):
        skipped = await ctx.step("notify", flaky, kind="event_publish", critical=False, throttle={"delay": "10ms"})
        return ["after", skipped]

    h = app.enqueue(flow)
    burst(app)
    assert h.result(timeout=10) == ["after", None]
    assert len(tries) == 2  # event publishing: 2 attempts
    [step] = app.store.load_steps(h.id).values()
    assert step.status == "failed" and step.retries == 1 and step.error["message"] == "webhook down"


def test_critical_step_failure_fails_the_flow(app):
    @app.task(retry=3)
    async def flow(ctx: Context):
        await ctx.step("compute", lambda: 1 / 0, kind="code_execution", throttle={"delay": "10ms"})
        return "unreachable"

    h = app.enqueue(flow)
    burst(app)
    job = h.job()
    assert job.status is Status.FAILED and job.attempt == 1  # final: the step used its own attempts
    assert job.error["type"] == "StepFailed" and "ZeroDivisionError" in job.error["message"]


def test_metrics_against_known_delays(app, caplog):
    # a kind paced at 1 per 300 ms (burst 1), set through configuration: the second step
    # waits ~300 ms for its token
    app2 = App(app.database_url, kinds={"paced": {"rate_limit_executions": 1, "rate_limit_period_ms": 300}})

    @app2.task
    async def paced(ctx: Context):
        def work():
            # time.sleep never returns early; an event loop's timer may (uvloop's clock counts
            # whole milliseconds), and this test measures the step's duration from below
            time.sleep(0.1)
            return "done"

        await ctx.step("first", work, kind="paced")
        await ctx.step("second", work, kind="paced")

    h = app2.enqueue(paced)
    with caplog.at_level(logging.INFO, logger="floodway.steps"):
        app2.worker(burst=True, poll_interval="10ms").run()
    steps = app2.store.load_steps(h.id)
    first, second = steps["first"], steps["second"]
    assert 0.1 <= first.duration < 0.3 and 0.1 <= second.duration < 0.3
    assert second.throttle_overhead >= 0.15  # waited for the rate's next token
    assert second.total_time == pytest.approx(second.duration + second.throttle_overhead, abs=1e-6)
    logged = [json.loads(r.getMessage()) for r in caplog.records if "throttling metrics" in r.getMessage()]
    assert {m["stepId"] for m in logged} == {"first", "second"}
    entry = [m for m in logged if m["stepId"] == "second"][0]
    assert entry["throttlingOverhead"] >= 150 and entry["throttlingConfig"]["rateLimit"] == "1/300ms"
    insights = app2.flow_insights(h.id)["throttlingInsights"]
    assert insights["averageThrottlingOverhead"] == pytest.approx(
        (first.throttle_overhead + second.throttle_overhead) / 2 * 1000, abs=0.01
    )
    app2.close()


def test_kind_concurrency_is_scoped_per_tenant(app):
    running = {"acme": 0, "globex": 0}
    peak = {"acme": 0, "globex": 0}

    @app.task
    async def flow(ctx: Context):
        async def work():
            running[ctx.tenant] += 1
            peak[ctx.tenant] = max(peak[ctx.tenant], running[ctx.tenant])
            await asyncio.sleep(0.05)
            running[ctx.tenant] -= 1

        await ctx.step("call", work, kind="http_request", critical=True, throttle={"rate": "1000/s"})

    app.enqueue_many(flow, [{}] * 6, tenant="acme")
    app.enqueue_many(flow, [{}] * 6, tenant="globex")
    app.worker(concurrency=12, burst=True, poll_interval="10ms").run()
    assert app.store.count_jobs()["complete"] == 12
    # a critical API step runs 2 at a time per tenant; the two tenants do not share slots
    assert peak == {"acme": 2, "globex": 2} or (max(peak.values()) <= 2 and min(peak.values()) >= 1)


def test_alerts_are_logged_when_thresholds_are_crossed(database_url, caplog):
    app = App(database_url, alert_throttling_overhead_ms=1, alert_retries=1)

    @app.task
    async def flow(ctx: Context):
        state = {"n": 0}

        def flaky():
            state["n"] += 1
            if state["n"] == 1:
                raise RuntimeError("once")
            return "ok"

        await ctx.step("s", flaky, kind="data_transform", throttle={"delay": "20ms"})

    app.enqueue(flow)
    with caplog.at_level(logging.WARNING, logger="floodway.alerts"):
        app.worker(burst=True, poll_interval="10ms").run()
    alerts = [json.loads(r.getMessage()) for r in caplog.records if r.name == "floodway.alerts"]
    assert {a["alert"] for a in alerts} == {"throttling_overhead", "retries"}
    app.close()


def test_declarative_order_flow(app):
    seen = []

    def validate(config, variables, results):
        seen.append("validate")
        return {"valid": variables["orderId"] == "order-12345"}

    def update_inventory(config, variables, results):
        seen.append("inventory")
        assert results["validate-order"]["valid"]
        return {"updated": len(variables["items"])}

    flow = app.flow(
        "ecommerce-order-processing",
        steps=[
            {"id": "validate-order", "type": "data_transform", "config": {"script": "validateOrder"}},
            {
                "id": "update-inventory",
                "type": "sandbox_sync",
                "config": {
                    "critical": True,
                    "throttlingOverride": {
                        "concurrency": 1,
                        "rateLimit": {"maxExecutions": 5, "perMilliseconds": 60000},
                    },
                },
            },
        ],
        handlers={"data_transform": validate, "sandbox_sync": update_inventory},
    )
    h = app.enqueue(flow, {"orderId": "order-12345", "items": [{"sku": "W-1", "quantity": 2}]})
    burst(app)
    assert h.result(timeout=10) == {"validate-order": {"valid": True}, "update-inventory": {"updated": 1}}
    assert seen == ["validate", "inventory"]
    steps = app.store.load_steps(h.id)
    assert steps["update-inventory"].throttle == {"concurrency": 1, "rateLimit": "5/60000ms", "maxRetries": 2}


def test_declarative_flow_errors(app):
    with pytest.raises(ConfigError, match="needs an 'id'"):
        app.flow("f1", steps=[{"type": "data_transform"}], handlers={"data_transform": print})
    with pytest.raises(ConfigError, match="no handler"):
        app.flow("f2", steps=[{"id": "a", "type": "sandbox_sync"}])
    with pytest.raises(ConfigError, match="appears twice"):
        app.flow("f3", steps=[{"id": "a", "type": "http_request"}, {"id": "a", "type": "http_request"}])


def test_step_bad_input(app):
    @app.task(retry=0)
    async def bad(ctx: Context):
        await ctx.step("", lambda: 1)

    h = app.enqueue(bad)
    burst(app)
    assert "step id" in h.job().error["message"]


# -- schedules -----------------------------------------------------------------------------


def test_schedule_ticks_enqueue_once_with_two_workers(app):
    from floodway.schedule import run_due, sync_schedules

    @app.task
    def tick():
        return "tock"

    app.schedule(tick, cron="* * * * *", name="every-minute")
    sync_schedules(app)
    [info] = app.store.list_schedules()
    # pretend the last tick was 5 minutes ago: skip policy enqueues only the latest missed tick
    app.store.advance_schedule("every-minute", info.last_tick, info.last_tick - 300)
    other = App(app.database_url)
    other.task(tick.fn, name="tick")
    other.schedule("tick", cron="* * * * *", name="every-minute")
    # both look at the same moment, the one the schedule was synced at (a clock read here could
    # fall on the other side of a minute and see a new tick)
    first = run_due(app, now=info.last_tick)
    second = run_due(other, now=info.last_tick)
    assert len(first) == 1 and second == []
    assert app.store.count_jobs()["waiting"] == 1
    assert first[0].startswith("cron:every-minute:")
    other.close()


def test_catch_up_policy_enqueues_every_missed_tick(app):
    from floodway.schedule import run_due, sync_schedules

    @app.task
    def tick():
        return 1

    app.schedule(tick, cron="*/10 * * * *", missed="catch_up")
    sync_schedules(app)
    [info] = app.store.list_schedules()
    app.store.advance_schedule("tick", info.last_tick, info.last_tick - 3600)
    # the six ticks of the hour before the sync, looked at from the sync's moment (a clock read
    # here could fall past the next */10 boundary and see a seventh)
    ids = run_due(app, now=info.last_tick)
    assert len(ids) == 6 and len(set(ids)) == 6
    assert run_due(app, now=info.last_tick) == []


def test_schedule_runs_in_a_worker(app):
    from floodway.schedule import sync_schedules

    @app.task
    def tick():
        return "tock"

    app.schedule(tick, cron="* * * * *")
    sync_schedules(app)
    [info] = app.store.list_schedules()
    app.store.advance_schedule("tick", info.last_tick, info.last_tick - 120)
    with running_worker(app):
        wait_for(lambda: app.store.count_jobs()["complete"] == 1, message="the missed tick to run")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cron": "every minute"}, "not a valid cron"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "* * * * *", "missed": "sometimes"}, "missed must be"),
        ({"cron": "* * * * *", "args": {"nope": 1}}, "do not match"),
        ({"cron": "* * * * *", "colour": "red"}, "unknown option"),
    ],
)
def test_bad_schedules(app, options, message):
    @app.task
    def tick(): ...

    with pytest.raises((ConfigError, Exception), match=message):
        app.schedule(tick, **options)


# -- stats ---------------------------------------------------------------------------------


def test_stats_and_prometheus(app):
    from floodway.metrics import exposition

    app.limit("api", rate="100/s")

    @app.task(limits=["api"], queue=None)
    def work():
        return 1

    app.enqueue_many(work, [{}] * 5)
    stats = app.stats()
    assert stats["queues"]["default"]["depth"] == 5 and stats["queues"]["default"]["rate_in"] > 0
    assert stats["limits"]["api"]["depth"] == 5
    burst(app)
    stats = app.stats()
    # 5 jobs finished within a second or two: the rate over the time observed, not 5 / 60 s
    assert stats["queues"]["default"]["depth"] == 0 and 5 / 60 < stats["queues"]["default"]["rate_out"] <= 5.0
    assert stats["limits"]["api"]["admitted"] == 5
    text = exposition(app).decode()
    assert 'floodway_jobs{queue="default",status="complete"} 5.0' in text
    assert 'floodway_limit_admitted{limit="api"} 5.0' in text
