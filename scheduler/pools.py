"""Per-pool figures for one tick: size, readiness, smoothed utilisation, trend and desired size.

Pure: derived from the fleet, the policy, the smoothing window and `now`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.fleet import Engine, Fleet, pool_utilization
from scheduler.policy import Policy, PoolPolicy
from scheduler.smoothing import UtilizationWindow


@dataclass
class Memory:
    """What the control loop keeps between ticks; a new leader starts afresh (safely)."""

    window: UtilizationWindow
    scaled_at: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def for_policy(policy: Policy) -> Memory:
        return Memory(UtilizationWindow(policy.loop.window_s))


@dataclass
class PoolState:
    """One pool at this tick. `load` and `slots` count ready engines only."""

    policy: PoolPolicy
    engines: list[Engine]
    ready: int
    load: float
    slots: int
    utilization: float
    slope_per_s: float
    warm: bool
    moving_in: int
    moving_out: int
    cooling: bool
    desired: int = 0
    joining: int = 0
    """Engines about to join outside moves: started by a provider, or admitted this tick."""

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def size(self) -> int:
        return len(self.engines)

    def projected(self, horizon_s: float) -> float:
        """Utilisation `horizon_s` from now if the trend holds."""
        return self.utilization + self.slope_per_s * horizon_s

    def gap_slots(self) -> float:
        """Slots missing to bring the smoothed load down to the target (negative: spare)."""
        return self.load / self.policy.target_utilization - self.slots

    @property
    def restoring(self) -> int:
        """Engines a restarted registry restored but has not heard from yet ("unknown"):
        most are alive and re-attaching, so they are not a shortfall."""
        return sum(1 for e in self.engines if e.state == "unknown")

    def headroom(self) -> int:
        """How many more engines may join before `max`."""
        return self.policy.max - self.size - self.moving_in - self.joining


def observe(memory: Memory, policy: Policy, fleet: Fleet, now: float) -> None:
    """Add this tick's utilisation of every pool to the smoothing window."""
    for pool in policy.pools:
        utilization, _load, _slots = pool_utilization(fleet.in_pool(pool.name))
        memory.window.add(pool.name, now, utilization)


def pool_states(
    policy: Policy,
    fleet: Fleet,
    memory: Memory,
    now: float,
    starting: Mapping[str, int] | None = None,
) -> dict[str, PoolState]:
    active = fleet.active_moves()
    states = {}
    for pool in policy.pools:
        engines = fleet.in_pool(pool.name)
        _instant, _load, slots = pool_utilization(engines)
        utilization = memory.window.mean(pool.name)
        changed = [fleet.last_pool_change_at(pool.name), memory.scaled_at.get(pool.name)]
        last = max((t for t in changed if t is not None), default=None)
        state = PoolState(
            policy=pool,
            engines=engines,
            ready=sum(1 for e in engines if e.ready),
            load=utilization * slots,
            slots=slots,
            utilization=utilization,
            slope_per_s=memory.window.slope_per_s(pool.name),
            warm=memory.window.warm(pool.name),
            moving_in=sum(1 for m in active if m.to_pool == pool.name),
            moving_out=sum(1 for m in active if m.from_pool == pool.name),
            cooling=last is not None and now < last + policy.loop.cooldown_s,
            joining=(starting or {}).get(pool.name, 0),
        )
        state.desired = desired_size(state)
        states[pool.name] = state
    return states


def desired_size(state: PoolState) -> int:
    """Engines needed to run the smoothed load at the target, within min and max."""
    if state.ready == 0 or state.slots == 0:
        return state.policy.min
    slots_per_engine = state.slots / state.ready
    needed = math.ceil(state.load / (state.policy.target_utilization * slots_per_engine) - 1e-9)
    return max(state.policy.min, min(state.policy.max, needed))
