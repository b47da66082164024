"""FakeFleet: a small simulated fleet that runs the scheduler's pure decisions tick after tick.

Each tick does what the runner does, against plain data instead of a registry:
it sets every pool's load, steps the unfinished moves (`step_move`) and applies
their actions, plans (`plan`) against the engines as observed at the start of
the tick, and applies the plan. Time is a plain float advanced by the policy's
`interval_s`; nothing sleeps.

- Drain / Restore set and clear `admin_drained`; SetPool relabels `pool` (and `home`).
- SwitchModel puts the engine in `switching` for `switch_s` (forever for an engine in
  `stuck`), then it serves the new language.
- A MoveIntent becomes a pending MoveView started now; ScaleUp registers provider engines
  in the pool after the tier's `start_s`; ScaleDown removes the engine.
- Load: the test gives each pool's work (or its utilisation of the ready slots); the work
  is spread over the pool's ready engines (beyond their slots it queues), and drained
  engines finish theirs at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from scheduler.actions import Action, Drain, Restore, SetPool, SwitchModel
from scheduler.fleet import Engine, Fleet, MoveView
from scheduler.moves import Step, step_move
from scheduler.plan import Plan, plan
from scheduler.policy import DEFAULT_POLICY_TEXT, Policy, parse_policy
from scheduler.pools import Memory

PROVIDER = "local"


def make_engine(
    id: str,
    pool: str = "",
    *,
    lang: str = "",
    tier: str = "idc",
    slots: int = 4,
    state: str = "ready",
    in_flight: int = 0,
    queued: int = 0,
    home: str | None = None,
    provider: str = "",
    admin_drained: bool = False,
    registered_at: float = -1000.0,
) -> Engine:
    """An engine; its language defaults to the pool name's prefix (`zh-public` -> zh)."""
    return Engine(
        id=id,
        lang=lang or (pool.split("-")[0] if pool else "zh"),
        tier=tier,
        weight=100,
        slots=slots,
        state=state,
        in_flight=in_flight,
        queued=queued,
        pool=pool,
        home=pool if home is None else home,
        provider=provider,
        admin_drained=admin_drained,
        registered_at=registered_at,
    )


def make_policy(text: str = DEFAULT_POLICY_TEXT, **pools: tuple[int, int]) -> Policy:
    """The policy of `text`, with `name=(min, max)` overriding pools' bounds (`zh_public=`)."""
    policy = parse_policy(text)
    bounds = {name.replace("_", "-"): value for name, value in pools.items()}
    return replace(
        policy,
        pools=tuple(
            replace(p, min=bounds[p.name][0], max=bounds[p.name][1]) if p.name in bounds else p
            for p in policy.pools
        ),
    )


def warm_memory(policy: Policy, samples: Mapping[str, Iterable[float]], now: float) -> Memory:
    """A memory whose window holds `samples` per pool, one per interval, the last at `now`."""
    memory = Memory.for_policy(policy)
    for pool, values in samples.items():
        series = list(values)
        for index, value in enumerate(series):
            at = now - (len(series) - 1 - index) * policy.loop.interval_s
            memory.window.add(pool, at, value)
    return memory


@dataclass(frozen=True)
class Tick:
    """What happened at one tick: the plan, the move steps, and the fleet after it."""

    now: float
    observed: Fleet
    """The fleet as the plan saw it (engines at the start of the tick, moves after stepping)."""
    plan: Plan
    steps: tuple[tuple[MoveView, Step], ...]
    engines: Mapping[str, Engine]
    moves: tuple[MoveView, ...]

    def active_ids(self) -> set[str]:
        return {m.instance_id for m in self.moves if not m.finished}


