"""A usage header: a leaky bucket of known size and fill whose leak rate is not stated.

A destination that reports ``used/size`` on every response (``X-Shopify-Shop-Api-Call-Limit:
32/40``) says how full its bucket is, not how fast it drains. The leak is measured from how the
fill moved against what was sent, and the pace is steered so the bucket stays about half full:
room for a burst, never an overflow. Pure: the learned quota (``quota``) keeps the state.
"""

from __future__ import annotations

from typing import Any

__all__ = ["USAGE_TARGET", "USAGE_HORIZON", "USAGE_EMPTY", "USAGE_GROWTH", "steer"]

#: a usage header steers the bucket towards this fill, closing the gap over USAGE_HORIZON seconds
USAGE_TARGET = 0.5
USAGE_HORIZON = 2.0
#: a bucket filled to no more than this share is empty: what it leaked is only what was sent,
#: and the pace grows by USAGE_GROWTH each time the leak is measured (every half second)
USAGE_EMPTY = 0.1
USAGE_GROWTH = 2.0


def steer(state: Any, admitted: int, obs: Any, current: float | None, max_rate: float) -> float | None:
    """The rate for a key whose destination reported ``obs.used`` of ``obs.size`` (its
    ``Observation``), ``admitted`` counting what the key admitted so far: measure the leak from
    how the fill moved against what was sent (kept in ``state.leak`` and ``state.usage`` of the
    key's ``Learned``), and steer the fill towards USAGE_TARGET. None: nothing to go by yet."""
    used, size, now = float(obs.used or 0), float(obs.size or 0), obs.now
    if obs.leak is not None and 0 < obs.leak < max_rate:
        state.leak, state.usage = float(obs.leak), [used, now, admitted]  # stated: nothing to measure
    elif state.usage is not None:
        was_used, at, was_adm = state.usage
        if now - at >= 0.5:
            leak = ((admitted - was_adm) - (used - was_used)) / (now - at)
            if max(used, was_used) <= USAGE_EMPTY * size and current is not None:
                # a bucket that stayed empty leaked all that was sent and had room for more: the
                # measure is only a floor of the leak, so the pace grows until the fill shows
                state.usage = [used, now, admitted]
                if leak > 0:
                    state.leak = max(leak, state.leak or 0.0)
                return max(current * USAGE_GROWTH, (state.leak or 0.0) + USAGE_TARGET * size / USAGE_HORIZON)
            if leak > 0:
                state.leak = leak if state.leak is None else 0.6 * state.leak + 0.4 * leak
            state.usage = [used, now, admitted]
    else:
        state.usage = [used, now, admitted]
    if state.leak is None:
        if current is None:
            return None
        return current * 0.8 if used >= 0.8 * size else None
    target = max(state.leak + (USAGE_TARGET * size - used) / USAGE_HORIZON, state.leak * 0.25)
    # an empty bucket never slows the pace (between two measures of the leak)
    return max(target, current) if used <= USAGE_EMPTY * size and current is not None else target
