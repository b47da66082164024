"""A stream as the relay's handlers see it, the handler a relayed call implements, output batching.

`Stream` is the sans-IO core's `H2Stream` plus the two things a handler needs:
the connection to act on and the handler its events go to. Why the
`StreamConnection` protocol: this module names only what a handler uses of a
connection, so it imports nothing of `connection` (which imports it) and no
import cycle runs between the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol

from router.relay.frames import Header, PeerSettings, Settings, mypyc_attr
from router.relay.h2core import CONNECTION_LOST, H2Stream

__all__ = ["CONNECTION_LOST", "Flusher", "Stream", "StreamConnection", "StreamHandler"]


class StreamConnection(Protocol):
    """What a stream's handler uses of the HTTP/2 connection it lives on."""

    peer: PeerSettings
    settings: Settings

    @property
    def streams(self) -> dict[int, Stream]: ...

    def send_headers(self, stream: Stream, block: bytes, end: bool) -> None: ...

    def send_data(self, stream: Stream, data: bytes, end: bool) -> None: ...

    def credit(self, stream: Stream, length: int) -> None: ...

    def reset(self, stream: Stream, code: int) -> None: ...

    def defer(self, action: Callable[[], None]) -> None: ...


class Flushable(Protocol):
    def flush(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamHandler:
    """What a stream's events go to; every handler derives from it. Why a base class
    and not a protocol: in the compiled build a call through it is a direct (vtable)
    call, where a protocol's is a method looked up by name with its arguments boxed.
    (Handlers written in Python, a test's, may derive from it too.)"""

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def on_sent(self, stream: Stream, length: int) -> None:
        raise NotImplementedError

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        """The stream died: RST_STREAM from the peer, or the connection lost
        (`CONNECTION_LOST`); `unprocessed` when the peer says it never saw it."""
        raise NotImplementedError


class _Unclaimed(StreamHandler):
    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.conn.credit(stream, len(data))

    def on_sent(self, stream: Stream, length: int) -> None:
        pass

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        pass


UNCLAIMED: Final = _Unclaimed()


class Stream(H2Stream):
    __slots__ = ("conn", "handler")

    def __init__(
        self, conn: StreamConnection, stream_id: int, send_window: int, recv_window: int
    ) -> None:
        super().__init__(stream_id, send_window, recv_window)
        self.conn = conn
        self.handler: StreamHandler = UNCLAIMED


class Flusher:
    """Writes every connection's pending frames once per event-loop turn.

    Why `held`: a socket read flushes on its own once handled (`Connection.data_received`),
    so marks made meanwhile need no loop callback; and the loop is looked up once, not
    per mark (`get_running_loop` costs a getpid system call on some Pythons).
    """

    def __init__(self) -> None:
        self._dirty: set[Flushable] = set()
        self._scheduled = False
        self.held = False
        """A read is being handled: it flushes when done, so `mark` schedules nothing."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, conn: Flushable) -> None:
        self._dirty.add(conn)
        if not self._scheduled and not self.held:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        self.held = False
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()
