"""Step kinds and their throttling defaults, resolved against configuration.

Each step of a flow has a kind. Its throttle — a concurrency cap, a rate, and a retry policy
— comes from, lowest precedence first: the global defaults (``FLOODWAY_GLOBAL_*``), the kind's
defaults below, the kind's configured overrides, the stricter settings of a critical step, and
the step's own ``throttle=``. Kind limits are held in the store like any limit, so they bind
every worker, and they are scoped per tenant when the job has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from .config import Settings
from .errors import ConfigError
from .limits import Rate
from .retry import Retry
from .units import parse_duration

__all__ = ["Throttle", "KIND_DEFAULTS", "CRITICAL_OVERRIDES", "throttle_for"]


@dataclass(frozen=True)
class Throttle:
    """How one step kind is throttled. ``attempts`` counts every run of the step (the step's
    maxAttempts): 3 attempts = the first run and two retries."""

    concurrency: int
    rate: Rate
    attempts: int
    backoff: str
    delay: float  # seconds before the first retry

    @property
    def retry(self) -> Retry:
        return Retry(attempts=self.attempts - 1, backoff=self.backoff, initial=self.delay)

    def describe(self) -> dict[str, Any]:
        """The structured-log form (``throttlingConfig``)."""
        return {
            "concurrency": self.concurrency,
            "rateLimit": f"{int(self.rate.count)}/{int(self.rate.period * 1000)}ms",
            "maxRetries": self.attempts,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = str(self.rate)
        return data


def _t(concurrency: int, count: int, period_s: float, attempts: int, backoff: str, delay: float) -> Throttle:
    return Throttle(concurrency, Rate(count, period_s), attempts, backoff, delay)


#: the per-kind defaults
KIND_DEFAULTS: dict[str, Throttle] = {
    "http_request": _t(5, 10, 10, 3, "exponential", 3.0),
    "oauth_api_call": _t(5, 10, 10, 3, "exponential", 3.0),
    "sandbox_sync": _t(3, 20, 30, 2, "fixed", 5.0),
    "sandbox_async": _t(3, 20, 30, 2, "fixed", 5.0),
    "code_execution": _t(3, 20, 30, 2, "fixed", 5.0),
    "data_transform": _t(15, 50, 30, 2, "fixed", 1.0),
    "conditional": _t(15, 50, 30, 2, "fixed", 1.0),
    "event_publish": _t(20, 200, 60, 2, "fixed", 0.5),
}
KIND_ALIASES = {"publish_event": "event_publish", "event_publishing": "event_publish", "event": "event_publish"}
#: critical API calls are stricter: fewer at once, more attempts
CRITICAL_OVERRIDES: dict[str, dict[str, Any]] = {
    "http_request": {"concurrency": 2, "attempts": 5},
    "oauth_api_call": {"concurrency": 2, "attempts": 5},
}
_THROTTLE_KEYS = {"concurrency", "rate", "attempts", "backoff", "delay"}


def global_throttle(settings: Settings) -> Throttle:
    return _t(
        settings.global_concurrency,
        settings.global_rate_limit_executions,
        settings.global_rate_limit_period_ms / 1000,
        settings.global_retry_attempts,
        settings.global_retry_backoff,
        settings.global_retry_delay_ms / 1000,
    )


def canonical_kind(kind: str) -> str:
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"step kind must be a non-empty string, got {kind!r}")
    return KIND_ALIASES.get(kind, kind)


def throttle_for(
    kind: str, *, critical: bool, settings: Settings, override: Mapping[str, Any] | None = None
) -> Throttle:
    """The throttle a step of ``kind`` runs under."""
    kind = canonical_kind(kind)
    base = KIND_DEFAULTS.get(kind, global_throttle(settings))
    configured = settings.kinds.get(kind, {})
    if configured:
        base = replace(
            base,
            concurrency=configured.get("concurrency", base.concurrency),
            rate=Rate(
                configured.get("rate_limit_executions", base.rate.count),
                configured.get("rate_limit_period_ms", base.rate.period * 1000) / 1000,
            ),
            attempts=configured.get("retry_attempts", base.attempts),
            backoff=configured.get("retry_backoff", base.backoff),
            delay=configured.get("retry_delay_ms", base.delay * 1000) / 1000,
        )
    if critical and kind in CRITICAL_OVERRIDES:
        base = replace(base, **CRITICAL_OVERRIDES[kind])
    if override:
        unknown = set(override) - _THROTTLE_KEYS
        if unknown:
            raise ConfigError(f"throttle: unknown option(s) {sorted(unknown)} (known: {sorted(_THROTTLE_KEYS)})")
        changes = dict(override)
        if "rate" in changes:
            changes["rate"] = Rate.parse(changes["rate"], name="throttle rate")
        if "delay" in changes:
            changes["delay"] = parse_duration(changes["delay"], name="throttle delay")
        base = replace(base, **changes)
        if isinstance(base.concurrency, bool) or not isinstance(base.concurrency, int) or base.concurrency < 1:
            raise ConfigError(f"throttle concurrency must be an int >= 1, got {base.concurrency!r}")
        if isinstance(base.attempts, bool) or not isinstance(base.attempts, int) or base.attempts < 1:
            raise ConfigError(f"throttle attempts must be an int >= 1, got {base.attempts!r}")
        if base.backoff not in ("exponential", "fixed"):
            raise ConfigError(f"throttle backoff must be 'exponential' or 'fixed', got {base.backoff!r}")
    return base


def kind_limit_name(kind: str, critical: bool) -> str:
    """The store limit that paces one kind (critical API steps have their own, stricter one)."""
    kind = canonical_kind(kind)
    return f"step:{kind}" + (":critical" if critical and kind in CRITICAL_OVERRIDES else "")
