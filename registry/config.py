"""Settings of `tidepool registry serve`: flags, environment variables and config file."""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from registry.address import parse_ranges
from registry.errors import InvalidArgumentError
from tidepool.runtime.options import (
    ConfigError,
    Option,
    parse_bool,
    parse_host_port,
    parse_non_negative_int,
    parse_positive_float,
    resolve,
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


OPTIONS: tuple[Option, ...] = (
    Option("listen", ENV + "LISTEN", "127.0.0.1:7700", "gRPC address to serve", _listen),
    Option(
        "http_listen",
        ENV + "HTTP_LISTEN",
        "127.0.0.1:7701",
        "HTTP address for /metrics, /healthz, /readyz and the Consul-compatible /v1/ API",
        _listen,
    ),
    Option(
        "data_dir",
        ENV + "DATA_DIR",
        ".tidepool/registry",
        "directory of the embedded store (aliases, tenants, instances, overrides)",
    ),
    Option(
        "allow_empty_store",
        ENV + "ALLOW_EMPTY_STORE",
        False,
        "start on an empty store even though --data-dir held one before (its registry.id"
        " marker remains but the database is missing or 0 bytes); true or false",
        parse_bool,
    ),
    Option(
        "engine_token",
        ENV + "ENGINE_TOKEN",
        None,
        "token engines present to register, heartbeat and deregister",
    ),
    Option(
        "admin_token",
        ENV + "ADMIN_TOKEN",
        None,
        "token for admin changes; it is also accepted for every other method",
    ),
    Option(
        "read_token",
        ENV + "READ_TOKEN",
        None,
        "token for watch, resolve and listings (routers, dashboards)",
    ),
    Option(
        "heartbeat_interval",
        ENV + "HEARTBEAT_INTERVAL",
        1.0,
        "seconds between engine heartbeats (told to engines at registration)",
        parse_positive_float,
        "S",
    ),
    Option(
        "ttl",
        ENV + "TTL",
        3.0,
        "seconds without a heartbeat before an instance is unhealthy",
        parse_positive_float,
        "S",
    ),
    Option(
        "stall_after",
        ENV + "STALL_AFTER",
        10.0,
        "seconds with in-flight work and no progress before an instance is stalled",
        parse_positive_float,
        "S",
    ),
    Option(
        "restart_grace",
        ENV + "RESTART_GRACE",
        10.0,
        "after a registry start, seconds known instances get to re-attach (at least the TTL)",
        parse_positive_float,
        "S",
    ),
    Option(
        "forget_after",
        ENV + "FORGET_AFTER",
        300.0,
        "seconds an unhealthy instance keeps its identity and labels before it is forgotten",
        parse_positive_float,
        "S",
    ),
    Option(
        "flap_threshold",
        ENV + "FLAP_THRESHOLD",
        3,
        "an instance unhealthy and back more often than this within --flap-window is held "
        "out (flapping)",
        parse_non_negative_int,
        "N",
    ),
    Option(
        "flap_window",
        ENV + "FLAP_WINDOW",
        60.0,
        "seconds over which unhealthy-and-back cycles are counted",
        parse_positive_float,
        "S",
    ),
    Option(
        "flap_hold",
        ENV + "FLAP_HOLD",
        10.0,
        "seconds a flapping instance is held out; doubles with each hold in a row",
        parse_positive_float,
        "S",
    ),
    Option(
        "flap_hold_max",
        ENV + "FLAP_HOLD_MAX",
        300.0,
        "cap on a flapping instance's hold, in seconds",
        parse_positive_float,
        "S",
    ),
    Option(
        "self_preservation_threshold",
        ENV + "SELF_PRESERVATION_THRESHOLD",
        0.5,
        "share of instances lapsing silently within one TTL that makes the registry "
        "suspect its own network and stop expiring",
        _share,
    ),
    Option(
        "self_preservation_min_instances",
        ENV + "SELF_PRESERVATION_MIN_INSTANCES",
        3,
        "fleet size below which self-preservation never engages",
        parse_non_negative_int,
    ),
    Option(
        "allow_address_ranges",
        ENV + "ALLOW_ADDRESS_RANGES",
        "",
        "comma-separated CIDRs engines may register addresses in, besides their own IP",
        _ranges,
    ),
    Option(
        "max_message_bytes",
        ENV + "MAX_MESSAGE_BYTES",
        1024 * 1024,
        "largest gRPC message accepted or sent",
        parse_non_negative_int,
    ),
    Option(
        "register_rate",
        ENV + "REGISTER_RATE",
        20.0,
        "registrations per second allowed per caller IP",
        parse_positive_float,
    ),
    Option(
        "register_burst",
        ENV + "REGISTER_BURST",
        40,
        "registrations a caller may make in a burst",
        parse_non_negative_int,
    ),
    Option(
        "first_message_timeout",
        ENV + "FIRST_MESSAGE_TIMEOUT",
        5.0,
        "seconds a heartbeat stream may stay silent after opening before it is dropped",
        parse_positive_float,
        "S",
    ),
    Option(
        "watch_max_pending",
        ENV + "WATCH_MAX_PENDING",
        1024,
        "events queued per watcher before it is resynced with a snapshot",
        parse_non_negative_int,
    ),
    Option(
        "consul_datacenter",
        ENV + "CONSUL_DATACENTER",
        "dc1",
        "datacenter name the Consul-compatible API reports (a ?dc= naming another is refused)",
        _datacenter,
    ),
    Option(
        "consul_max_waiters_per_client",
        ENV + "CONSUL_MAX_WAITERS_PER_CLIENT",
        64,
        "Consul blocking queries one client IP may hold open at once (more get 429)",
        parse_non_negative_int,
    ),
    Option(
        "consul_max_waiters",
        ENV + "CONSUL_MAX_WAITERS",
        4096,
        "Consul blocking queries held open at once in total (more get 429)",
        parse_non_negative_int,
    ),
    Option("tls_cert", ENV + "TLS_CERT", None, "PEM certificate chain: serve gRPC over TLS"),
    Option("tls_key", ENV + "TLS_KEY", None, "PEM private key for --tls-cert"),
)


@dataclass(frozen=True)
class RegistryConfig:
    """Frozen registry settings. Durations in seconds; validated on construction."""

    listen: str = "127.0.0.1:7700"
    http_listen: str = "127.0.0.1:7701"
    data_dir: str = ".tidepool/registry"
    allow_empty_store: bool = False
    """Start empty where the data dir's marker says a store existed (the operator's call)."""
    engine_token: str | None = None
    admin_token: str | None = None
    read_token: str | None = None
    heartbeat_interval: float = 1.0
    ttl: float = 3.0
    stall_after: float = 10.0
    restart_grace: float = 10.0
    forget_after: float = 300.0
    flap_threshold: int = 3
    flap_window: float = 60.0
    flap_hold: float = 10.0
    flap_hold_max: float = 300.0
    self_preservation_threshold: float = 0.5
    self_preservation_min_instances: int = 3
    allow_address_ranges: str = ""
    max_message_bytes: int = 1024 * 1024
    register_rate: float = 20.0
    register_burst: int = 40
    first_message_timeout: float = 5.0
    watch_max_pending: int = 1024
    consul_datacenter: str = "dc1"
    consul_max_waiters_per_client: int = 64
    consul_max_waiters: int = 4096
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if self.ttl < 2 * self.heartbeat_interval:
            raise ConfigError(
                f"--ttl must be at least twice --heartbeat-interval "
                f"({self.heartbeat_interval}s), got {self.ttl}s"
            )
        if self.restart_grace < self.ttl:
            raise ConfigError(
                f"--restart-grace must be at least --ttl ({self.ttl}s), got {self.restart_grace}s"
            )
        if self.flap_hold_max < self.flap_hold:
            raise ConfigError(
                f"--flap-hold-max must be at least --flap-hold ({self.flap_hold}s), "
                f"got {self.flap_hold_max}s"
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
        values: dict[str, Any] = resolve(OPTIONS, namespace, environ)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
