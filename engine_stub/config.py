"""Engine-stub settings: one frozen config, each field a flag, an env var and a config key.

Environment variables are `TIDEPOOL_ENGINE_<FIELD>`, except the two every
process shares: `TIDEPOOL_REGISTRY` and `TIDEPOOL_TOKEN`. Errors are
`ConfigError`s that name the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from types import MappingProxyType
from typing import Any

from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    Option,
    add_options,
    parse_choice,
    parse_host_port,
    resolve,
)
from tidepool.runtime.rules import LANGS, TIERS, WEIGHT_MAX, Lang, Tier

LOG_LEVELS = ("debug", "info", "warning", "error")
RESERVED_LABELS = {"lang": "--lang", "tier": "--tier", "pool": "--pool"}
ENV_PREFIX = "TIDEPOOL_ENGINE_"


@dataclass(frozen=True)
class FaultConfig:
    """Injected faults, for testing what routers and the registry do about them."""

    latency_ms: float = 0.0
    """Extra latency added to every request, in milliseconds."""
    error_rate: float = 0.0
    """Fraction 0..1 of requests that fail with INTERNAL "injected fault"."""
    hang_after: int | None = None
    """After this many requests every request hangs forever (a stuck GPU)."""
    crash_after: int | None = None
    """After this many requests the process exits at once with status 1."""

    def __post_init__(self) -> None:
        _need(self.latency_ms >= 0, "fault_latency_ms", "must be 0 or more", self.latency_ms)
        _need(0 <= self.error_rate <= 1, "fault_error_rate", "must be 0..1", self.error_rate)
        _need(
            _none_or_natural(self.hang_after),
            "fault_hang_after",
            "must be 0 or more",
            self.hang_after,
        )
        _need(
            _none_or_natural(self.crash_after),
            "fault_crash_after",
            "must be 0 or more",
            self.crash_after,
        )


@dataclass(frozen=True)
class EngineStubConfig:
    """Everything one engine stub needs. Durations in seconds unless the name says otherwise."""

    registry: str = "127.0.0.1:7700"
    token: str | None = None
    registry_ca: str | None = None
    """PEM file of roots for TLS to the registry; unset: plaintext."""
    listen: str = "127.0.0.1:0"
    advertise: str | None = None
    """ip or ip:port registered for routers; unset: the bound listen address."""
    tls_cert: str | None = None
    tls_key: str | None = None
    http_listen: str = "127.0.0.1:0"
    service: str = "speech"
    lang: Lang = "zh"
    tier: Tier = "idc"
    weight: int = 100
    slots: int = 4
    speed: float = 1.0
    """Relative GPU speed: 0.6 does 60 % of the work of 1.0 in the same time."""
    model_load_seconds: float = 2.0
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: str | None = None
    instance_id: str | None = None
    drain_timeout: float = 30.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None
    log_level: str = "warning"

    def __post_init__(self) -> None:
        _need(_is_host_port(self.registry), "registry", "must be host:port", self.registry)
        _need(_is_host_port(self.listen), "listen", "must be host:port", self.listen)
        _need(_is_host_port(self.http_listen), "http_listen", "must be host:port", self.http_listen)
        _check_advertise(self.listen, self.advertise)
        _need(
            (self.tls_cert is None) == (self.tls_key is None),
            "tls_cert",
            "--tls-cert and --tls-key go together",
            self.tls_cert,
        )
        _need(bool(self.service), "service", "must not be empty", self.service)
        _need(self.lang in LANGS, "lang", "must be zh or en", self.lang)
        _need(self.tier in TIERS, "tier", "must be idc, cvm or serverless", self.tier)
        _need(0 <= self.weight <= WEIGHT_MAX, "weight", "must be 0..1000", self.weight)
        _need(self.slots >= 1, "slots", "must be 1 or more", self.slots)
        _need(self.speed > 0, "speed", "must be above 0", self.speed)
        _need(
            self.model_load_seconds >= 0,
            "model_load_seconds",
            "must be 0 or more",
            self.model_load_seconds,
        )
        _need(self.drain_timeout >= 0, "drain_timeout", "must be 0 or more", self.drain_timeout)
        _need(self.pool is None or bool(self.pool), "pool", "must not be empty", self.pool)
        _need(
            self.log_level in LOG_LEVELS,
            "log_level",
            "must be one of " + ", ".join(LOG_LEVELS),
            self.log_level,
        )
        for key in self.labels:
            _need(
                key not in RESERVED_LABELS,
                "labels",
                f"set {key!r} with {RESERVED_LABELS.get(key)}",
                key,
            )
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def registry_labels(self) -> dict[str, str]:
        """The labels to register: the extra ones plus lang, tier and (if set) pool."""
        labels = dict(self.labels)
        labels.update(lang=self.lang, tier=self.tier)
        if self.pool is not None:
            labels["pool"] = self.pool
        return labels


def _need(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"--{name.replace('_', '-')}: {rule}, got {value!r}")


def _none_or_natural(value: int | None) -> bool:
    return value is None or value >= 0


def _is_host_port(text: str) -> bool:
    try:
        parse_host_port(text)
    except ValueError:
        return False
    return True


def _check_advertise(listen: str, advertise: str | None) -> None:
    if advertise is None:
        host, _ = parse_host_port(listen)
        ok = _is_specific_ip(host)
        _need(ok, "advertise", f"required when --listen {listen} is not one literal IP", advertise)
        return
    host = advertise
    if _is_host_port(advertise):
        host, _ = parse_host_port(advertise)
    _need(_is_specific_ip(host), "advertise", "must be a literal IP or ip:port", advertise)


def _is_specific_ip(host: str) -> bool:
    try:
        return not ip_address(host).is_unspecified
    except ValueError:
        return False


# ---- flags, environment and config file -----------------------------------


def parse_labels(text: str) -> dict[str, str]:
    """ "k=v,k2=v2" → {"k": "v", "k2": "v2"}; empty text is no labels."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected k=v[,k=v...], got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _optional_int(text: str) -> int | None:
    return None if text.strip() == "" else _int(text)


