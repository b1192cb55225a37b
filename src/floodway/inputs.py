"""The rules a value from outside (a library call, an API request, a CLI argument) must pass
before floodway writes anything: names (job ids, queues, tenants, tasks), the numbers the stores
hold, how far ahead a job may be scheduled. Each rule is one function here; the library, the web
API and the CLI all call the same ones, so they refuse the same values with the same message.

Text UTF-8 cannot hold (a lone UTF-16 surrogate, ``"\ud800"``: the stores' encoding, HTTP's and
the terminal's are all UTF-8) is refused by one function, ``check_encodable``: in names, and in
every string of the JSON floodway stores (args, results), which ``jsontext.dumps`` checks.

Every function raises ``ConfigError`` (a ``ValueError``); ``App.enqueue`` reports it as an
``EnqueueError``, the API as a 400, the CLI as a one-line usage error. Messages show values with
``repr``, which escapes control characters and surrogates, so an error about bad text can itself
always be printed and sent.
"""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_AHEAD_SECONDS",
    "INT32_MIN",
    "INT32_MAX",
    "RESERVED_TENANTS",
    "INTERNAL_TASK_PREFIX",
    "TENANT_SEPARATOR",
    "LONE_SURROGATES",
    "check_encodable",
    "check_name",
    "check_job_id",
    "check_tenant",
    "check_int",
    "check_priority",
    "check_run_at",
    "is_internal_task",
    "is_reserved_id",
]

#: the longest job id, queue, tenant, task or limit name
MAX_NAME_LENGTH = 255
#: the stores keep priorities, bursts and concurrency caps as 32-bit signed integers
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: the furthest ahead a job may be scheduled (ten years): a ``delay`` or ``start_at`` beyond it
#: is a mistake, and instants far beyond it cannot be shown as dates at all
MAX_AHEAD_SECONDS = 10 * 365 * 86400
#: tasks floodway registers itself (``floodway.alert``); never enqueued through the web API
INTERNAL_TASK_PREFIX = "floodway."
#: between a tenant's name and the id it chose, in the ids of jobs its API token enqueues
#: (``acme:invoice-42``); tenants' names may not contain it, so the split is unambiguous
TENANT_SEPARATOR = ":"
#: names floodway gives its own job ids (``cron:<schedule>:<tick>``); no tenant may take one,
#: or its scoped ids would be floodway's
RESERVED_TENANTS = frozenset({"cron", "floodway"})

#: UTF-16 surrogates: in a Python string (where a character past U+FFFF is one code point, never
#: a pair) each one is a lone surrogate, which UTF-8 cannot encode
LONE_SURROGATES = re.compile("[\ud800-\udfff]")
#: control characters (C0, DEL, C1): never part of a name
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_encodable(text: str, what: str) -> str:
    """``text`` unless it holds a lone UTF-16 surrogate, which no UTF-8 text can hold (so the
    stores could not keep it, or every later read of it would fail); then ``ConfigError``."""
    bad = LONE_SURROGATES.search(text)
    if bad is not None:
        where = f" ({bad.group()!r} at position {bad.start()})" if len(text) <= MAX_NAME_LENGTH else ""
        raise ConfigError(f"{what} contains a lone UTF-16 surrogate{where}, which UTF-8 text cannot hold")
    return text


def check_name(value: object, what: str) -> str:
    """A name: a non-blank string of at most ``MAX_NAME_LENGTH`` characters, with no control
    character (NUL, newline, escape...) and nothing UTF-8 cannot hold."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigError(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    check_encodable(value, f"{what} {value!r}")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise ConfigError(f"{what} {value!r} contains a control character ({bad.group()!r} at position {bad.start()})")
    return value


def check_job_id(value: object, what: str = "job id") -> str:
    """A job id: a name without ``/`` (ids are path segments of the web API's URLs, where
    ``a/events`` would name the events of job ``a``)."""
    check_name(value, what)
    assert isinstance(value, str)
    if "/" in value:
        raise ConfigError(f"{what} {value!r} contains '/', which job ids may not contain")
    return value


def check_tenant(value: object, what: str = "tenant") -> str:
    """A tenant's name: a name without ``:`` (the separator of the ids its token scopes) that
    is not one floodway reserves for its own ids (``cron``)."""
    check_name(value, what)
    assert isinstance(value, str)
    if TENANT_SEPARATOR in value:
        raise ConfigError(f"{what} {value!r} contains {TENANT_SEPARATOR!r}, which tenant names may not contain")
    if value.strip().lower() in RESERVED_TENANTS:
        raise ConfigError(f"{what} {value!r} is reserved by floodway; choose another name")
    return value


def is_internal_task(name: str) -> bool:
    """True for the tasks floodway registers for itself (``floodway.alert``)."""
    return name.startswith(INTERNAL_TASK_PREFIX)


def is_reserved_id(job_id: str) -> bool:
    """True for an id in a namespace floodway uses for its own jobs (``cron:...``)."""
    head, sep, _ = job_id.partition(TENANT_SEPARATOR)
    return bool(sep) and head.lower() in RESERVED_TENANTS


def check_int(value: object, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """An int (not a bool) in ``low..high``; the default range is what the stores hold."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{what} must be between {low} and {high}, got {value!r}")
    return value


def check_priority(value: object) -> int:
    return check_int(value, "priority")


def check_run_at(run_at: float, now: float, what: str) -> float:
    """Refuse a run time more than ``MAX_AHEAD_SECONDS`` after ``now``."""
    if not run_at - now <= MAX_AHEAD_SECONDS:  # written so that NaN is refused too
        raise ConfigError(f"{what!r} is more than {MAX_AHEAD_SECONDS // 86400} days ahead (at most ten years)")
    return run_at
