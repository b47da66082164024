"""Router settings: each a flag, an environment variable (`TIDEPOOL_ROUTER_*`) and a config key.

`TIDEPOOL_REGISTRY` and `TIDEPOOL_TOKEN` are shared with the other processes.
Every error is a `ConfigError` naming the flag and the rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from router.balancer import PICKER_KINDS, PickerKind
from router.outlier import OutlierConfig
from router.proxy import DEFAULT_UNARY_METHODS
from router.retry import RetryPolicy
from router.slow_start import SlowStartConfig
from router.streams import StreamTimeouts
from router.table import TableConfig
from tidepool.runtime.options import (
    CONFIG_ENV,
    CommandParser,
    ConfigError,
    Option,
    parse_bool,
    parse_choice,
    parse_host_port,
    resolve,
)

ENV = "TIDEPOOL_ROUTER_"
DataPath = Literal["grpc", "relay"]
DATA_PATHS: tuple[DataPath, ...] = ("grpc", "relay")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_PROCESSES = 64


@dataclass(frozen=True)
class RouterConfig:
    """Everything one router process needs. Durations in seconds."""

    registry: str = "127.0.0.1:7700"
    token: str | None = None
    registry_ca: str | None = None
    service: str = "speech"
    listen: str = "127.0.0.1:7710"
    tls_cert: str | None = None
    """PEM certificate chain: callers connect to `listen` over TLS (with `tls_key`)."""
    tls_key: str | None = None
    """PEM private key of `tls_cert`."""
    engine_ca: str | None = None
    """PEM roots: engines are dialled over TLS and verified against these."""
    engine_server_name: str | None = None
    """Verify every engine's certificate against this name instead of its IP address."""
    http_listen: str = "127.0.0.1:7711"
    state_file: str | None = ".tidepool/router/view.json"
    balancer: PickerKind = "wrr"
    slow_start_s: float = 10.0
    max_ejection_percent: float = 50.0
    panic_threshold_percent: float = 50.0
    ejection_base_s: float = 2.0
    ejection_max_s: float = 60.0
    max_attempts: int = 3
    retry_budget_percent: float = 20.0
    idempotent_methods: tuple[str, ...] = DEFAULT_UNARY_METHODS
    unary_methods: tuple[str, ...] = DEFAULT_UNARY_METHODS
    default_deadline_s: float = 30.0
    stream_first_response_s: float = 30.0
    stream_idle_s: float = 60.0
    max_message_bytes: int = 4 * 1024 * 1024
    processes: int = 1
    share_port: bool = False
    """Share `listen` with other router processes (SO_REUSEPORT): set on the workers of
    `--processes N`; otherwise a second router on the same port fails with one line."""
    data_path: DataPath = "relay"
    """grpc: the grpc.aio proxy; relay: the HTTP/2 frame relay (about half the CPU a call)."""
    log_level: str = "warning"
    stream_buffer_bytes: int = 1 << 20
    """Relay: bytes buffered per stream and direction (the HTTP/2 stream window granted)."""
    connection_buffer_bytes: int = 4 << 20
    """Relay: output queued per connection before its streams stop being fed and credited."""
    max_resets_per_s: float = 100.0
    """Relay: stream resets per second a caller may send (10 s bursts), then GOAWAY."""
    max_control_frames_per_s: float = 1000.0
    """Relay: SETTINGS, PING, PRIORITY, empty DATA/CONTINUATION per second (10 s bursts)."""
    handshake_timeout_s: float = 10.0
    """Relay: longest wait for a caller's HTTP/2 preface and first SETTINGS."""
    idle_timeout_s: float = 300.0
    """Relay: a caller connection without a stream this long is closed."""
    max_connections: int = 10_000
    """Relay: caller connections held at once; more are closed when accepted."""
    engine_streams_per_connection: int = 100
    """Relay: streams on one engine connection before another is opened."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            given = "--tls-cert" if self.tls_cert is not None else "--tls-key"
            raise ConfigError(f"--tls-cert: --tls-cert and --tls-key go together, got only {given}")
        if self.engine_server_name is not None and self.engine_ca is None:
            raise ConfigError(
                f"--engine-server-name: needs --engine-ca, got {self.engine_server_name!r} alone"
            )

    def table(self) -> TableConfig:
        slow = SlowStartConfig(window_s=self.slow_start_s) if self.slow_start_s > 0 else None
        outlier = OutlierConfig(
            base_ejection_s=self.ejection_base_s,
            max_ejection_s=self.ejection_max_s,
            max_ejection_percent=self.max_ejection_percent,
            panic_threshold_percent=self.panic_threshold_percent,
        )
        return TableConfig(balancer=self.balancer, slow_start=slow, outlier=outlier)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.idempotent_methods)

    def stream_timeouts(self) -> StreamTimeouts:
        return StreamTimeouts(self.stream_first_response_s, self.stream_idle_s)

    @property
    def state_path(self) -> Path | None:
        return Path(self.state_file) if self.state_file else None


def _host_port(text: str) -> str:
    parse_host_port(text)
    return text


def _number(low: float, high: float | None = None, *, above: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        too_low = value <= low if above else value < low
        if too_low or (high is not None and value > high) or value != value:
            bound = f"above {low:g}" if above else f"{low:g} or more"
            rule = f"within {low:g}..{high:g}" if high is not None else bound
            raise ValueError(f"must be {rule}, got {text}")
        return value

    return parse


def _whole(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be within {low}..{high}, got {value}")
        return value

    return parse


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    for method in methods:
        if not method.startswith("/") or method.count("/") != 2:
            raise ValueError(f"expected /package.Service/Method, got {method!r}")
    return methods


def _optional_path(text: str) -> str | None:
    return text or None


def _server_name(text: str) -> str | None:
    if any(c.isspace() for c in text) or "/" in text:
        raise ValueError(f"expected a DNS name or an IP address, got {text!r}")
    return text or None


def _o(name: str, default: Any, help: str, parse: Any = str, env: str | None = None) -> Option:
    return Option(name, env or ENV + name.upper(), default, help, parse)


OPTIONS: tuple[Option, ...] = (
    _o("registry", "127.0.0.1:7700", "registry gRPC address", _host_port, "TIDEPOOL_REGISTRY"),
    _o("token", None, "registry read or admin token", env="TIDEPOOL_TOKEN"),
    _o("registry_ca", None, "PEM roots for TLS to the registry"),
    _o("service", "speech", "registry service to watch"),
    _o("listen", "127.0.0.1:7710", "gRPC address to proxy on", _host_port),
    _o("tls_cert", None, "PEM certificate: serve --listen over TLS (with --tls-key)",
       _optional_path),
    _o("tls_key", None, "PEM private key for --tls-cert", _optional_path),
    _o("engine_ca", None, "PEM roots: dial engines over TLS, verified against these",
       _optional_path),
    _o("engine_server_name", None,
       "with --engine-ca: verify every engine against this name, not its IP address",
       _server_name),
    _o("http_listen", "127.0.0.1:7711", "HTTP address: /metrics /healthz /readyz /v1/resolve",
       _host_port),
    _o("state_file", ".tidepool/router/view.json",
       "last known good view, read at start and kept current ('' to disable)", _optional_path),
    _o("balancer", "wrr", "wrr (smooth weighted round robin) or least-loaded",
       parse_choice(PICKER_KINDS)),
    _o("slow_start_s", 10.0, "ramp a new or recovered instance over this window (0: off)",
       _number(0)),
    _o("max_ejection_percent", 50.0, "never eject more of a pool than this, in percent",
       _number(0, 100)),
    _o("panic_threshold_percent", 50.0,
       "below this share of healthy instances, route over the whole pool (0: never)",
       _number(0, 100)),
    _o("ejection_base_s", 2.0, "length of a first passive ejection", _number(0, above=True)),
    _o("ejection_max_s", 60.0, "cap on a passive ejection's length", _number(0, above=True)),
    _o("max_attempts", 3, "attempts per call, the first included", _whole(1, 10)),
    _o("retry_budget_percent", 20.0, "retries may add at most this share of load",
       _number(0, 100)),
    _o("idempotent_methods", ",".join(DEFAULT_UNARY_METHODS),
       "methods also retried on UNAVAILABLE from an engine, comma-separated", _methods),
    _o("unary_methods", ",".join(DEFAULT_UNARY_METHODS),
       "methods proxied on the unary path (others as streams), comma-separated", _methods),
    _o("default_deadline_s", 30.0, "deadline of unary calls that carry none",
       _number(0, above=True)),
    _o("stream_first_response_s", 30.0,
       "a stream fails if the engine sends nothing this long after the caller's last message",
       _number(0, above=True)),
    _o("stream_idle_s", 60.0, "a stream fails after this long without a message either way",
       _number(0, above=True)),
    _o("max_message_bytes", 4 * 1024 * 1024, "largest message either way",
       _whole(1024, 64 * 1024 * 1024)),
    _o("processes", 1, "router processes sharing the port (SO_REUSEPORT)",
       _whole(1, MAX_PROCESSES)),
    _o("share_port", False,
       "share --listen with other router processes (set for the workers of --processes N)",
       parse_bool),
    _o("data_path", "relay", "relay (the HTTP/2 frame relay) or grpc (the grpc.aio proxy)",
       parse_choice(DATA_PATHS)),
    _o("log_level", "warning", "debug, info, warning or error",
       parse_choice(LOG_LEVELS)),
    _o("stream_buffer_bytes", 1 << 20,
       "relay: bytes buffered per stream and direction (the stream window granted)",
       _whole(65_535, (1 << 31) - 1)),
    _o("connection_buffer_bytes", 4 << 20,
       "relay: output queued per connection before its streams are paused",
       _whole(65_536, 1 << 30)),
    _o("max_resets_per_s", 100.0,
       "relay: stream resets a caller may send per second (10 s bursts), then GOAWAY",
       _number(0, above=True)),
    _o("max_control_frames_per_s", 1000.0,
       "relay: SETTINGS/PING/PRIORITY/empty frames a peer may send per second (10 s bursts)",
       _number(0, above=True)),
    _o("handshake_timeout_s", 10.0, "relay: longest wait for a caller's preface and SETTINGS",
       _number(0, above=True)),
    _o("idle_timeout_s", 300.0, "relay: close a caller connection without a stream this long",
       _number(0, above=True)),
    _o("max_connections", 10_000, "relay: caller connections held at once",
       _whole(1, 1_000_000)),
    _o("engine_streams_per_connection", 100,
       "relay: streams on one engine connection before another is opened",
       _whole(1, 1_000_000)),
)  # fmt: skip


FLAG_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("listening", ("listen", "http_listen", "data_path", "unary_methods", "max_message_bytes")),
    ("registry", ("registry", "token", "registry_ca", "service", "state_file")),
    ("balancing", ("balancer", "slow_start_s", "panic_threshold_percent")),
    ("ejection", ("max_ejection_percent", "ejection_base_s", "ejection_max_s")),
    ("retries", ("max_attempts", "retry_budget_percent", "idempotent_methods")),
    ("deadlines", ("default_deadline_s", "stream_first_response_s", "stream_idle_s")),
    ("TLS", ("tls_cert", "tls_key", "engine_ca", "engine_server_name")),
    ("process", ("processes", "share_port", "log_level")),
    (
        "relay limits",
        (
            "stream_buffer_bytes",
            "connection_buffer_bytes",
            "max_resets_per_s",
            "max_control_frames_per_s",
            "handshake_timeout_s",
            "idle_timeout_s",
            "max_connections",
            "engine_streams_per_connection",
        ),
    ),
)
"""`router serve --help` shows the flags in these groups; every option is in one."""
CHOICES: dict[str, tuple[str, ...]] = {
    "balancer": PICKER_KINDS,
    "data_path": DATA_PATHS,
    "log_level": LOG_LEVELS,
}


def _metavar(name: str) -> str:
    if name in CHOICES:
        return "{" + ",".join(CHOICES[name]) + "}"
    if name.endswith("_s"):
        return "S"
    if name.endswith("_percent"):
        return "PERCENT"
    if name in ("registry", "listen", "http_listen"):
        return "HOST:PORT"
    if name.endswith(("_ca", "_cert", "_key", "_file")):
        return "FILE"
    if name.endswith("_methods"):
        return "METHODS"
    if name.endswith("_bytes"):
        return "BYTES"
    if name in ("max_attempts", "processes"):
        return "N"
    return "NAME" if name.endswith("_name") else name.upper()


def build_parser(prog: str = "tidepool router serve") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog, description="Route gRPC calls to healthy engines by alias or tenant."
    )
    by_name = {option.name: option for option in OPTIONS}
    groups = {title: parser.add_argument_group(title) for title, _ in FLAG_GROUPS}
    for title, names in FLAG_GROUPS:
        group = groups[title]
        for name in names:
            option = by_name[name]
            shown = "unset" if option.default is None else repr(option.default)
            # Values stay None so `resolve` sees what was given; the option's own
            # parser checks choices, with the same message as from the environment.
            group.add_argument(
                option.flag,
                dest=option.name,
                default=None,
                metavar=_metavar(name),
                help=f"{option.help} [env {option.env}; default {shown}]",
            )
    groups["process"].add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help=f"TOML file whose keys are the option names above [env {CONFIG_ENV}]",
    )
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> RouterConfig:
    """Flags, then environment, then config file, then defaults; raises ConfigError."""
    values = resolve(OPTIONS, build_parser().parse_args(list(argv)), environ)
    if values["ejection_max_s"] < values["ejection_base_s"]:
        raise ConfigError(
            f"--ejection-max-s: must be at least --ejection-base-s "
            f"({values['ejection_base_s']:g}), got {values['ejection_max_s']:g}"
        )
    int_fields = (
        "max_attempts",
        "max_message_bytes",
        "processes",
        "stream_buffer_bytes",
        "connection_buffer_bytes",
        "max_connections",
        "engine_streams_per_connection",
    )
    fields: dict[str, Any] = {k: int(v) if k in int_fields else v for k, v in values.items()}
    return RouterConfig(**fields)
