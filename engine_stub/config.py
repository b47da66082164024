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

from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    add_options,
    number,
    optional_whole,
    options_for,
    parse_choice,
    parse_host_port,
    resolve,
    setting,
    whole,
)
from tidepool.runtime.replicas import is_address_list, registry_setting
from tidepool.runtime.rules import LANGS, TIERS, WEIGHT_MAX, Lang, Tier

LOG_LEVELS = ("debug", "info", "warning", "error")
RESERVED_LABELS = {"lang": "--lang", "tier": "--tier", "pool": "--pool"}
ENV_PREFIX = "TIDEPOOL_ENGINE_"


def parse_labels(text: str) -> dict[str, str]:
    """ "k=v,k2=v2" → {"k": "v", "k2": "v2"}; empty text is no labels."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected k=v[,k=v...], got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True)
class FaultConfig:
    """Injected faults, for testing what routers and the registry do about them."""

    latency_s: float = setting(0.0, "extra latency per request, seconds", number(0))
    """Extra latency added to every request."""
    error_rate: float = setting(0.0, "fraction of requests failing with INTERNAL", number(0, 1))
    """Fraction 0..1 of requests that fail with INTERNAL "injected fault"."""
    hang_after: int | None = setting(None, "hang every request after N requests", optional_whole(0))
    """After this many requests every request hangs forever (a stuck GPU)."""
    crash_after: int | None = setting(None, "exit(1) after N requests", optional_whole(0))
    """After this many requests the process exits at once with status 1."""

    def __post_init__(self) -> None:
        _need(self.latency_s >= 0, "fault_latency_s", "must be 0 or more", self.latency_s)
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


FAULT_FIELDS = ("latency_s", "error_rate", "hang_after", "crash_after")
"""FaultConfig's fields, each the option `fault_<field>`."""


@dataclass(frozen=True)
class EngineStubConfig:
    """Everything one engine stub needs. Durations in seconds unless the name says otherwise."""

    registry: str = registry_setting()
    token: str | None = setting(None, "engine token for the registry", env="TIDEPOOL_TOKEN")
    registry_ca: str | None = setting(None, "PEM roots for TLS to the registry")
    """PEM file of roots for TLS to the registry; unset: plaintext."""
    listen: str = setting("127.0.0.1:0", "gRPC listen address (port 0: any free port)")
    advertise: str | None = setting(
        None, "ip[:port] to register (default: the bound listen address)"
    )
    """ip or ip:port registered for routers; unset: the bound listen address."""
    tls_cert: str | None = setting(None, "PEM certificate to serve gRPC over TLS")
    tls_key: str | None = setting(None, "PEM private key for --tls-cert")
    http_listen: str = setting("127.0.0.1:0", "HTTP address for /metrics, /healthz, /readyz")
    service: str = setting("speech", "registry service to join")
    lang: Lang = setting("zh", "model to load first: zh or en", parse_choice(LANGS))
    tier: Tier = setting("idc", "capacity tier: idc, cvm or serverless", parse_choice(TIERS))
    weight: int = setting(100, "static routing weight, 0..1000", whole(0, WEIGHT_MAX))
    slots: int = setting(4, "requests scored at once; more wait in a queue", whole(1))
    speed: float = setting(1.0, "relative GPU speed (latency divides by it)", number(0, above=True))
    """Relative GPU speed: 0.6 does 60 % of the work of 1.0 in the same time."""
    model_load_s: float = setting(2.0, "simulated model load time, seconds", number(0))
    labels: Mapping[str, str] = setting(None, "extra labels, k=v,k2=v2", parse_labels)
    pool: str | None = setting(None, "pool to start in (stored as the pool label)")
    instance_id: str | None = setting(None, "stable instance id (default: host name + random)")
    drain_timeout_s: float = setting(
        30.0, "seconds to let in-flight work finish on shutdown", number(0)
    )
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = setting(None, "random seed for injected faults", optional_whole(0))
    log_level: str = setting("warning", "debug, info, warning or error", parse_choice(LOG_LEVELS))

    def __post_init__(self) -> None:
        _need(is_address_list(self.registry), "registry", "must be host:port[,…]", self.registry)
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
        _need(self.model_load_s >= 0, "model_load_s", "must be 0 or more", self.model_load_s)
        _need(
            self.drain_timeout_s >= 0, "drain_timeout_s", "must be 0 or more", self.drain_timeout_s
        )
        _need(self.pool is None or bool(self.pool), "pool", "must not be empty", self.pool)
        _need(
            self.log_level in LOG_LEVELS,
            "log_level",
            "must be one of " + ", ".join(LOG_LEVELS),
            self.log_level,
        )
        if self.labels is None:
            object.__setattr__(self, "labels", {})
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


OPTIONS = (
    *options_for(EngineStubConfig, ENV_PREFIX),
    *options_for(FaultConfig, ENV_PREFIX, prefix="fault_"),
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
    faults = {name: values.pop("fault_" + name) for name in FAULT_FIELDS}
    return EngineStubConfig(faults=FaultConfig(**faults), **values)
