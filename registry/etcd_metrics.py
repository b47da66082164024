"""Prometheus metrics of a replica's etcd side, read from its counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class EtcdFigures:
    """What a replica counted so far (see registry/replica.py)."""

    attachment_writes: int
    watch_events: int
    watch_restarts: int
    relists: int
    lease_grants: int
    owned: int
    held_for_others: int


class EtcdCollector(Collector):
    """The `tidepool_registry_etcd_*` family; nothing to keep in step, so nothing drifts."""

    def __init__(self, figures: Callable[[], EtcdFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        f = self._figures()
        for name, help_text, value in (
            (
                "tidepool_registry_etcd_attachment_writes",
                "etcd transactions that wrote this replica's engines' attachments.",
                f.attachment_writes,
            ),
            (
                "tidepool_registry_etcd_watch_events",
                "Changes made through other replicas applied from the etcd watch.",
                f.watch_events,
            ),
            (
                "tidepool_registry_etcd_watch_restarts",
                "Times the etcd watch broke and was opened again (on the next member).",
                f.watch_restarts,
            ),
            (
                "tidepool_registry_etcd_relists",
                "Whole-prefix re-lists after a compaction or a revision that went backwards.",
                f.relists,
            ),
            (
                "tidepool_registry_etcd_lease_grants",
                "etcd leases this replica was granted (1 at start, then 1 per lost lease).",
                f.lease_grants,
            ),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter
        gauge = GaugeMetricFamily(
            "tidepool_registry_etcd_attached_instances",
            "Engines whose attachment this replica holds (self) or follows (other).",
            labels=["owner"],
        )
        gauge.add_metric(["self"], f.owned)
        gauge.add_metric(["other"], f.held_for_others)
        yield gauge
