"""The shaping options of an enqueue request (a dedupe window, a debounce, a lane), read from
its JSON body. Only their JSON types are checked here; their values are the library's to judge
(``App.enqueue`` raises ``EnqueueError``, answered 400, before anything is written), so the API
refuses exactly what Python callers are refused, with the same message."""

from __future__ import annotations

from typing import Any

from ..inputs import check_encodable
from ..shaping import KEY_OPTIONS
from .auth import ApiError

#: the body fields of an enqueue (single and bulk) that shape it
SHAPING_FIELDS = frozenset((*KEY_OPTIONS, "lane"))
#: the ones that take a duration: seconds (a number) or text such as ``"10m"``
DURATION_FIELDS = frozenset(("unique_for", "debounce", "debounce_max"))


def shaping_options(body: dict[str, Any]) -> dict[str, Any]:
    """``shaping`` (the dedupe and debounce options given) and ``lane``, as ``App._enqueue``
    takes them. A tenant token's keys are scoped to its tenant by the library itself, so a key
    chosen here never matches another tenant's job."""
    given: dict[str, Any] = {}
    for name in SHAPING_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name in DURATION_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ApiError(400, f"{name!r} must be seconds (a number) or a duration such as '5m', got {value!r}")
        elif not isinstance(value, str) or not value:
            raise ApiError(400, f"{name!r} must be a non-empty string, got {value!r}")
        given[name] = check_encodable(value, repr(name)) if isinstance(value, str) else value  # ConfigError -> 400
    return {"shaping": {name: given.get(name) for name in KEY_OPTIONS}, "lane": given.get("lane")}


_DURATION = {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "minLength": 1}]}
#: how the OpenAPI document describes them (the README's sections on shaping say more)
SHAPING_SCHEMA: dict[str, Any] = {
    "unique_for": {
        **_DURATION,
        "description": "Dedupe window (seconds or e.g. `10m`): an enqueue of the same key within it makes "
        "nothing and answers 200 with `created: false` and the first job's id.",
    },
    "unique_key": {
        "type": "string",
        "minLength": 1,
        "description": "The dedupe key, a template of the args such as `{order_id}` (default: all the args). "
        "Keys are scoped to the job's tenant.",
    },
    "unique_while": {
        "type": "string",
        "enum": ["active"],
        "description": "Dedupe while the first job is unfinished (instead of `unique_for`).",
    },
    "debounce": {
        **_DURATION,
        "description": "Fold enqueues of one key into one job not started yet: it runs this long after the "
        "last one, with its args; a folded enqueue answers 200 with `created: false`.",
    },
    "debounce_key": {
        "type": "string",
        "minLength": 1,
        "description": "The debounce key, a template of the args (default: the task).",
    },
    "debounce_max": {**_DURATION, "description": "A debounced job runs at most this long after the first enqueue."},
    "lane": {"type": "string", "minLength": 1, "description": "The reserved lane of the task's limits to run on."},
}
