"""The clock loop of a simulated day: one scheduler tick every `interval_s`, requests between.

At each tick, in this order: the fleet catches up with the clock (engines that
finished starting or switching, drained engines that stopped), the strategy's
controller looks and acts, then the requests that arrive before the next tick
are placed in the pools' queues as they stand. Nothing sleeps; a day is a loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from loadtest.day.arrivals import Requests
from loadtest.day.fleet_config import FleetConfig
from loadtest.day.queueing import FloatArray
from loadtest.day.strategies import Events, build, pool_of
from loadtest.day.traffic import DAY_S, LANGS, Trace
from scheduler.policy import Policy

SAMPLE_S = 60.0
"""The timeline keeps the fleet's size once a simulated minute."""
Progress = Callable[[str, float], None]
"""(strategy, simulated seconds done)."""


@dataclass
class Timeline:
    """Engines per (pool, tier) once a minute."""

    minutes: list[float] = field(default_factory=list)
    sizes: list[Mapping[tuple[str, str], int]] = field(default_factory=list)


@dataclass
class DayRun:
    """What one strategy did with the day."""

    strategy: str
    events: Events
    engine_s: Mapping[str, float]
    latency_s: Mapping[str, FloatArray]
    unserved: int
    timeline: Timeline
    wall_s: float
    pools: Mapping[str, str]
    """lang → pool name."""


def run_day(
    strategy: str,
    policy: Policy,
    fleet: FleetConfig,
    trace: Trace,
    requests: Mapping[str, Requests],
    on_progress: Progress | None = None,
    day_s: float = DAY_S,
) -> DayRun:
    started = time.perf_counter()
    sim, controller = build(strategy, policy, fleet, trace)
    pools = {lang: pool_of(policy, lang).name for lang in LANGS}
    latencies: dict[str, list[FloatArray]] = {lang: [] for lang in LANGS}
    timeline = Timeline()
    interval_s = policy.loop.interval_s
    now, next_sample, next_report = 0.0, 0.0, 0.0
    while now < day_s:
        sim.advance(now)
        controller.tick(sim, now)
        end = min(now + interval_s, day_s)
        for lang, pool in pools.items():
            arrivals, work = requests[lang].between(now, end)
            served = sim.serve(pool, arrivals.tolist(), work.tolist())
            latencies[lang].append(served.latency_s)
        if now >= next_sample:
            timeline.minutes.append(now / 60.0)
            timeline.sizes.append(sim.sizes())
            next_sample += SAMPLE_S
        if on_progress is not None and now >= next_report:
            on_progress(strategy, now)
            next_report += 3 * 3600.0
        now = end
    sim.close(day_s)
    unserved = sum(len(queue.backlog) for queue in sim.queues.values())
    return DayRun(
        strategy=strategy,
        events=controller.events,
        engine_s=dict(sim.engine_s),
        latency_s={lang: np.concatenate(parts) for lang, parts in latencies.items()},
        unserved=unserved,
        timeline=timeline,
        wall_s=time.perf_counter() - started,
        pools=pools,
    )
