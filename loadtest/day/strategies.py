"""The three strategies compared on the same requests: how each sets up and runs its pools.

- `static`: per-language pools of owned idc engines, each sized so its own
  peak runs at the pool's `target_utilization`; nothing changes all day.
- `autoscale`: the owned fleet (`[owned]` of the fleet file) in per-language
  pools, plus reactive per-pool autoscaling (`loadtest.day.autoscale`).
- `tidepool`: the same owned fleet, driven by the scheduler's own tick
  (`step_move` for every unfinished move, then `plan`, then its admissions,
  moves, scale-ups and give-backs), as `scheduler.runner` and
  `scheduler.apply` do against the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

from loadtest.day import autoscale
from loadtest.day.arrivals import mean_work_s
from loadtest.day.fleet_config import FleetConfig
from loadtest.day.fleet_model import SimFleet
from loadtest.day.traffic import LANGS, Trace
from scheduler.actions import Action
from scheduler.fleet import Engine, Fleet, MoveView, pool_utilization
from scheduler.moves import step_move
from scheduler.plan import Plan, plan
from scheduler.policy import Policy, PoolPolicy
from scheduler.pools import Memory
from scheduler.smoothing import UtilizationWindow

STRATEGIES = ("static", "autoscale", "tidepool")


@dataclass
class Events:
    """What a strategy did: scale-outs as (time, engines), give-backs and moves."""

    scale_outs: list[tuple[float, int]] = field(default_factory=list)
    scale_ins: int = 0
    moves: int = 0
    moves_done: int = 0


class Controller(Protocol):
    events: Events

    def tick(self, sim: SimFleet, now: float) -> None: ...


def pool_of(policy: Policy, lang: str) -> PoolPolicy:
    """The pool a language's traffic goes to: the policy's first pool of that language."""
    for pool in policy.pools:
        if pool.lang == lang:
            return pool
    raise ValueError(f"the policy has no pool for lang {lang}")


def static_size(trace: Trace, lang: str, fleet: FleetConfig, target: float) -> int:
    """Idc engines that run the language's peak minute at `target` utilisation."""
    idc = fleet.tiers["idc"]
    busy_slots = trace.peak_rate(lang) * mean_work_s() / idc.speed
    return max(1, math.ceil(busy_slots / (target * idc.slots) - 1e-9))


def build(
    name: str, policy: Policy, fleet: FleetConfig, trace: Trace
) -> tuple[SimFleet, Controller]:
    """The simulated fleet at 00:00 and the controller that runs it, for strategy `name`."""
    sim = SimFleet(fleet, policy.loop.drain_timeout_s)
    for lang in LANGS:
        pool = pool_of(policy, lang)
        if name == "static":
            count = static_size(trace, lang, fleet, pool.target_utilization)
        else:
            count = fleet.owned.get(lang, 0)
        sim.add_owned(lang, pool.name, count)
    sim.sync(0.0)
    controller: Controller
    if name == "static":
        controller = Static()
    elif name == "autoscale":
        controller = Autoscale(policy, UtilizationWindow(policy.loop.window_s))
    else:
        controller = Tidepool(policy, Memory.for_policy(policy))
    return sim, controller


@dataclass
class Static:
    events: Events = field(default_factory=Events)

    def tick(self, sim: SimFleet, now: float) -> None:
        del sim, now


