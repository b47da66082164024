"""One HTTP/2 stream's state, the handler a relayed call implements, and output batching.

Kept apart from `connection` so the per-stream types read on their own: a
stream is a pair of flow-control windows, a queue of what waits for window,
and the `StreamHandler` (a relayed call) that its frames go to. Why the
`StreamConnection` protocol: this module names only what a stream needs of its
connection, so it imports nothing of `connection` (which imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from router.relay.frames import Header, PeerSettings, RecvWindow, SendWindow, Settings

CONNECTION_LOST = -1
"""`on_reset` code when the whole connection went away."""


class StreamConnection(Protocol):
    """What a stream and its handler use of the HTTP/2 connection it lives on."""

    peer: PeerSettings
    settings: Settings
    streams: dict[int, Stream]

    def send_headers(self, stream: Stream, block: bytes, end: bool) -> None: ...

    def send_data(self, stream: Stream, data: bytes, end: bool) -> None: ...

    def credit(self, stream: Stream, length: int) -> None: ...

    def reset(self, stream: Stream, code: int) -> None: ...

    def defer(self, action: Callable[[], None]) -> None: ...


class Flushable(Protocol):
    def flush(self) -> None: ...


class StreamHandler(Protocol):
    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None: ...

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None: ...

    def on_sent(self, stream: Stream, length: int) -> None: ...

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        """The stream died: RST_STREAM from the peer, or the connection lost
        (`CONNECTION_LOST`); `unprocessed` when the peer says it never saw it."""


class _Unclaimed:
    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.conn.credit(stream, len(data))

    def on_sent(self, stream: Stream, length: int) -> None:
        pass

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        pass


UNCLAIMED = _Unclaimed()


class Stream:
    __slots__ = ("conn", "handler", "id", "local_done", "queue", "recv", "remote_done", "send")

    def __init__(self, conn: StreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.handler: StreamHandler = UNCLAIMED
        self.send = SendWindow(conn.peer.initial_window)
        self.recv = RecvWindow(conn.settings.stream_window)
        self.queue: list[tuple[int, bytes, bool]] = []
        """(frame type, payload, end) waiting for window, in order."""
        self.local_done = False
        self.remote_done = False


class Flusher:
    """Writes every connection's pending frames once per event-loop turn."""

    def __init__(self) -> None:
        self._dirty: set[Flushable] = set()
        self._scheduled = False

    def mark(self, conn: Flushable) -> None:
        self._dirty.add(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()
