"""OpenTelemetry traces of a job's life, when ``opentelemetry-api`` is installed
(``pip install floodway[otel]``); without it every function here does nothing and costs one
check of a module constant.

A trace follows a job from its enqueue to each of its runs:

* ``send <queue>`` (PRODUCER) around an enqueue, one span for a bulk one; the caller's span is
  its parent, and its context (W3C ``traceparent``) travels with each job it wrote;
* ``process <queue>`` (CONSUMER) around each run, a child of the enqueue's span, however many
  processes, machines and retries later; its status is the run's outcome;
* inside a run: ``wait <limit>`` while ``ctx.acquire`` (or ``ctx.http``) waits for a token,
  ``<METHOD>`` (CLIENT) for each request ``ctx.http`` sends, with a ``floodway.throttled``
  event for a refusal (429) and a ``floodway.limit.wait`` event when the key makes the job
  wait; ``step <id>`` for each ``ctx.step``; a ``floodway.checkpoint`` event for each
  checkpoint.

Attribute names follow OpenTelemetry's semantic conventions where they exist (messaging,
http, url, server); floodway's own are under ``floodway.``.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any, Iterator

try:  # the optional extra
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # pragma: no cover - exercised where the extra is absent
    _trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import httpx

    from .jobs import Job

#: the instrumentation scope of floodway's spans
SCOPE = "floodway"
#: ``messaging.system`` of floodway's spans
SYSTEM = "floodway"

ENABLED = _trace is not None


def _tracer() -> Any:
    return _trace.get_tracer(SCOPE)


#: OpenTelemetry keeps the global provider, once set, in a module variable; while none is set
#: ``get_tracer_provider`` looks ``OTEL_PYTHON_TRACER_PROVIDER`` up in the environment on every
#: call, which cost several µs of every enqueue from a busy event loop. Read that variable
#: directly unless the environment names a provider (loaded on first use) or the variable is
#: gone from the installed version; then ask the public function.
_PROVIDER_GLOBAL_READABLE = (
    _trace is not None and hasattr(_trace, "_TRACER_PROVIDER") and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
)


def _unset() -> bool:
    """No tracer provider is set: a span records nothing, and a child span carries its
    parent's context unchanged, so a span inside a run may be skipped (starting one costs
    more than the rest of a job's own work on an HTTP call)."""
    if _PROVIDER_GLOBAL_READABLE:
        provider = _trace._TRACER_PROVIDER
        return provider is None or isinstance(provider, _trace.ProxyTracerProvider)
    return isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)


def silent() -> bool:
    """No tracer provider is set and no span is current: a ``send`` span would record nothing
    and carry no context, so an enqueue may skip it (it costs more than writing a job to a
    database that does not fsync). A current span without a provider (a context taken from a
    request's headers) still travels with the jobs."""
    if _trace is None:
        return True
    return _unset() and not _trace.get_current_span().get_span_context().is_valid


@contextlib.contextmanager
def send(task: str, queue: str, count: int) -> Iterator[str | None]:
    """The span of an enqueue of ``count`` jobs; yields the context the jobs carry (None when
    tracing is off, or nothing records it)."""
    if _trace is None:
        yield None
        return
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        "floodway.task": task,
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with _tracer().start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        if not span.get_span_context().is_valid:
            yield None
            return
        carrier: dict[str, str] = {}
        _propagate.inject(carrier)
        yield json.dumps(carrier, separators=(",", ":")) if carrier else None


@contextlib.contextmanager
def process(job: "Job") -> Iterator[Any]:
    """The span of one run of ``job``, a child of its enqueue's span; yields it (None when
    tracing is off, or nothing records it and no context travels on) for ``finish``."""
    if _trace is None or (not job.trace and silent()):
        yield None
        return
    parent = _propagate.extract(json.loads(job.trace)) if job.trace else None
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "floodway.task": job.task,
        "floodway.attempt": job.attempt,
    }
    if job.tenant is not None:
        attributes["floodway.tenant"] = job.tenant
    with _tracer().start_as_current_span(
        f"process {job.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def finish(span: Any, status: str, error: dict[str, Any] | None, throttled: float) -> None:
    """Record how a run ended on its span: the status it left the job in, its error."""
    if span is None:
        return
    span.set_attribute("floodway.outcome", status)
    if throttled:
        span.set_attribute("floodway.throttled_seconds", round(throttled, 6))
    if error:
        span.set_status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}")


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current one (a limit wait, a step)."""
    if _trace is None or _unset():
        yield
        return
    clean = {key: value for key, value in attributes.items() if value is not None}
    with _tracer().start_as_current_span(name, attributes=clean):
        yield


def event(name: str, **attributes: Any) -> None:
    """An event on the current span (a checkpoint, a refusal, a pause)."""
    if _trace is None:
        return
    current = _trace.get_current_span()
    if current.is_recording():
        current.add_event(name, {key: value for key, value in attributes.items() if value is not None})


@contextlib.contextmanager
def request(request: "httpx.Request") -> Iterator[Any]:
    """The CLIENT span of one request ``ctx.http`` sends; yields it for ``response`` (None
    when nothing records it)."""
    if _trace is None or _unset():
        yield None
        return
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.full": str(request.url.copy_with(query=None)),
        "server.address": request.url.host,
    }
    if request.url.port is not None:
        attributes["server.port"] = request.url.port
    with _tracer().start_as_current_span(request.method, kind=SpanKind.CLIENT, attributes=attributes) as current:
        yield current


def response(current: Any, status: int, refused: bool) -> None:
    """Record a response on its request's span: its status, and a refusal as an event."""
    if current is None:
        return
    current.set_attribute("http.response.status_code", status)
    if refused:
        current.add_event("floodway.throttled", {"http.response.status_code": status})
    if status >= 400:
        current.set_status(StatusCode.ERROR, str(status))
