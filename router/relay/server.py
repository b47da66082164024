"""The relay's listener: accept h2c or TLS (`--tls-cert`) connections, give streams to calls.

Shutdown follows the usual recipe: stop accepting, GOAWAY every client (calls
in flight go on), wait for them up to the grace, then close what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from router.relay import build
from router.relay import frames as f
from router.relay.connection import Connection, Flusher
from router.relay.frames import Settings
from router.relay.limits import RelayLimits
from router.relay.relay import Relay
from router.relay.upstream import Keepalive, UpstreamPool

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.core import RouterCore

ENGINE_FIRST_WINDOW: Final = 64 * 1024
"""The stream window an engine is first granted (see `start_relay`)."""
RETAIN_INTERVAL_S: Final = 5.0
"""How often connections to engines that left the view are closed."""
TLS_HANDSHAKE_S: Final = 10.0
"""Longest a caller's TLS handshake may take before its connection is dropped."""
TLS_SHUTDOWN_S: Final = 5.0
"""Longest wait for a caller's close_notify when a TLS connection is closed."""
log = logging.getLogger(__name__)


class CallerConnection(Connection):
    """A caller's connection, which the server counts once it is made.

    Why not as soon as it is accepted: with TLS the protocol exists before the
    handshake, and one whose handshake fails (a plaintext caller, say) is never
    made nor lost, so it would stay counted for good and hold up every shutdown.
    """

    on_made: Callable[[Connection], bool] | None = None
    """Counts the connection; False when the server is full and it must be closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.on_made is not None and not self.on_made(self):
            self.closed = True
            cast(asyncio.Transport, transport).abort()  # uvloop's is no subclass
            return
        super().connection_made(transport)


class RelayServer:
    """A listening relay; `port` is the bound port."""

    def __init__(
        self,
        relay: Relay,
        settings: Settings,
        flusher: Flusher,
        limits: RelayLimits | None = None,
    ) -> None:
        self.relay = relay
        self.settings = settings
        self.flusher = flusher
        self.limits = limits or RelayLimits()
        self._sweeper: asyncio.Task[None] | None = None
        self.connections: set[Connection] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._retainer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    def set_serving(self, serving: bool) -> None:
        """What grpc.health.v1.Health/Check and Watch answer on the relay's port."""
        self.relay.set_serving(serving)

    def accept(self) -> Connection:
        conn = CallerConnection(
            self.flusher,
            self.settings,
            client_side=False,
            limits=self.limits,
            on_refused=self.relay.refused,
        )
        conn.on_new_stream = self.relay.open_call
        conn.on_closed = self._closed
        conn.on_made = self._made
        return conn

    def _made(self, conn: Connection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            self.relay.refused("max_connections")
            return False
        self.connections.add(conn)
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.tick_s)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Close connections past the handshake or the idle timeout (see `RelayLimits`)."""
        limits = self.limits
        for conn in list(self.connections):
            reason = conn.core.timed_out(now)
            if reason == "handshake_timeout":
                self.relay.refused(reason)
                conn.abort(f"no HTTP/2 preface and SETTINGS in {limits.handshake_timeout_s:g} s")
            elif reason == "idle_timeout":
                self.relay.refused(reason)
                conn.fail(f.NO_ERROR, f"idle for {limits.idle_timeout_s:g} s")

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
        self.relay.watchers.close()  # a Watch never ends by itself: it must not hold the grace
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
        for task in (self._retainer, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self.relay.tasks):
            task.cancel()
        await self.relay.pool.close()
        if self.server is not None:
            await self.server.wait_closed()


def relay_limits(config: RouterConfig) -> RelayLimits:
    """The relay's per-peer budgets from the router's flags."""
    return RelayLimits(
        stream_buffer_bytes=config.stream_buffer_bytes,
        connection_buffer_bytes=config.connection_buffer_bytes,
        max_resets_per_s=config.max_resets_per_s,
        max_control_frames_per_s=config.max_control_frames_per_s,
        handshake_timeout_s=config.handshake_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        max_connections=config.max_connections,
        engine_streams_per_connection=config.engine_streams_per_connection,
    )


async def start_relay(
    core: RouterCore,
    host: str,
    port: int,
    settings: Settings | None = None,
    keepalive: Keepalive | None = None,
) -> RelayServer:
    """Listen on host:port (0: any free port) and relay every call through `core`."""
    limits = relay_limits(core.config)
    settings = settings or Settings(stream_window=limits.stream_buffer_bytes)
    # A stream to an engine starts at 64 KiB and grows to the stream buffer only as
    # its caller takes the bytes (`RecvWindow.release`): a caller that never reads
    # holds 64 KiB of the relay's memory per call, not the whole buffer.
    engine_settings = dataclasses.replace(
        settings, stream_window=min(settings.stream_window, ENGINE_FIRST_WINDOW)
    )
    flusher = Flusher()
    engine_tls = core.engine_tls
    config = core.config
    keepalive = keepalive or Keepalive(
        busy_after_s=config.engine_ping_after_s, busy_timeout_s=config.engine_ping_timeout_s
    )
    pool = UpstreamPool(
        flusher,
        engine_settings,
        keepalive,
        tls=engine_tls.context if engine_tls else None,
        server_name=engine_tls.server_name if engine_tls else None,
        limits=limits,
    )
    pool.on_ping_failed = core.forwarder.ping_failed
    relay = Relay(core, pool)
    server = RelayServer(relay, settings, flusher, limits)
    loop = asyncio.get_running_loop()
    listener_tls = core.listener_tls
    # Only a router group's workers share the port: a second router started by mistake
    # on the same port must fail, not quietly take half the callers.
    reuse_port = config.processes > 1 or config.share_port
    server.server = await _listen(loop, server, host, port, reuse_port, listener_tls)
    # uvloop's `sockets` is a list, not the tuple typeshed says (the compiled relay checks).
    listener: Any = server.server
    sockets = list(listener.sockets)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.port = sockets[0].getsockname()[1]
    log.info("relay: listening on port %d, %s build", server.port, build.loaded())
    server._retainer = asyncio.create_task(server._retain())
    server._sweeper = asyncio.create_task(server._sweep())
    return server


async def _listen(
    loop: asyncio.AbstractEventLoop,
    server: RelayServer,
    host: str,
    port: int,
    reuse_port: bool,
    listener_tls: Any,
) -> asyncio.Server:
    if listener_tls is None:
        return await loop.create_server(
            server.accept, host, port, reuse_address=True, reuse_port=reuse_port, backlog=1024
        )
    return await loop.create_server(
        server.accept,
        host,
        port,
        reuse_address=True,
        reuse_port=reuse_port,
        backlog=1024,
        ssl=listener_tls.context,
        ssl_handshake_timeout=TLS_HANDSHAKE_S,
        ssl_shutdown_timeout=TLS_SHUTDOWN_S,
    )
