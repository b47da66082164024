"""The `autoscale` baseline: reactive per-pool autoscaling without tides (pure).

A fair version of what operators run without tidepool, reading the same
policy so both strategies share thresholds, tiers and start times:

- out: when the smoothed utilisation is above the pool's `high_watermark`,
  ask for enough engines to bring it to `target_utilization`, counting those
  already starting (Kubernetes' HPA rule), of the tier `choose_tier` picks
  (the scheduler's own: cheapest within `start_within_s`, or within
  `urgent_start_within_s` once saturated);
- in: when it is below `low_watermark`, give back the engines beyond what the
  target needs, serverless first, never owned idc engines;
- both wait `cooldown_s` after the pool's last scale step, as the scheduler
  does: without it the smoothed utilisation, still full of samples from before
  the new engines, asks again for engines already there.

Utilisation is measured and smoothed exactly as the scheduler does
(`pool_utilization`, `UtilizationWindow`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.fleet import Engine
from scheduler.policy import PoolPolicy, ProviderPolicy
from scheduler.scaling import GIVE_BACK_ORDER, choose_tier


@dataclass(frozen=True)
class PoolView:
    """One pool at one tick, as the autoscaler sees it."""

    policy: PoolPolicy
    engines: Sequence[Engine]
    utilization: float
    """Smoothed over the window."""
    warm: bool
    starting: int
    cooling: bool


@dataclass(frozen=True)
class Scaling:
    out: int = 0
    tier: str = ""
    back: tuple[str, ...] = ()


def decide(
    pool: PoolView,
    provider: ProviderPolicy,
    budget: int,
    start_within_s: float,
    urgent_start_within_s: float,
) -> Scaling:
    """This tick's scale step for one pool (out, or engines to give back, or nothing)."""
    ready = [e for e in pool.engines if e.ready]
    if not pool.warm or not ready:
        return Scaling()
    slots = sum(e.slots for e in ready)
    load = pool.utilization * slots
    per_engine = slots / len(ready)
    desired = math.ceil(load / (pool.policy.target_utilization * per_engine) - 1e-9)
    if pool.cooling:
        return Scaling()
    if pool.utilization > pool.policy.high_watermark:
        room = pool.policy.max - len(pool.engines) - pool.starting
        count = min(desired - len(ready) - pool.starting, room, budget)
        if count <= 0:
            return Scaling()
        urgent = pool.utilization >= 1.0
        tier = choose_tier(provider, urgent_start_within_s if urgent else start_within_s)
        return Scaling(out=count, tier=tier)
    if pool.utilization < pool.policy.low_watermark:
        return Scaling(back=_give_back(pool, ready, load, max(pool.policy.min, desired)))
    return Scaling()


def _give_back(pool: PoolView, ready: list[Engine], load: float, keep: int) -> tuple[str, ...]:
    candidates = sorted(
        (e for e in ready if e.provider and e.tier in GIVE_BACK_ORDER),
        key=lambda e: (GIVE_BACK_ORDER[e.tier], -e.registered_at),
    )
    back: list[str] = []
    slots = sum(e.slots for e in ready)
    for engine in candidates[: max(0, len(ready) - keep)]:
        left = slots - engine.slots
        if left <= 0 or load / left > pool.policy.target_utilization:
            break
        slots = left
        back.append(engine.id)
    return tuple(back)
