"""Alerts: when a threshold is crossed (throttling overhead, retries, queue depth) a structured
warning is logged and, with ``alert_webhook_url`` set, a job POSTs it to the webhook — so the
webhook call is itself retried and rate-limited like any other work."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .retry import Retry
from .store.base import StepRecord

if TYPE_CHECKING:
    from .app import App
    from .context import Context

log = logging.getLogger("floodway.alerts")

ALERT_TASK = "floodway.alert"
ALERT_LIMIT = "floodway:alerts"
_last_sent: dict[str, float] = {}
#: the same alert is not raised more often than this, per process
QUIET_SECONDS = 60.0


def raise_alert(app: "App", kind: str, severity: str, message: str, **details: Any) -> None:
    key = f"{kind}:{details.get('queue') or details.get('stepId') or ''}"
    now = time.monotonic()
    if kind == "queue_depth" and now - _last_sent.get(key, -QUIET_SECONDS) < QUIET_SECONDS:
        return
    _last_sent[key] = now
    alert = {"alert": kind, "severity": severity, "message": message, **details}
    log.warning(json.dumps(alert))
    if app.settings.alert_webhook_url and ALERT_TASK in app.tasks:
        try:
            app.enqueue(ALERT_TASK, {"alert": alert})
        except Exception:  # an alert must never break the work that raised it
            log.exception("could not enqueue the alert webhook call")


def check_step(app: "App", record: StepRecord) -> None:
    settings = app.settings
    overhead_ms = record.throttle_overhead * 1000
    if settings.alert_throttling_overhead_ms and overhead_ms > settings.alert_throttling_overhead_ms:
        raise_alert(
            app,
            "throttling_overhead",
            "warning",
            f"High throttling overhead detected: {overhead_ms:.0f}ms",
            executionId=record.job_id,
            stepId=record.step_id,
            throttlingOverhead=round(overhead_ms, 3),
        )
    if settings.alert_retries and record.retries >= settings.alert_retries:
        raise_alert(
            app,
            "retries",
            "info",
            f"Step required {record.retries} retries",
            executionId=record.job_id,
            stepId=record.step_id,
            retryCount=record.retries,
        )


def check_queues(app: "App") -> None:
    threshold = app.settings.alert_queue_depth
    if not threshold:
        return
    for queue in app.store.list_queues():
        depth = sum(queue.counts.get(s, 0) for s in ("waiting", "scheduled", "retrying"))
        if depth > threshold:
            raise_alert(
                app,
                "queue_depth",
                "warning",
                f"Queue {queue.name} holds {depth} jobs",
                queue=queue.name,
                depth=depth,
                threshold=threshold,
            )


def install_webhook(app: "App") -> None:
    """Register the task that delivers alerts to the webhook (retried, rate-limited)."""
    if ALERT_TASK in app.tasks:
        return
    app.limit(ALERT_LIMIT, rate="30/min", burst=5)

    @app.task(name=ALERT_TASK, retry=Retry(attempts=5, initial="2s", max="5m", jitter=True), limits=[ALERT_LIMIT])
    async def deliver_alert(ctx: Context, alert: dict) -> int:
        async with ctx.http() as client:
            response = await client.post(app.settings.alert_webhook_url or "", json=alert, timeout=10)
            response.raise_for_status()
            return response.status_code
