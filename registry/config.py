"""Settings of `tidepool registry serve`: flags, environment variables and config file."""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from registry.address import parse_ranges
from registry.errors import InvalidArgumentError
from registry.store.etcd_client import parse_endpoint
from tidepool.runtime.options import (
    ConfigError,
    options_for,
    parse_bool,
    parse_host_port,
    parse_non_negative_int,
    parse_positive_float,
    resolve,
    setting,
)

ENV = "TIDEPOOL_REGISTRY_"


def _listen(text: str) -> str:
    parse_host_port(text)
    return text


def _ranges(text: str) -> str:
    try:
        parse_ranges(text)
    except InvalidArgumentError as exc:
        raise ValueError(exc.rule) from None
    return text


def _datacenter(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", text):
        raise ValueError(f"must be 1 to 63 characters of A-Z, a-z, 0-9, '_' and '-', got {text!r}")
    return text


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"must be a fraction in (0, 1], got {text}")
    return value


def _store(text: str) -> str:
    if text not in ("embedded", "etcd"):
        raise ValueError(f"must be embedded or etcd, got {text!r}")
    return text


def _endpoints(text: str) -> str:
    for endpoint in filter(None, (e.strip() for e in text.split(","))):
        parse_endpoint(endpoint)
    return text


def _etcd_prefix(text: str) -> str:
    if not text.startswith("/") or text.rstrip("/") == "":
        raise ValueError(f"must start with '/' and name something, got {text!r}")
    return text


def _lease_ttl(text: str) -> int:
    value = int(text)
    if value < 2:
        raise ValueError(f"must be a whole number of seconds, 2 or more, got {text}")
    return value


