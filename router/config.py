"""Router settings: each a flag, an environment variable (`TIDEPOOL_ROUTER_*`) and a config key.

`TIDEPOOL_REGISTRY` and `TIDEPOOL_TOKEN` are shared with the other processes.
Every error is a `ConfigError` naming the flag and the rule.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from router.attempt_timeout import AttemptTimeoutConfig
from router.balancer import PICKER_KINDS, PickerKind
from router.outlier import OutlierConfig
from router.proxy import DEFAULT_UNARY_METHODS
from router.retry import RetryPolicy
from router.slow_start import SlowStartConfig
from router.streams import StreamTimeouts
from router.table import TableConfig
from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    add_config_file_option,
    add_option,
    host_port,
    number,
    optional_path,
    options_for,
    parse_bool,
    parse_choice,
    resolve,
    setting,
    whole,
)
from tidepool.runtime.replicas import registry_setting

ENV = "TIDEPOOL_ROUTER_"
DataPath = Literal["grpc", "relay"]
DATA_PATHS: tuple[DataPath, ...] = ("grpc", "relay")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_PROCESSES = 64


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    for method in methods:
        if not method.startswith("/") or method.count("/") != 2:
            raise ValueError(f"expected /package.Service/Method, got {method!r}")
    return methods


def _server_name(text: str) -> str | None:
    if any(c.isspace() for c in text) or "/" in text:
        raise ValueError(f"expected a DNS name or an IP address, got {text!r}")
    return text or None


@dataclass(frozen=True)
class RouterConfig:
    """Everything one router process needs. Durations in seconds."""

    registry: str = registry_setting()
    token: str | None = setting(None, "registry read or admin token", env="TIDEPOOL_TOKEN")
    registry_ca: str | None = setting(None, "PEM roots for TLS to the registry")
    service: str = setting("speech", "registry service to watch")
    listen: str = setting("127.0.0.1:7710", "gRPC address to proxy on", host_port)
    tls_cert: str | None = setting(
        None, "PEM certificate: serve --listen over TLS (with --tls-key)", optional_path
    )
    """PEM certificate chain: callers connect to `listen` over TLS (with `tls_key`)."""
    tls_key: str | None = setting(None, "PEM private key for --tls-cert", optional_path)
    """PEM private key of `tls_cert`."""
    engine_ca: str | None = setting(
        None, "PEM roots: dial engines over TLS, verified against these", optional_path
    )
    """PEM roots: engines are dialled over TLS and verified against these."""
    engine_server_name: str | None = setting(
        None,
        "with --engine-ca: verify every engine against this name, not its IP address",
        _server_name,
    )
    """Verify every engine's certificate against this name instead of its IP address."""
    http_listen: str = setting(
        "127.0.0.1:7711",
        "HTTP address: /metrics /healthz /readyz /v1/resolve /v1/endpoints",
        host_port,
    )
    state_file: str | None = setting(
        ".tidepool/router/view.json",
        "last known good view, read at start and kept current ('' to disable)",
        optional_path,
    )
    balancer: PickerKind = setting(
        "wrr", "wrr (smooth weighted round robin) or least-loaded", parse_choice(PICKER_KINDS)
    )
    slow_start_s: float = setting(
        10.0, "ramp a new or recovered instance over this window (0: off)", number(0)
    )
    max_ejection_percent: float = setting(
        50.0, "never eject more of a pool than this, in percent", number(0, 100)
    )
    panic_threshold_percent: float = setting(
        50.0,
        "below this share of healthy instances, route over the whole pool (0: never)",
        number(0, 100),
    )
    ejection_base_s: float = setting(
        2.0, "length of a first passive ejection", number(0, above=True)
    )
    ejection_max_s: float = setting(
        60.0, "cap on a passive ejection's length", number(0, above=True)
    )
    max_attempts: int = setting(3, "attempts per call, the first included", whole(1, 10))
    retry_budget_percent: float = setting(
        20.0, "retries may add at most this share of load", number(0, 100)
    )
    idempotent_methods: tuple[str, ...] = setting(
        DEFAULT_UNARY_METHODS,
        "methods also retried on UNAVAILABLE from an engine, comma-separated",
        _methods,
    )
    unary_methods: tuple[str, ...] = setting(
        DEFAULT_UNARY_METHODS,
        "methods proxied on the unary path (others as streams), comma-separated",
        _methods,
    )
    default_deadline_s: float = setting(
        30.0, "deadline of unary calls that carry none", number(0, above=True)
    )
    stream_first_response_s: float = setting(
        30.0,
        "a stream fails if the engine sends nothing this long after the caller's last message",
        number(0, above=True),
    )
    stream_idle_s: float = setting(
        60.0, "a stream fails after this long without a message either way", number(0, above=True)
    )
    max_message_bytes: int = setting(
        4 * 1024 * 1024, "largest message either way", whole(1024, 64 * 1024 * 1024)
    )
    processes: int = setting(
        1, "router processes sharing the port (SO_REUSEPORT)", whole(1, MAX_PROCESSES)
    )
    share_port: bool = setting(
        False,
        "share --listen with other router processes (set for the workers of --processes N)",
        parse_bool,
    )
    """Share `listen` with other router processes (SO_REUSEPORT): set on the workers of
    `--processes N`; otherwise a second router on the same port fails with one line."""
    data_path: DataPath = setting(
        "relay",
        "relay (the HTTP/2 frame relay) or grpc (the grpc.aio proxy)",
        parse_choice(DATA_PATHS),
    )
    """grpc: the grpc.aio proxy; relay: the HTTP/2 frame relay (about half the CPU a call)."""
    log_level: str = setting("warning", "debug, info, warning or error", parse_choice(LOG_LEVELS))
    stream_buffer_bytes: int = setting(
        1 << 20,
        "relay: bytes buffered per stream and direction (the stream window granted)",
        whole(65_535, (1 << 31) - 1),
    )
    """Relay: bytes buffered per stream and direction (the HTTP/2 stream window granted)."""
    connection_buffer_bytes: int = setting(
        4 << 20,
        "relay: output queued per connection before its streams are paused",
        whole(65_536, 1 << 30),
    )
    """Relay: output queued per connection before its streams stop being fed and credited."""
    max_resets_per_s: float = setting(
        100.0,
        "relay: stream resets a caller may send per second (10 s bursts), then GOAWAY",
        number(0, above=True),
    )
    """Relay: stream resets per second a caller may send (10 s bursts), then GOAWAY."""
    max_control_frames_per_s: float = setting(
        1000.0,
        "relay: SETTINGS/PING/PRIORITY/empty frames a peer may send per second (10 s bursts)",
        number(0, above=True),
    )
    """Relay: SETTINGS, PING, PRIORITY, empty DATA/CONTINUATION per second (10 s bursts)."""
    handshake_timeout_s: float = setting(
        10.0, "relay: longest wait for a caller's preface and SETTINGS", number(0, above=True)
    )
    """Relay: longest wait for a caller's HTTP/2 preface and first SETTINGS."""
    idle_timeout_s: float = setting(
        300.0, "relay: close a caller connection without a stream this long", number(0, above=True)
    )
    """Relay: a caller connection without a stream this long is closed."""
    max_connections: int = setting(
        10_000, "relay: caller connections held at once", whole(1, 1_000_000)
    )
    """Relay: caller connections held at once; more are closed when accepted."""
    engine_streams_per_connection: int = setting(
        100, "relay: streams on one engine connection before another is opened", whole(1, 1_000_000)
    )
    """Relay: streams on one engine connection before another is opened."""
    attempt_timeout_percentile: float = setting(
        99.0,
        "attempt timeout: this percentile of the engine's recent latency, times the margin",
        number(0, 100, above=True),
    )
    """An idempotent call's attempt that waits past its engine's attempt timeout is tried
    on another engine (see `router.attempt_timeout`); the percentile of recent latency."""
    attempt_timeout_margin: float = setting(
        2.0, "attempt timeout: the percentile times this", number(1)
    )
    """The attempt timeout is the percentile times this margin (within min and max)."""
    attempt_timeout_min_s: float = setting(
        0.1, "attempt timeout: never shorter than this", number(0, above=True)
    )
    """Floor of the attempt timeout."""
    attempt_timeout_max_s: float = setting(
        10.0, "attempt timeout: never longer (and the figure for an engine not yet seen)",
        number(0, above=True),
    )  # fmt: skip
    """Ceiling of the attempt timeout, also used while too few latencies are known."""
    consecutive_timeouts: int = setting(
        3, "attempt timeouts in a row, the engine silent meanwhile, that eject it (0: never)",
        whole(0, 1000),
    )  # fmt: skip
    """Attempt timeouts in a row with no answer from the engine in between that eject it."""
    engine_ping_after_s: float = setting(
        0.5,
        "relay: PING an engine connection with calls in flight after this long silent",
        number(0, above=True),
    )
    """Relay: an engine connection with calls in flight that heard nothing this long is PINGed."""
    engine_ping_timeout_s: float = setting(
        1.0,
        "PING ACK wait before an engine connection with calls in flight is failed",
        number(0, above=True),
    )
    """Relay: no PING ACK this long and a busy engine connection is failed (its calls retried,
    the engine ejected); grpc path: the channel's keepalive timeout."""

    def __post_init__(self) -> None:
        """The checks across fields (each field's own rule is its option's parser)."""
        if self.ejection_max_s < self.ejection_base_s:
            raise ConfigError(
                f"--ejection-max-s: must be at least --ejection-base-s "
                f"({self.ejection_base_s:g}), got {self.ejection_max_s:g}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            given = "--tls-cert" if self.tls_cert is not None else "--tls-key"
            raise ConfigError(f"--tls-cert: --tls-cert and --tls-key go together, got only {given}")
        if self.attempt_timeout_max_s < self.attempt_timeout_min_s:
            raise ConfigError(
                f"--attempt-timeout-max-s: must be at least --attempt-timeout-min-s "
                f"({self.attempt_timeout_min_s:g}), got {self.attempt_timeout_max_s:g}"
            )
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
            consecutive_timeouts=self.consecutive_timeouts,
        )
        return TableConfig(balancer=self.balancer, slow_start=slow, outlier=outlier)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.idempotent_methods)

    def attempt_timeouts(self) -> AttemptTimeoutConfig:
        return AttemptTimeoutConfig(
            percentile=self.attempt_timeout_percentile,
            margin=self.attempt_timeout_margin,
            min_s=self.attempt_timeout_min_s,
            max_s=self.attempt_timeout_max_s,
        )

    def stream_timeouts(self) -> StreamTimeouts:
        return StreamTimeouts(self.stream_first_response_s, self.stream_idle_s)

    @property
    def state_path(self) -> Path | None:
        return Path(self.state_file) if self.state_file else None


