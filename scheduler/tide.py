"""Tide moves: lend idle engines of one pool to a pool that runs hot (pure).

A pool above its high watermark borrows when the deficit is expected to
outlast a move (the smoothed utilisation plus its trend over the expected
switch time and `min_stay_s` stays above the watermark). Engines whose home is
the hot pool come back first; then pools that lend to it and run below their
low watermark give engines, never going below their `min`. The engines whose
slots best cover the gap are picked, at most `max_moves_per_tick` a tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.actions import MoveIntent
from scheduler.fleet import Engine, Fleet
from scheduler.policy import Policy
from scheduler.pools import PoolState


@dataclass
class Decision:
    """One decision or refusal with its reason and inputs, for the log and the metrics."""

    kind: str
    pool: str
    reason: str
    inputs: str = ""

    def __str__(self) -> str:
        tail = f" [{self.inputs}]" if self.inputs else ""
        return f"{self.kind} {self.pool}: {self.reason}{tail}"


@dataclass
class Source:
    """A pool that may give engines this tick, and how many and how many slots it can spare.

    `lending` is False for a pool that only holds engines whose home is the hot pool:
    it gives back only those.
    """

    state: PoolState
    engines: int
    slots: float
    lending: bool


def movable(engine: Engine, fleet: Fleet, policy: Policy, now: float) -> bool:
    """Ready, not moving, settled for `min_stay_s`, and not pinned to a pool that never lends."""
    if not engine.ready or engine.id in fleet.moving_ids():
        return False
    moved_at = fleet.last_moved_at(engine.id)
    if moved_at is not None and now < moved_at + policy.loop.min_stay_s:
        return False
    pool = policy.pool(engine.pool)
    return pool is not None and (bool(pool.lend_to) or bool(engine.home))


def wants_capacity(state: PoolState, policy: Policy) -> tuple[bool, str]:
    """Whether a pool should get engines now, and why (or why not)."""
    high = state.policy.high_watermark
    if state.utilization <= high:
        return False, ""
    if not state.warm:
        return False, "utilisation window not yet full"
    if state.cooling:
        return False, f"cooling down ({policy.loop.cooldown_s:g}s after the last change)"
    horizon_s = policy.loop.expected_switch_s + policy.loop.min_stay_s
    projected = state.projected(horizon_s)
    if projected <= high:
        return (
            False,
            f"deficit will not outlast a move (projected {projected:.2f} in {horizon_s:g}s)",
        )
    return True, f"utilisation {state.utilization:.2f} > {high:g}, projected {projected:.2f}"


def plan_tide(
    policy: Policy, fleet: Fleet, states: dict[str, PoolState], now: float
) -> tuple[list[MoveIntent], list[Decision]]:
    """New moves for every hot pool, most pressed first; each pool takes part once a tick."""
    moves: list[MoveIntent] = []
    decisions: list[Decision] = []
    touched: set[str] = set()
    hot = sorted(states.values(), key=lambda s: s.policy.high_watermark - s.utilization)
    for state in hot:
        wanted, why = wants_capacity(state, policy)
        if not wanted:
            if why:
                decisions.append(Decision("hold", state.name, why))
            continue
        picked = _borrow(state, policy, fleet, states, now, touched)
        if not picked:
            decisions.append(Decision("hold", state.name, "no pool can lend an engine now", why))
        for engine, source in picked:
            reason = f"{state.name} {why}; {source.name} at {source.utilization:.2f}"
            moves.append(MoveIntent(engine.id, source.name, state.name, reason))
            decisions.append(Decision("move", state.name, f"{engine.id} from {source.name}", why))
            touched.update((state.name, source.name))
    return moves, decisions


def _sources(
    state: PoolState, policy: Policy, states: dict[str, PoolState], touched: set[str]
) -> list[Source]:
    """Pools holding engines whose home is `state` first, then idle lenders to it."""
    result: list[Source] = []
    homes = {e.pool for s in states.values() for e in s.engines if e.home == state.name}
    lenders = [p.name for p in policy.lenders_to(state.name)]
    for name in [*sorted(homes - {state.name}), *lenders]:
        source = states.get(name)
        if source is None or source.cooling or name in touched:
            continue
        if any(s.state is source for s in result):
            continue
        lending = name in lenders and source.warm
        lending = lending and source.utilization < source.policy.low_watermark
        if not lending and name not in homes:
            continue
        # A pool that lends keeps enough for its target; one that only gives engines back
        # keeps enough to stay under its high watermark.
        limit = source.policy.target_utilization if lending else source.policy.high_watermark
        spare_slots = source.slots - source.load / limit
        spare_engines = source.ready - source.moving_out - source.policy.min
        if spare_engines > 0 and spare_slots > 0:
            result.append(Source(source, spare_engines, spare_slots, lending))
    return result


def _borrow(
    state: PoolState,
    policy: Policy,
    fleet: Fleet,
    states: dict[str, PoolState],
    now: float,
    touched: set[str],
) -> list[tuple[Engine, PoolState]]:
    gap = state.gap_slots()
    room = min(state.headroom(), policy.loop.max_moves_per_tick)
    picked: list[tuple[Engine, PoolState]] = []
    for source in _sources(state, policy, states, touched):
        candidates = [
            e
            for e in source.state.engines
            if movable(e, fleet, policy, now) and (source.lending or e.home == state.name)
        ]
        # Engines whose home is the hot pool go back first, whatever their size.
        home = [e for e in candidates if e.home == state.name]
        others = [e for e in candidates if e.home != state.name]
        for group in (home, others):
            for engine in _cover(group, gap, source, room - len(picked)):
                picked.append((engine, source.state))
                gap -= engine.slots
        if gap <= 0 or len(picked) >= room:
            break
    return picked


def _cover(candidates: Iterable[Engine], gap: float, source: Source, room: int) -> list[Engine]:
    """Engines whose slots best cover `gap` within the source's spare engines and slots."""
    chosen: list[Engine] = []
    pool = sorted(candidates, key=lambda e: -e.slots)
    while gap > 0 and len(chosen) < room and source.engines > 0 and pool:
        fits = [e for e in pool if e.slots <= source.slots]
        if not fits:
            break
        # The smallest engine that closes the gap alone, else the largest that fits.
        closing = [e for e in fits if e.slots >= gap]
        engine = min(closing, key=lambda e: e.slots) if closing else fits[0]
        chosen.append(engine)
        pool.remove(engine)
        gap -= engine.slots
        source.slots -= engine.slots
        source.engines -= 1
    return chosen
