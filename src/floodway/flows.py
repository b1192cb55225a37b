"""Flows: durable steps with per-kind throttling and per-step metrics.

``await ctx.step("charge", fn, *args, kind="http_request", critical=True)`` runs ``fn`` once
for the job: its result is stored, so a retried, rescued or resumed job gets the stored result
for a finished step without running it again. Before each attempt the step takes a slot of its
kind's concurrency limit and a token of its kind's rate (both held in the store, so they bind
every worker, and scoped per tenant when the job has one). A failed attempt is retried with the
kind's policy; a critical step that still fails fails the job, a non-critical one is recorded
and the flow goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .alerts import check_step
from .errors import ConfigError, Fail, RateLimited, error_info
from .jobs import StepStatus
from .limits import LimitSpec
from .resumable import call_maybe_async, decode_result, encode_result
from .store.base import StepRecord
from .throttling import Throttle, canonical_kind, global_throttle, kind_limit_name, throttle_for

if TYPE_CHECKING:
    from .app import App
    from .context import Context

log = logging.getLogger("floodway.steps")


class StepFailed(Fail):
    """A critical step failed after all its attempts: the flow (job) fails."""

    def __init__(self, step_id: str, error: dict[str, Any]):
        self.step_id = step_id
        self.error = error
        super().__init__(f"critical step {step_id!r} failed: {error.get('type')}: {error.get('message')}")


def _step_limit(app: "App", kind: str, critical: bool, step_id: str, throttle: Throttle, custom: bool) -> str:
    """Declare (once per process) the store limit that paces this kind of step."""
    name = kind_limit_name(kind, critical) + (f":{step_id}" if custom else "")
    spec = LimitSpec(name, throttle.rate, 1, throttle.concurrency, None, False)
    if app.limits.get(name) != spec:
        app.store.declare_limit(spec)  # first: a concurrent step must not use it before it exists
        app.limits[name] = spec
    return name


async def run_step(
    ctx: "Context",
    step_id: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    kind: str,
    critical: bool,
    throttle: Mapping[str, Any] | None,
) -> Any:
    if not isinstance(step_id, str) or not step_id:
        raise ConfigError(f"ctx.step: the step id must be a non-empty string, got {step_id!r}")
    kind = canonical_kind(kind)
    app = ctx.app
    steps = await ctx.step_records()
    done = steps.get(step_id)
    if done is not None and (done.status == StepStatus.COMPLETE or not done.critical):
        return decode_result(done.result_json) if done.status == StepStatus.COMPLETE else None

    settings = throttle_for(kind, critical=critical, settings=app.settings, override=throttle)
    limit = await asyncio.to_thread(_step_limit, app, kind, critical, step_id, settings, bool(throttle))
    key = ctx.tenant or ""
    policy = settings.retry
    started_wall, started = time.time(), time.monotonic()
    attempts, duration, error = 0, 0.0, None
    result: Any = None
    while True:
        attempts += 1
        holder = f"{step_id}#{attempts}"
        pause = 0.01
        while not await asyncio.to_thread(app.store.acquire_slot, ctx.job_id, limit, key, holder):
            await asyncio.sleep(pause)  # a slot frees when another step of this kind ends
            pause = min(pause * 2, 0.5)
        try:
            await ctx.acquire(limit, key=key)
            began = time.monotonic()
            try:
                result = await call_maybe_async(fn, *args, **kwargs)
                error = None
            except RateLimited:
                raise  # the job goes back to scheduled; finished steps stay finished
            except Exception as exc:
                error = error_info(exc)
            duration = time.monotonic() - began
        finally:
            await asyncio.to_thread(app.store.release_slot, ctx.job_id, limit, key, holder)
        if error is None or attempts >= settings.attempts:
            break
        delay = policy.delay(attempts)
        log.info(
            json.dumps(
                {
                    "event": "step retry",
                    "stepId": step_id,
                    "stepType": kind,
                    "executionId": ctx.job_id,
                    "attempt": attempts,
                    "retryIn": round(delay * 1000),
                    "error": error["message"],
                }
            )
        )
        await asyncio.sleep(delay)

    total = time.monotonic() - started
    record = StepRecord(
        job_id=ctx.job_id,
        step_id=step_id,
        kind=kind,
        critical=critical,
        status=(StepStatus.COMPLETE if error is None else StepStatus.FAILED).value,
        result_json=encode_result(result) if error is None else None,
        error=error,
        attempts=attempts,
        retries=attempts - 1,
        duration=duration,
        total_time=total,
        throttle_overhead=max(0.0, total - duration),
        throttle=settings.describe(),
        tenant=ctx.tenant,
        started_at=started_wall,
        finished_at=time.time(),
    )
    await asyncio.to_thread(app.store.record_step, ctx.worker_id, ctx.job.attempt, record)
    steps[step_id] = record
    log.info(json.dumps(step_metrics(record)))
    check_step(app, record)
    if error is not None:
        if critical:
            raise StepFailed(step_id, error)
        log.warning(
            "non-critical step %s of job %s failed; the flow goes on: %s", step_id, ctx.job_id, error["message"]
        )
        return None
    return result


def step_metrics(record: StepRecord) -> dict[str, Any]:
    """The per-step log line (milliseconds)."""
    return {
        "event": "step throttling metrics",
        "stepId": record.step_id,
        "stepType": record.kind,
        "executionId": record.job_id,
        "status": record.status,
        "critical": record.critical,
        "duration": round(record.duration * 1000, 3),
        "totalStepTime": round(record.total_time * 1000, 3),
        "throttlingOverhead": round(record.throttle_overhead * 1000, 3),
        "retryCount": record.retries,
        "throttlingConfig": record.throttle,
    }


def step_summary(steps: Sequence[StepRecord]) -> dict[str, Any]:
    """What a flow's steps add up to: how many, how they ended, their kinds, the average
    throttling overhead (ms) and the retries. One computation for the insights and the log."""
    distribution: dict[str, int] = {}
    for s in steps:
        distribution[s.kind] = distribution.get(s.kind, 0) + 1
    overheads = [s.throttle_overhead for s in steps]
    return {
        "totalSteps": len(steps),
        "completedSteps": sum(1 for s in steps if s.status == StepStatus.COMPLETE),
        "failedSteps": sum(1 for s in steps if s.status == StepStatus.FAILED),
        "stepTypeDistribution": distribution,
        "averageThrottlingOverhead": round(sum(overheads) / len(overheads) * 1000, 3) if overheads else 0.0,
        "totalRetries": sum(s.retries for s in steps),
    }


def log_flow_finished(job_id: str, steps: Sequence[StepRecord], status: str) -> None:
    """Log a flow's summary when its run ends (the worker calls this through its hooks)."""
    if steps:
        logging.getLogger("floodway.flows").info(
            json.dumps({"event": "flow finished", "executionId": job_id, "status": status, **step_summary(steps)})
        )


