"""The router's Prometheus metrics.

Labelled children are cached per label tuple: `labels()` costs microseconds and
the request path calls into here twice per request. What every call counts
(attempts by status, attempt and call latency) is kept as plain numbers and made
into metric families only when scraped (`_Tally`): prometheus_client's `inc` and
`observe` take a lock per value (a histogram two) and cost about a microsecond
each, four of them per relayed call.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from router.shares import RecentCounts
from router.table import PoolStatus

REFUSAL_REASONS: Final[tuple[str, ...]] = (
    "rapid_reset",
    "control_flood",
    "handshake_timeout",
    "idle_timeout",
    "max_connections",
    "slow_reader",
    "malformed",
    "content_type",
    "stream_closed",
)
"""The bounded `reason` label of `tidepool_router_refusals_total` (the relay's per-peer budgets)."""
MAX_METHODS: Final = 64
"""Distinct `method` labels of `tidepool_router_call_seconds`; the rest count as `OTHER_METHOD`."""
OTHER_METHOD: Final = "other"
ENGINE_ERROR_CODES: Final = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""Answers that count as an engine's recent errors in `GET /v1/endpoints`: the engine's
or the connection's fault, not the caller's (INVALID_ARGUMENT, CANCELLED, ...)."""
# Final tuples are annotated: a bare `Final` tuple becomes a native tuple in the compiled
# build, which another module-level name cannot read (NameError at import).
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class RouterMetrics:
    """Implements the table's events and the forwarder's metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._clock = clock
        self._recent_errors: dict[str, RecentCounts] = {}
        self._last_error: dict[str, tuple[str, float]] = {}
        r = self.registry
        self._tally = _Tally()
        r.register(self._tally)
        self._errors = Counter(
            "tidepool_router_errors",
            "Calls the router failed itself (no route, no instance), by code",
            ["code"],
            registry=r,
        )
        self._retries = Counter(
            "tidepool_router_retries",
            "Attempts retried on another instance, by alias and reason",
            ["alias", "reason"],
            registry=r,
        )
        self._budget = Counter(
            "tidepool_router_retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            ["alias"],
            registry=r,
        )
        self._ejections = Counter(
            "tidepool_router_ejections",
            "Instances ejected: active (registry said unhealthy) or passive (a failure seen)",
            ["alias", "engine", "kind"],
            registry=r,
        )
        self._panic = Gauge(
            "tidepool_router_panic", "1 while the pool routes over all instances", ["alias"],
            registry=r,
        )  # fmt: skip
        self._panic_total = Counter(
            "tidepool_router_panic_entered", "Times a pool entered panic mode", ["alias"],
            registry=r,
        )  # fmt: skip
        self._last_resort = Gauge(
            "tidepool_router_last_resort",
            "1 while a pool routes to instances the registry gave up on, as nothing else is left",
            ["alias"],
            registry=r,
        )
        self._last_resort_total = Counter(
            "tidepool_router_last_resort_entered", "Times a pool fell back to last resort",
            ["alias"], registry=r,
        )  # fmt: skip
        self._refusals = Counter(
            "tidepool_router_refusals",
            "Relay connections or streams refused for breaking a per-peer budget, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:  # every series from the start: rate() sees the first one
            self._refusals.labels(reason)
        self._attempt_timeouts = Counter(
            "tidepool_router_attempt_timeouts",
            "Attempts of idempotent methods that waited past their engine's attempt timeout"
            " (a percentile of its recent latency times a margin), by alias",
            ["alias"],
            registry=r,
        )
        self._hedges = Counter(
            "tidepool_router_hedges",
            "Second attempts started on another engine after an attempt timeout (grpc path:"
            " beside the slow one; relay: instead of it), by alias",
            ["alias"],
            registry=r,
        )
        self._hedge_wins = Counter(
            "tidepool_router_hedge_wins",
            "Hedges that answered before the attempt they were started beside, by alias",
            ["alias"],
            registry=r,
        )
        self._ping_failures = Counter(
            "tidepool_router_engine_ping_failures",
            "Engine connections failed for no PING ACK in time (relay keepalive)",
            registry=r,
        )
        self._ejection_labels: set[tuple[str, str, str]] = set()

    def watch(
        self,
        stale_s: Callable[[], float],
        connected: Callable[[], bool],
        pools: Callable[[], list[PoolStatus]],
    ) -> None:
        """Gauges read when scraped: view staleness, watch state and pool sizes."""
        r = self.registry
        Gauge(
            "tidepool_router_view_stale_seconds",
            "Seconds since the registry watch was last up (0 while it is)",
            registry=r,
        ).set_function(stale_s)
        Gauge(
            "tidepool_router_watch_connected", "1 while the registry watch is up", registry=r
        ).set_function(lambda: float(connected()))
        r.register(_PoolCollector(pools))

    def retain(self, instance_ids: Collection[str]) -> None:
        """Drop the per-instance series of instances that are gone for good, so a
        fleet that churns (serverless ids come and go) does not grow memory forever."""
        answered = self._tally.answered
        for key in [k for k in answered if k[1] not in instance_ids]:
            del answered[key]
        for labels in [k for k in self._ejection_labels if k[1] not in instance_ids]:
            self._ejection_labels.discard(labels)
            with contextlib.suppress(KeyError):
                self._ejections.remove(*labels)
        for recent in self._recent_errors.values():
            recent.retain(instance_ids)
        for engine in [e for e in self._last_error if e not in instance_ids]:
            del self._last_error[engine]

    def recent_errors(self, alias: str) -> dict[str, int]:
        """Errors (`ENGINE_ERROR_CODES`) per engine of `alias` over the last minute."""
        recent = self._recent_errors.get(alias)
        return recent.counts(self._clock()) if recent is not None else {}

    def last_errors(self) -> Mapping[str, tuple[str, float]]:
        """Engine -> (code, monotonic time) of its latest error answer, on any alias."""
        return self._last_error

    # ---- the forwarder -----------------------------------------------------

    def answered(self, alias: str, instance: str, code: str, seconds: float) -> None:
        if code in ENGINE_ERROR_CODES:
            self._errored(alias, instance, code)
        tally = self._tally
        key = (alias, instance, code)
        answered = tally.answered
        answered[key] = answered.get(key, 0) + 1
        row = tally.attempts.get(alias)
        if row is None:
            row = tally.attempts[alias] = _row()
        row[_bucket(_BOUNDS, seconds)] += 1
        row[-1] += seconds

    def _errored(self, alias: str, instance: str, code: str) -> None:
        now = self._clock()
        recent = self._recent_errors.get(alias)
        if recent is None:
            recent = self._recent_errors[alias] = RecentCounts()
        recent.add(instance, now)
        self._last_error[instance] = (code, now)

    def called(self, method: str, seconds: float) -> None:
        """One caller's call ended (any status): its whole time, retries included."""
        calls = self._tally.calls
        row = calls.get(method)
        if row is None:
            if len(calls) >= MAX_METHODS:  # callers choose the name: bound it
                method = OTHER_METHOD
                row = calls.get(method)
            if row is None:
                row = calls[method] = _row()
        row[_bucket(_BOUNDS, seconds)] += 1
        row[-1] += seconds

    def retried(self, alias: str, reason: str) -> None:
        self._retries.labels(alias, reason).inc()

    def budget_exhausted(self, alias: str) -> None:
        self._budget.labels(alias).inc()

    def attempt_timed_out(self, alias: str, instance: str) -> None:
        self._attempt_timeouts.labels(alias).inc()
        self._last_error[instance] = ("ATTEMPT_TIMEOUT", self._clock())

    def hedged(self, alias: str) -> None:
        self._hedges.labels(alias).inc()

    def hedge_won(self, alias: str) -> None:
        self._hedge_wins.labels(alias).inc()

    def ping_failed(self) -> None:
        self._ping_failures.inc()

    def failed(self, code: str) -> None:
        self._errors.labels(code).inc()

    def refused(self, reason: str) -> None:
        """The relay refused a connection or a stream (`router.relay.limits.REFUSAL_REASONS`)."""
        self._refusals.labels(reason).inc()

    # ---- the table ---------------------------------------------------------

    def ejected(self, alias: str, instance_id: str, kind: str) -> None:
        self._ejection_labels.add((alias, instance_id, kind))
        self._ejections.labels(alias, instance_id, kind).inc()

    def panic_changed(self, alias: str, panic: bool) -> None:
        self._panic.labels(alias).set(float(panic))
        if panic:
            self._panic_total.labels(alias).inc()

    def last_resort_changed(self, alias: str, last_resort: bool) -> None:
        self._last_resort.labels(alias).set(float(last_resort))
        if last_resort:
            self._last_resort_total.labels(alias).inc()


_BOUNDS: Final[tuple[float, ...]] = LATENCY_BUCKETS
_bucket: Final = bisect.bisect_left
"""The bucket of a value: the first bound at or above it (`le`), past the last: +Inf."""


_LE: Final = [*(floatToGoString(b) for b in _BOUNDS), "+Inf"]  # type: ignore[no-untyped-call]
"""The `le` labels, written as prometheus_client's own histograms write them."""


def _row() -> list[float]:
    """One histogram series: a count per bucket (+Inf last), then the sum."""
    return [0.0] * (len(_BOUNDS) + 2)


class _Tally(Collector):
    """The per-call counts as plain numbers, made into metric families when scraped."""

    def __init__(self) -> None:
        self.answered: dict[tuple[str, str, str], int] = {}
        """(alias, engine, code) -> attempts answered so."""
        self.attempts: dict[str, list[float]] = {}
        """alias -> attempt latency (`_row`)."""
        self.calls: dict[str, list[float]] = {}
        """method -> call latency (`_row`)."""

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "tidepool_router_requests",
            "Attempts answered by engines, by alias, engine (instance id) and gRPC status",
            labels=["alias", "engine", "code"],
        )
        for key, count in list(self.answered.items()):
            requests.add_metric(list(key), count)
        yield requests
        yield _histogram(
            "tidepool_router_attempt_seconds",
            "Time from sending an attempt to an engine to its answer",
            "alias",
            self.attempts,
        )
        yield _histogram(
            "tidepool_router_call_seconds",
            "Time from a caller's request to its final status, retries included, by method"
            f" (the first {MAX_METHODS} methods seen; later ones as {OTHER_METHOD!r})",
            "method",
            self.calls,
        )


def _histogram(name: str, help_text: str, label: str, rows: dict[str, list[float]]) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=[label])
    for value, row in list(rows.items()):
        cumulative = itertools.accumulate(row[:-1])
        family.add_metric([value], list(zip(_LE, cumulative, strict=True)), row[-1])
    return family


class _PoolCollector(Collector):
    """Instances per pool, read from the table when scraped."""

    def __init__(self, pools: Callable[[], list[PoolStatus]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        # Why the pool's size is a family of its own: as a state beside routable and
        # ejected it was counted twice by sum(tidepool_router_endpoints).
        size = GaugeMetricFamily(
            "tidepool_router_pool_endpoints", "Instances per pool, whatever their state",
            labels=["alias"],
        )  # fmt: skip
        family = GaugeMetricFamily(
            "tidepool_router_endpoints",
            "Instances per pool: routable per the registry, and ejected here",
            labels=["alias", "state"],
        )
        gap = GaugeMetricFamily(
            "tidepool_router_share_gap",
            "Largest |configured - received| share of any engine of the pool over the last"
            " minute (0..1; 0 without picks): above a few hundredths, weights are not honoured",
            labels=["alias"],
        )
        for pool in self._pools():
            size.add_metric([pool.alias], pool.endpoints)
            family.add_metric([pool.alias, "routable"], pool.routable)
            family.add_metric([pool.alias, "ejected"], len(pool.ejected))
            gap.add_metric([pool.alias], pool.share_gap)
        yield size
        yield family
        yield gap
