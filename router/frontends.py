"""The router's two data paths behind one interface: the grpc.aio proxy and the HTTP/2 relay.

Why two: the grpc.aio proxy is grpc's own, complete implementation, but runs two
full gRPC call stacks per request (about 1 ms of CPU per unary call on a small
machine); the relay forwards HTTP/2 frames with only the request headers
decoded, for about half of that (0.46 ms against 0.99 ms in
`loadtest.router_capacity`). Both use the same routing table, retries, ejection
and metrics (`RouterCore`). `--data-path` chooses.

Both serve TLS the same way when `--tls-cert`/`--tls-key` are given (the
material comes checked from `RouterCore.listener_tls`): the grpc.aio server
through `grpc.ssl_server_credentials`, the relay through an `ssl.SSLContext`
offering ALPN h2. A caller that speaks plaintext to a TLS port fails its
handshake and is dropped; nobody else notices.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2_grpc

from router.core import RouterCore
from router.grpc_health import RouterHealthServicer
from router.listen import ListenError, bind_error, ensure_free
from router.proxy import ProxyHandler
from router.relay import RelayServer, start_relay
from router.streams import StreamForwarder
from tidepool.engine.v1 import evaluator_pb2
from tidepool.runtime.options import parse_host_port
from tidepool.runtime.reflection import enable_reflection

EVALUATOR_SERVICE = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name
"""The engine service the router forwards, listed by reflection (any other is forwarded too)."""


class Frontend(Protocol):
    """Where callers connect: bound by `start`, stopped gracefully by `stop`."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def set_serving(self, serving: bool) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


class GrpcFrontend:
    """The grpc.aio server with the generic proxy handler and grpc.health.v1."""

    def __init__(self, core: RouterCore) -> None:
        config = core.config
        limit = config.max_message_bytes
        self._server: Any = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                # Only a router group's workers share the port (see the relay).
                ("grpc.so_reuseport", 1 if config.processes > 1 or config.share_port else 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ]
        )
        self._health = RouterHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        # Before the proxy, which would otherwise forward reflection calls to an engine.
        enable_reflection(self._server, [EVALUATOR_SERVICE])
        handler = ProxyHandler(
            core.forwarder,
            StreamForwarder(core.forwarder, config.stream_timeouts()),
            default_deadline_s=config.default_deadline_s,
            unary_methods=config.unary_methods,
        )
        self._server.add_generic_rpc_handlers((handler,))
        if not (config.processes > 1 or config.share_port):
            # grpc's core logs its own bind failure before Python hears of it; find a
            # taken port first so the operator gets the one line every component gives.
            ensure_free(config.listen)
        tls = core.listener_tls
        try:
            if tls is None:
                port = self._server.add_insecure_port(config.listen)
            else:
                credentials = grpc.ssl_server_credentials([(tls.key, tls.cert)])
                port = self._server.add_secure_port(config.listen, credentials)
        except RuntimeError as exc:
            raise ListenError(f"--listen: cannot listen on {config.listen}: {exc}") from None
        if not port:
            raise ListenError(f"--listen: cannot listen on {config.listen}")
        self._port = int(port)

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        await self._server.start()

    async def set_serving(self, serving: bool) -> None:
        await self._health.set(serving)

    async def stop(self, grace_s: float) -> None:
        await self._health.close()  # an open Watch must not hold the grace
        await self._server.stop(grace_s)


class RelayFrontend:
    """The HTTP/2 frame relay (`router.relay`); it answers grpc.health.v1 itself."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core
        self._relay: RelayServer | None = None
        self._serving = False

    @property
    def port(self) -> int:
        return self._relay.port if self._relay is not None else 0

    async def start(self) -> None:
        listen = self._core.config.listen
        host, port = parse_host_port(listen)
        try:
            self._relay = await start_relay(self._core, host, port)
        except OSError as exc:
            raise ListenError(f"--listen: cannot listen on {listen}: {bind_error(exc)}") from None
        self._relay.set_serving(self._serving)

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        if self._relay is not None:
            self._relay.set_serving(serving)

    async def stop(self, grace_s: float) -> None:
        if self._relay is not None:
            await self._relay.close(grace_s)


def build_frontend(core: RouterCore) -> Frontend:
    if core.config.data_path == "relay":
        return RelayFrontend(core)
    return GrpcFrontend(core)
