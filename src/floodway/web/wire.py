"""The API's wire: reading a request (its body within the size limit, a JSON object of known
fields, typed fields and query parameters) and writing an answer (JSON that no stored value can
break), shared by the API's route modules."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..inputs import check_encodable
from . import data
from .auth import ApiError

if TYPE_CHECKING:
    from ..app import App


def fw(request: Request) -> "App":
    return request.app.state.floodway


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (which JSON cannot hold) as null."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A JSON answer that no stored value can break: floodway refuses to store text UTF-8
    cannot hold (lone surrogates) and numbers JSON cannot (NaN), but a row written by an older
    version, or by hand, may still hold them. Such an answer is sent with every non-ASCII
    character escaped (a lone surrogate as ``\\ud800``, which JSON allows) and NaN as null."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (UnicodeEncodeError, ValueError):
            return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
                "ascii"
            )


def ok(payload: Any, status: int = 200) -> JSONResponse:
    return SafeJSONResponse(payload, status_code=status)


def error(status: int, message: str) -> JSONResponse:
    return SafeJSONResponse({"error": message}, status_code=status)


# -- request input ------------------------------------------------------------------------------
async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) more than the app's ``max_body`` bytes."""
    limit: int = request.app.state.max_body
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if size > limit:
            raise ApiError(413, f"request body is {size} bytes, over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    body = await read_body(request)
    if not body.strip():
        raise ApiError(400, "request body must be a JSON object")
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s) {unknown}; expected some of {sorted(allowed)}")
    return value


def _string(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"{key!r} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key!r} must be a non-empty string, got {value!r}")
    return check_encodable(value, repr(key))  # ConfigError -> 400


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key!r} must be an integer, got {value!r}")
    return value


def _delay(body: dict[str, Any]) -> float | str | None:
    """The delay as given; ``App.enqueue`` parses and bounds it (ConfigError -> 400)."""
    value = body.get("delay")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"'delay' must be seconds (a number) or a duration such as '5m', got {value!r}")
    return value


def _query_number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be a number, got {raw!r}") from None
    if not (low <= value <= high):
        raise ApiError(400, f"query parameter {name!r} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not (low <= value <= high):
        raise ApiError(400, f"query parameter {name!r} must be between {low} and {high}, got {raw!r}")
    return value


def _query_text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    return raw if raw else None


def parse_statuses(raw: list[str]) -> list[str] | None:
    wanted = [s.strip().lower() for item in raw for s in item.split(",") if s.strip()]
    for s in wanted:
        if s not in data.STATUS_NAMES:
            raise ApiError(400, f"unknown status {s!r}; expected some of {', '.join(data.STATUS_NAMES)}")
    return wanted or None


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking store call in a thread."""
    return await run_in_threadpool(fn, *args, **kwargs)
