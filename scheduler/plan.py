"""One tick of the scheduler's decisions, from the fleet and the policy (pure).

`plan()` is what the live scheduler runs every `interval_s` and what the day
simulator runs on its simulated clock: admission of engines that registered
without a pool, the tenants' alias lists, tide moves, and scaling. Moves
already under way are stepped separately (`scheduler.moves.step_move`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.actions import MoveIntent, ScaleDown, ScaleUp, SetPool, TenantList
from scheduler.fleet import Engine, Fleet
from scheduler.policy import Policy
from scheduler.pools import Memory, PoolState, observe, pool_states
from scheduler.scaling import plan_scale_down, plan_scale_up
from scheduler.tide import Decision, plan_tide


@dataclass(frozen=True)
class Plan:
    admissions: tuple[SetPool, ...] = ()
    moves: tuple[MoveIntent, ...] = ()
    scale_up: tuple[ScaleUp, ...] = ()
    scale_down: tuple[ScaleDown, ...] = ()
    tenants: tuple[TenantList, ...] = ()
    pools: Mapping[str, PoolState] = field(default_factory=dict)
    decisions: tuple[Decision, ...] = ()

    @property
    def acts(self) -> bool:
        """True when the plan changes something (tenant lists are compared by the runner)."""
        return bool(self.admissions or self.moves or self.scale_up or self.scale_down)


def plan(
    policy: Policy,
    fleet: Fleet,
    memory: Memory,
    now: float,
    *,
    starting: Mapping[str, int] | None = None,
    running: int = 0,
) -> Plan:
    """Observe this tick's utilisation, then decide. `starting`/`running`: provider engines."""
    observe(memory, policy, fleet, now)
    states = pool_states(policy, fleet, memory, now, starting)
    admissions, admitted = admit(policy, fleet, states)
    for admission in admissions:
        states[admission.pool].joining += 1
    moves, tide_decisions = plan_tide(policy, fleet, states, now)
    ups, up_decisions = plan_scale_up(policy, states, moves, starting or {}, running)
    downs, down_decisions = plan_scale_down(policy, fleet, states, moves, now)
    for pool in {step.pool for step in ups} | {step.pool for step in downs}:
        memory.scaled_at[pool] = now
    return Plan(
        admissions=tuple(admissions),
        moves=tuple(moves),
        scale_up=tuple(ups),
        scale_down=tuple(downs),
        tenants=tenant_lists(policy, fleet),
        pools=states,
        decisions=(*admitted, *tide_decisions, *up_decisions, *down_decisions),
    )


def admit(
    policy: Policy, fleet: Fleet, states: Mapping[str, PoolState]
) -> tuple[list[SetPool], list[Decision]]:
    """Label each ready engine that has no pool into the pool of its language furthest below
    target, within `max`: one below its `min` first, else the one that would still run
    busiest against its target utilisation with the engine."""
    admissions, decisions = [], []
    extra: dict[str, tuple[int, int]] = {}  # pool -> (engines, slots) admitted this tick
    for engine in sorted(_unplaced(fleet), key=lambda e: e.id):
        best = _best_pool(engine, states, extra)
        if best is None:
            decisions.append(Decision("hold", engine.id, f"no {engine.lang} pool has room"))
            continue
        count, slots = extra.get(best.name, (0, 0))
        extra[best.name] = (count + 1, slots + engine.slots)
        admissions.append(SetPool(engine.id, best.name, best.name))
        decisions.append(Decision("admit", best.name, engine.id, f"lang={engine.lang}"))
    return admissions, decisions


def _unplaced(fleet: Fleet) -> list[Engine]:
    return [e for e in fleet.engines.values() if not e.pool and e.ready]


def _best_pool(
    engine: Engine, states: Mapping[str, PoolState], extra: Mapping[str, tuple[int, int]]
) -> PoolState | None:
    def after(state: PoolState) -> float:
        _count, slots = extra.get(state.name, (0, 0))
        total = state.slots + slots + engine.slots
        return state.load / total - state.policy.target_utilization

    def need(state: PoolState) -> tuple[bool, float, str]:
        count, _slots = extra.get(state.name, (0, 0))
        return state.ready + count >= state.policy.min, -after(state), state.name

    fitting = [
        s
        for s in states.values()
        if s.policy.lang == engine.lang and s.headroom() - extra.get(s.name, (0, 0))[0] > 0
    ]
    return min(fitting, key=need, default=None)


def tenant_lists(policy: Policy, fleet: Fleet) -> tuple[TenantList, ...]:
    """Each tenant's aliases in policy order, less those with no ready engine (the tenant
    falls back to the next); all of them when none has one."""
    ready: dict[str, int] = {}
    for engine in fleet.engines.values():
        if engine.ready and engine.pool:
            ready[engine.pool] = ready.get(engine.pool, 0) + 1
    lists = []
    for tenant in policy.tenants:
        usable = tuple(a for a in tenant.aliases if ready.get(a, 0) > 0)
        lists.append(TenantList(tenant.tenant, tenant.lang, usable or tenant.aliases))
    return tuple(lists)
