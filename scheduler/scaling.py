"""Pool-level scaling: ask a provider for engines when moves cannot cover a deficit, and
give provider engines back when a pool idles, serverless first, then cvm, never idc (pure).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scheduler.actions import MoveIntent, ScaleDown, ScaleUp
from scheduler.fleet import Engine, Fleet
from scheduler.policy import Policy, ProviderPolicy, Tier
from scheduler.pools import PoolState
from scheduler.tide import Decision, movable, wants_capacity

GIVE_BACK_ORDER: Mapping[str, int] = {"serverless": 0, "cvm": 1}
"""Which tier goes first when capacity is given back; idc is never given back."""


def choose_tier(provider: ProviderPolicy, within_s: float) -> Tier:
    """The cheapest tier that starts within `within_s`; the fastest one if none does."""
    fitting = [t for t in provider.tiers if provider.start_s[t] <= within_s]
    if fitting:
        return min(fitting, key=lambda t: (provider.price_per_hour[t], provider.start_s[t]))
    return min(provider.tiers, key=lambda t: provider.start_s[t])


def plan_scale_up(
    policy: Policy,
    states: Mapping[str, PoolState],
    moves: list[MoveIntent],
    starting: Mapping[str, int],
    running: int,
) -> tuple[list[ScaleUp], list[Decision]]:
    """Engines to ask for: up to `min`, and for the slots this tick's moves leave uncovered.

    `starting` counts engines a provider is already starting per pool; `running` counts
    every engine the provider runs.
    """
    provider = policy.provider
    if provider is None:
        return [], []
    ups, decisions = [], []
    budget = provider.max_engines - running
    for state in states.values():
        if not state.policy.scale or budget <= 0:
            continue
        count, why, urgent = _shortfall(state, policy, moves, starting.get(state.name, 0))
        # headroom() counts engines starting or admitted; this tick's moves are not in it yet.
        room = state.headroom() - sum(1 for m in moves if m.to_pool == state.name)
        count = min(count, room, budget)
        if count <= 0:
            continue
        loop = policy.loop
        tier = choose_tier(provider, loop.urgent_start_within_s if urgent else loop.start_within_s)
        ups.append(ScaleUp(state.name, state.policy.lang, tier, count, why))
        decisions.append(Decision("scale_up", state.name, f"{count} x {tier}", why))
        budget -= count
    return ups, decisions


def _shortfall(
    state: PoolState, policy: Policy, moves: list[MoveIntent], starting: int
) -> tuple[int, str, bool]:
    """(engines missing, why, urgent) for one pool."""
    assert policy.provider is not None
    # joining: engines a provider is starting for the pool and those admitted this tick.
    arriving = state.moving_in + state.joining + state.restoring
    arriving += sum(1 for m in moves if m.to_pool == state.name)
    below_min = state.policy.min - state.ready - arriving
    # A scheduler that just started has not seen the fleet register yet: wait for half
    # a window of observations before calling an empty pool short.
    if below_min > 0 and state.warm:
        return below_min, f"{state.ready} ready, below min {state.policy.min}", True
    wanted, why = wants_capacity(state, policy)
    if not wanted or starting:
        return 0, "", False
    gap = state.gap_slots() - _incoming_slots(state, moves)
    count = math.ceil(gap / policy.provider.slots) if gap > 0 else 0
    return count, why, state.utilization >= 1.0


def _incoming_slots(state: PoolState, moves: list[MoveIntent]) -> float:
    """Slots this tick's moves bring in, at the pool's mean engine size."""
    incoming = sum(1 for m in moves if m.to_pool == state.name) + state.moving_in
    per_engine = state.slots / state.ready if state.ready else 0.0
    return incoming * per_engine


def plan_scale_down(
    policy: Policy,
    fleet: Fleet,
    states: Mapping[str, PoolState],
    moves: list[MoveIntent],
    now: float,
) -> tuple[list[ScaleDown], list[Decision]]:
    """Provider engines to give back from pools that idle below their low watermark."""
    if policy.provider is None:
        return [], []
    downs, decisions = [], []
    involved = {m.from_pool for m in moves} | {m.to_pool for m in moves}
    for state in states.values():
        low = state.policy.low_watermark
        if state.name in involved or state.cooling or not state.warm or state.utilization >= low:
            continue
        excess = state.ready - state.moving_out - max(state.policy.min, state.desired)
        slots = state.slots
        for engine in _give_back_candidates(state, policy, fleet, now)[: max(0, excess)]:
            left = slots - engine.slots
            if left <= 0 or state.load / left > state.policy.target_utilization:
                break
            slots = left
            why = f"utilisation {state.utilization:.2f} < {low:g}, {state.ready} ready"
            downs.append(ScaleDown(engine.id, state.name, engine.tier, why))
            decisions.append(
                Decision("scale_down", state.name, f"{engine.id} ({engine.tier})", why)
            )
            if len(downs) >= policy.loop.max_moves_per_tick:
                return downs, decisions
    return downs, decisions


def _give_back_candidates(
    state: PoolState, policy: Policy, fleet: Fleet, now: float
) -> list[Engine]:
    """Provider engines settled for `min_stay_s`, serverless before cvm."""
    candidates = [
        e
        for e in state.engines
        if e.provider
        and e.tier in GIVE_BACK_ORDER
        and movable(e, fleet, policy, now)
        and now >= e.registered_at + policy.loop.min_stay_s
    ]
    return sorted(candidates, key=lambda e: (GIVE_BACK_ORDER[e.tier], -e.slots))