@dataclass
class FakeFleet:
    policy: Policy
    engines: dict[str, Engine]
    now: float = 0.0
    switch_s: float = 3.0
    stuck: frozenset[str] = frozenset()
    arrivals: list[tuple[float, Engine]] = field(default_factory=list)
    """Engines that register (without a pool unless they carry one) at a given time."""
    moves: list[MoveView] = field(default_factory=list)
    history: list[Tick] = field(default_factory=list)
    switching: dict[str, tuple[str, float]] = field(default_factory=dict)
    starting: list[tuple[float, Engine]] = field(default_factory=list)
    memory: Memory | None = None
    carry: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        if self.memory is None:
            self.memory = Memory.for_policy(self.policy)

    @staticmethod
    def of(
        policy: Policy,
        engines: Iterable[Engine],
        *,
        switch_s: float = 3.0,
        stuck: Iterable[str] = (),
        arrivals: Iterable[tuple[float, Engine]] = (),
    ) -> FakeFleet:
        return FakeFleet(
            policy,
            {e.id: e for e in engines},
            switch_s=switch_s,
            stuck=frozenset(stuck),
            arrivals=list(arrivals),
        )

    def run(self, load: Callable[[float], Mapping[str, float]], ticks: int) -> list[Tick]:
        """`ticks` ticks, with `load(now)` giving each pool's work (in-flight plus queued)."""
        return [self.tick(load(self.now)) for _ in range(ticks)]

    def run_utilization(
        self, utilization: Callable[[float], Mapping[str, float]], ticks: int
    ) -> list[Tick]:
        """`ticks` ticks, with `utilization(now)` giving each pool's work per ready slot."""
        return [self.tick(self._work(utilization(self.now))) for _ in range(ticks)]

    def ready_slots(self, pool: str) -> int:
        return sum(e.slots for e in self.engines.values() if e.pool == pool and e.ready)

    def _work(self, utilization: Mapping[str, float]) -> dict[str, float]:
        self._register()
        self._finish_switches()
        return {pool: value * self.ready_slots(pool) for pool, value in utilization.items()}

    def tick(self, load: Mapping[str, float]) -> Tick:
        """One tick with `load` units of work per pool spread over its ready engines."""
        assert self.memory is not None
        self._register()
        self._finish_switches()
        self._set_load(load)
        observed = dict(self.engines)
        steps = self._step_moves(Fleet(observed, tuple(self.moves)))
        seen = Fleet(observed, tuple(self.moves))
        starting: dict[str, int] = {}
        for _at, engine in self.starting:
            starting[engine.pool] = starting.get(engine.pool, 0) + 1
        running = len(self.starting) + sum(1 for e in self.engines.values() if e.provider)
        decided = plan(self.policy, seen, self.memory, self.now, starting=starting, running=running)
        self._apply(decided)
        tick = Tick(self.now, seen, decided, tuple(steps), dict(self.engines), tuple(self.moves))
        self.history.append(tick)
        self.now += self.policy.loop.interval_s
        return tick

    def _register(self) -> None:
        for queue in (self.arrivals, self.starting):
            due = [(at, e) for at, e in queue if at <= self.now]
            for item in due:
                queue.remove(item)
                self.engines[item[1].id] = replace(item[1], registered_at=self.now)

    def _finish_switches(self) -> None:
        for instance_id, (lang, done_at) in list(self.switching.items()):
            engine = self.engines.get(instance_id)
            if engine is None:
                del self.switching[instance_id]
            elif self.now >= done_at:
                del self.switching[instance_id]
                self.engines[instance_id] = replace(engine, lang=lang, state="ready")

    def _set_load(self, load: Mapping[str, float]) -> None:
        for pool, value in load.items():
            ready = sorted(
                (e for e in self.engines.values() if e.pool == pool and e.ready),
                key=lambda e: e.id,
            )
            # Whole requests, the rounding carried over so the load is exact on average.
            wanted = max(0.0, value) + self.carry.get(pool, 0.0)
            total = round(wanted)
            self.carry[pool] = wanted - total
            share, extra = divmod(total, len(ready)) if ready else (0, 0)
            for index, engine in enumerate(ready):
                work = share + (1 if index < extra else 0)
                in_flight = min(work, engine.slots)
                if (engine.in_flight, engine.queued) != (in_flight, work - in_flight):
                    self.engines[engine.id] = replace(
                        engine, in_flight=in_flight, queued=work - in_flight
                    )
        for engine in list(self.engines.values()):
            if not engine.ready and engine.load:
                self.engines[engine.id] = replace(engine, in_flight=0, queued=0)

    def _step_moves(self, fleet: Fleet) -> list[tuple[MoveView, Step]]:
        steps = []
        for index, move in enumerate(self.moves):
            if move.finished:
                continue
            step = step_move(move, fleet, self.policy, self.now)
            steps.append((move, step))
            for action in step.actions:
                self._act(action)
            if step.changes(move):
                self.moves[index] = replace(
                    move,
                    state=step.state,
                    reason=step.reason,
                    updated_at=self.now,
                    from_lang=step.from_lang or move.from_lang,
                    to_lang=step.to_lang or move.to_lang,
                )
        return steps

    def _act(self, action: Action) -> None:
        engine = self.engines.get(action.instance_id)
        if engine is None:
            return
        if isinstance(action, Drain):
            engine = replace(engine, admin_drained=True)
        elif isinstance(action, Restore):
            engine = replace(engine, admin_drained=False)
        elif isinstance(action, SwitchModel):
            done_at = float("inf") if engine.id in self.stuck else self.now + self.switch_s
            self.switching[engine.id] = (action.lang, done_at)
            engine = replace(engine, state="switching")
        elif isinstance(action, SetPool):
            engine = replace(engine, pool=action.pool, home=action.home or engine.home)
        self.engines[engine.id] = engine

    def _apply(self, decided: Plan) -> None:
        for admission in decided.admissions:
            self._act(admission)
        active = {m.instance_id for m in self.moves if not m.finished}
        for intent in decided.moves:
            engine = self.engines[intent.instance_id]
            # What the registry refuses: a second move, a move from no pool or to the same one.
            assert intent.instance_id not in active, f"{intent} while already moving"
            assert engine.pool == intent.from_pool != intent.to_pool, intent
            target = self.policy.pool(intent.to_pool)
            assert target is not None
            self.moves.append(
                MoveView(
                    id=f"m-{next(self._ids)}",
                    instance_id=engine.id,
                    from_pool=engine.pool,
                    to_pool=intent.to_pool,
                    state="pending",
                    reason=intent.reason,
                    started_at=self.now,
                    updated_at=self.now,
                    from_lang=engine.lang,
                    to_lang=target.lang,
                )
            )
            active.add(engine.id)
        for up in decided.scale_up:
            assert self.policy.provider is not None
            start_s = {str(tier): s for tier, s in self.policy.provider.start_s.items()}
            ready_at = self.now + start_s[up.tier]
            for _ in range(up.count):
                engine = make_engine(
                    f"p-{next(self._ids)}",
                    up.pool,
                    lang=up.lang,
                    tier=up.tier,
                    slots=self.policy.provider.slots,
                    provider=PROVIDER,
                )
                self.starting.append((ready_at, engine))
        for down in decided.scale_down:
            assert self.engines[down.instance_id].provider, down
            del self.engines[down.instance_id]
