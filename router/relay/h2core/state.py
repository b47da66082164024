"""HTTP/2 stream states (RFC 9113 §5.1) and the bounded memory of recently closed streams.

Pure. Why a closed-stream memory at all: a frame for a stream that is gone must
be answered by how it ended (after the peer's END_STREAM: STREAM_CLOSED; after
our own RST_STREAM: ignored, the peer may not have seen it yet), and a bound,
because a connection may run through two billion stream ids.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class StreamState(Enum):
    """Where one stream stands; `reserved` states are absent since push is disabled.

    A stream only moves forward: idle → open (our HEADERS) → half-closed local
    (our END_STREAM) or half-closed remote (the peer's) → closed (both, or a
    reset either way). The core makes each move inline where the frame is handled.
    """

    IDLE = "idle"
    """Opened by us, its HEADERS not written yet."""
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half_closed_local"
    """We wrote END_STREAM; the peer may still send."""
    HALF_CLOSED_REMOTE = "half_closed_remote"
    """The peer sent END_STREAM; we may still send."""
    CLOSED = "closed"


LOCAL_DONE = frozenset({StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED})
REMOTE_DONE = frozenset({StreamState.HALF_CLOSED_REMOTE, StreamState.CLOSED})


class Closure(Enum):
    """How a stream came to be closed: what a late frame on it means."""

    ENDED = "ended"
    """Both sides sent END_STREAM: a frame from the peer now is STREAM_CLOSED."""
    RESET_BY_US = "reset_by_us"
    """We sent RST_STREAM: frames already in flight are ignored (RFC 9113 §5.4.2)."""
    RESET_BY_PEER = "reset_by_peer"
    """The peer reset it: anything more from it is STREAM_CLOSED."""


MAX_CLOSED_STREAMS = 1024
"""Closed streams remembered per connection; older ones count as closed long ago."""


class ClosedStreams:
    """The most recent `limit` closed stream ids and how each closed (oldest forgotten first)."""

    __slots__ = ("_ids", "limit")

    def __init__(self, limit: int = MAX_CLOSED_STREAMS) -> None:
        self.limit = limit
        self._ids: OrderedDict[int, Closure] = OrderedDict()

    def add(self, stream_id: int, closure: Closure) -> None:
        ids = self._ids
        ids[stream_id] = closure
        if len(ids) > self.limit:
            ids.popitem(last=False)

    def get(self, stream_id: int) -> Closure | None:
        """How `stream_id` closed, or None when it is not among the remembered ones."""
        return self._ids.get(stream_id)

    def __len__(self) -> int:
        return len(self._ids)
