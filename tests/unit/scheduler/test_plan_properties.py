"""Properties of the scheduler's decisions, tick after tick, against a simulated fleet.

`FakeFleet` applies every plan (admissions, moves stepped to the end, provider engines
started and given back) on a fake clock; hypothesis draws the pools' bounds, the
fleet, the loop's timing and the load. Whatever it draws, no pool goes below its
`min` or above its `max`, cooldowns and `min_stay_s` hold, and an admitted engine
is always in some pool; under steady load nothing moves at all.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from scheduler.fleet import Engine
from scheduler.policy import Policy, Tier
from tests.support.sim_fleet import PROVIDER, FakeFleet, Tick, make_engine, make_policy

ZH, EN = "zh-public", "en-public"
PROPERTY = settings(max_examples=40, deadline=None)
TICKS = 200  # seconds of simulated time per example
SEED = 20260101


@dataclass(frozen=True)
class Scenario:
    policy: Policy
    engines: tuple[Engine, ...]
    arrivals: tuple[tuple[float, Engine], ...]
    stuck: frozenset[str]
    switch_s: float
    segments: tuple[tuple[float, tuple[tuple[str, float], ...]], ...]
    """(until, work per pool): the load, in requests, up to each time."""

    def load(self, now: float) -> Mapping[str, float]:
        work = next((w for until, w in self.segments if now < until), self.segments[-1][1])
        return dict(work)

    def run(self) -> list[Tick]:
        return _simulate(self)


@functools.lru_cache(maxsize=128)
def _simulate(scenario: Scenario) -> list[Tick]:
    """The ticks of a scenario, simulated once.

    The invariant tests below share one `@seed`, so hypothesis draws them the same
    scenarios and each run is simulated once for all of them; a failure replayed from
    the example database is simply simulated afresh.
    """
    fleet = FakeFleet.of(
        scenario.policy,
        scenario.engines,
        switch_s=scenario.switch_s,
        stuck=scenario.stuck,
        arrivals=scenario.arrivals,
    )
    return fleet.run(scenario.load, TICKS)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    policy = make_policy(
        zh_public=(draw(st.integers(0, 2)), draw(st.integers(2, 6))),
        en_public=(draw(st.integers(0, 2)), draw(st.integers(2, 6))),
    )
    loop = replace(
        policy.loop,
        cooldown_s=draw(st.sampled_from([2.0, 5.0, 15.0])),
        min_stay_s=draw(st.sampled_from([10.0, 30.0, 60.0])),
        max_moves_per_tick=draw(st.integers(1, 2)),
    )
    assert policy.provider is not None
    start_s: dict[Tier, float] = {
        "cvm": draw(st.sampled_from([5.0, 30.0])),
        "serverless": draw(st.sampled_from([1.0, 12.0])),
    }
    provider = replace(policy.provider, start_s=start_s) if draw(st.booleans()) else None
    return replace(policy, loop=loop, provider=provider)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    busy, quiet = st.floats(0.8, 1.4), st.floats(0.0, 0.35)
    policy = draw(policies())
    engines: list[Engine] = []
    for pool in policy.pools:
        for index in range(draw(st.integers(max(pool.min, 1), pool.max))):
            tier = draw(st.sampled_from(["idc", "idc", "cvm", "serverless"]))
            engines.append(
                make_engine(
                    f"{pool.lang}-{index}",
                    pool.name,
                    slots=draw(st.sampled_from([2, 4, 8])),
                    tier=tier,
                    provider="" if tier == "idc" else PROVIDER,
                )
            )
    arrivals = tuple(
        (draw(st.floats(0, TICKS)), make_engine(f"new-{i}", lang=lang, home=""))
        for i, lang in enumerate(draw(st.lists(st.sampled_from(["zh", "en"]), max_size=2)))
    )
    stuck = draw(st.frozensets(st.sampled_from([e.id for e in engines]), max_size=1))
    slots = {
        p.name: max(4, sum(e.slots for e in engines if e.pool == p.name)) for p in policy.pools
    }
    # Mostly a tide that turns (one pool busy, the other quiet), sometimes anything.
    segments, until, hot = [], 0.0, draw(st.sampled_from([*slots, None]))
    for _ in range(draw(st.integers(1, 6))):
        until += draw(st.floats(5, 60))
        turn = [name for name in slots if name != hot]
        hot = draw(st.sampled_from([*turn, None])) if draw(st.booleans()) else hot
        work = tuple(
            (name, draw(busy if name == hot else quiet if hot else st.floats(0, 1.4)) * total)
            for name, total in slots.items()
        )
        segments.append((until, work))
    return Scenario(
        policy, tuple(engines), arrivals, stuck, draw(st.floats(1, 20)), tuple(segments)
    )


@st.composite
def turning_tides(draw: st.DrawFn) -> Scenario:
    """Two pools, no provider, and a tide that turns every few seconds: engines go back and
    forth as fast as the policy lets them."""
    policy = make_policy(zh_public=(1, 8), en_public=(1, 8))
    loop = replace(
        policy.loop,
        cooldown_s=draw(st.sampled_from([1.0, 2.0, 5.0])),
        min_stay_s=draw(st.sampled_from([20.0, 30.0, 60.0])),
    )
    policy = replace(policy, loop=loop, provider=None)
    sizes = {ZH: draw(st.integers(3, 5)), EN: draw(st.integers(3, 5))}
    engines = tuple(
        make_engine(f"{name[:2]}-{i}", name) for name, size in sizes.items() for i in range(size)
    )
    period, busy = draw(st.floats(8, 40)), draw(st.floats(0.9, 1.5))
    segments = []
    for index in range(int(TICKS / period) + 1):
        hot = (ZH, EN)[index % 2]
        work = tuple(
            (name, (busy if name == hot else 0.1) * 4 * size) for name, size in sizes.items()
        )
        segments.append(((index + 1) * period, work))
    return Scenario(policy, engines, (), frozenset(), draw(st.floats(1, 5)), tuple(segments))


ANY_LOAD = st.one_of(scenarios(), turning_tides())


def free_ready(engines: Mapping[str, Engine], active: set[str], pool: str) -> int:
    """Ready engines of `pool` that no move is taking away."""
    return sum(1 for e in engines.values() if e.pool == pool and e.ready and e.id not in active)


def steps_by_pool(ticks: list[Tick]) -> dict[str, list[float]]:
    """When each pool took part in a move or a scale step (one entry per tick)."""
    times: dict[str, list[float]] = {}
    for tick in ticks:
        decided = tick.plan
        pools = {m.from_pool for m in decided.moves} | {m.to_pool for m in decided.moves}
        pools |= {u.pool for u in decided.scale_up} | {d.pool for d in decided.scale_down}
        for pool in pools:
            times.setdefault(pool, []).append(tick.now)
    return times


def story(ticks: list[Tick], until: float) -> str:
    """The decisions up to `until` (holds left out), for a failure message."""
    return "\n".join(
        f"{t.now:g} {d}"
        for t in ticks
        if t.now <= until
        for d in t.plan.decisions
        if d.kind != "hold"
    )


# -- steady load -------------------------------------------------------------------------


@st.composite
def steady_fleets(draw: st.DrawFn) -> tuple[FakeFleet, Callable[[float], dict[str, float]]]:
    """Pools settled inside their watermarks, each at a constant utilisation plus noise.

    The noise is within ±0.1 but steady on average (each sample's noise is the change
    of a value within ±0.05), so single samples cross the watermarks and the mean of a
    window stays within 0.01 of the constant.
    """
    policy = make_policy()
    engines: list[Engine] = []
    for pool in policy.pools:
        for index in range(draw(st.integers(3, 5))):
            engines.append(
                make_engine(f"{pool.lang}-{index}", pool.name, slots=draw(st.sampled_from([4, 8])))
            )
        engines.append(
            make_engine(f"{pool.lang}-sls", pool.name, tier="serverless", provider=PROVIDER)
        )
    level = {
        p.name: draw(st.floats(p.low_watermark + 0.04, p.high_watermark - 0.04))
        for p in policy.pools
    }
    rng = random.Random(draw(st.integers(0, 2**32)))
    alternating = draw(st.booleans())
    last = {name: 0.0 for name in level}

    def utilization(now: float) -> dict[str, float]:
        result = {}
        for name, value in level.items():
            wobble = (0.05 if int(now) % 2 else -0.05) if alternating else rng.uniform(-0.05, 0.05)
            result[name] = value + wobble - last[name]
            last[name] = wobble
        return result

    return FakeFleet.of(policy, engines), utilization


@settings(max_examples=20, deadline=None)
@given(steady=steady_fleets())
def test_no_moves_under_noisy_steady_load(
    steady: tuple[FakeFleet, Callable[[float], dict[str, float]]],
) -> None:
    fleet, utilization = steady
    ticks = fleet.run_utilization(utilization, 400)
    acted = [(t.now, d) for t in ticks for d in t.plan.decisions if d.kind != "hold"]
    assert acted == []
    assert fleet.moves == []


@settings(max_examples=20, deadline=None)
@given(
    zh_work=st.floats(6, 40),
    en_work=st.floats(0, 2),
    en_size=st.integers(2, 6),
)
def test_steady_imbalance_moves_engines_one_way_then_settles(
    zh_work: float, en_work: float, en_size: int
) -> None:
    policy = make_policy()
    engines = [make_engine(f"zh-{i}", ZH) for i in range(2)]
    engines += [make_engine(f"en-{i}", EN) for i in range(en_size)]
    fleet = FakeFleet.of(policy, engines)
    ticks = fleet.run(lambda now: {ZH: zh_work, EN: en_work}, 300)
    moves = [m for t in ticks for m in t.plan.moves]
    assert {(m.from_pool, m.to_pool) for m in moves} <= {(EN, ZH)}
    assert [t.now for t in ticks[-60:] if t.plan.acts] == []


# -- invariants under changing load ------------------------------------------------------


@PROPERTY
@seed(SEED)
@given(scenario=ANY_LOAD)
def test_min_is_never_broken(scenario: Scenario) -> None:
    ticks = scenario.run()
    first = ticks[0].observed
    for pool in scenario.policy.pools:
        if free_ready(first.engines, set(), pool.name) < pool.min:
            continue
        for tick in ticks:
            count = free_ready(tick.engines, tick.active_ids(), pool.name)
            assert count >= pool.min, f"{pool.name} at {tick.now:g}:\n{story(ticks, tick.now)}"


@PROPERTY
@seed(SEED)
@given(scenario=ANY_LOAD)
def test_moves_never_start_from_a_pool_at_its_min(scenario: Scenario) -> None:
    for tick in scenario.run():
        leaving = tick.observed.moving_ids()
        for intent in tick.plan.moves:
            pool = scenario.policy.pool(intent.from_pool)
            assert pool is not None
            left = free_ready(tick.observed.engines, leaving, pool.name)
            assert left > pool.min, f"{intent} at {tick.now:g} leaves {left - 1} < {pool.min}"
            leaving.add(intent.instance_id)


@PROPERTY
@seed(SEED)
@given(scenario=ANY_LOAD)
def test_max_is_never_exceeded(scenario: Scenario) -> None:
    ticks = scenario.run()
    for pool in scenario.policy.pools:
        for tick in ticks:
            size = sum(1 for e in tick.engines.values() if e.pool == pool.name)
            assert size <= pool.max, f"{pool.name} at {tick.now:g}:\n{story(ticks, tick.now)}"


@PROPERTY
@seed(SEED)
@given(scenario=ANY_LOAD)
def test_cooldowns_are_honoured(scenario: Scenario) -> None:
    ticks = scenario.run()
    cooldown_s = scenario.policy.loop.cooldown_s
    for pool, times in steps_by_pool(ticks).items():
        for before, after in itertools.pairwise(times):
            assert after - before >= cooldown_s, f"{pool} at {after:g}:\n{story(ticks, after)}"


@settings(max_examples=25, deadline=None)
@given(scenario=turning_tides())
def test_engine_never_moves_again_within_min_stay(scenario: Scenario) -> None:
    last: dict[str, float] = {}
    min_stay_s = scenario.policy.loop.min_stay_s
    for tick in scenario.run():
        for intent in tick.plan.moves:
            previous = last.get(intent.instance_id)
            assert previous is None or tick.now - previous >= min_stay_s, intent
            last[intent.instance_id] = tick.now


@PROPERTY
@seed(SEED)
@given(scenario=ANY_LOAD)
def test_admitted_engine_is_always_in_some_pool(scenario: Scenario) -> None:
    placed: set[str] = set()
    for tick in scenario.run():
        for engine in tick.engines.values():
            if engine.id in placed:
                assert engine.pool, f"{engine.id} lost its pool at {tick.now:g}"
            elif engine.pool:
                placed.add(engine.id)
