"""The routing table: routing keys to pools, and one pool's balancer, ejections and panic.

It is rebuilt from a `RegistryView` on every watch event and asked for one endpoint
per request attempt. Pure apart from reading the monotonic clock: no I/O, no
`await`, one event loop. Each pool's picker is replaced, never mutated by the
table, so a rebuild cannot tear a pick in progress.

Why so much bookkeeping here: three sources change what a pool may route to at
different speeds (the registry's health, this router's passive ejections, slow
start), and the last-resort rule needs the previous view to decide whether an
event may empty a pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import grpc

from router.balancer import Picker, PickerKind, make_picker
from router.endpoint import Endpoint
from router.outlier import (
    Departure,
    OutlierConfig,
    OutlierDetector,
    last_resort,
    select_candidates,
)
from router.shares import RecentCounts, configured_shares, largest_gap, received_shares
from router.slow_start import SlowStartConfig
from router.view import READY, RegistryView

ALIAS_KEY: Final = "x-tidepool-alias"
TENANT_KEY: Final = "x-tidepool-tenant"
LANG_KEY: Final = "x-tidepool-lang"
_NONE: Final[frozenset[str]] = frozenset()
_SHOWN_CHARS: Final = 64


class RouteError(Exception):
    """A request cannot be routed: the status code to answer and why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TableEvents(Protocol):
    """What the table reports as it happens (metrics implement this)."""

    def ejected(self, alias: str, instance_id: str, kind: str) -> None: ...

    def panic_changed(self, alias: str, panic: bool) -> None: ...

    def last_resort_changed(self, alias: str, last_resort: bool) -> None: ...


class _NoEvents:
    def ejected(self, alias: str, instance_id: str, kind: str) -> None:
        pass

    def panic_changed(self, alias: str, panic: bool) -> None:
        pass

    def last_resort_changed(self, alias: str, last_resort: bool) -> None:
        pass


@dataclass(frozen=True)
class TableConfig:
    balancer: PickerKind = "wrr"
    slow_start: SlowStartConfig | None = field(default_factory=SlowStartConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)


@dataclass(frozen=True)
class PoolStatus:
    """One pool as metrics, /readyz and tests see it."""

    alias: str
    endpoints: int
    routable: int
    ejected: frozenset[str]
    panic: bool
    last_resort: bool
    share_gap: float = 0.0
    """Largest |configured - received| share over the last minute (see `PoolDetail`)."""


@dataclass(frozen=True)
class PoolDetail:
    """One pool at one instant, for `GET /v1/endpoints` (router/endpoints_view.py)."""

    alias: str
    endpoints: tuple[Endpoint, ...]
    """After last resort; `weight` is the effective (admin-overridden) weight."""
    pickable: Mapping[str, float]
    """Ids the picker may return, with the weight it uses (slow start applied)."""
    ejected_until: Mapping[str, float]
    """Passive ejections in force: id -> monotonic time they end."""
    ejections: Mapping[str, int]
    """Recent passive ejections per id (each makes the next one longer)."""
    picks: Mapping[str, int]
    """Picks per id by the balancer over the last `window_s` seconds."""
    window_s: float
    panic: bool
    last_resort: bool

    @property
    def configured(self) -> dict[str, float]:
        """Share each pickable endpoint's effective weight promises (0 for the rest)."""
        by_id = {e.id: e.weight for e in self.endpoints if e.id in self.pickable}
        return configured_shares(by_id)

    @property
    def received(self) -> dict[str, float]:
        return received_shares(self.picks)

    @property
    def share_gap(self) -> float:
        return largest_gap(self.configured, self.received)


