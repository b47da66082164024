"""The registry's view as the router knows it: instances, aliases and tenant routes.

`RegistryView` is folded from the watch stream (`apply`) and written to and read
from the last-known-good file (`to_json` / `from_json`). It is plain data: the
routing table turns it into per-pool endpoints. Why departures are tracked here:
only the event tells a deregistration (final) from an expiry (the engine may
still answer), and the last-resort rule needs to know which it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.client import STATES_BY_NAME, SnapshotChunks, state_name
from router.endpoint import Endpoint
from router.outlier import Departure
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.rules import RuleError
from tidepool.runtime.selector import Selector, parse_selector

READY = pb.INSTANCE_STATE_READY
UNKNOWN = pb.INSTANCE_STATE_UNKNOWN
_FAILED = frozenset(
    {pb.INSTANCE_STATE_UNHEALTHY, pb.INSTANCE_STATE_STALLED, pb.INSTANCE_STATE_FLAPPING}
)
_LEAVING = frozenset({pb.INSTANCE_STATE_DRAINING, pb.INSTANCE_STATE_SWITCHING})


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What routing needs of one registered instance."""

    id: str
    service: str
    address: str
    weight: int
    """Effective weight: the admin override if any, 0 when drained by an admin."""
    labels: Mapping[str, str]
    state: int
    leaving: bool = False
    """It was draining or switching and has not been READY since: a lapse that
    follows is the engine going away on purpose, not a failure."""
    registered_weight: int | None = field(default=None, compare=False)
    """The weight the engine registered with (`weight` may be an admin override); None
    when loaded from the view file, which does not keep it (display only: not compared)."""

    @classmethod
    def from_pb(cls, instance: pb.Instance, known: InstanceInfo | None = None) -> InstanceInfo:
        if instance.state == UNKNOWN and known is not None:
            # A restarted registry has not heard from it yet: no news is not bad news,
            # so keep routing on what this router last knew.
            return known
        state = instance.state
        leaving = state in _LEAVING or (known is not None and known.leaving and state != READY)
        return cls(
            id=instance.id,
            service=instance.service,
            address=instance.address,
            weight=_routing_weight(instance, known),
            labels=dict(instance.labels),
            state=state,
            leaving=leaving,
            registered_weight=instance.weight,
        )

    @property
    def failed(self) -> bool:
        """Unhealthy or stalled: the registry gave up on it, for now."""
        return self.state in _FAILED

    def endpoint(self, joined_at: float) -> Endpoint:
        """Draining and switching instances take no new work (weight 0)."""
        # Failed instances keep their weight: not routed normally (unhealthy), but
        # panic mode and the last-resort rule may still use them.
        takes_work = self.state == READY or (self.failed and not self.leaving)
        return Endpoint(
            id=self.id,
            address=self.address,
            weight=self.weight if takes_work else 0,
            labels=self.labels,
            healthy=self.state == READY,
            joined_at=joined_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "weight": self.weight,
            "labels": dict(self.labels),
            "state": state_name(self.state),
            "leaving": self.leaving,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceInfo:
        return cls(
            id=str(data["id"]),
            service=str(data["service"]),
            address=str(data["address"]),
            weight=int(data["weight"]),
            labels={str(k): str(v) for k, v in dict(data["labels"]).items()},
            state=STATES_BY_NAME.get(str(data["state"]), pb.INSTANCE_STATE_UNSPECIFIED),
            leaving=bool(data.get("leaving", False)),
        )


def _routing_weight(instance: pb.Instance, known: InstanceInfo | None) -> int:
    """The weight to route with, also for a failed instance (kept as a last resort).

    The registry reports an effective weight of 0 whenever an instance is not READY;
    for a failed one we want what it would have again: its override as last seen,
    else its registered weight. An admin drain stays 0.
    """
    if instance.state == READY or instance.admin_drained:
        return instance.effective_weight
    if instance.weight_overridden:
        return known.weight if known is not None else instance.weight
    return instance.weight


@dataclass(frozen=True, slots=True)
class AliasRule:
    """An alias: the instances of `service` whose labels match `selector`."""

    name: str
    service: str
    selector: str
    matcher: Selector | None = field(compare=False)
    """None for a selector that does not parse (never stored by a registry): it selects nothing."""

    @classmethod
    def of(cls, name: str, service: str, selector: str) -> AliasRule:
        try:
            matcher: Selector | None = parse_selector(selector)
        except RuleError:
            matcher = None
        return cls(name, service, selector, matcher)

    def selects(self, instance: InstanceInfo) -> bool:
        return (
            instance.service == self.service
            and self.matcher is not None
            and self.matcher.matches(instance.labels)
        )


@dataclass
class RegistryView:
    """Instances by id, aliases by name and tenant routes by (tenant, lang)."""

    instances: dict[str, InstanceInfo] = field(default_factory=dict)
    aliases: dict[str, AliasRule] = field(default_factory=dict)
    tenants: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    revision: int = 0
    _chunks: SnapshotChunks = field(default_factory=SnapshotChunks, repr=False, compare=False)
    """A chunked snapshot is applied once, whole, when its last chunk comes."""

    def apply(self, event: pb.WatchEvent) -> dict[str, Departure]:
        """Fold one watch event in; returns why instances that left the view left."""
        whole = self._chunks.add(event)
        if whole is None:
            return {}
        return self._apply(whole)

    def _apply(self, event: pb.WatchEvent) -> dict[str, Departure]:
        kind = event.kind
        departures: dict[str, Departure] = {}
        if kind == pb.WatchEvent.KIND_SNAPSHOT:
            fresh = {
                i.id: InstanceInfo.from_pb(i, self.instances.get(i.id)) for i in event.instances
            }
            # Gone from a snapshot: we cannot tell why (a registry restart), so the
            # engine may still answer.
            departures = {i: Departure.EXPIRED for i in self.instances if i not in fresh}
            self.instances = fresh
            self._set_routing(event.aliases, event.tenants)
        elif kind == pb.WatchEvent.KIND_UPSERT:
            for instance in event.instances:
                known = self.instances.get(instance.id)
                self.instances[instance.id] = InstanceInfo.from_pb(instance, known)
        elif kind == pb.WatchEvent.KIND_DELETE:
            for instance in event.instances:
                last = self.instances.pop(instance.id, None) or InstanceInfo.from_pb(instance)
                expired = last.failed and not last.leaving
                departures[instance.id] = Departure.EXPIRED if expired else Departure.DEREGISTERED
        elif kind == pb.WatchEvent.KIND_ROUTING:
            self._set_routing(event.aliases, event.tenants)
        self.revision = event.revision
        return departures

    def _set_routing(self, aliases: Iterable[pb.Alias], tenants: Iterable[pb.TenantRoute]) -> None:
        self.aliases = {a.name: AliasRule.of(a.name, a.service, a.selector) for a in aliases}
        self.tenants = {(t.tenant, t.lang): tuple(t.aliases) for t in tenants}

    def members(self, alias: str) -> list[InstanceInfo]:
        """The instances an alias selects, in id order (stable across rebuilds)."""
        rule = self.aliases.get(alias)
        if rule is None:
            return []
        return [i for _, i in sorted(self.instances.items()) if rule.selects(i)]

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "instances": [i.to_json() for _, i in sorted(self.instances.items())],
            "aliases": [
                {"name": a.name, "service": a.service, "selector": a.selector}
                for _, a in sorted(self.aliases.items())
            ],
            "tenants": [
                {"tenant": tenant, "lang": lang, "aliases": list(aliases)}
                for (tenant, lang), aliases in sorted(self.tenants.items())
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegistryView:
        """Raises KeyError, TypeError or ValueError on a malformed document."""
        instances = [InstanceInfo.from_json(i) for i in data["instances"]]
        return cls(
            instances={i.id: i for i in instances},
            aliases={
                str(a["name"]): AliasRule.of(str(a["name"]), str(a["service"]), str(a["selector"]))
                for a in data["aliases"]
            },
            tenants={
                (str(t["tenant"]), str(t["lang"])): tuple(str(x) for x in t["aliases"])
                for t in data["tenants"]
            },
            revision=int(data["revision"]),
        )