OPTIONS = options_for(RouterConfig, ENV)


FLAG_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("listening", ("listen", "http_listen", "data_path", "unary_methods", "max_message_bytes")),
    ("registry", ("registry", "token", "registry_ca", "service", "state_file")),
    ("balancing", ("balancer", "slow_start_s", "panic_threshold_percent")),
    ("ejection", ("max_ejection_percent", "ejection_base_s", "ejection_max_s")),
    ("retries", ("max_attempts", "retry_budget_percent", "idempotent_methods")),
    (
        "frozen engines",
        (
            "attempt_timeout_percentile",
            "attempt_timeout_margin",
            "attempt_timeout_min_s",
            "attempt_timeout_max_s",
            "consecutive_timeouts",
            "engine_ping_after_s",
            "engine_ping_timeout_s",
        ),
    ),
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


METAVARS: dict[str, str] = {
    "registry": "HOST:PORT[,…]",
    "listen": "HOST:PORT",
    "http_listen": "HOST:PORT",
    "max_attempts": "N",
    "processes": "N",
    "consecutive_timeouts": "N",
    "attempt_timeout_percentile": "PERCENTILE",
    "attempt_timeout_margin": "FACTOR",
}
METAVAR_SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("_per_s",), "RATE"),
    (("_s",), "S"),
    (("_percent",), "PERCENT"),
    (("_ca", "_cert", "_key", "_file"), "FILE"),
    (("_methods",), "METHODS"),
    (("_bytes",), "BYTES"),
    (("_name",), "NAME"),
)


def _metavar(name: str) -> str:
    if name in CHOICES:
        return "{" + ",".join(CHOICES[name]) + "}"
    if name in METAVARS:
        return METAVARS[name]
    for suffixes, metavar in METAVAR_SUFFIXES:
        if name.endswith(suffixes):
            return metavar
    return name.upper()


def build_parser(prog: str = "tidepool router serve") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog, description="Route gRPC calls to healthy engines by alias or tenant."
    )
    by_name = {option.name: option for option in OPTIONS}
    groups = {title: parser.add_argument_group(title) for title, _ in FLAG_GROUPS}
    for title, names in FLAG_GROUPS:
        group = groups[title]
        for name in names:
            add_option(group, by_name[name], _metavar(name))
    add_config_file_option(groups["process"])
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> RouterConfig:
    """Flags, then environment, then config file, then defaults; raises ConfigError."""
    return RouterConfig(**resolve(OPTIONS, build_parser().parse_args(list(argv)), environ))
