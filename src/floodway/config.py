"""Settings: arguments > ``FLOODWAY_*`` environment variables > ``[tool.floodway]`` in
pyproject.toml > defaults.

Every value is validated where it enters; an invalid one stops start-up with an error that
names where it came from and what it was (``FLOODWAY_GLOBAL_CONCURRENCY='many' is not an
integer``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError
from .limits import Rate
from .units import parse_duration

__all__ = ["Settings", "load_settings", "find_pyproject"]


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} is not an integer")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else value
    except ValueError:
        raise ConfigError(f"{where}={value!r} is not an integer") from None
    if not isinstance(number, int) or number < 1:
        raise ConfigError(f"{where}={value!r} must be an integer >= 1")
    return number


def _non_negative_number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r} is not a number") from None
    if number != number or number < 0 or number == float("inf"):
        raise ConfigError(f"{where}={value!r} must be a finite number >= 0")
    return number


def _seconds(value: Any, where: str) -> float:
    return parse_duration(value, name=where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}={value!r} must be a non-empty string")
    return value.strip()


def _rate_or_off(value: Any, where: str) -> str | None:
    """A rate such as ``"50/s"``, or ``"off"`` (also ``"none"``, ``"0"``) for no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "0", "")):
        return None
    return str(Rate.parse(value, name=where))


HTTP_TRANSPORTS = ("aiohttp", "httpx")


def _http_transport(value: Any, where: str) -> str:
    if value not in HTTP_TRANSPORTS:
        raise ConfigError(f"{where}={value!r} must be one of {', '.join(repr(t) for t in HTTP_TRANSPORTS)}")
    return value


def _backoff(value: Any, where: str) -> str:
    if value not in ("exponential", "fixed"):
        raise ConfigError(f"{where}={value!r} must be 'exponential' or 'fixed'")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything that can be configured outside the code."""

    database_url: str = "sqlite:///floodway.db"
    max_payload_bytes: int = 1_000_000
    segment_bytes: int = 100_000
    wait_in_place: float = 2.0
    #: what ``ctx.http`` sends requests with: "aiohttp" (httpx's API over aiohttp's connection
    #: pool and C-accelerated HTTP/1.1 parser: a fraction of the CPU per request) or "httpx"
    #: (httpx's own transport; always used for HTTP/2 and for ``ctx.http_sync``)
    http_transport: str = "aiohttp"
    # the global throttling defaults for flow steps
    global_concurrency: int = 10
    global_rate_limit_executions: int = 100
    global_rate_limit_period_ms: float = 60_000
    global_retry_attempts: int = 3
    global_retry_delay_ms: float = 2_000
    global_retry_backoff: str = "exponential"
    # alerts: a threshold of 0 is off
    alert_throttling_overhead_ms: float = 10_000
    alert_retries: int = 2
    alert_queue_depth: float = 0
    #: a queue whose drain forecast ends later than this (seconds; "30m") raises an alert
    alert_drain_deadline: float = 0
    alert_webhook_url: str | None = None
    # the web API: requests per token (GCRA, shared by every web process; None = no limit) and
    # the most jobs one bulk enqueue request may carry
    api_rate: str | None = "50/s"
    api_burst: int = 200
    api_max_bulk: int = 10_000
    #: per-kind overrides: {"http_request": {"concurrency": 4, ...}}
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


#: how each setting is read from text/TOML: (parser)
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "database_url": _text,
    "max_payload_bytes": _positive_int,
    "segment_bytes": _positive_int,
    "wait_in_place": _seconds,
    "http_transport": _http_transport,
    "global_concurrency": _positive_int,
    "global_rate_limit_executions": _positive_int,
    "global_rate_limit_period_ms": _non_negative_number,
    "global_retry_attempts": _positive_int,
    "global_retry_delay_ms": _non_negative_number,
    "global_retry_backoff": _backoff,
    "alert_throttling_overhead_ms": _non_negative_number,
    "alert_retries": lambda v, w: int(_non_negative_number(v, w)),
    "alert_queue_depth": _non_negative_number,
    "alert_drain_deadline": _seconds,
    "alert_webhook_url": _text,
    "api_rate": _rate_or_off,
    "api_burst": _positive_int,
    "api_max_bulk": _positive_int,
}
_KIND_FIELDS = {
    "concurrency": _positive_int,
    "rate_limit_executions": _positive_int,
    "rate_limit_period_ms": _non_negative_number,
    "retry_attempts": _positive_int,
    "retry_delay_ms": _non_negative_number,
    "retry_backoff": _backoff,
}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml from ``start`` (the working directory) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _from_pyproject(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.floodway]: {exc}") from None
    section = data.get("tool", {}).get("floodway", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.floodway] must be a table")
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        where = f"{path.name} [tool.floodway] {key}"
        if name == "kinds":
            out["kinds"] = _kinds(value, where)
        elif name in _PARSERS:
            out[name] = _PARSERS[name](value, where)
        else:
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(sorted(_PARSERS))}, kinds)")
    return out


def _kinds(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of step kinds")
    kinds: dict[str, dict[str, Any]] = {}
    for kind, options in value.items():
        if not isinstance(options, dict):
            raise ConfigError(f"{where}.{kind} must be a table")
        kinds[kind] = {}
        for key, raw in options.items():
            name = key.replace("-", "_")
            if name not in _KIND_FIELDS:
                raise ConfigError(f"{where}.{kind}.{key}: unknown (known: {', '.join(sorted(_KIND_FIELDS))})")
            kinds[kind][name] = _KIND_FIELDS[name](raw, f"{where}.{kind}.{key}")
    return kinds


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        var = f"FLOODWAY_{name.upper()}"
        if var in env and env[var] != "":
            out[name] = parse(env[var], var)
    kinds: dict[str, dict[str, Any]] = {}
    for var, raw in env.items():
        # FLOODWAY_KIND_HTTP_REQUEST__CONCURRENCY=4  (kind and field joined by a double underscore)
        if var.startswith("FLOODWAY_KIND_") and "__" in var:
            kind, _, option = var[len("FLOODWAY_KIND_") :].partition("__")
            option = option.lower()
            if option not in _KIND_FIELDS:
                raise ConfigError(f"{var}: unknown step setting {option!r} (known: {', '.join(sorted(_KIND_FIELDS))})")
            kinds.setdefault(kind.lower(), {})[option] = _KIND_FIELDS[option](raw, var)
    if kinds:
        out["kinds"] = kinds
    return out


def load_settings(
    explicit: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    pyproject: Path | None | bool = True,
) -> Settings:
    """Settings from every source, highest precedence first: ``explicit`` (arguments),
    the environment, ``[tool.floodway]`` of the nearest pyproject.toml, the defaults."""
    path = find_pyproject() if pyproject is True else (pyproject or None)
    merged: dict[str, Any] = {}
    kinds: dict[str, dict[str, Any]] = {}
    for layer in (_from_pyproject(path), _from_environment(os.environ if env is None else env)):
        for kind, options in layer.pop("kinds", {}).items():
            kinds.setdefault(kind, {}).update(options)
        merged.update(layer)
    for name, value in (explicit or {}).items():
        if value is None:
            continue
        if name == "kinds":
            for kind, options in value.items():
                kinds.setdefault(kind, {}).update(options)
            continue
        if name not in _PARSERS:
            raise ConfigError(f"unknown setting {name!r}")
        merged[name] = _PARSERS[name](value, name)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in merged.items() if k in known}, kinds=kinds)
