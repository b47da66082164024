"""The scheduler's view of the fleet at one tick: engines, pools and the moves under way.

Pure data built by the runner from registry listings; the decision code reads
only this, so it runs the same against the live registry and the day simulator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOME_LABEL = "home"
"""Set by the scheduler when it admits an engine: the pool it goes back to."""
PROVIDER_LABEL = "provider"
"""Set on engines a provider started, so only those are ever given back."""
READY = "ready"
FINISHED_MOVES = frozenset({"done", "rolled_back"})


@dataclass(frozen=True)
class Engine:
    """One instance as the scheduler needs it."""

    id: str
    lang: str
    tier: str
    weight: int
    slots: int
    state: str
    in_flight: int = 0
    queued: int = 0
    pool: str = ""
    home: str = ""
    provider: str = ""
    admin_drained: bool = False
    registered_at: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state == READY and not self.admin_drained

    @property
    def load(self) -> int:
        return self.in_flight + self.queued

    @property
    def idle(self) -> bool:
        return self.load == 0


@dataclass(frozen=True)
class MoveView:
    """A move as recorded in the registry (times are wall-clock seconds)."""

    id: str
    instance_id: str
    from_pool: str
    to_pool: str
    state: str
    reason: str
    started_at: float
    updated_at: float
    from_lang: str = ""
    to_lang: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_MOVES


@dataclass(frozen=True)
class Fleet:
    """Engines by id and the moves the registry knows, at time `now`."""

    engines: Mapping[str, Engine]
    moves: tuple[MoveView, ...] = ()

    @staticmethod
    def of(engines: Iterable[Engine], moves: Iterable[MoveView] = ()) -> Fleet:
        return Fleet({e.id: e for e in engines}, tuple(moves))

    def in_pool(self, pool: str) -> list[Engine]:
        return [e for e in self.engines.values() if e.pool == pool]

    def active_moves(self) -> list[MoveView]:
        return [m for m in self.moves if not m.finished]

    def moving_ids(self) -> set[str]:
        return {m.instance_id for m in self.active_moves()}

    def last_moved_at(self, instance_id: str) -> float | None:
        """When the engine's latest move started (moves in flight count too)."""
        times = [m.started_at for m in self.moves if m.instance_id == instance_id]
        return max(times) if times else None

    def last_pool_change_at(self, pool: str) -> float | None:
        """When a move into or out of `pool` last started (for its cooldown)."""
        times = [m.started_at for m in self.moves if pool in (m.from_pool, m.to_pool)]
        return max(times) if times else None


def pool_utilization(engines: Iterable[Engine]) -> tuple[float, int, int]:
    """(in-flight + queued) / slots over the ready engines, with the load and the slots."""
    load = slots = 0
    for engine in engines:
        if engine.ready:
            load += engine.load
            slots += engine.slots
    return (load / slots if slots else 0.0), load, slots
