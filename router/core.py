"""The parts every router front shares: table, channels, forwarder and registry watch.

Both the proxy process (`router.server`) and the in-process client
(`router.client`) are built on one `RouterCore`, so they balance, eject, retry
and survive registry outages identically.

TLS material is read and checked here, once, at start-up, so a bad file is one
line naming its flag (exit 1) on either data path rather than a failure on the
first call: the relay takes `ssl.SSLContext`s, the grpc.aio path the PEM bytes.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

from router.attempt_timeout import AttemptTimeouts
from router.channels import ChannelPool
from router.config import RouterConfig
from router.forward import Forwarder
from router.metrics import RouterMetrics
from router.relay.upstream import probe
from router.retry import RetryBudget
from router.table import RoutingTable
from router.watcher import RegistryWatcher
from tidepool.runtime.options import ConfigError

ALPN_H2 = ["h2"]


@dataclass(frozen=True)
class ListenerTls:
    """`--tls-cert`/`--tls-key`: callers connect over TLS."""

    key: bytes
    cert: bytes
    context: ssl.SSLContext
    """Server side, offering ALPN h2 (the relay)."""


@dataclass(frozen=True)
class EngineTls:
    """`--engine-ca` (and `--engine-server-name`): engines are dialled over TLS."""

    roots: bytes
    server_name: str | None
    """The name every engine's certificate must carry; None: its own IP address."""
    context: ssl.SSLContext
    """Client side, verifying against `roots`, offering ALPN h2 (the relay)."""


@dataclass
class RouterCore:
    config: RouterConfig
    table: RoutingTable
    channels: ChannelPool
    forwarder: Forwarder
    watcher: RegistryWatcher
    metrics: RouterMetrics
    view_ready: asyncio.Event
    """Set once there is a view to route on (from the file or the registry)."""
    listener_tls: ListenerTls | None = None
    engine_tls: EngineTls | None = None

    async def close(self) -> None:
        await self.forwarder.close()
        await self.channels.close()


def build_core(config: RouterConfig, metrics: RouterMetrics | None = None) -> RouterCore:
    """Assemble the shared parts (inside the event loop; nothing started)."""
    metrics = metrics or RouterMetrics()
    listener_tls = load_listener_tls(config)
    engine_tls = load_engine_tls(config)
    table = RoutingTable(config.table(), events=metrics)
    channels = ChannelPool(
        config.max_message_bytes,
        root_certificates=engine_tls.roots if engine_tls else None,
        server_name=engine_tls.server_name if engine_tls else None,
        keepalive_timeout_s=config.engine_ping_timeout_s,
    )
    forwarder = Forwarder(
        table,
        channels,
        config.retry_policy(),
        RetryBudget(ratio=config.retry_budget_percent / 100),
        metrics,
        timeouts=AttemptTimeouts(config.attempt_timeouts()),
    )
    forwarder.prober = functools.partial(
        probe,
        timeout_s=config.engine_ping_timeout_s,
        tls=engine_tls.context if engine_tls else None,
        server_name=engine_tls.server_name if engine_tls else None,
    )
    view_ready = asyncio.Event()

    def on_change() -> None:
        channels.retain(table.addresses())
        metrics.retain(table.instance_ids() | watcher.view.instances.keys())
        forwarder.retain(table.instance_ids() | watcher.view.instances.keys(), table.addresses())
        view_ready.set()

    ca = read_file(config.registry_ca, "--registry-ca") if config.registry_ca else None
    watcher = RegistryWatcher(
        config.registry,
        table,
        token=config.token,
        service=config.service,
        state_file=config.state_path,
        root_certificates=ca,
        on_change=on_change,
    )
    metrics.watch(watcher.stale_s, lambda: watcher.connected, table.pools)
    return RouterCore(
        config, table, channels, forwarder, watcher, metrics, view_ready, listener_tls, engine_tls
    )


def load_listener_tls(config: RouterConfig) -> ListenerTls | None:
    """The listener's certificate and key, checked to load and to match (ConfigError)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = read_file(config.tls_cert, "--tls-cert")
    key = read_file(config.tls_key, "--tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key, password=_no_password)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"--tls-cert: cannot use {config.tls_cert!r} with --tls-key {config.tls_key!r}: {exc}"
        ) from None
    context.set_alpn_protocols(ALPN_H2)
    return ListenerTls(key, cert, context)


def load_engine_tls(config: RouterConfig) -> EngineTls | None:
    """The roots engines are verified against (ConfigError when they hold no certificate)."""
    if config.engine_ca is None:
        return None
    roots = read_file(config.engine_ca, "--engine-ca")
    try:
        context = ssl.create_default_context(cadata=roots.decode("ascii", errors="replace"))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--engine-ca: no usable PEM certificate in {config.engine_ca!r}: {exc}"
        ) from None
    context.set_alpn_protocols(ALPN_H2)
    return EngineTls(roots, config.engine_server_name, context)


def _no_password() -> bytes:
    # Called only for an encrypted key; grpc cannot use one either, so say so.
    raise ValueError("the key is encrypted (give an unencrypted PEM key)")


def read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None
