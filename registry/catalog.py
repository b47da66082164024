"""The source of truth in memory: instances, aliases and tenant routes, with revisions.

Pure: no I/O and no awaits. The core (`registry/core.py`) writes durable changes
to the store first, then applies them here; every visible change gets the next
revision number and becomes a `Change` for the watchers.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from registry.errors import NotFoundError
from registry.lease import LeaseTable
from registry.records import AliasRecord, InstanceRecord, StoreSnapshot, TenantRecord
from registry.selector import Selector, parse_selector


class State(enum.Enum):
    """Where an instance stands for routing, most severe first."""

    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    """Restored from the store at start-up, not heard from since."""
    FLAPPING = "flapping"
    """Held out after going unhealthy and back too often (flap damping)."""
    STALLED = "stalled"
    SWITCHING = "switching"
    DRAINING = "draining"
    READY = "ready"


class EngineStatus(enum.Enum):
    """What the engine says it is doing, from its heartbeats."""

    SERVING = "serving"
    DRAINING = "draining"
    SWITCHING = "switching"


@dataclass(slots=True)
class LoadFigures:
    """The latest load an engine reported (memory only; not a watch event by itself).

    Mutable on purpose: the catalog keeps one per instance and each heartbeat rewrites
    it in place, so 10,000 beats a second allocate nothing that outlives the beat (a
    fresh object per beat lives a second, gets promoted, and drives full garbage
    collections). Views carry a copy (`EngineReport.snapshot`).
    """

    in_flight: int = 0
    queued: int = 0
    slots: int = 0
    progress: int = 0
    gpu_present: bool = False
    gpu_name: str = ""
    gpu_utilization_percent: int = 0
    gpu_memory_used_bytes: int = 0
    gpu_memory_total_bytes: int = 0

    def copy(self) -> LoadFigures:
        # Spelled out: dataclasses.replace took a twentieth of the registry's CPU when
        # a watcher's snapshot copied 10,000 of these.
        return LoadFigures(
            self.in_flight,
            self.queued,
            self.slots,
            self.progress,
            self.gpu_present,
            self.gpu_name,
            self.gpu_utilization_percent,
            self.gpu_memory_used_bytes,
            self.gpu_memory_total_bytes,
        )


@dataclass(slots=True)
class EngineReport:
    """What an engine last said; the catalog's own copy is rewritten in place by beats."""

    status: EngineStatus = EngineStatus.SERVING
    load: LoadFigures = field(default_factory=LoadFigures)
    heartbeat_wall: float | None = None

    def snapshot(self) -> EngineReport:
        """A copy that later heartbeats do not change (what a view holds)."""
        return EngineReport(self.status, self.load.copy(), self.heartbeat_wall)


@dataclass(frozen=True)
class InstanceView:
    """One instance as readers see it: record, derived state and effective weight."""

    record: InstanceRecord
    labels: Mapping[str, str]
    state: State
    effective_weight: int
    report: EngineReport

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def routable(self) -> bool:
        return self.state is State.READY and self.effective_weight > 0

    def signature(self) -> tuple[object, ...]:
        """What routers care about; load is deliberately left out (it changes every beat)."""
        record = self.record
        return (
            self.state,
            record.address,
            record.weight,
            record.capacity,
            record.weight_override,
            record.admin_drained,
            tuple(sorted(self.labels.items())),
            self.effective_weight,
        )


PUBLISHED_STATE = 0
"""Where the state sits in a view's signature."""


ChangeKind = Literal["upsert", "delete", "routing"]


@dataclass(frozen=True)
class Change:
    """One revision of the catalog, as pushed to watchers."""

    kind: ChangeKind
    revision: int
    created_at: float
    view: InstanceView | None = None