def flow_insights(app: "App", job_id: str) -> dict[str, Any]:
    """A flow's insights, computed from the stored steps."""
    steps = list(app.store.load_steps(job_id).values())
    job = app.store.get_job(job_id)
    summary = step_summary(steps)
    defaults = global_throttle(app.settings)
    return {
        "executionId": job_id,
        "status": job.status.value if job else None,
        "totalSteps": summary["totalSteps"],
        "completedSteps": summary["completedSteps"],
        "failedSteps": summary["failedSteps"],
        "throttlingInsights": {
            "globalDefaults": {
                "concurrency": defaults.concurrency,
                "rateLimit": f"{int(defaults.rate.count)}/{int(defaults.rate.period * 1000)}ms",
                "retry": f"{defaults.backoff}-{defaults.attempts}x",
            },
            "stepTypeDistribution": summary["stepTypeDistribution"],
            "averageThrottlingOverhead": summary["averageThrottlingOverhead"],
            "totalRetries": summary["totalRetries"],
        },
        "steps": [step_metrics(s) for s in steps],
    }


def build_declarative_flow(
    app: "App", name: str, steps: Sequence[Mapping[str, Any]], handlers: Mapping[str, Callable[..., Any]]
) -> Callable[..., Any]:
    """The task function of a flow given as data (as in an e-commerce order flow): each step
    ``{"id", "type", "config"}`` runs through ``ctx.step`` with its kind's throttling; its handler
    is ``handlers[type]`` (called with ``config, variables, results``), or the built-in
    ``http_request`` handler (``config``: url, method, json, headers)."""
    seen: set[str] = set()
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping) or not isinstance(step.get("id"), str) or not step.get("id"):
            raise ConfigError(f"flow {name!r}: step {index} needs an 'id'")
        if step["id"] in seen:
            raise ConfigError(f"flow {name!r}: step id {step['id']!r} appears twice")
        seen.add(step["id"])
        kind = step.get("type")
        if not isinstance(kind, str):
            raise ConfigError(f"flow {name!r}: step {step['id']!r} needs a 'type'")
        if kind not in handlers and canonical_kind(kind) not in ("http_request", "oauth_api_call"):
            raise ConfigError(f"flow {name!r}: no handler for step type {kind!r} (step {step['id']!r})")
        config = step.get("config", {})
        if not isinstance(config, Mapping):
            raise ConfigError(f"flow {name!r}: step {step['id']!r} config must be a mapping")

    async def flow(ctx: "Context", **variables: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for step in steps:
            config = dict(step.get("config", {}))
            critical = config.pop("critical", True) is not False
            throttle = config.pop("throttlingOverride", None) or config.pop("throttle", None)
            if throttle is not None:
                throttle = _from_camel_override(throttle)
            handler = handlers.get(step["type"]) or _http_handler(ctx)
            results[step["id"]] = await ctx.step(
                step["id"],
                handler,
                config,
                variables,
                dict(results),
                kind=step["type"],
                critical=critical,
                throttle=throttle,
            )
        return results

    flow.__name__ = name
    return flow


def _from_camel_override(override: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the camelCase ``throttlingOverride`` shape as well as floodway's."""
    out = dict(override)
    rate = out.pop("rateLimit", None)
    if isinstance(rate, Mapping):
        out["rate"] = f"{rate['maxExecutions']}/{rate['perMilliseconds']}ms"
    retry = out.pop("retry", None)
    if isinstance(retry, Mapping):
        out["attempts"] = retry.get("maxAttempts", out.get("attempts"))
        backoff = retry.get("backoff", {})
        if "type" in backoff:
            out["backoff"] = backoff["type"]
        if "delay" in backoff:
            out["delay"] = backoff["delay"] / 1000
    return {k: v for k, v in out.items() if v is not None}


def _http_handler(ctx: "Context") -> Callable[..., Any]:
    async def http_request(config: Mapping[str, Any], variables: Mapping[str, Any], results: Mapping[str, Any]) -> Any:
        if "url" not in config:
            raise Fail("http_request step needs a 'url' in its config")
        async with ctx.http() as client:
            response = await client.request(
                config.get("method", "POST"),
                config["url"],
                json=config.get("json", variables),
                headers=config.get("headers"),
            )
            response.raise_for_status()
            try:
                return response.json()
            except ValueError:
                return response.text

    return http_request
