"""The relay's listener: accept h2c connections, hand each stream to a `RelayCall`.

Shutdown follows the usual recipe: stop accepting, GOAWAY every client (calls
in flight go on), wait for them up to the grace, then close what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from router.relay.connection import Connection, Flusher
from router.relay.frames import Settings
from router.relay.relay import Relay
from router.relay.upstream import Keepalive, UpstreamPool

if TYPE_CHECKING:
    from router.core import RouterCore

RETAIN_INTERVAL_S = 5.0
"""How often connections to engines that left the view are closed."""


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
        conn = Connection(self.flusher, self.settings, client_side=False)
        conn.on_new_stream = self.relay.open_call
        conn.on_closed = self._closed
        self.connections.add(conn)
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
    relay = Relay(core, UpstreamPool(flusher, settings, keepalive))
    server = RelayServer(relay, settings, flusher)
    loop = asyncio.get_running_loop()
    server.server = await loop.create_server(
        server.accept, host, port, reuse_address=True, reuse_port=True, backlog=1024
    )
    sockets = server.server.sockets
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.port = sockets[0].getsockname()[1]
    server._retainer = asyncio.create_task(server._retain())
    return server
