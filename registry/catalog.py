"""The source of truth in memory: instances, aliases and tenant routes, with revisions.

Pure: no I/O and no awaits. The core (`registry/core.py`) writes durable changes
to the store first, then applies them here; every visible change gets the next
revision number and becomes a `Change` for the watchers.
"""

from __future__ import annotations

import enum
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


@dataclass(frozen=True)
class LoadFigures:
    """The latest load an engine reported (memory only; not a watch event by itself)."""

    in_flight: int = 0
    queued: int = 0
    slots: int = 0
    progress: int = 0
    gpu_present: bool = False
    gpu_name: str = ""
    gpu_utilization_percent: int = 0
    gpu_memory_used_bytes: int = 0
    gpu_memory_total_bytes: int = 0


@dataclass(frozen=True)
class EngineReport:
    status: EngineStatus = EngineStatus.SERVING
    load: LoadFigures = LoadFigures()
    heartbeat_wall: float | None = None


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
            record.address,
            record.weight,
            record.capacity,
            record.weight_override,
            record.admin_drained,
            tuple(sorted(self.labels.items())),
            self.state,
            self.effective_weight,
        )


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

    def load(self, snapshot: StoreSnapshot, now: float, grace_s: float) -> None:
        """Restore durable state after a start; known instances get `grace_s` to re-attach."""
        for record in snapshot.instances:
            self.records[record.id] = record
            self.leases.grant(record.id, now, grace_s)
            self._published[record.id] = self.view(record.id).signature()
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
        self.records[record.id] = record
        return self.refresh([record.id], created_at)

    def remove(self, instance_id: str, created_at: float) -> list[Change]:
        record = self.records.pop(instance_id, None)
        self.leases.remove(instance_id)
        self._reports.pop(instance_id, None)
        self._published.pop(instance_id, None)
        if record is None:
            return []
        self.revision += 1
        gone = InstanceView(record, record.labels, State.UNHEALTHY, 0, EngineReport())
        return [Change("delete", self.revision, created_at, gone)]

    def report(self, instance_id: str, report: EngineReport) -> None:
        self._reports[instance_id] = report

    def last_report(self, instance_id: str) -> EngineReport:
        return self._reports.get(instance_id, EngineReport())

    def view(self, instance_id: str) -> InstanceView:
        record = self.get(instance_id)
        report = self._reports.get(instance_id, EngineReport())
        state = self._state(record, report)
        weight = record.configured_weight if state is State.READY else 0
        return InstanceView(record, record.labels, state, weight, report)

    def views(self, service: str | None = None) -> list[InstanceView]:
        return [
            self.view(i)
            for i, record in sorted(self.records.items())
            if service is None or record.service == service
        ]

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
        selector = self._selectors[name]
        return [v for v in self.views(alias.service) if selector.matches(v.labels)]

    def resolve_alias(self, name: str) -> list[InstanceView]:
        return [v for v in self.alias_members(name) if v.routable]

    def resolve_tenant(self, tenant: str, lang: str) -> tuple[str, list[InstanceView]]:
        """The first alias of the tenant's list with a routable instance (else the first)."""
        route = self.tenants.get((tenant, lang))
        if route is None:
            raise NotFoundError("tenant route", f"{tenant}/{lang}")
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
