"""The read side of Consul's catalog and health API as pure functions: query in, JSON out.

Every instance is a Consul node of its own (named by the instance id) running
one service instance: its tidepool service (for example `speech`) at the
engine's gRPC address. An engine that registered the `metrics_port` label also
runs a second service, `tidepool-engine-metrics`, at the same host on that port,
so one Prometheus `consul_sd_configs` job finds every engine's `/metrics`.

Tags are `pool=<pool>`, `lang=<lang>` and `tier=<tier>` (key=value, so a pool
named like a language cannot be mistaken for one); `Meta` holds every label;
`Weights.Passing` is the effective weight; the one check is `passing` only
while the instance is `ready` (`warning` while draining or switching model,
`critical` when unhealthy or stalled). Sans-IO: `registry/consul_http.py` adds
tokens, blocking queries and the socket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl

from registry.catalog import Change, InstanceView, State
from registry.errors import InvalidArgumentError
from tidepool.runtime.rules import METRICS_PORT_LABEL

METRICS_SERVICE = "tidepool-engine-metrics"
"""The Consul service under which every engine's metrics port is published."""
TAG_LABELS = ("pool", "lang", "tier")
DEFAULT_WAIT_S = 300.0
"""A blocking query without `wait` is held this long, as Consul does."""
MAX_WAIT_S = 600.0
"""Longer waits are cut to this, as Consul does."""
CHECK_ID = "tidepool:state"