class _Pool:
    """One alias's endpoints (after last resort), detector and current picker."""

    __slots__ = (
        "alias",
        "detector",
        "endpoints",
        "healthy",
        "last_resort",
        "panic",
        "picker",
        "picks",
        "refresh_at",
        "rejoined",
        "was_ejected",
    )

    def __init__(self, alias: str, outlier: OutlierConfig) -> None:
        self.alias = alias
        self.endpoints: tuple[Endpoint, ...] = ()
        self.last_resort = False
        self.detector = OutlierDetector(outlier)
        self.picker: Picker | None = None
        self.panic = False
        self.healthy = 0
        self.refresh_at = -math.inf
        self.rejoined: dict[str, float] = {}
        self.was_ejected: frozenset[str] = _NONE
        self.picks = RecentCounts()


class RoutingTable:
    """Routing keys to aliases, and aliases to a balanced, ejection-aware choice."""

    def __init__(
        self,
        config: TableConfig | None = None,
        *,
        events: TableEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config or TableConfig()
        self._events: TableEvents = events or _NoEvents()
        self._clock = clock
        self._pools: dict[str, _Pool] = {}
        self._single: dict[str, tuple[str, ...]] = {}
        self._tenants: Mapping[tuple[str, str], tuple[str, ...]] = {}
        self._joined: dict[str, float] = {}
        self._has_view = False
        self.in_flight: dict[str, int] = {}
        """Requests in flight per instance id, kept by the forwarder (least-loaded reads it)."""

    @property
    def has_view(self) -> bool:
        return self._has_view

    # ---- building ----------------------------------------------------------

    def update(self, view: RegistryView, departures: Mapping[str, Departure] | None = None) -> None:
        """Rebuild every pool from `view`; `departures` says why instances left."""
        now = self._clock()
        initial = not self._has_view
        joined: dict[str, float] = {}
        for info in view.instances.values():
            if info.state == READY and info.weight > 0:
                # A warm fleet known at start (or from the file) is not ramped.
                joined[info.id] = self._joined.get(info.id, -math.inf if initial else now)
        self._joined = joined
        pools: dict[str, _Pool] = {}
        for alias in view.aliases:
            pool = self._pools.get(alias) or _Pool(alias, self._config.outlier)
            self._refill(pool, view, departures or {}, now)
            pools[alias] = pool
        for gone in self._pools.keys() - pools.keys():
            self._events.panic_changed(gone, False)
            self._events.last_resort_changed(gone, False)
        self._pools = pools
        self._single = {alias: (alias,) for alias in pools}
        self._tenants = dict(view.tenants)
        self._has_view = True

    def _refill(
        self, pool: _Pool, view: RegistryView, departures: Mapping[str, Departure], now: float
    ) -> None:
        current = [i.endpoint(self._joined.get(i.id, -math.inf)) for i in view.members(pool.alias)]
        present = {e.id for e in current}
        gone = Departure.EXPIRED
        reasons = {
            e.id: Departure.MOVED if e.id in view.instances else departures.get(e.id, gone)
            for e in pool.endpoints
            if e.id not in present
        }
        healthy_before = {e.id for e in pool.endpoints if e.routable and not pool.last_resort}
        result = last_resort(pool.endpoints, current, reasons)
        for endpoint in current:
            if endpoint.id in healthy_before and not endpoint.healthy and endpoint.weight > 0:
                self._events.ejected(pool.alias, endpoint.id, "active")
        for endpoint_id, reason in reasons.items():
            if endpoint_id in healthy_before and reason is Departure.EXPIRED:
                self._events.ejected(pool.alias, endpoint_id, "active")
        if result.last_resort != pool.last_resort:
            self._events.last_resort_changed(pool.alias, result.last_resort)
        pool.endpoints = result.endpoints
        pool.last_resort = result.last_resort
        pool.detector.set_pool(e.id for e in pool.endpoints)
        pool.picks.retain(e.id for e in pool.endpoints)
        self._build(pool, now)

    def _build(self, pool: _Pool, now: float) -> None:
        ejected = pool.detector.ejected(now)
        for endpoint_id in pool.was_ejected - ejected:
            pool.rejoined[endpoint_id] = now  # back from ejection: ramp it again
        pool.was_ejected = ejected
        endpoints = pool.endpoints
        if pool.rejoined:
            endpoints = tuple(
                replace(e, joined_at=max(e.joined_at, pool.rejoined[e.id]))
                if e.id in pool.rejoined
                else e
                for e in endpoints
            )
        chosen = select_candidates(endpoints, ejected, self._config.outlier.panic_threshold_percent)
        pool.picker = make_picker(
            self._config.balancer,
            chosen.candidates,
            now=now,
            slow_start=self._config.slow_start,
            previous=pool.picker,
            in_flight=self.in_flight,
        )
        if chosen.panic != pool.panic:
            self._events.panic_changed(pool.alias, chosen.panic)
        pool.panic = chosen.panic
        # In panic or last resort nothing here is known to be healthy: a tenant's
        # later alias is preferred over it.
        pool.healthy = 0 if chosen.panic or pool.last_resort else len(chosen.candidates)
        times = (pool.picker.refresh_at, pool.detector.next_readmission_at(now))
        wake = [t for t in times if t is not None]
        pool.refresh_at = min(wake) if wake else math.inf
        if pool.picker.refresh_at is None:
            pool.rejoined.clear()  # every ramp is over

    # ---- per request -------------------------------------------------------

    def route(self, alias: str | None, tenant: str | None, lang: str | None) -> tuple[str, ...]:
        """The aliases to try, in order, for a request's routing key."""
        if not self._has_view:
            raise RouteError(
                grpc.StatusCode.UNAVAILABLE, "no routing view yet: the registry was not reached"
            )
        if alias:
            found = self._single.get(alias)
            if found is None:
                raise RouteError(
                    grpc.StatusCode.NOT_FOUND, f"{ALIAS_KEY}: unknown alias {_shown(alias)}"
                )
            return found
        if tenant:
            if not lang:
                raise RouteError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{LANG_KEY}: required with {TENANT_KEY}"
                )
            aliases = self._tenants.get((tenant, lang))
            if aliases is None:
                raise RouteError(
                    grpc.StatusCode.NOT_FOUND,
                    f"{TENANT_KEY}: no route for tenant {_shown(tenant)} and lang {_shown(lang)}",
                )
            return aliases
        raise RouteError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"missing routing key: set {ALIAS_KEY}, or {TENANT_KEY} and {LANG_KEY}",
        )

    def pick(
        self, aliases: tuple[str, ...], exclude: frozenset[str] = _NONE
    ) -> tuple[str, Endpoint] | None:
        """One endpoint from the first alias that has a healthy one (the last alias
        is used whatever its health: panic or last resort)."""
        now = self._clock()
        last = len(aliases) - 1
        for index, alias in enumerate(aliases):
            pool = self._pools.get(alias)
            if pool is None:
                continue
            if now >= pool.refresh_at:
                self._build(pool, now)
            if pool.healthy == 0 and index < last:
                continue
            assert pool.picker is not None
            endpoint = pool.picker.pick(exclude)
            if endpoint is not None:
                pool.picks.add(endpoint.id, now)  # received shares: /v1/endpoints
                return alias, endpoint
        return None

    def report_failure(self, alias: str, endpoint_id: str) -> bool:
        """A connect failure or UNAVAILABLE: eject locally at once (True if it did)."""
        pool = self._pools.get(alias)
        if pool is None:
            return False
        now = self._clock()
        if not pool.detector.report_failure(endpoint_id, now):
            return False
        self._events.ejected(alias, endpoint_id, "passive")
        self._build(pool, now)
        return True

    def report_timeout(self, alias: str, endpoint_id: str, answered_at: float) -> bool:
        """An attempt timed out with no answer from the engine since it began: consecutive
        ones eject it as silent (`OutlierDetector.report_timeout`); True if this one did."""
        pool = self._pools.get(alias)
        if pool is None:
            return False
        now = self._clock()
        if not pool.detector.report_timeout(endpoint_id, now, answered_at):
            return False
        self._events.ejected(alias, endpoint_id, "passive")
        self._build(pool, now)
        return True

    def report_silent(self, address: str) -> list[tuple[str, str]]:
        """The engine at `address` left a PING unanswered: eject it as silent in every pool
        (`OutlierDetector.report_silent`); the (alias, id) pairs now silent."""
        now = self._clock()
        silent = []
        for pool in self._pools.values():
            for endpoint in pool.endpoints:
                if endpoint.address != address:
                    continue
                if pool.detector.report_silent(endpoint.id, now):
                    self._events.ejected(pool.alias, endpoint.id, "passive")
                    self._build(pool, now)
                if pool.detector.is_silent(endpoint.id, now):
                    silent.append((pool.alias, endpoint.id))
        return silent

    def report_alive(self, address: str) -> bool:
        """The engine at `address` answered a probe: its silent ejections end (slow start
        ramps it again); True if one did."""
        now = self._clock()
        back = False
        for pool in self._pools.values():
            for endpoint in pool.endpoints:
                if endpoint.address == address and pool.detector.report_alive(endpoint.id, now):
                    self._build(pool, now)
                    back = True
        return back

    def is_silent(self, alias: str, endpoint_id: str) -> bool:
        pool = self._pools.get(alias)
        return pool is not None and pool.detector.is_silent(endpoint_id, self._clock())

    def report_success(self, alias: str, endpoint_id: str) -> None:
        """A good answer: past ejections of the endpoint decay."""
        pool = self._pools.get(alias)
        if pool is not None and pool.detector.ejections(endpoint_id):
            pool.detector.report_success(endpoint_id, self._clock())

    # ---- inspection --------------------------------------------------------

    def pools(self) -> list[PoolStatus]:
        now = self._clock()
        return [
            PoolStatus(
                alias=p.alias,
                endpoints=len(p.endpoints),
                routable=sum(1 for e in p.endpoints if e.routable),
                ejected=p.detector.ejected(now),
                panic=p.panic,
                last_resort=p.last_resort,
                share_gap=self._detail(p, now).share_gap,
            )
            for _, p in sorted(self._pools.items())
        ]

    def details(self) -> list[PoolDetail]:
        """Every pool in alias order, as `GET /v1/endpoints` shows it."""
        now = self._clock()
        return [self._detail(p, now) for _, p in sorted(self._pools.items())]

    def _detail(self, pool: _Pool, now: float) -> PoolDetail:
        if now >= pool.refresh_at:
            self._build(pool, now)  # as the next pick would: ramps and ejections current
        picker, detector = pool.picker, pool.detector
        assert picker is not None
        until = {e.id: detector.ejected_until(e.id, now) for e in pool.endpoints}
        return PoolDetail(
            alias=pool.alias,
            endpoints=pool.endpoints,
            pickable=dict(zip((e.id for e in picker.endpoints), picker.weights, strict=True)),
            ejected_until={k: v for k, v in until.items() if v is not None},
            ejections={e.id: n for e in pool.endpoints if (n := detector.ejections(e.id))},
            picks=pool.picks.counts(now),
            window_s=pool.picks.window_s,
            panic=pool.panic,
            last_resort=pool.last_resort,
        )

    def endpoints(self, alias: str) -> tuple[Endpoint, ...]:
        """The pool's endpoints after last resort (empty for an unknown alias)."""
        pool = self._pools.get(alias)
        return pool.endpoints if pool is not None else ()

    def instance_ids(self) -> set[str]:
        """Every instance some pool may route to (last resort included)."""
        return {e.id for p in self._pools.values() for e in p.endpoints}

    def addresses(self) -> set[str]:
        """Every address some pool may route to (the channels worth keeping open)."""
        return {e.address for p in self._pools.values() for e in p.endpoints}


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…")