@dataclass
class Catalog:
    """Instances, aliases and tenant routes, plus the revision counter."""

    leases: LeaseTable
    records: dict[str, InstanceRecord] = field(default_factory=dict)
    aliases: dict[str, AliasRecord] = field(default_factory=dict)
    tenants: dict[tuple[str, str], TenantRecord] = field(default_factory=dict)
    revision: int = 0
    _selectors: dict[str, Selector] = field(default_factory=dict)
    _reports: dict[str, EngineReport] = field(default_factory=dict)
    _published: dict[str, tuple[object, ...]] = field(default_factory=dict)
    _order: list[str] | None = None
    """Instance ids in order, rebuilt lazily after an instance comes or goes (pages)."""

    def load(self, snapshot: StoreSnapshot, now: float, grace_s: float) -> None:
        """Restore durable state after a start; known instances get `grace_s` to re-attach."""
        for record in snapshot.instances:
            self.records[record.id] = record
            self.leases.grant(record.id, now, grace_s)
            self._published[record.id] = self.view(record.id).signature()
        self._order = None
        for alias in snapshot.aliases:
            self._set_alias(alias)
        for tenant in snapshot.tenants:
            self.tenants[(tenant.tenant, tenant.lang)] = tenant
        self.revision = 1

    # --- instances -------------------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRecord:
        record = self.records.get(instance_id)
        if record is None:
            raise NotFoundError("instance", instance_id)
        return record

    def put(self, record: InstanceRecord, now: float, created_at: float) -> list[Change]:
        """Store a new or updated record; a (re-)registration also renews its lease."""
        # setdefault: keep a report the core gave just before the first put (the
        # registration's heartbeat time), which assignment used to wipe out.
        self._reports.setdefault(record.id, EngineReport())
        if record.id not in self.records:
            self._order = None
        self.records[record.id] = record
        return self.refresh([record.id], created_at)

    def remove(self, instance_id: str, created_at: float) -> list[Change]:
        record = self.records.pop(instance_id, None)
        self.leases.remove(instance_id)
        self._reports.pop(instance_id, None)
        self._published.pop(instance_id, None)
        if record is None:
            return []
        self._order = None
        self.revision += 1
        gone = InstanceView(record, record.labels, State.UNHEALTHY, 0, EngineReport())
        return [Change("delete", self.revision, created_at, gone)]

    def report(self, instance_id: str, report: EngineReport) -> None:
        self._reports[instance_id] = report.snapshot()

    def last_report(self, instance_id: str) -> EngineReport:
        """A copy of what the engine last said."""
        report = self._reports.get(instance_id)
        return EngineReport() if report is None else report.snapshot()

    def live_report(self, instance_id: str) -> EngineReport:
        """The instance's own report, for a heartbeat to rewrite in place (the hot path)."""
        report = self._reports.get(instance_id)
        if report is None:
            if instance_id not in self.records:
                raise NotFoundError("instance", instance_id)
            report = self._reports[instance_id] = EngineReport()
        return report

    def view(self, instance_id: str) -> InstanceView:
        record = self.get(instance_id)
        report = self._reports.get(instance_id)
        report = EngineReport() if report is None else report.snapshot()
        state = self._state(record, report)
        weight = record.configured_weight if state is State.READY else 0
        return InstanceView(record, record.labels, state, weight, report)

    def ids(self) -> list[str]:
        """Every instance id in order (shared: do not modify)."""
        if self._order is None or len(self._order) != len(self.records):
            self._order = sorted(self.records)
        return self._order

    def views(self, service: str | None = None) -> list[InstanceView]:
        records = self.records
        return [
            self.view(i) for i in self.ids() if service is None or records[i].service == service
        ]

    def page(
        self,
        after: str,
        size: int,
        *,
        service: str | None = None,
        selector: Selector | None = None,
        routable: bool = False,
    ) -> tuple[list[InstanceView], bool]:
        """Up to `size` views, in id order from just after `after`, of the instances of
        `service` that `selector` matches (and that are `routable`, if asked); True when
        more follow. Views are built only for the page (and the routable test), so
        paging through 10,000 instances costs one pass over the ids, not one per page."""
        ids, records = self.ids(), self.records
        page: list[InstanceView] = []
        for index in range(bisect_right(ids, after), len(ids)):
            record = records[ids[index]]
            if service is not None and record.service != service:
                continue
            if selector is not None and not selector.matches(record.labels):
                continue
            view = self.view(record.id)
            if routable and not view.routable:
                continue
            if len(page) == size:
                return page, True
            page.append(view)
        return page, False

    def state_counts(self) -> Counter[tuple[State, str]]:
        """Instances by (state, tier label), as last published to watchers: a scrape
        then costs a pass over a dict, not a view per instance."""
        counts: Counter[tuple[State, str]] = Counter()
        records = self.records
        for instance_id, signature in self._published.items():
            record = records.get(instance_id)
            if record is not None:
                state = signature[PUBLISHED_STATE]
                assert isinstance(state, State)
                counts[(state, record.labels.get("tier", "unknown"))] += 1
        return counts

    def refresh(self, instance_ids: Iterable[str], created_at: float) -> list[Change]:
        """Publish every listed instance whose routing-relevant view changed."""
        changes: list[Change] = []
        for instance_id in instance_ids:
            if instance_id not in self.records:
                continue
            view = self.view(instance_id)
            signature = view.signature()
            if self._published.get(instance_id) == signature:
                continue
            self._published[instance_id] = signature
            self.revision += 1
            changes.append(Change("upsert", self.revision, created_at, view))
        return changes

    def _state(self, record: InstanceRecord, report: EngineReport) -> State:
        lease = self.leases.leases.get(record.id)
        if lease is None or not lease.healthy:
            return State.UNHEALTHY
        if lease.restored:
            return State.UNKNOWN
        if lease.held_until is not None:
            return State.FLAPPING
        if lease.stalled:
            return State.STALLED
        if report.status is EngineStatus.SWITCHING:
            return State.SWITCHING
        if (
            record.admin_drained
            or report.status is EngineStatus.DRAINING
            or record.configured_weight == 0
        ):
            return State.DRAINING
        return State.READY

    # --- aliases and tenants ---------------------------------------------------------

    def selector(self, alias: str) -> Selector:
        selector = self._selectors.get(alias)
        if selector is None:
            raise NotFoundError("alias", alias)
        return selector

    def put_alias(self, alias: AliasRecord, created_at: float) -> list[Change]:
        self._set_alias(alias)
        return self._routing_change(created_at)

    def delete_alias(self, name: str, created_at: float) -> list[Change]:
        if name not in self.aliases:
            raise NotFoundError("alias", name)
        del self.aliases[name]
        del self._selectors[name]
        return self._routing_change(created_at)

    def put_tenant(self, tenant: TenantRecord, created_at: float) -> list[Change]:
        self.tenants[(tenant.tenant, tenant.lang)] = tenant
        return self._routing_change(created_at)

    def delete_tenant(self, tenant: str, lang: str, created_at: float) -> list[Change]:
        if (tenant, lang) not in self.tenants:
            raise NotFoundError("tenant route", f"{tenant}/{lang}")
        del self.tenants[(tenant, lang)]
        return self._routing_change(created_at)

    def alias_members(self, name: str) -> list[InstanceView]:
        """Every instance the alias selects, whatever its state."""
        alias = self.aliases.get(name)
        if alias is None:
            raise NotFoundError("alias", name)
        selector, records = self._selectors[name], self.records
        return [
            self.view(i)
            for i in self.ids()
            if records[i].service == alias.service and selector.matches(records[i].labels)
        ]

    def resolve_alias(self, name: str) -> list[InstanceView]:
        return [v for v in self.alias_members(name) if v.routable]

    def resolve_page(self, name: str, after: str, size: int) -> tuple[list[InstanceView], bool]:
        """A page of `resolve_alias(name)`: routable members in id order after `after`."""
        alias = self.aliases.get(name)
        if alias is None:
            raise NotFoundError("alias", name)
        selector = self._selectors[name]
        return self.page(after, size, service=alias.service, selector=selector, routable=True)

    def tenant_alias(self, tenant: str, lang: str) -> str:
        """The alias `resolve_tenant` answers with, found without building its list."""
        route = self.tenant_route(tenant, lang)
        for name in route.aliases:
            if name in self.aliases and self.resolve_page(name, "", 1)[0]:
                return name
        return route.aliases[0]

    def tenant_route(self, tenant: str, lang: str) -> TenantRecord:
        route = self.tenants.get((tenant, lang))
        if route is None:
            raise NotFoundError("tenant route", f"{tenant}/{lang}")
        return route

    def resolve_tenant(self, tenant: str, lang: str) -> tuple[str, list[InstanceView]]:
        """The first alias of the tenant's list with a routable instance (else the first)."""
        route = self.tenant_route(tenant, lang)
        for name in route.aliases:
            if name in self.aliases:
                routable = self.resolve_alias(name)
                if routable:
                    return name, routable
        return route.aliases[0], []

    def _set_alias(self, alias: AliasRecord) -> None:
        self._selectors[alias.name] = parse_selector(alias.selector)
        self.aliases[alias.name] = alias

    def _routing_change(self, created_at: float) -> list[Change]:
        self.revision += 1
        return [Change("routing", self.revision, created_at)]
