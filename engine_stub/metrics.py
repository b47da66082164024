"""Prometheus metrics of the engine stub, declared once against an injectable registry."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.sdk import LoadSource

# Scoring takes milliseconds to seconds; a hung request never lands in a bucket.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EngineMetrics:
    """Request counts and latency, faults, model switches, and the live load."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "tidepool_engine_requests_total",
            "Evaluate requests answered, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tidepool_engine_request_duration_seconds",
            "Time from request arrival to answer, queueing included.",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.faults = Counter(
            "tidepool_engine_injected_faults_total",
            "Faults injected by --fault-* flags, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.model_switches = Counter(
            "tidepool_engine_model_switches_total",
            "Model switches completed.",
            registry=self.registry,
        )
        self.accepting = Gauge(
            "tidepool_engine_accepting",
            "1 while the engine takes new work, 0 while loading, draining or switching.",
            registry=self.registry,
        )

    def watch_load(self, source: LoadSource) -> None:
        """Export in-flight, queued, slots and progress read from `source` at scrape time."""
        self.registry.register(_LoadCollector(source))


class _LoadCollector(Collector):
    def __init__(self, source: LoadSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        load = self._source.load()
        yield GaugeMetricFamily(
            "tidepool_engine_in_flight", "Requests being scored now.", value=load.in_flight
        )
        yield GaugeMetricFamily(
            "tidepool_engine_queued", "Requests waiting for a slot.", value=load.queued
        )
        yield GaugeMetricFamily("tidepool_engine_slots", "Concurrent slots.", value=load.slots)
        yield CounterMetricFamily(
            "tidepool_engine_progress", "Requests finished scoring.", value=load.progress
        )
