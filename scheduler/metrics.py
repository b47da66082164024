"""Prometheus metrics of the scheduler, declared once against an injectable registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class SchedulerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.leader = Gauge(
            "tidepool_scheduler_leader", "1 while this scheduler holds the leadership.", registry=r
        )
        self.fence = Gauge(
            "tidepool_scheduler_fence", "The fencing number of the current leadership.", registry=r
        )
        self.decisions = Counter(
            "tidepool_scheduler_decisions_total",
            "Decisions by kind (admit, move, scale_up, scale_down, hold) and pool.",
            ["kind", "pool"],
            registry=r,
        )
        self.moves_finished = Counter(
            "tidepool_scheduler_moves_finished_total",
            "Moves that ended, by final state (done, rolled_back).",
            ["state"],
            registry=r,
        )
        self.moves_in_flight = Gauge(
            "tidepool_scheduler_moves_in_flight", "Moves not yet done or rolled back.", registry=r
        )
        self.pool_utilization = Gauge(
            "tidepool_scheduler_pool_utilization_ratio",
            "Smoothed (in-flight + queued) / slots over a pool's ready engines.",
            ["pool"],
            registry=r,
        )
        self.pool_size = Gauge(
            "tidepool_scheduler_pool_engines",
            "Engines per pool, by kind (size, ready, desired).",
            ["pool", "state"],
            registry=r,
        )
        self.errors = Counter(
            "tidepool_scheduler_errors_total",
            "Registry or provider calls that failed, by kind.",
            ["kind"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            "tidepool_scheduler_tick_seconds",
            "Time of one control-loop tick.",
            buckets=TICK_BUCKETS,
            registry=r,
        )
