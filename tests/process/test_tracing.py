"""OpenTelemetry: a trace follows a job from the caller's span through its enqueue to its run in
a real worker process, with child spans for the limit wait, each request (a 429 as an event),
the step and the checkpoint. The enqueuing process records with the SDK's in-memory exporter,
the worker with its console exporter writing to a file; both are real SDK exporters. Without
the package, floodway runs the same job with tracing off."""

from __future__ import annotations

import json
import subprocess
import sys

from ..destination import Destination
from ..proc_helpers import SRC, LoadedApps, wait_until

APP = """
import json
import os

import floodway
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

if os.environ.get("FW_SPANS"):  # the worker process: every span as a JSON line in a file
    provider = TracerProvider(resource=Resource.create({{"service.name": "worker"}}))
    out = open(os.environ["FW_SPANS"], "a")
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\\n"))
    )
    trace.set_tracer_provider(provider)

app.close()
app = floodway.App("sqlite:///" + DB_PATH)
app.limit("api", rate="5/s")


@app.task(limits=["api"], retry=0)
async def sync_order(ctx: floodway.Context, order_id: int) -> int:
    await ctx.acquire("api")
    await ctx.acquire("api")  # the admission paid for one: this one waits for the rate
    async with ctx.http({dest!r}, limit="api") as client:
        response = await client.post("/orders", json={{"id": order_id}})
    await ctx.step("charge", lambda: "charged")
    await ctx.checkpoint({{"done": order_id}})
    return response.status_code
"""

ENQUEUER = """
import json, sys
sys.path.insert(0, {here!r})
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
import {module} as m

with trace.get_tracer("checkout").start_as_current_span("caller"):
    handle = m.sync_order.enqueue({{"order_id": 7}})
m.app.close()
print(json.dumps({{"job": handle.id, "spans": [json.loads(s.to_json(indent=None)) for s in exporter.get_finished_spans()]}}))
"""


def _by_name(spans: list[dict]) -> dict[str, dict]:
    return {span["name"]: span for span in spans}


def test_a_trace_follows_a_job_from_enqueue_through_a_worker_process(tmp_path, workers, monkeypatch):
    apps = LoadedApps(tmp_path)
    with Destination(rate=100, style="leaky") as api:
        api.block(None, count=1, retry_after=0.2)  # the first request is refused, the retry passes
        try:
            name, _ = apps.load(APP.format(dest=api.url))
            script = tmp_path / "enqueue.py"
            script.write_text(ENQUEUER.format(here=str(tmp_path), module=name))
            done = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env={"PYTHONPATH": SRC},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            sent = json.loads(done.stdout.strip().splitlines()[-1])
            spans_file = tmp_path / "spans.jsonl"
            monkeypatch.setenv("FW_SPANS", str(spans_file))
            workers.start(name, "--burst")
            wait_until(
                lambda: spans_file.exists() and '"process default"' in spans_file.read_text(),
                "the run's span",
                workers=workers,
            )
        finally:
            apps.close()
    enqueued = _by_name(sent["spans"])
    caller, send = enqueued["caller"], enqueued["send default"]
    assert send["kind"] == "SpanKind.PRODUCER" and send["parent_id"] == caller["context"]["span_id"]
    assert send["attributes"]["messaging.destination.name"] == "default"
    assert send["attributes"]["floodway.task"] == "sync_order"

    ran = [json.loads(line) for line in spans_file.read_text().splitlines()]
    process = _by_name(ran)["process default"]
    trace_id = caller["context"]["trace_id"]
    assert process["context"]["trace_id"] == trace_id  # one trace, across two processes
    assert process["parent_id"] == send["context"]["span_id"]
    assert process["kind"] == "SpanKind.CONSUMER"
    assert process["attributes"]["messaging.message.id"] == sent["job"]
    assert process["attributes"]["floodway.outcome"] == "complete"
    # the wait the 429 asked for, between the two requests; then the checkpoint
    assert [e["name"] for e in process["events"]] == ["floodway.limit.wait", "floodway.checkpoint"]

    children = [s for s in ran if s["parent_id"] == process["context"]["span_id"]]
    names = [s["name"] for s in children]
    assert names.count("POST") == 2 and "wait api" in names and "step charge" in names, names
    posts = [s for s in children if s["name"] == "POST"]
    refused, accepted = sorted(posts, key=lambda s: s["start_time"])
    assert refused["attributes"]["http.response.status_code"] == 429
    assert [e["name"] for e in refused["events"]] == ["floodway.throttled"]
    assert accepted["attributes"]["http.response.status_code"] == 200
    assert accepted["attributes"]["server.address"] == "127.0.0.1"
    assert all(s["context"]["trace_id"] == trace_id for s in children)


def test_without_opentelemetry_a_job_runs_untraced(tmp_path):
    """The package hidden from the import system: floodway enqueues and runs as ever."""
    script = tmp_path / "untraced.py"
    script.write_text(
        f"""
import sys
sys.modules["opentelemetry"] = None  # an import of it now fails, as when it is not installed
import floodway
from floodway import tracing
assert not tracing.ENABLED
app = floodway.App("sqlite:///{tmp_path}/jobs.db")

@app.task
async def add(a: int, b: int) -> int:
    return a + b

handle = add.enqueue({{"a": 2, "b": 3}})
app.worker(burst=True).run()
assert handle.result(timeout=5) == 5 and handle.job().trace is None
print("ok")
"""
    )
    done = subprocess.run(
        [sys.executable, str(script)], env={"PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_without_a_tracer_provider_a_run_records_nothing_and_its_context_travels_on(tmp_path):
    """No provider set (the worker records nothing), one job enqueued under a context taken from
    a request's headers: the job that run enqueues carries the same trace; a job enqueued with
    no context carries none, nor do the jobs its run enqueues."""
    script = tmp_path / "unrecorded.py"
    script.write_text(
        f"""
import json
import floodway
from opentelemetry import context, propagate, trace
from floodway import tracing
assert tracing.ENABLED and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
app = floodway.App("sqlite:///{tmp_path}/jobs.db")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

@app.task
async def child(n: int) -> int:
    return n

@app.task
async def parent(n: int) -> str:
    return child.enqueue({{"n": n}}).id

token = context.attach(propagate.extract({{"traceparent": f"00-{{TRACE}}-00f067aa0ba902b7-01"}}))
traced = parent.enqueue({{"n": 1}})
context.detach(token)
plain = parent.enqueue({{"n": 2}})
app.worker(burst=True).run()
app.worker(burst=True).run()
kids = {{h.id: app.store.get_job(h.result(timeout=5)) for h in (traced, plain)}}
assert all(k.status.value == "complete" for k in kids.values()), kids
assert TRACE in json.loads(traced.job().trace)["traceparent"]
assert TRACE in json.loads(kids[traced.id].trace)["traceparent"], kids[traced.id].trace
assert plain.job().trace is None and kids[plain.id].trace is None
print("ok")
"""
    )
    done = subprocess.run(
        [sys.executable, str(script)], env={"PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