Status = Literal["passing", "warning", "critical"]
_STATUS: dict[State, Status] = {
    State.READY: "passing",
    State.DRAINING: "warning",
    State.SWITCHING: "warning",
    State.STALLED: "critical",
    State.UNHEALTHY: "critical",
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = {"", "1", "true", "t", "yes"}


@dataclass(frozen=True)
class ConsulQuery:
    """What a read asks for: blocking index and wait, filters, token and datacenter."""

    index: int | None = None
    wait_s: float = DEFAULT_WAIT_S
    passing: bool = False
    tags: tuple[str, ...] = ()
    token: str | None = None
    dc: str | None = None


def parse_duration(text: str, name: str = "wait") -> float:
    """A Go duration ("10s", "1m30s", "250ms") in seconds; a bare number is seconds."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    if not text or _DURATION.sub("", text) != "":
        raise InvalidArgumentError(name, f"must be a duration such as 10s or 5m, got {text!r}")
    return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(text))


def parse_query(query: str, headers: Mapping[str, str]) -> ConsulQuery:
    """Parse the query string and the token headers; InvalidArgumentError names the field."""
    index: int | None = None
    wait_s = DEFAULT_WAIT_S
    passing = False
    tags: list[str] = []
    token = headers.get("x-consul-token") or _bearer(headers.get("authorization", ""))
    dc: str | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "index":
            if not value.isdigit():
                raise InvalidArgumentError("index", f"must be a whole number, got {value!r}")
            index = int(value)
        elif key == "wait":
            wait_s = min(parse_duration(value), MAX_WAIT_S)
        elif key == "passing":
            passing = value.lower() in _TRUE
        elif key == "tag":
            tags.append(value)
        elif key == "token":
            token = token or value
        elif key == "dc":
            dc = value or None
    return ConsulQuery(index or None, wait_s, passing, tuple(tags), token or None, dc)


def _bearer(value: str) -> str | None:
    scheme, _, credential = value.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


@dataclass
class IndexBook:
    """CreateIndex and ModifyIndex per instance, kept from the catalog's changes."""

    created: dict[str, int] = field(default_factory=dict)
    modified: dict[str, int] = field(default_factory=dict)

    def observe(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.view is None:
                continue
            instance_id = change.view.id
            if change.kind == "delete":
                self.created.pop(instance_id, None)
                self.modified.pop(instance_id, None)
            else:
                self.created.setdefault(instance_id, change.revision)
                self.modified[instance_id] = change.revision

    def of(self, instance_id: str) -> tuple[int, int]:
        """(CreateIndex, ModifyIndex); 1 for instances unchanged since the registry started."""
        return self.created.get(instance_id, 1), self.modified.get(instance_id, 1)


@dataclass(frozen=True)
class ServiceInstance:
    """One Consul service instance, flattened from an instance view."""

    service: str
    id: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str]
    weight: int
    status: Status
    state: str
    create_index: int
    modify_index: int
    tidepool_service: str = ""
    """The instance's tidepool service (differs from `service` for the metrics entry)."""


def service_instances(views: Iterable[InstanceView], book: IndexBook) -> list[ServiceInstance]:
    """Every instance as its tidepool service, plus its metrics service when it has one."""
    result: list[ServiceInstance] = []
    for view in views:
        host, port = split_address(view.record.address)
        labels = dict(view.labels)
        created, modified = book.of(view.id)
        entry = ServiceInstance(
            service=view.record.service,
            id=view.id,
            node=view.id,
            address=host,
            port=port,
            tags=tuple(f"{key}={labels[key]}" for key in TAG_LABELS if key in labels),
            meta=labels,
            weight=view.effective_weight,
            status=_STATUS[view.state],
            state=view.state.value,
            create_index=created,
            modify_index=modified,
            tidepool_service=view.record.service,
        )
        result.append(entry)
        metrics_port = _port(labels.get(METRICS_PORT_LABEL, ""))
        if metrics_port is not None:
            metrics = replace(
                entry,
                service=METRICS_SERVICE,
                id=f"{view.id}-metrics",
                port=metrics_port,
                tags=(*entry.tags, f"service={entry.service}"),
            )
            result.append(metrics)
    return result


def split_address(address: str) -> tuple[str, int]:
    """`a.b.c.d:port` or `[v6]:port` into host (no brackets) and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def select(
    instances: Sequence[ServiceInstance], name: str, query: ConsulQuery, *, health: bool
) -> list[ServiceInstance]:
    """Instances of service `name` carrying every `?tag=`; `?passing` applies to health only."""
    return [
        i
        for i in instances
        if i.service == name
        and all(tag in i.tags for tag in query.tags)
        and not (health and query.passing and i.status != "passing")
    ]


def catalog_services(instances: Iterable[ServiceInstance]) -> dict[str, list[str]]:
    """`/v1/catalog/services`: every service name with the union of its tags."""
    tags: dict[str, set[str]] = {}
    for instance in instances:
        tags.setdefault(instance.service, set()).update(instance.tags)
    return {name: sorted(tags[name]) for name in sorted(tags)}


def catalog_service(instances: Iterable[ServiceInstance], dc: str) -> list[dict[str, Any]]:
    """`/v1/catalog/service/<name>`: one entry per instance, node and service fields flat."""
    return [
        {
            "ID": "",
            "Node": i.node,
            "Address": i.address,
            "Datacenter": dc,
            "TaggedAddresses": {"lan": i.address, "wan": i.address},
            "NodeMeta": {},
            "ServiceKind": "",
            "ServiceID": i.id,
            "ServiceName": i.service,
            "ServiceTags": list(i.tags),
            "ServiceAddress": i.address,
            "ServiceTaggedAddresses": {},
            "ServiceWeights": _weights(i),
            "ServiceMeta": dict(i.meta),
            "ServicePort": i.port,
            "ServiceEnableTagOverride": False,
            "ServiceProxy": {},
            "ServiceConnect": {},
            "CreateIndex": i.create_index,
            "ModifyIndex": i.modify_index,
        }
        for i in instances
    ]


def health_service(instances: Iterable[ServiceInstance], dc: str) -> list[dict[str, Any]]:
    """`/v1/health/service/<name>`: node, service and checks per instance."""
    return [
        {
            "Node": {
                "ID": "",
                "Node": i.node,
                "Address": i.address,
                "Datacenter": dc,
                "TaggedAddresses": {"lan": i.address, "wan": i.address},
                "Meta": {},
                "CreateIndex": i.create_index,
                "ModifyIndex": i.modify_index,
            },
            "Service": {
                "ID": i.id,
                "Service": i.service,
                "Tags": list(i.tags),
                "Address": i.address,
                "Meta": dict(i.meta),
                "Port": i.port,
                "Weights": _weights(i),
                "EnableTagOverride": False,
                "CreateIndex": i.create_index,
                "ModifyIndex": i.modify_index,
            },
            "Checks": [_check(i)],
        }
        for i in instances
    ]


def prometheus_targets(instances: Iterable[ServiceInstance]) -> list[dict[str, Any]]:
    """Prometheus `http_sd_configs` target groups: one per engine metrics port.

    For Prometheus builds without Consul discovery (Debian's package compiles it
    out). Labels: `instance_id`, `service`, and `pool`/`lang`/`tier` where set,
    plus `__meta_tidepool_health` and `__meta_tidepool_label_<key>` for relabelling.
    """
    groups: list[dict[str, Any]] = []
    for i in instances:
        if i.service != METRICS_SERVICE:
            continue
        host = f"[{i.address}]" if ":" in i.address else i.address
        labels = {key: i.meta[key] for key in TAG_LABELS if key in i.meta}
        labels.update(instance_id=i.node, service=i.tidepool_service)
        labels["__meta_tidepool_health"] = i.status
        for key, value in i.meta.items():
            labels["__meta_tidepool_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
        groups.append({"targets": [f"{host}:{i.port}"], "labels": labels})
    return groups


def agent_self(dc: str, node: str) -> dict[str, Any]:
    """`/v1/agent/self`, as much of it as clients read (Prometheus asks for the datacenter)."""
    return {"Config": {"Datacenter": dc, "NodeName": node, "Server": True}, "Member": {}}


def _weights(instance: ServiceInstance) -> dict[str, int]:
    # A draining instance must get no new work, so nothing is weighted for `warning`.
    return {"Passing": instance.weight, "Warning": 0}


def _check(instance: ServiceInstance) -> dict[str, Any]:
    return {
        "Node": instance.node,
        "CheckID": CHECK_ID,
        "Name": "tidepool instance state",
        "Status": instance.status,
        "Notes": "passing only while the instance is ready for traffic",
        "Output": f"tidepool state: {instance.state}",
        "ServiceID": instance.id,
        "ServiceName": instance.service,
        "ServiceTags": list(instance.tags),
        "Type": "ttl",
        "Definition": {},
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    }