def _option(name: str, default: Any, help: str, parse: Any = str, env: str | None = None) -> Option:
    return Option(name, env or ENV_PREFIX + name.upper(), default, help, parse)


OPTIONS: tuple[Option, ...] = (
    _option("registry", "127.0.0.1:7700", "registry gRPC address", env="TIDEPOOL_REGISTRY"),
    _option("token", None, "engine token for the registry", env="TIDEPOOL_TOKEN"),
    _option("registry_ca", None, "PEM roots for TLS to the registry"),
    _option("listen", "127.0.0.1:0", "gRPC listen address (port 0: any free port)"),
    _option("advertise", None, "ip[:port] to register (default: the bound listen address)"),
    _option("tls_cert", None, "PEM certificate to serve gRPC over TLS"),
    _option("tls_key", None, "PEM private key for --tls-cert"),
    _option("http_listen", "127.0.0.1:0", "HTTP address for /metrics, /healthz, /readyz"),
    _option("service", "speech", "registry service to join"),
    _option("lang", "zh", "model to load first: zh or en", parse_choice(LANGS)),
    _option("tier", "idc", "capacity tier: idc, cvm or serverless", parse_choice(TIERS)),
    _option("weight", 100, "static routing weight, 0..1000", _int),
    _option("slots", 4, "requests scored at once; more wait in a queue", _int),
    _option("speed", 1.0, "relative GPU speed (latency divides by it)", _float),
    _option("model_load_seconds", 2.0, "simulated model load time", _float),
    _option("labels", None, "extra labels, k=v,k2=v2", parse_labels),
    _option("pool", None, "pool to start in (stored as the pool label)"),
    _option("instance_id", None, "stable instance id (default: host name + random)"),
    _option("drain_timeout", 30.0, "seconds to let in-flight work finish on shutdown", _float),
    _option("fault_latency_ms", 0.0, "extra latency per request, ms", _float),
    _option("fault_error_rate", 0.0, "fraction of requests failing with INTERNAL", _float),
    _option("fault_hang_after", None, "hang every request after N requests", _optional_int),
    _option("fault_crash_after", None, "exit(1) after N requests", _optional_int),
    _option("seed", None, "random seed for injected faults", _optional_int),
    _option("log_level", "warning", "debug, info, warning or error", parse_choice(LOG_LEVELS)),
)


def build_parser(prog: str = "tidepool engine-stub") -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog, description="A fake GPU speech-evaluation engine.")
    add_options(parser, OPTIONS)
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> EngineStubConfig:
    """Flags, then environment, then config file, then defaults; ConfigError on a bad value.

    An unknown flag exits (SystemExit 2) after one line on stderr, as argparse does.
    """
    values = resolve(OPTIONS, build_parser().parse_args(list(argv)), environ)
    values["labels"] = values["labels"] or {}
    faults = FaultConfig(
        latency_ms=values.pop("fault_latency_ms"),
        error_rate=values.pop("fault_error_rate"),
        hang_after=values.pop("fault_hang_after"),
        crash_after=values.pop("fault_crash_after"),
    )
    return EngineStubConfig(faults=faults, **values)
