"""Slow start: an endpoint that just joined or recovered ramps up to its full weight.

Pure: `now` (monotonic seconds) is always passed in.

How ramps reach the pickers: a picker never reads the clock. `make_picker`
(router/balancer.py) computes the ramped weights with `ramp()` at build time and
records `refresh_at`, the time the weights should next be recomputed: at most
`refresh_s` later while any endpoint is ramping, and exactly when the earliest ramp
ends, else None. The owner of the picker rebuilds it (passing the old one as
`previous`, so round-robin counters carry over) once `now >= picker.refresh_at`.
That costs one rebuild per `refresh_s` only while a ramp is in progress (about 70
µs for 64 endpoints) and nothing on the pick path, which is cheaper than a
picker that checks the clock on every pick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from router.endpoint import Endpoint


@dataclass(frozen=True)
class SlowStartConfig:
    """How new and recovered endpoints ramp up."""

    window_s: float = 10.0
    """Seconds from joining to full weight; 0 disables slow start."""
    min_share: float = 0.1
    """Share of its weight an endpoint gets the moment it joins, in (0, 1]."""
    aggression: float = 1.0
    """Curve of the ramp: 1.0 is linear; above 1 ramps faster early (as Envoy's)."""
    refresh_s: float = 0.5
    """Seconds between picker rebuilds while a ramp is in progress."""

    def __post_init__(self) -> None:
        _check(self.window_s, self.min_share, self.aggression)
        if not self.refresh_s > 0:
            raise ValueError(f"router slow_start: refresh_s must be above 0, got {self.refresh_s}")


def _check(window_s: float, min_share: float, aggression: float) -> None:
    if not window_s >= 0 or math.isinf(window_s):
        raise ValueError(f"router slow_start: window_s must be 0 or more, got {window_s}")
    if not 0 < min_share <= 1:
        raise ValueError(f"router slow_start: min_share must be in (0, 1], got {min_share}")
    if not 0 < aggression < math.inf:
        raise ValueError(f"router slow_start: aggression must be above 0, got {aggression}")


def slow_start_weight(
    weight: int,
    joined_at: float,
    now: float,
    window_s: float,
    min_share: float = 0.1,
    aggression: float = 1.0,
) -> int | float:
    """The weight an endpoint that became routable at `joined_at` gets at `now`.

    Ramps from `min_share * weight` at `joined_at` to `weight` at `joined_at +
    window_s` along `min_share + (1 - min_share) * t ** (1 / aggression)`, where t is
    the elapsed fraction of the window: linear for aggression 1.0. (Envoy uses
    `max(min_share, t ** (1 / aggression))`, which idles at the floor first; starting
    the climb at once gives a cold engine the same gentle start without a dead zone.)
    Returns `weight` itself (an int) when the window is 0, the ramp is over, or the
    weight is 0; a `joined_at` in the future counts as just joined.
    """
    _check(window_s, min_share, aggression)
    elapsed = now - joined_at
    if weight <= 0 or elapsed >= window_s:
        return weight
    fraction = max(elapsed, 0.0) / window_s
    if aggression != 1.0:
        fraction = fraction ** (1.0 / aggression)
    # min(): rounding must never lift a ramping weight above the full one.
    return min(weight * (min_share + (1.0 - min_share) * fraction), weight)


class Ramp(NamedTuple):
    """Effective weights for one snapshot, and when to recompute them."""

    weights: tuple[int | float, ...]
    """One per endpoint, in the order given."""
    refresh_at: float | None
    """Rebuild the picker at this time; None when no endpoint is ramping."""


def ramp(endpoints: Sequence[Endpoint], now: float, config: SlowStartConfig) -> Ramp:
    """Apply slow start to every endpoint of a snapshot at `now`."""
    if config.window_s == 0:
        return Ramp(tuple(e.weight for e in endpoints), None)
    weights: list[int | float] = []
    earliest_end = math.inf
    for endpoint in endpoints:
        weight = slow_start_weight(
            endpoint.weight,
            endpoint.joined_at,
            now,
            config.window_s,
            config.min_share,
            config.aggression,
        )
        weights.append(weight)
        if weight != endpoint.weight:
            earliest_end = min(earliest_end, endpoint.joined_at + config.window_s)
    if earliest_end == math.inf:
        return Ramp(tuple(weights), None)
    return Ramp(tuple(weights), min(now + config.refresh_s, earliest_end))
