"""`tidepool registry serve`: the registry process on the embedded store.

`build_server(config)` wires the parts; `main()` parses flags and runs it until
SIGTERM or SIGINT, then stops accepting, lets streams finish briefly, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from registry import heap
from registry.address import AddressPolicy, parse_ranges
from registry.auth import Role, TokenAuth
from registry.catalog import Catalog
from registry.config import OPTIONS, RegistryConfig
from registry.consul_http import PREFIX as CONSUL_PREFIX
from registry.consul_http import PROMETHEUS_SD_PATH, ConsulApi
from registry.core import RegistryCore
from registry.errors import RegistryError
from registry.lease import LeaseConfig, LeaseTable
from registry.metrics import RegistryMetrics
from registry.ratelimit import KeyedRateLimiter
from registry.replica import Replica, open_store, start_replica
from registry.servicer import AdminServicer, RegistryServicer, SchedulingServicer
from registry.store import Store
from registry.watch import WatchHub
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import channel_options
from tidepool.runtime.options import CommandParser, ConfigError, add_options, parse_host_port
from tidepool.runtime.reflection import enable_reflection
from tidepool.runtime.status_http import StatusServer

log = logging.getLogger("tidepool.registry")
SHUTDOWN_GRACE_S = 2.0


def sweep_interval_s(ttl_s: float) -> float:
    """Sweep often enough that a silent lapse is noticed within ~a tenth of a TTL."""
    return min(0.1, ttl_s / 10)


@dataclass
class RegistryServer:
    """A running registry: gRPC server, status endpoint, sweep loop and store."""

    config: RegistryConfig
    core: RegistryCore
    grpc_server: grpc.aio.Server
    status: StatusServer
    health: health.aio.HealthServicer
    grpc_port: int = 0
    ready_flag: dict[str, bool] = field(default_factory=dict)
    consul: ConsulApi | None = None
    """The Consul-compatible read API served on the HTTP port."""
    replica: Replica | None = None
    """The etcd side (lease, mirror, attachments) when the store is etcd."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def grpc_address(self) -> str:
        host, _ = parse_host_port(self.config.listen)
        return f"{_bracket(host)}:{self.grpc_port}"

    @property
    def http_address(self) -> str:
        host, _ = parse_host_port(self.config.http_listen)
        return f"{_bracket(host)}:{self.status.port}"

    async def start(self) -> None:
        await self.core.start(self.config.restart_grace_s)
        self.replica = await start_replica(self.core, self.config)
        await self.grpc_server.start()
        for name in ("", "tidepool.registry.v1.Registry", "tidepool.registry.v1.Admin"):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.status.start()
        self._tasks.add(asyncio.create_task(self._sweep_forever(), name="registry-sweep"))
        self.ready_flag["ready"] = True

    async def _sweep_forever(self) -> None:
        interval = sweep_interval_s(self.config.ttl_s)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.core.sweep()
            except Exception:  # keep sweeping: one failed store write must not stop expiry
                log.exception("liveness sweep failed")

    async def stop(self) -> None:
        self.ready_flag["ready"] = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.replica is not None:
            # First: closing the heartbeat streams below marks our engines unhealthy here,
            # which must not reach etcd; the revoked lease starts the others' hand-over.
            await self.replica.stop()
        await self.grpc_server.stop(SHUTDOWN_GRACE_S)
        await self.status.stop()
        await self.core.store.close()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _credentials(config: RegistryConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    pair = (Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())
    return grpc.ssl_server_credentials([pair])


_RISK = {
    Role.ENGINE: "register engines and so take traffic",
    Role.READ: "read the whole fleet (gRPC watch and listings, the Consul /v1/ API)",
    Role.ADMIN: "drain, reweigh and relabel engines and rewrite routing",
}
_warned_open: set[tuple[Role, ...]] = set()


def warn_open_roles(auth: TokenAuth) -> None:
    """One warning per process for the roles no token guards: the risk, and how to close it."""
    roles = tuple(auth.open_roles())
    if not roles or roles in _warned_open:
        return
    _warned_open.add(roles)
    flags = ", ".join(f"--{role.value}-token" for role in roles)
    env = ", ".join(f"TIDEPOOL_REGISTRY_{role.value.upper()}_TOKEN" for role in roles)
    risks = "; ".join(_RISK[role] for role in roles)
    log.warning(
        "no token is set for %s access, so anyone who can reach the registry's ports can: %s. "
        "Set %s (or %s, or the same keys in --config) to require tokens; "
        "keep the default loopback listen addresses otherwise.",
        "/".join(role.value for role in roles),
        risks,
        flags,
        env,
    )


def build_server(config: RegistryConfig, store: Store | None = None) -> RegistryServer:
    """Wire catalog, leases, store, watch hub and servicers (nothing is started yet)."""
    metrics_registry = CollectorRegistry()
    metrics = RegistryMetrics(metrics_registry)
    lease_config = LeaseConfig(
        ttl_s=config.ttl_s,
        stall_after_s=config.stall_after_s,
        forget_after_s=config.forget_after_s,
        flap_threshold=config.flap_threshold,
        flap_window_s=config.flap_window_s,
        flap_hold_s=config.flap_hold_s,
        flap_hold_max_s=config.flap_hold_max_s,
        self_preservation_threshold=config.self_preservation_threshold,
        self_preservation_min_instances=config.self_preservation_min_instances,
    )
    catalog = Catalog(LeaseTable(lease_config))
    clock = asyncio.get_running_loop().time
    hub = WatchHub(
        catalog,
        max_pending=config.watch_max_pending,
        max_chunk_bytes=config.max_message_bytes // 2,
        on_resync=metrics.watch_resyncs.inc,
        on_delivered=lambda created_at: metrics.fanout.observe(clock() - created_at),
    )
    core = RegistryCore(
        catalog=catalog,
        store=store or open_store(config),
        hub=hub,
        metrics=metrics,
        address_policy=AddressPolicy(
            allowed_ranges=parse_ranges(config.allow_address_ranges),
            allow_loopback=config.listens_on_loopback,
        ),
        register_limiter=KeyedRateLimiter(config.register_rate, config.register_burst),
        clock=clock,
        forget_after_s=config.forget_after_s,
    )
    metrics.track_instances(catalog.state_counts)
    auth = TokenAuth(config.engine_token, config.read_token, config.admin_token)
    warn_open_roles(auth)
    server = grpc.aio.server(
        options=[*channel_options(config.max_message_bytes), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=None,
    )
    pb_grpc.add_RegistryServicer_to_server(
        RegistryServicer(
            core,
            auth,
            first_message_timeout_s=config.first_message_timeout_s,
            heartbeat_interval_s=config.heartbeat_interval_s,
            ttl_s=config.ttl_s,
            max_page_bytes=config.max_message_bytes // 2,
        ),
        server,
    )
    pb_grpc.add_AdminServicer_to_server(AdminServicer(core, auth), server)
    pb_grpc.add_SchedulingServicer_to_server(SchedulingServicer(core, auth), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()])
    credentials = _credentials(config)
    if credentials is None:
        port = server.add_insecure_port(config.listen)
    else:
        port = server.add_secure_port(config.listen, credentials)
    consul_api = ConsulApi(
        catalog,
        auth,
        datacenter=config.consul_datacenter,
        max_waiters_per_client=config.consul_max_waiters_per_client,
        max_waiters=config.consul_max_waiters,
        clock=clock,
    )
    hub.listeners.append(consul_api.observe)
    host, http_port = parse_host_port(config.http_listen)
    state = {"ready": False}
    status = StatusServer(
        host,
        http_port,
        metrics_registry,
        lambda: (True, "ready") if state["ready"] else (False, "starting"),
        prefix_routes={CONSUL_PREFIX: consul_api.handle, PROMETHEUS_SD_PATH: consul_api.handle},
    )
    return RegistryServer(
        config, core, server, status, health_servicer, port, ready_flag=state, consul=consul_api
    )


async def run(config: RegistryConfig) -> int:
    """Serve until SIGTERM/SIGINT."""
    server = build_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: a SIGTERM right after the ready line must be a clean stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    heap.tune(lambda gen, s: server.core.metrics.gc_pause.labels(str(gen)).observe(s))
    freezer = heap.FreezeRunner(lambda: len(server.core.attachments))
    server._tasks.add(asyncio.create_task(freezer.run(), name="registry-heap"))
    sys.stdout.write(
        f"tidepool registry ready grpc={server.grpc_address} http={server.http_address}\n"
    )
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()
    return 0


def parser() -> argparse.ArgumentParser:
    result = CommandParser(
        prog="tidepool registry serve",
        description="Serve the tidepool registry on the embedded store or on etcd.",
    )
    add_options(result, OPTIONS)
    return result


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool registry serve`; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    namespace = parser().parse_args(argv)
    try:
        config = RegistryConfig.from_args(namespace, os.environ if environ is None else environ)
    except ConfigError as exc:
        sys.stderr.write(f"tidepool registry: {exc}\n")
        return 2
    try:
        return uvloop.run(run(config))
    except (OSError, RuntimeError, RegistryError) as exc:
        # grpc reports a port it cannot bind as RuntimeError; the store as RegistryError.
        sys.stderr.write(f"tidepool registry: cannot start: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
