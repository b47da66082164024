"""How an engine registers: `AgentConfig`, checked when it is built, and fresh instance ids.

The checks run before anything is sent, so a bad setting fails at start-up with
the field and the rule (`AgentConfig.weight: must be 0..1000, got 5000`) instead
of as a refusal from the registry.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from types import MappingProxyType

from tidepool.runtime.options import parse_host_port
from tidepool.runtime.replicas import is_address_list
from tidepool.runtime.rules import INSTANCE_ID, INSTANCE_ID_RULE, WEIGHT_MAX


def new_instance_id(hostname: str | None = None) -> str:
    """A fresh instance id: the host name (cleaned) and 12 random hex digits."""
    raw = socket.gethostname() if hostname is None else hostname
    host = re.sub(r"[^A-Za-z0-9._-]", "-", raw).lstrip("._-")[:64] or "engine"
    return f"{host}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class AgentConfig:
    """How an engine registers. Durations are in seconds."""

    registry: str
    """Registry gRPC address, host:port; replicas comma-separated ("A,B,C"), the next
    used when one cannot be reached."""
    address: str
    """Advertised ip:port routers connect to; a literal IP the registry sees us from."""
    token: str | None = None
    """Engine token, sent as a bearer credential."""
    service: str = "speech"
    weight: int = 100
    """Static weight, 0..1000."""
    capacity: int = 1
    """Concurrent slots."""
    labels: Mapping[str, str] = field(default_factory=dict)
    instance_id: str | None = None
    """Stable identity; None: the agent makes one at construction."""
    drain_timeout_s: float = 30.0
    reconnect_min_s: float = 0.1
    """First retry delay after the registry is lost (fully jittered, doubling)."""
    reconnect_max_s: float = 1.0
    """Cap on the retry delay; a retry also goes as soon as the channel reconnects, so a
    restarted registry sees every engine back within about a second of answering."""
    rpc_timeout_s: float = 5.0
    root_certificates: bytes | None = None
    """PEM roots for TLS to the registry; None: plaintext."""
    metrics_port: int | None = None
    """The engine's Prometheus /metrics port, registered as the `metrics_port` label so the
    registry's Consul API publishes it as service `tidepool-engine-metrics` (same host)."""

    def __post_init__(self) -> None:
        _need(is_address_list(self.registry), "registry", "must be host:port[,…]", self.registry)
        _need(_is_advertisable(self.address), "address", "must be a literal ip:port", self.address)
        _need(bool(self.service), "service", "must not be empty", self.service)
        _need(0 <= self.weight <= WEIGHT_MAX, "weight", "must be 0..1000", self.weight)
        _need(self.capacity >= 1, "capacity", "must be 1 or more", self.capacity)
        _need(_labels_ok(self.labels), "labels", "need non-empty keys, str values", self.labels)
        id_ok = self.instance_id is None or bool(INSTANCE_ID.fullmatch(self.instance_id))
        _need(id_ok, "instance_id", INSTANCE_ID_RULE, self.instance_id)
        _need(
            self.drain_timeout_s >= 0, "drain_timeout_s", "must be 0 or more", self.drain_timeout_s
        )
        _need(self.reconnect_min_s > 0, "reconnect_min_s", "must be above 0", self.reconnect_min_s)
        max_ok = self.reconnect_max_s >= self.reconnect_min_s
        _need(max_ok, "reconnect_max_s", "must be >= reconnect_min_s", self.reconnect_max_s)
        _need(self.rpc_timeout_s > 0, "rpc_timeout_s", "must be above 0", self.rpc_timeout_s)
        port_ok = self.metrics_port is None or 0 < self.metrics_port < 65536
        _need(port_ok, "metrics_port", "must be 1..65535", self.metrics_port)
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


def _need(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"AgentConfig.{name}: {rule}, got {value!r}")


def _labels_ok(labels: Mapping[str, str]) -> bool:
    return all(isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items())


def _is_advertisable(text: str) -> bool:
    try:
        host, port = parse_host_port(text)
        return port > 0 and not ip_address(host).is_unspecified
    except ValueError:
        return False
