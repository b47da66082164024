"""The router process: watch the registry, proxy gRPC, serve metrics and probes.

Startup order: the view file (if any) first, so a router restarted during a
registry outage routes at once; then the gRPC and HTTP ports; then the watch.
The ready line is printed once there is a view to route on. SIGTERM or SIGINT
stops taking new calls, lets calls in flight finish (up to a grace), writes the
view file and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import parse_qs

import grpc
from prometheus_client import disable_created_metrics

from router.config import RouterConfig, parse_config
from router.core import RouterCore, build_core
from router.endpoints_view import EndpointsQueryError, endpoints_view, parse_query
from router.frontends import Frontend, build_frontend
from router.listen import ListenError
from router.metrics import RouterMetrics
from router.table import RouteError, RoutingTable
from router.watcher import RegistryWatcher
from tidepool.runtime.options import format_host_port, parse_host_port
from tidepool.runtime.process_main import process_main
from tidepool.runtime.signals import ShutdownSignals
from tidepool.runtime.status_http import StatusServer

log = logging.getLogger(__name__)
COMPONENT = "router"
READY_PREFIX = f"tidepool {COMPONENT} ready"
STOP_GRACE_S = 10.0
"""On SIGTERM: how long calls in flight get to finish before they are cancelled."""
WAITING_NOTICE_S = 5.0


@dataclass
class Router:
    """The assembled router process: the shared core plus where callers connect."""

    core: RouterCore
    frontend: Frontend

    @property
    def table(self) -> RoutingTable:
        return self.core.table

    @property
    def watcher(self) -> RegistryWatcher:
        return self.core.watcher

    def resolve_http(self, query: str) -> tuple[str, bytes, str]:
        """GET /v1/resolve?alias=… (or tenant=…&lang=…): one picked instance as JSON."""
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        codes = {
            grpc.StatusCode.INVALID_ARGUMENT: "400 Bad Request",
            grpc.StatusCode.NOT_FOUND: "404 Not Found",
        }
        try:
            aliases = self.table.route(
                params.get("alias"), params.get("tenant"), params.get("lang")
            )
            picked = self.table.pick(aliases)
        except RouteError as error:
            status = codes.get(error.code, "503 Service Unavailable")
            return _json(status, {"error": error.message, "code": error.code.name})
        if picked is None:
            message = f"no healthy instance in alias {', '.join(map(repr, aliases))}"
            return _json("503 Service Unavailable", {"error": message, "code": "UNAVAILABLE"})
        alias, endpoint = picked
        return _json(
            "200 OK",
            {
                "alias": alias,
                "instance": {
                    "id": endpoint.id,
                    "address": endpoint.address,
                    "weight": endpoint.weight,
                    "labels": dict(endpoint.labels),
                },
            },
        )

    def endpoints_http(self, query: str) -> tuple[str, bytes, str]:
        """GET /v1/endpoints[?alias=NAME]: every pool's endpoints, configured share next
        to received share (router/endpoints_view.py has the shape)."""
        try:
            alias = parse_query(query)
        except EndpointsQueryError as error:
            return _json("400 Bad Request", {"error": str(error), "code": "INVALID_ARGUMENT"})
        details = self.table.details()
        if alias is not None:
            details = [d for d in details if d.alias == alias]
            if not details:
                message = f"alias: unknown alias {alias[:64]!r}"
                return _json("404 Not Found", {"error": message, "code": "NOT_FOUND"})
        metrics = self.core.metrics
        document = endpoints_view(
            details,
            self.watcher.view.instances,
            self.table.in_flight,
            {d.alias: metrics.recent_errors(d.alias) for d in details},
            metrics.last_errors(),
            now=time.monotonic(),
            wall_now=time.time(),
            attempts=self.core.forwarder.attempt_view([e for d in details for e in d.endpoints]),
        )
        return _json("200 OK", document)


def _json(status: str, body: object) -> tuple[str, bytes, str]:
    return status, json.dumps(body).encode() + b"\n", "application/json"


def build_router(config: RouterConfig, *, metrics: RouterMetrics | None = None) -> Router:
    """Assemble the router (inside the event loop; nothing started)."""
    core = build_core(config, metrics)
    return Router(core, build_frontend(core))


async def run(config: RouterConfig, *, out: TextIO | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    out = out or sys.stdout
    with ShutdownSignals() as signals:
        router = build_router(config)
        router.watcher.load_file()
        await router.frontend.start()
        http_host, http_port = parse_host_port(config.http_listen)
        status = StatusServer(
            http_host,
            http_port,
            router.core.metrics.registry,
            router.watcher.ready,
            routes={"/v1/resolve": router.resolve_http, "/v1/endpoints": router.endpoints_http},
        )
        watch = asyncio.create_task(router.watcher.run())
        try:
            try:
                await status.start()
            except OSError as exc:
                raise ListenError(
                    f"--http-listen: cannot listen on {config.http_listen}: {exc.strerror}"
                ) from None
            if not await _wait_for_view(router, signals):
                return 0
            await router.frontend.set_serving(True)
            grpc_at = format_host_port(parse_host_port(config.listen)[0], router.frontend.port)
            http_at = format_host_port(http_host, status.port)
            out.write(f"{READY_PREFIX} grpc={grpc_at} http={http_at} pid={os.getpid()}\n")
            out.flush()
            await signals.wait()
            log.info("stopping: no new calls; %.0f s for calls in flight", STOP_GRACE_S)
            await router.frontend.set_serving(False)
            await router.frontend.stop(STOP_GRACE_S)
            return 0
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await status.stop()
            await router.frontend.stop(0)
            await router.core.close()


async def _wait_for_view(router: Router, signals: ShutdownSignals) -> bool:
    """Wait until there is a view to route on; False if told to stop first."""
    stop = asyncio.ensure_future(signals.wait())
    viewed = asyncio.ensure_future(router.core.view_ready.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                {stop, viewed}, timeout=WAITING_NOTICE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done:
                return False
            if viewed in done:
                return True
            log.warning("no routing view yet: %s", router.watcher.problem)
    finally:
        stop.cancel()
        viewed.cancel()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool router serve` (one process); returns the exit status."""
    # Why: each counter's `_created` twin is one more series per label set that no
    # dashboard reads, and sum() over a family picks them up by mistake.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return process_main(COMPONENT, parse_config, run, argv, environ)
