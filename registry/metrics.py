"""Prometheus metrics of the registry, declared once against an injectable registry."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from registry.catalog import State

FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _InstanceCollector(Collector):
    """Counts instances by state and tier at scrape time, so no gauge can drift.

    It reads the catalog's tally of published states rather than building a view
    per instance: at 10,000 instances that took ~250 ms of the event loop per scrape.
    """

    def __init__(self, counts: Callable[[], collections.Counter[tuple[State, str]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tidepool_registry_instances",
            "Registered instances by state and tier.",
            labels=["state", "tier"],
        )
        counts = {(state.value, tier): n for (state, tier), n in self._counts().items()}
        for state in State:
            for tier in ("idc", "cvm", "serverless"):
                counts.setdefault((state.value, tier), 0)
        for (state_name, tier), count in sorted(counts.items()):
            family.add_metric([state_name, tier], count)
        yield family


@dataclass
class RegistryMetrics:
    """Every metric the registry exports."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.heartbeats = Counter(
            "tidepool_registry_heartbeats_total", "Heartbeats received.", registry=r
        )
        self.heartbeats_dropped = Counter(
            "tidepool_registry_heartbeats_dropped_total",
            "Heartbeats dropped because their stream sent them faster than its budget.",
            registry=r,
        )
        self.registrations = Counter(
            "tidepool_registry_registrations_total", "Successful registrations.", registry=r
        )
        self.rejected = Counter(
            "tidepool_registry_rejected_total",
            "Requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.expirations = Counter(
            "tidepool_registry_expirations_total",
            "Instances marked unhealthy, by reason (ttl, stream_broken).",
            ["reason"],
            registry=r,
        )
        self.watchers = Gauge("tidepool_registry_watchers", "Open watch streams.", registry=r)
        self.watch_resyncs = Counter(
            "tidepool_registry_watch_resyncs_total",
            "Watchers that fell behind and were sent a fresh snapshot.",
            registry=r,
        )
        self.fanout = Histogram(
            "tidepool_registry_watch_fanout_seconds",
            "Time from a catalog change to its event being written to a watcher stream.",
            buckets=FANOUT_BUCKETS,
            registry=r,
        )
        self.self_preservation = Gauge(
            "tidepool_registry_self_preservation",
            "1 while many silent lapses at once hold expiry back (suspected registry partition).",
            registry=r,
        )
        self.gc_pause = Histogram(
            "tidepool_registry_gc_pause_seconds",
            "Garbage-collection pauses of the registry process, by generation (0, 1, 2).",
            ["generation"],
            buckets=FANOUT_BUCKETS,
            registry=r,
        )
        self.attached = Gauge(
            "tidepool_registry_heartbeat_streams", "Open heartbeat streams.", registry=r
        )

    def track_instances(self, counts: Callable[[], collections.Counter[tuple[State, str]]]) -> None:
        """Export instance counts from `counts` (the catalog's `state_counts`)."""
        self.registry.register(_InstanceCollector(counts))
