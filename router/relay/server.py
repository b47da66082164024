"""The relay's listener: accept h2c or TLS (`--tls-cert`) connections, give streams to calls.

Shutdown follows the usual recipe: stop accepting, GOAWAY every client (calls
in flight go on), wait for them up to the grace, then close what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.relay.connection import Connection, Flusher
from router.relay.frames import Settings
from router.relay.relay import Relay
from router.relay.upstream import Keepalive, UpstreamPool

if TYPE_CHECKING:
    from router.core import RouterCore

RETAIN_INTERVAL_S = 5.0
"""How often connections to engines that left the view are closed."""
TLS_HANDSHAKE_S = 10.0
"""Longest a caller's TLS handshake may take before its connection is dropped."""
TLS_SHUTDOWN_S = 5.0
"""Longest wait for a caller's close_notify when a TLS connection is closed."""


class CallerConnection(Connection):
    """A caller's connection, which the server counts once it is made.

    Why not as soon as it is accepted: with TLS the protocol exists before the
    handshake, and one whose handshake fails (a plaintext caller, say) is never
    made nor lost, so it would stay counted for good and hold up every shutdown.
    """

    on_made: Callable[[Connection], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.on_made is not None:
            self.on_made(self)
        super().connection_made(transport)


class RelayServer:
    """A listening relay; `port` is the bound port."""

    def __init__(self, relay: Relay, settings: Settings, flusher: Flusher) -> None:
        self.relay = relay
        self.settings = settings
        self.flusher = flusher
        self.connections: set[Connection] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._retainer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    def set_serving(self, serving: bool) -> None:
        """What grpc.health.v1.Health/Check answers on the relay's port."""
        self.relay.serving = serving

    def accept(self) -> Connection:
        conn = CallerConnection(self.flusher, self.settings, client_side=False)
        conn.on_new_stream = self.relay.open_call
        conn.on_closed = self._closed
        conn.on_made = self.connections.add
        return conn

    def _closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._drained.set()

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(RETAIN_INTERVAL_S)
            self.relay.pool.retain(self.relay.table.addresses())

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop accepting, GOAWAY the clients, let calls finish for up to `grace_s`."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.send_goaway()
            if not conn.streams:
                conn.close()
        self.flusher.flush()
        if self.connections:  # each closes itself once its last stream ends
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._drained.wait()
        for conn in list(self.connections):
            conn.close()
        if self._retainer is not None:
            self._retainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retainer
        for task in list(self.relay.tasks):
            task.cancel()
        await self.relay.pool.close()
        if self.server is not None:
            await self.server.wait_closed()


async def start_relay(
    core: RouterCore,
    host: str,
    port: int,
    settings: Settings | None = None,
    keepalive: Keepalive | None = None,
) -> RelayServer:
    """Listen on host:port (0: any free port) and relay every call through `core`."""
    settings = settings or Settings()
    flusher = Flusher()
    engine_tls = core.engine_tls
    pool = UpstreamPool(
        flusher,
        settings,
        keepalive,
        tls=engine_tls.context if engine_tls else None,
        server_name=engine_tls.server_name if engine_tls else None,
    )
    relay = Relay(core, pool)
    server = RelayServer(relay, settings, flusher)
    loop = asyncio.get_running_loop()
    listener_tls = core.listener_tls
    if listener_tls is None:
        server.server = await loop.create_server(
            server.accept, host, port, reuse_address=True, reuse_port=True, backlog=1024
        )
    else:
        server.server = await loop.create_server(
            server.accept,
            host,
            port,
            reuse_address=True,
            reuse_port=True,
            backlog=1024,
            ssl=listener_tls.context,
            ssl_handshake_timeout=TLS_HANDSHAKE_S,
            ssl_shutdown_timeout=TLS_SHUTDOWN_S,
        )
    sockets = server.server.sockets
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.port = sockets[0].getsockname()[1]
    server._retainer = asyncio.create_task(server._retain())
    return server
