"""The move state machine: one step of one move, from what the registry says now (pure).

    pending ─► draining ─► switching ─► admitting ─► done
                  │            │             │
                  └────────────┴─────────────┴──► rolling_back ─► rolled_back

The engine keeps its source `pool` label until `admitting`, so it is never in
no pool; while it drains and switches it is admin-drained (weight 0), so no
router sends it work. Every step is recomputed from recorded state, which is
what makes a move resumable by a new leader after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.actions import Action, Drain, Restore, SetPool, SwitchModel
from scheduler.fleet import Engine, Fleet, MoveView
from scheduler.policy import Policy

GONE_STATES = frozenset({"unhealthy"})


@dataclass(frozen=True)
class Step:
    """The state the move should be in, why, and the actions that bring the engine there."""

    state: str
    reason: str
    actions: tuple[Action, ...] = ()
    from_lang: str = ""
    """Set when a move starts: the engine's language and the one the target pool needs."""
    to_lang: str = ""

    def changes(self, move: MoveView) -> bool:
        return self.state != move.state


def step_move(move: MoveView, fleet: Fleet, policy: Policy, now: float) -> Step:
    """The next step of an unfinished move."""
    engine = fleet.engines.get(move.instance_id)
    if engine is None:
        return Step("rolled_back", f"{move.instance_id} deregistered during the move")
    elapsed = now - move.updated_at
    if move.state == "pending":
        return _start(move, engine, fleet, policy)
    if move.state == "rolling_back":
        return _roll_back(move, engine, elapsed, policy)
    if engine.state in GONE_STATES:
        return _rolling_back(move, engine, f"{engine.id} became {engine.state}")
    if move.state == "draining":
        return _drain(move, engine, elapsed, policy)
    if move.state == "switching":
        return _switch(move, engine, elapsed, policy)
    return _admit(move, engine, elapsed, policy)


def refusal(move: MoveView, engine: Engine, fleet: Fleet, policy: Policy) -> str | None:
    """Why a move may not start now, or None."""
    target = policy.pool(move.to_pool)
    if target is None:
        return f"{move.to_pool!r} is not a pool of the policy"
    if engine.pool != move.from_pool:
        return f"{engine.id} is in {engine.pool or 'no pool'}, not {move.from_pool}"
    if not engine.ready:
        return f"{engine.id} is {engine.state}{' (drained)' if engine.admin_drained else ''}"
    source = policy.pool(move.from_pool)
    moving = fleet.moving_ids() - {engine.id}
    ready_left = sum(1 for e in fleet.in_pool(move.from_pool) if e.ready and e.id not in moving)
    if source is not None and ready_left - 1 < source.min:
        return f"it would leave {move.from_pool} below its min of {source.min}"
    incoming = sum(1 for m in fleet.active_moves() if m.to_pool == move.to_pool)
    if len(fleet.in_pool(move.to_pool)) + incoming > target.max:
        return f"it would take {move.to_pool} above its max of {target.max}"
    return None


def _start(move: MoveView, engine: Engine, fleet: Fleet, policy: Policy) -> Step:
    why_not = refusal(move, engine, fleet, policy)
    target = policy.pool(move.to_pool)
    if why_not is not None or target is None:
        return Step("rolled_back", f"refused: {why_not}")
    return Step("draining", move.reason, (Drain(engine.id),), engine.lang, target.lang)


def _drain(move: MoveView, engine: Engine, elapsed: float, policy: Policy) -> Step:
    if not engine.admin_drained:
        return Step("draining", move.reason, (Drain(engine.id),))
    timed_out = elapsed >= policy.loop.drain_timeout_s
    if not engine.idle and not timed_out:
        return Step("draining", move.reason)
    if engine.lang == move.to_lang:
        return _admitting(move, engine)
    return Step("switching", move.reason, (SwitchModel(engine.id, move.to_lang),))


def _switch(move: MoveView, engine: Engine, elapsed: float, policy: Policy) -> Step:
    if engine.lang == move.to_lang and engine.state != "switching":
        return _admitting(move, engine)
    if elapsed >= policy.loop.switch_timeout_s:
        return _rolling_back(move, engine, f"switch not done in {policy.loop.switch_timeout_s:g}s")
    return Step("switching", move.reason)


def _admitting(move: MoveView, engine: Engine) -> Step:
    home = engine.home or move.from_pool
    return Step(
        "admitting", move.reason, (SetPool(engine.id, move.to_pool, home), Restore(engine.id))
    )


def _admit(move: MoveView, engine: Engine, elapsed: float, policy: Policy) -> Step:
    if engine.pool == move.to_pool and engine.ready:
        return Step("done", move.reason)
    if elapsed >= policy.loop.switch_timeout_s:
        return _rolling_back(move, engine, f"not ready in {move.to_pool} in time")
    return _admitting(move, engine)


def _rolling_back(move: MoveView, engine: Engine, why: str) -> Step:
    actions: list[Action] = [Drain(engine.id)]
    if engine.pool != move.from_pool:
        actions.append(SetPool(engine.id, move.from_pool, engine.home or move.from_pool))
    if move.from_lang and engine.lang != move.from_lang:
        actions.append(SwitchModel(engine.id, move.from_lang))
    return Step("rolling_back", f"{move.reason}; rolled back: {why}", tuple(actions))


def _roll_back(move: MoveView, engine: Engine, elapsed: float, policy: Policy) -> Step:
    if engine.state in GONE_STATES:
        return Step("rolled_back", f"{move.reason}; {engine.id} is {engine.state}")
    back = engine.pool == move.from_pool and (
        not move.from_lang or (engine.lang == move.from_lang and engine.state != "switching")
    )
    if back:
        return Step("rolled_back", move.reason, (Restore(engine.id),))
    if elapsed >= policy.loop.switch_timeout_s:
        return Step("rolled_back", f"{move.reason}; the old model did not come back in time")
    return Step("rolling_back", move.reason, _rolling_back(move, engine, "").actions)
