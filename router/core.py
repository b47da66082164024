"""The parts every router front shares: table, channels, forwarder and registry watch.

Both the proxy process (`router.server`) and the in-process client
(`router.client`) are built on one `RouterCore`, so they balance, eject, retry
and survive registry outages identically.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from registry.sdk.options import ConfigError
from router.channels import ChannelPool
from router.config import RouterConfig
from router.forward import Forwarder
from router.metrics import RouterMetrics
from router.retry import RetryBudget
from router.table import RoutingTable
from router.watcher import RegistryWatcher


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

    async def close(self) -> None:
        await self.channels.close()


def build_core(config: RouterConfig, metrics: RouterMetrics | None = None) -> RouterCore:
    """Assemble the shared parts (inside the event loop; nothing started)."""
    metrics = metrics or RouterMetrics()
    table = RoutingTable(config.table(), events=metrics)
    channels = ChannelPool(config.max_message_bytes)
    forwarder = Forwarder(
        table,
        channels,
        config.retry_policy(),
        RetryBudget(ratio=config.retry_budget_percent / 100),
        metrics,
    )
    view_ready = asyncio.Event()

    def on_change() -> None:
        channels.retain(table.addresses())
        metrics.retain(table.instance_ids() | watcher.view.instances.keys())
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
    return RouterCore(config, table, channels, forwarder, watcher, metrics, view_ready)


def read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None
