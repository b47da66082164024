"""The simulated fleet: engines that obey the scheduler's actions on the simulated clock.

What the registry and the engines do in the live system, done on plain data:
Drain/Restore set `admin_drained`; SetPool relabels; SwitchModel makes the
engine `switching` for the fleet's `switch_s`, then it serves the new
language; a started engine registers (ready, in its pool, `provider` set) once
its tier's `start_s` has passed; a retired engine is drained and stops once
idle (or after the drain timeout). An engine takes requests from its pool's
queue exactly while it is ready and not drained. Engine-seconds are counted
per tier from the moment an engine is asked for until it stops; owned idc
engines are paid all day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from loadtest.day.fleet_config import TIER_NAMES, FleetConfig
from loadtest.day.queueing import InSystem, Served, SlotQueue
from scheduler.actions import Action, Drain, Restore, SetPool, SwitchModel
from scheduler.fleet import READY, Engine

PROVIDER = "local"
STARTING = "starting"
SWITCHING = "switching"


@dataclass
class SimEngine:
    number: int
    id: str
    lang: str
    tier: str
    pool: str
    home: str
    provider: str
    ready_at: float
    """When it registers (provider engines) or 0.0 (owned ones)."""
    billed_from: float
    state: str = READY
    admin_drained: bool = False
    switch_to: str = ""
    switch_done_at: float = 0.0
    retire_since: float | None = None
    serving: str = ""
    """The pool whose queue holds its slots now, "" when it takes no requests."""


@dataclass
class SimFleet:
    """Engines, one queue per pool, and the engine-seconds spent per tier."""

    config: FleetConfig
    drain_timeout_s: float
    engines: dict[str, SimEngine] = field(default_factory=dict)
    queues: dict[str, SlotQueue] = field(default_factory=dict)
    in_system: InSystem = field(default_factory=InSystem)
    engine_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIER_NAMES, 0.0))
    started: int = 0
    """Provider engines asked for so far (names them)."""
    count: int = 0
    """Engines created so far (numbers them for the queues)."""

    def add_owned(self, lang: str, pool: str, count: int) -> None:
        """Owned idc engines already serving in `pool` at the start of the day."""
        for _ in range(count):
            self._new(f"idc-{lang}-{len(self.engines)}", lang, "idc", pool, "", 0.0, 0.0)

    def start(self, pool: str, lang: str, tier: str, count: int, now: float) -> None:
        """A provider start: the engines register after the tier's start time."""
        ready_at = now + self.config.tiers[tier].start_s
        for _ in range(count):
            engine = self._new(f"{tier}-{self.started}", lang, tier, pool, PROVIDER, ready_at, now)
            engine.state = STARTING
            self.started += 1

    def _new(
        self, id: str, lang: str, tier: str, pool: str, provider: str, ready_at: float, now: float
    ) -> SimEngine:
        engine = SimEngine(self.count, id, lang, tier, pool, pool, provider, ready_at, now)
        self.count += 1
        self.engines[id] = engine
        self.queues.setdefault(pool, SlotQueue())
        return engine

    def retire(self, instance_id: str, now: float) -> None:
        """Give a provider engine back: drain now, stop once idle (`advance`)."""
        engine = self.engines.get(instance_id)
        if engine is not None and engine.retire_since is None:
            engine.admin_drained = True
            engine.retire_since = now

    def apply(self, action: Action, now: float) -> None:
        engine = self.engines.get(action.instance_id)
        if engine is None:
            return
        if isinstance(action, Drain):
            engine.admin_drained = True
        elif isinstance(action, Restore):
            engine.admin_drained = False
        elif isinstance(action, SwitchModel):
            engine.state, engine.switch_to = SWITCHING, action.lang
            engine.switch_done_at = now + self.config.switch_s
        elif isinstance(action, SetPool):
            engine.pool, engine.home = action.pool, action.home or engine.home
            self.queues.setdefault(action.pool, SlotQueue())
        self.sync(now)

    def advance(self, now: float) -> None:
        """Registrations, finished switches and stopped engines due by `now`."""
        counts = self.in_system.counts(now, self.count)
        for engine in list(self.engines.values()):
            if engine.state == STARTING and engine.ready_at <= now:
                engine.state = READY
            elif engine.state == SWITCHING and engine.switch_done_at <= now:
                engine.state, engine.lang = READY, engine.switch_to
            if engine.retire_since is not None:
                idle = counts[engine.number] == 0
                if idle or now - engine.retire_since >= self.drain_timeout_s:
                    self._stop(engine, now)
        self.sync(now)

    def _stop(self, engine: SimEngine, now: float) -> None:
        self.engine_s[engine.tier] += now - engine.billed_from
        if engine.serving:
            self.queues[engine.serving].leave(engine.number)
        del self.engines[engine.id]

    def sync(self, now: float) -> None:
        """Put every engine's slots in the queue of the pool it serves now (or in none)."""
        for engine in self.engines.values():
            wanted = engine.pool if engine.state == READY and not engine.admin_drained else ""
            if wanted == engine.serving:
                continue
            if engine.serving:
                self.queues[engine.serving].leave(engine.number)
            if wanted:
                spec = self.config.tiers[engine.tier]
                self.queues[wanted].join(engine.number, spec.slots, spec.speed, now)
            engine.serving = wanted

    def serve(self, pool: str, arrivals: list[float], work: list[float]) -> Served:
        served = self.queues.setdefault(pool, SlotQueue()).serve(arrivals, work)
        self.in_system.add(served)
        return served

    def close(self, now: float) -> None:
        """End of the day: bill every engine still up."""
        for engine in self.engines.values():
            self.engine_s[engine.tier] += now - engine.billed_from

    def snapshot(self, now: float) -> list[Engine]:
        """The registered engines as the scheduler sees them, with their in-system load."""
        counts = self.in_system.counts(now, self.count)
        return [
            self._view(engine, int(counts[engine.number]))
            for engine in self.engines.values()
            if engine.state != STARTING
        ]

    def _view(self, engine: SimEngine, load: int) -> Engine:
        spec = self.config.tiers[engine.tier]
        in_flight = min(load, spec.slots)
        return Engine(
            id=engine.id,
            lang=engine.lang,
            tier=engine.tier,
            weight=spec.weight,
            slots=spec.slots,
            state=engine.state,
            in_flight=in_flight,
            queued=load - in_flight,
            pool=engine.pool,
            home=engine.home,
            provider=engine.provider,
            admin_drained=engine.admin_drained,
            registered_at=engine.ready_at,
        )

    def starting(self) -> dict[str, int]:
        """Provider engines asked for and not yet registered, per pool."""
        counts: dict[str, int] = {}
        for engine in self.engines.values():
            if engine.state == STARTING:
                counts[engine.pool] = counts.get(engine.pool, 0) + 1
        return counts

    def running(self) -> int:
        """Provider engines up or starting (the provider's `max_engines` counts these)."""
        return sum(1 for engine in self.engines.values() if engine.provider)

    def sizes(self) -> Mapping[tuple[str, str], int]:
        """Engines up or starting per (pool, tier), for the timeline."""
        counts: dict[tuple[str, str], int] = {}
        for engine in self.engines.values():
            key = (engine.pool, engine.tier)
            counts[key] = counts.get(key, 0) + 1
        return counts