@dataclass
class Autoscale:
    policy: Policy
    window: UtilizationWindow
    events: Events = field(default_factory=Events)
    changed_at: dict[str, float] = field(default_factory=dict)

    def tick(self, sim: SimFleet, now: float) -> None:
        provider = self.policy.provider
        engines = sim.snapshot(now)
        starting = sim.starting()
        budget = provider.max_engines - sim.running() if provider else 0
        for pool in self.policy.pools:
            members = [e for e in engines if e.pool == pool.name]
            self.window.add(pool.name, now, pool_utilization(members)[0])
            if provider is None:
                continue
            last = self.changed_at.get(pool.name)
            view = autoscale.PoolView(
                pool,
                members,
                self.window.mean(pool.name),
                self.window.warm(pool.name),
                starting.get(pool.name, 0),
                last is not None and now < last + self.policy.loop.cooldown_s,
            )
            loop = self.policy.loop
            step = autoscale.decide(
                view, provider, budget, loop.start_within_s, loop.urgent_start_within_s
            )
            if step.out:
                sim.start(pool.name, pool.lang, step.tier, step.out, now)
                self.events.scale_outs.append((now, step.out))
                budget -= step.out
            for instance_id in step.back:
                sim.retire(instance_id, now)
                self.events.scale_ins += 1
            if step.out or step.back:
                self.changed_at[pool.name] = now


@dataclass
class Tidepool:
    """The scheduler's tick on the simulated fleet (`scheduler.runner.SchedulerRunner._lead`)."""

    policy: Policy
    memory: Memory
    events: Events = field(default_factory=Events)
    moves: list[MoveView] = field(default_factory=list)
    sent: set[tuple[str, Action]] = field(default_factory=set)
    """Move actions already carried out, as the Applier keeps them (each is sent once)."""

    def tick(self, sim: SimFleet, now: float) -> None:
        fleet = Fleet.of(sim.snapshot(now), self._recent(now))
        self._step_moves(fleet, sim, now)
        fleet = Fleet(fleet.engines, tuple(self.moves))
        decided = plan(
            self.policy, fleet, self.memory, now, starting=sim.starting(), running=sim.running()
        )
        self._apply(decided, fleet, sim, now)

    def _recent(self, now: float) -> list[MoveView]:
        """Drop finished moves too old to matter (min_stay_s and cooldown_s both passed)."""
        horizon = now - max(self.policy.loop.min_stay_s, self.policy.loop.cooldown_s)
        self.moves = [m for m in self.moves if not m.finished or m.started_at >= horizon]
        return self.moves

    def _step_moves(self, fleet: Fleet, sim: SimFleet, now: float) -> None:
        for index, move in enumerate(self.moves):
            if move.finished:
                continue
            step = step_move(move, fleet, self.policy, now)
            for action in step.actions:
                key = (f"{move.id}/{step.state}", action)
                if key not in self.sent:
                    sim.apply(action, now)
                    self.sent.add(key)
            if step.changes(move):
                self.moves[index] = replace(
                    move,
                    state=step.state,
                    reason=step.reason,
                    updated_at=now,
                    from_lang=step.from_lang or move.from_lang,
                    to_lang=step.to_lang or move.to_lang,
                )
                self.events.moves_done += step.state == "done"

    def _apply(self, decided: Plan, fleet: Fleet, sim: SimFleet, now: float) -> None:
        for admission in decided.admissions:
            sim.apply(admission, now)
        for intent in decided.moves:
            engine = fleet.engines[intent.instance_id]
            move_id = f"move-{self.events.moves}"
            self.moves.append(_pending(move_id, engine, intent.to_pool, intent.reason, self, now))
            self.events.moves += 1
        for up in decided.scale_up:
            sim.start(up.pool, up.lang, up.tier, up.count, now)
            self.events.scale_outs.append((now, up.count))
        for down in decided.scale_down:
            sim.retire(down.instance_id, now)
            self.events.scale_ins += 1


def _pending(
    move_id: str, engine: Engine, to_pool: str, reason: str, tidepool: Tidepool, now: float
) -> MoveView:
    """A new move as the registry records it from a MoveIntent: pending, started now."""
    target = tidepool.policy.pool(to_pool)
    return MoveView(
        id=move_id,
        instance_id=engine.id,
        from_pool=engine.pool,
        to_pool=to_pool,
        state="pending",
        reason=reason,
        started_at=now,
        updated_at=now,
        from_lang=engine.lang,
        to_lang=target.lang if target else engine.lang,
    )
