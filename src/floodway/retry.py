"""Retry policies: how many times a failed job runs again, and after how long."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .units import parse_duration

__all__ = ["Retry"]

#: No retry waits longer than a year, whatever the policy computes.
CEILING = 365 * 86400.0


@dataclass(frozen=True)
class Retry:
    """How a failed job is retried.

    ``attempts`` is the number of *retries* after the first run, as a bulk-job API's ``retryCount``:
    ``Retry(attempts=0)`` runs a job once, the default ``Retry()`` runs it up to 7 times.
    The n-th retry waits ``initial * factor ** (n - 1)`` (``exponential``) or ``initial``
    (``fixed``), capped at ``max``; ``jitter`` multiplies the delay by a random factor in
    [1, 2) so that jobs which failed together do not all return together.

    ``give_up_on`` lists exception types whose failure is final (no retry), like raising
    ``floodway.Fail``.
    """

    attempts: int = 6
    backoff: str = "exponential"
    initial: float | str = 1.0
    max: float | str | None = None
    factor: float = 2.0
    jitter: bool = False
    give_up_on: tuple[type[BaseException], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"Retry.attempts: expected an int, got {self.attempts!r}")
        if self.attempts < 0:
            raise ConfigError(f"Retry.attempts: {self.attempts} is negative")
        if self.backoff not in ("exponential", "fixed"):
            raise ConfigError(f"Retry.backoff: {self.backoff!r} is not 'exponential' or 'fixed'")
        object.__setattr__(self, "initial", parse_duration(self.initial, name="Retry.initial"))
        if self.max is not None:
            object.__setattr__(self, "max", parse_duration(self.max, name="Retry.max"))
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or self.factor < 1:
            raise ConfigError(f"Retry.factor: expected a number >= 1, got {self.factor!r}")
        if not isinstance(self.give_up_on, tuple):
            object.__setattr__(self, "give_up_on", tuple(self.give_up_on))

    @classmethod
    def coerce(cls, value: "Retry | int | None", default: "Retry | None" = None) -> "Retry":
        """Turn the ``retry=`` option (a policy, an int shorthand or ``None``) into a policy."""
        if value is None:
            return default or cls()
        if isinstance(value, Retry):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            base = default or cls()
            return cls(
                attempts=value,
                backoff=base.backoff,
                initial=base.initial,
                max=base.max,
                factor=base.factor,
                jitter=base.jitter,
                give_up_on=base.give_up_on,
            )
        raise ConfigError(f"retry: expected a Retry or an int, got {value!r}")

    @property
    def max_attempts(self) -> int:
        """How many runs a job gets in all (the first one plus the retries)."""
        return self.attempts + 1

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        initial = float(self.initial)
        if self.backoff == "fixed":
            delay = initial
        else:
            try:
                delay = initial * self.factor ** (retry_number - 1)
            except OverflowError:  # a huge retry count: the ceiling below applies
                delay = CEILING if initial > 0 else 0.0
        if self.max is not None:
            delay = min(delay, float(self.max))
        delay = min(delay, CEILING)
        if self.jitter:
            delay *= 1.0 + (rng or random).random()
        return delay

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``give_up_on`` lives in code, not in the database)."""
        data = asdict(self)
        data.pop("give_up_on")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Retry":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