@dataclass(frozen=True)
class RegistryConfig:
    """Frozen registry settings, each also a flag, an environment variable and a config key.

    Durations are seconds (`_s`). The checks across fields are in `__post_init__`.
    """

    listen: str = setting("127.0.0.1:7700", "gRPC address to serve", _listen)
    http_listen: str = setting(
        "127.0.0.1:7701",
        "HTTP address for /metrics, /healthz, /readyz and the Consul-compatible /v1/ API",
        _listen,
    )
    data_dir: str = setting(
        ".tidepool/registry",
        "directory of the embedded store (aliases, tenants, instances, overrides)",
    )
    allow_empty_store: bool = setting(
        False,
        "start on an empty store even though --data-dir held one before (its registry.id"
        " marker remains but the database is missing or 0 bytes); true or false",
        parse_bool,
    )
    """Start empty where the data dir's marker says a store existed (the operator's call)."""
    engine_token: str | None = setting(
        None, "token engines present to register, heartbeat and deregister"
    )
    admin_token: str | None = setting(
        None, "token for admin changes; it is also accepted for every other method"
    )
    read_token: str | None = setting(
        None, "token for watch, resolve and listings (routers, dashboards)"
    )
    heartbeat_interval_s: float = setting(
        1.0,
        "seconds between engine heartbeats (told to engines at registration)",
        parse_positive_float,
        metavar="S",
        old_names=("heartbeat_interval",),
    )
    ttl_s: float = setting(
        3.0,
        "seconds without a heartbeat before an instance is unhealthy",
        parse_positive_float,
        metavar="S",
        old_names=("ttl",),
    )
    stall_after_s: float = setting(
        10.0,
        "seconds with in-flight work and no progress before an instance is stalled",
        parse_positive_float,
        metavar="S",
        old_names=("stall_after",),
    )
    restart_grace_s: float = setting(
        10.0,
        "after a registry start, seconds known instances get to re-attach (at least the TTL)",
        parse_positive_float,
        metavar="S",
        old_names=("restart_grace",),
    )
    forget_after_s: float = setting(
        300.0,
        "seconds an unhealthy instance keeps its identity and labels before it is forgotten",
        parse_positive_float,
        metavar="S",
        old_names=("forget_after",),
    )
    flap_threshold: int = setting(
        3,
        "an instance unhealthy and back more often than this within --flap-window-s is held "
        "out (flapping)",
        parse_non_negative_int,
        metavar="N",
    )
    flap_window_s: float = setting(
        60.0,
        "seconds over which unhealthy-and-back cycles are counted",
        parse_positive_float,
        metavar="S",
        old_names=("flap_window",),
    )
    flap_hold_s: float = setting(
        10.0,
        "seconds a flapping instance is held out; doubles with each hold in a row",
        parse_positive_float,
        metavar="S",
        old_names=("flap_hold",),
    )
    flap_hold_max_s: float = setting(
        300.0,
        "cap on a flapping instance's hold, in seconds",
        parse_positive_float,
        metavar="S",
        old_names=("flap_hold_max",),
    )
    self_preservation_threshold: float = setting(
        0.5,
        "share of instances lapsing silently within one TTL that makes the registry "
        "suspect its own network and stop expiring",
        _share,
    )
    self_preservation_min_instances: int = setting(
        3, "fleet size below which self-preservation never engages", parse_non_negative_int
    )
    allow_address_ranges: str = setting(
        "", "comma-separated CIDRs engines may register addresses in, besides their own IP", _ranges
    )
    max_message_bytes: int = setting(
        1024 * 1024, "largest gRPC message accepted or sent", parse_non_negative_int
    )
    register_rate: float = setting(
        20.0, "registrations per second allowed per caller IP", parse_positive_float
    )
    register_burst: int = setting(
        40, "registrations a caller may make in a burst", parse_non_negative_int
    )
    first_message_timeout_s: float = setting(
        5.0,
        "seconds a heartbeat stream may stay silent after opening before it is dropped",
        parse_positive_float,
        metavar="S",
        old_names=("first_message_timeout",),
    )
    watch_max_pending: int = setting(
        1024,
        "events queued per watcher before it is resynced with a snapshot",
        parse_non_negative_int,
    )
    consul_datacenter: str = setting(
        "dc1",
        "datacenter name the Consul-compatible API reports (a ?dc= naming another is refused)",
        _datacenter,
    )
    consul_max_waiters_per_client: int = setting(
        64,
        "Consul blocking queries one client IP may hold open at once (more get 429)",
        parse_non_negative_int,
    )
    consul_max_waiters: int = setting(
        4096,
        "Consul blocking queries held open at once in total (more get 429)",
        parse_non_negative_int,
    )
    store: Literal["embedded", "etcd"] = setting(
        "embedded", "durable store: embedded or etcd", _store
    )
    etcd_endpoints: str = setting(
        "",
        "etcd members for --store etcd: URL[,URL...] (http:// or https://)",
        _endpoints,
        metavar="URLS",
    )
    etcd_prefix: str = setting("/tidepool", "etcd key prefix", _etcd_prefix)
    etcd_ca: str | None = setting(None, "PEM CA bundle that signed etcd's certificates")
    etcd_cert: str | None = setting(None, "PEM client certificate for etcd")
    etcd_key: str | None = setting(None, "PEM private key for --etcd-cert")
    etcd_lease_ttl_s: int = setting(
        3,
        "seconds of this replica's etcd lease (its engines' attachments lapse this long "
        "after it dies); at least 2",
        _lease_ttl,
        metavar="S",
        old_names=("etcd_lease_ttl",),
    )
    etcd_timeout_s: float = setting(
        1.0,
        "seconds one etcd request may take on one member before the next member is tried",
        parse_positive_float,
        metavar="S",
        old_names=("etcd_timeout",),
    )
    handover_grace_s: float = setting(
        10.0,
        "seconds engines of a replica that died get to re-attach to another replica",
        parse_positive_float,
        metavar="S",
        old_names=("handover_grace",),
    )
    tls_cert: str | None = setting(None, "PEM certificate chain: serve gRPC over TLS")
    tls_key: str | None = setting(None, "PEM private key for --tls-cert")

    def __post_init__(self) -> None:
        self._check_etcd()
        if self.ttl_s < 2 * self.heartbeat_interval_s:
            raise ConfigError(
                f"--ttl-s must be at least twice --heartbeat-interval-s "
                f"({self.heartbeat_interval_s}s), got {self.ttl_s}s"
            )
        if self.restart_grace_s < self.ttl_s:
            raise ConfigError(
                f"--restart-grace-s must be at least --ttl-s ({self.ttl_s}s), "
                f"got {self.restart_grace_s}s"
            )
        if self.flap_hold_max_s < self.flap_hold_s:
            raise ConfigError(
                f"--flap-hold-max-s must be at least --flap-hold-s ({self.flap_hold_s}s), "
                f"got {self.flap_hold_max_s}s"
            )
        if self.max_message_bytes < 4096:
            raise ConfigError(
                f"--max-message-bytes must be at least 4096, got {self.max_message_bytes}"
            )
        if self.register_burst < 1 or self.watch_max_pending < 1:
            raise ConfigError("--register-burst and --watch-max-pending must be >= 1")
        if self.consul_max_waiters_per_client < 1 or self.consul_max_waiters < 1:
            raise ConfigError(
                "--consul-max-waiters-per-client and --consul-max-waiters must be >= 1, got "
                f"{self.consul_max_waiters_per_client} and {self.consul_max_waiters}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")

    def _check_etcd(self) -> None:
        if self.store == "etcd" and not self.etcd_endpoint_list:
            raise ConfigError("--store etcd needs --etcd-endpoints URL[,URL...]")
        if (self.etcd_cert is None) != (self.etcd_key is None):
            raise ConfigError("--etcd-cert and --etcd-key must be given together")
        if self.store == "etcd" and self.handover_grace_s < self.ttl_s:
            raise ConfigError(
                f"--handover-grace-s must be at least --ttl-s ({self.ttl_s}s), "
                f"got {self.handover_grace_s}s"
            )

    @property
    def etcd_endpoint_list(self) -> tuple[str, ...]:
        return tuple(e.strip() for e in self.etcd_endpoints.split(",") if e.strip())

    @property
    def listens_on_loopback(self) -> bool:
        host, _ = parse_host_port(self.listen)
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @classmethod
    def from_args(cls, namespace: argparse.Namespace, environ: Mapping[str, str]) -> RegistryConfig:
        return cls(**resolve(OPTIONS, namespace, environ))


OPTIONS = options_for(RegistryConfig, ENV)
