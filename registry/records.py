"""The registry's durable records: what the store keeps across restarts.

Leases, load and health live in memory (`lease.py`); everything here is written
to the store before it is applied, so a crash never leaves half a change behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType


def frozen_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy, so a record can be shared with watchers without copying."""
    return MappingProxyType(dict(labels))


@dataclass(frozen=True)
class InstanceRecord:
    """One engine instance as registered, plus the admin and scheduler overrides on it."""

    id: str
    service: str
    address: str
    weight: int
    capacity: int
    engine_labels: Mapping[str, str]
    registered_at: float
    # Labels set by an admin or the scheduler (the pool label); None removes an engine label.
    label_overrides: Mapping[str, str | None] = field(default_factory=dict)
    weight_override: int | None = None
    admin_drained: bool = False
    owner_digest: str = ""
    """SHA-256 of the secret Register gave the engine that owns this id ("" for records
    written before ownership existed: the next registration claims them)."""

    @cached_property
    def labels(self) -> Mapping[str, str]:
        """Engine labels with overrides applied: what selectors match against.

        Worked out once per record (records are immutable): views, selectors and
        metrics read it for every instance, many times a second at fleet scale.
        """
        merged = dict(self.engine_labels)
        for key, value in self.label_overrides.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return MappingProxyType(merged)

    @property
    def configured_weight(self) -> int:
        return self.weight if self.weight_override is None else self.weight_override

    def reregistered(
        self, address: str, weight: int, capacity: int, engine_labels: Mapping[str, str]
    ) -> InstanceRecord:
        """The same identity re-registered: engine fields replaced, overrides kept."""
        return replace(
            self,
            address=address,
            weight=weight,
            capacity=capacity,
            engine_labels=frozen_labels(engine_labels),
        )


@dataclass(frozen=True)
class AliasRecord:
    """A named pool: `selector` (canonical text) over the instances of `service`."""

    name: str
    selector: str
    service: str


@dataclass(frozen=True)
class TenantRecord:
    """A tenant's ordered alias list for one language."""

    tenant: str
    lang: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class RetiredOverrides:
    """What admins and the scheduler decided for an id that deregistered gracefully:
    kept until `--forget-after` and applied again if the same id registers (Eureka keeps
    an overridden status this way; a Kubernetes cordon survives a kubelet restart)."""

    id: str
    label_overrides: Mapping[str, str | None]
    weight_override: int | None
    admin_drained: bool
    retired_at: float

    @staticmethod
    def of(record: InstanceRecord, now: float) -> RetiredOverrides | None:
        """The decisions on `record` worth keeping, or None when there are none."""
        if not (record.label_overrides or record.weight_override is not None):
            if not record.admin_drained:
                return None
        return RetiredOverrides(
            record.id,
            dict(record.label_overrides),
            record.weight_override,
            record.admin_drained,
            now,
        )

    def apply(self, record: InstanceRecord) -> InstanceRecord:
        return replace(
            record,
            label_overrides=dict(self.label_overrides),
            weight_override=self.weight_override,
            admin_drained=self.admin_drained,
        )


MOVE_STATES = (
    "pending",
    "draining",
    "switching",
    "admitting",
    "done",
    "rolling_back",
    "rolled_back",
)
"""A move's states in the order a successful one passes them (rolling back aside)."""
FINISHED_MOVE_STATES = frozenset({"done", "rolled_back"})


@dataclass(frozen=True)
class MoveRecord:
    """One engine moving between pools; kept so a new scheduler leader can resume it."""

    id: str
    instance_id: str
    from_pool: str
    to_pool: str
    state: str
    reason: str
    started_at: float
    updated_at: float
    from_lang: str = ""
    to_lang: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_MOVE_STATES


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything durable, as loaded at start-up."""

    instances: tuple[InstanceRecord, ...] = ()
    aliases: tuple[AliasRecord, ...] = ()
    tenants: tuple[TenantRecord, ...] = ()
    moves: tuple[MoveRecord, ...] = ()
    fence: int = 0
    """The last fencing number handed out; the next leader gets a higher one."""
    retired: tuple[RetiredOverrides, ...] = ()
