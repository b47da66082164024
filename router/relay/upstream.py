"""HTTP/2 connections to engines, shared by every relayed call, opened on demand.

One address may hold several connections: when every open one is full (the
engine's SETTINGS_MAX_CONCURRENT_STREAMS) or draining (it sent GOAWAY), the next
call opens another. Concurrent callers share one connect attempt per address, so
a burst does not open a connection per call. A connection that fails is simply
forgotten; the next call reconnects.

Keepalive: a connection with no call on it that has heard nothing from its
engine for `Keepalive.interval_s` is sent a PING, and dropped when no ACK comes
back within `Keepalive.timeout_s`, so an engine that vanished without a reset (a host
gone, a partition) is noticed before a call is sent into the void. An engine on
grpc's default ping policy still ends an idle connection after the third PING
(about 40 s idle); that is harmless, the next call reopens one.

A connection *with calls in flight* that has heard nothing for `busy_after_s` is
PINGed too, and failed when the ACK does not come within `busy_timeout_s`: a
frozen engine (SIGSTOP, a paused VM) keeps its sockets open and answers nothing,
not even a PING, while a busy one's transport still ACKs at once. Failing the
connection resets its calls, so those not yet answered are retried elsewhere and
the engine is ejected (`retry.decide`). Why at most `max_busy_pings` PINGs per
silence: a gRPC server counts PINGs that come while it sends no data as strikes
and drops the connection after the third (GOAWAY too_many_pings); its count
starts again whenever it sends headers or data, which the relay reports
(`answered`), and a long silent call must not cost its connection.

TLS (`--engine-ca`): with `tls` set, each connection is TLS, verified against
the context's roots by the engine's IP address, or by `server_name` when given,
and must agree on ALPN h2. A failed handshake is an OSError like a refused
connect, so the call ejects the engine and tries another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from router.relay.connection import Connection, Flusher
from router.relay.frames import Settings
from router.relay.limits import RelayLimits

CONNECT_TIMEOUT_S: Final = 2.0
"""Longest wait for a TCP connection to an engine (capped by the call's deadline)."""
_MAX_CONNECT_ROUNDS: Final = 4


@dataclass(frozen=True)
class Keepalive:
    """Keepalive PINGs on engine connections, idle or busy (see the module doc)."""

    interval_s: float = 10.0
    """Silence on an idle connection before a PING."""
    timeout_s: float = 5.0
    """Longest wait for the PING's ACK on an idle connection before it is dropped."""
    busy_after_s: float = 0.5
    """Silence on a connection with calls in flight before a PING."""
    busy_timeout_s: float = 1.0
    """Longest wait for the PING's ACK on a connection with calls in flight."""
    max_busy_pings: int = 2
    """PINGs per silence of a busy connection (see the module doc: ping strikes)."""

    @property
    def tick_s(self) -> float:
        """How often connections are looked at."""
        busy = min(self.busy_after_s, self.busy_timeout_s) / 4
        return min(1.0, self.interval_s / 2, self.timeout_s / 2, busy)

    def action(
        self,
        now: float,
        last_received: float,
        ping_sent: float | None,
        idle: bool,
        busy_pings: int = 0,
    ) -> Literal["ping", "drop"] | None:
        """What keepalive does to one connection at `now`: PING it, drop it, or nothing.
        `busy_pings`: PINGs sent while busy since the engine last sent headers."""
        if ping_sent is not None:
            limit = self.timeout_s if idle else self.busy_timeout_s
            return "drop" if now - ping_sent >= limit else None
        silent = now - last_received
        if idle:
            return "ping" if silent >= self.interval_s else None
        if silent >= self.busy_after_s and busy_pings < self.max_busy_pings:
            return "ping"
        return None


class _ProbeConnection(Connection):
    """A connection that tells when its PING is ACKed, or when it is lost."""

    def __init__(self, flusher: Flusher) -> None:
        super().__init__(flusher, Settings(), client_side=True)
        self.answered = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.core.ping_sent is None:
            self.answered.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.answered.set()


async def probe(
    address: str,
    timeout_s: float,
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> bool:
    """Whether the engine at `address` answers a PING on a new HTTP/2 connection within
    `timeout_s`: how a router learns that an engine ejected as silent (frozen) is back.
    Why a new connection: a frozen engine's old ones are failed, and its kernel still
    accepts TCP, so only an answer from the engine itself says it is alive."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    loop = asyncio.get_running_loop()
    flusher = Flusher()
    conn: _ProbeConnection | None = None

    def factory() -> _ProbeConnection:
        return _ProbeConnection(flusher)

    try:
        async with asyncio.timeout(timeout_s):
            if tls is None:
                _, conn = await loop.create_connection(factory, host, int(port))
            else:
                name = server_name or host
                _, conn = await loop.create_connection(
                    factory, host, int(port), ssl=tls, server_hostname=name
                )
            conn.ping(time.monotonic())
            await conn.answered.wait()
            return not conn.closed
    except (OSError, TimeoutError):
        return False
    finally:
        if conn is not None:
            conn.close()


class UpstreamPool:
    """Engine address → its open client-side connections."""

    def __init__(
        self,
        flusher: Flusher,
        settings: Settings,
        keepalive: Keepalive | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        limits: RelayLimits | None = None,
    ) -> None:
        self._flusher = flusher
        self._limits = limits or RelayLimits()
        self._settings = settings
        self._tls = tls
        self._server_name = server_name
        self.keepalive = keepalive or Keepalive()
        self._connections: dict[str, list[Connection]] = {}
        self._connecting: dict[str, asyncio.Task[Connection]] = {}
        self._closed = False
        self._keepalive: asyncio.Task[None] | None = None
        self.busy_pings: dict[object, int] = {}
        """PINGs sent to a busy connection since its engine last sent headers."""
        self.on_ping_failed: Callable[[str], None] | None = None
        """Told the address of each busy connection failed for want of a PING ACK."""

    def ready(self, address: str) -> Connection | None:
        """An open connection to `address` that takes a new stream now, if any."""
        for conn in self._connections.get(address, ()):
            if conn.accepting:
                return conn
        return None

    async def get(self, address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
        """A connection with room for a stream, opening one if needed (OSError, TimeoutError)."""
        for _ in range(_MAX_CONNECT_ROUNDS):
            conn = self.ready(address)
            if conn is not None:
                return conn
            task = self._connecting.get(address)
            if task is None:
                task = asyncio.ensure_future(self._open(address, timeout_s))
                self._connecting[address] = task
                task.add_done_callback(lambda done: self._connected(address, done))
            conn = await asyncio.shield(task)
            if conn.accepting:
                return conn
        raise OSError(f"no connection to {address} takes a new stream")

    def _connected(self, address: str, task: asyncio.Task[Connection]) -> None:
        if self._connecting.get(address) is task:
            del self._connecting[address]
        if not task.cancelled():
            task.exception()  # retrieved here: the waiting callers see it too

    async def _open(self, address: str, timeout_s: float) -> Connection:
        if self._closed:
            raise OSError("the relay is closing")
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()

        def factory() -> Connection:
            return Connection(self._flusher, self._settings, client_side=True, limits=self._limits)

        host = host.strip("[]")
        async with asyncio.timeout(timeout_s):
            if self._tls is None:
                _, conn = await loop.create_connection(factory, host, int(port))
            else:
                conn = await self._open_tls(factory, host, int(port))
        conn.on_closed = lambda c: self._forget(address, c)
        self._connections.setdefault(address, []).append(conn)
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keep_alive())
        return conn

    async def _open_tls(
        self, factory: Callable[[], Connection], host: str, port: int
    ) -> Connection:
        loop = asyncio.get_running_loop()
        name = self._server_name or host
        try:
            transport, conn = await loop.create_connection(
                factory, host, port, ssl=self._tls, server_hostname=name
            )
        except ssl.SSLError as exc:  # an OSError: the caller counts it as a connect failure
            raise OSError(f"TLS handshake failed: {exc}") from None
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != "h2":
            transport.abort()
            raise OSError(f"TLS handshake failed: the engine did not agree on ALPN h2 ({alpn})")
        return conn

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive.tick_s)
            now = time.monotonic()
            for address, conns in list(self._connections.items()):
                for conn in list(conns):
                    self.keep_alive(conn, now, address)

    def keep_alive(self, conn: Connection, now: float, address: str = "") -> None:
        """One keepalive step for `conn` (see the module doc)."""
        core = conn.core
        idle = not core.streams
        pings = self.busy_pings.get(conn, 0)
        action = self.keepalive.action(now, core.last_received, core.ping_sent, idle, pings)
        if action == "ping":
            conn.ping(now)
            if not idle:
                self.busy_pings[conn] = pings + 1
        elif action == "drop":
            limit = self.keepalive.timeout_s if idle else self.keepalive.busy_timeout_s
            self.busy_pings.pop(conn, None)
            if not idle and self.on_ping_failed is not None:
                self.on_ping_failed(address)
            conn.abort(f"no PING ACK within {limit:g} s")

    def answered(self, conn: object) -> None:
        """The engine sent headers on `conn`: its ping strikes start again (module doc)."""
        self.busy_pings.pop(conn, None)

    def _forget(self, address: str, conn: Connection) -> None:
        self.busy_pings.pop(conn, None)
        conns = self._connections.get(address)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._connections[address]

    def retain(self, addresses: Iterable[str]) -> None:
        """Close connections to engines no longer in the view (after their streams end)."""
        keep = set(addresses)
        for address in [a for a in self._connections if a not in keep]:
            for conn in self._connections.pop(address):
                self._close_when_idle(conn)

    @staticmethod
    def _close_when_idle(conn: Connection) -> None:
        if conn.streams:
            conn.send_goaway()  # tells the engine we open nothing more; closed when drained
        else:
            conn.close()

    def connection_count(self, address: str) -> int:
        return len(self._connections.get(address, ()))

    async def close(self) -> None:
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        for task in list(self._connecting.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for conns in list(self._connections.values()):
            for conn in list(conns):
                conn.close()
        self._connections.clear()
