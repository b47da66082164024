"""One HTTP/2 stream as the core sees it: its state, its two windows, what waits for window.

No reference to a connection or a handler: the transport subclasses it to add
what its handlers need (see `router.relay.stream`).
"""

from __future__ import annotations

from router.relay.h2core.flow import RecvWindow, SendWindow
from router.relay.h2core.state import StreamState

Queued = tuple[int, bytes, bool]
"""(frame type, payload, end) waiting for window, in order."""


class H2Stream:
    __slots__ = ("id", "queue", "recv", "send", "state")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.state = StreamState.IDLE
        self.send = SendWindow(send_window)
        self.recv = RecvWindow(recv_window)
        self.queue: list[Queued] = []

    @property
    def local_done(self) -> bool:
        """We wrote END_STREAM (or the stream is closed)."""
        state = self.state  # identity, not set membership: an Enum's hash is Python code
        return state is StreamState.HALF_CLOSED_LOCAL or state is StreamState.CLOSED

    @property
    def remote_done(self) -> bool:
        """The peer sent END_STREAM (or the stream is closed)."""
        state = self.state
        return state is StreamState.HALF_CLOSED_REMOTE or state is StreamState.CLOSED

    @property
    def closed(self) -> bool:
        return self.state is StreamState.CLOSED
