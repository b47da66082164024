"""HTTP/2 stream states (RFC 9113 §5.1) and the bounded memory of recently closed streams.

Pure. Why a closed-stream memory at all: a frame for a stream that is gone must
be answered by how it ended (after the peer's END_STREAM: STREAM_CLOSED; after
our own RST_STREAM: ignored, the peer may not have seen it yet), and a bound,
because a connection may run through two billion stream ids.
"""

from __future__ import annotations

from enum import Enum
from typing import Final


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


class Closure(Enum):
    """How a stream came to be closed: what a late frame on it means."""

    ENDED = "ended"
    """Both sides sent END_STREAM: a frame from the peer now is STREAM_CLOSED."""
    RESET_BY_US = "reset_by_us"
    """We sent RST_STREAM: frames already in flight are ignored (RFC 9113 §5.4.2)."""
    RESET_BY_PEER = "reset_by_peer"
    """The peer reset it: anything more from it is STREAM_CLOSED."""


MAX_CLOSED_STREAMS: Final = 1024
"""Closed streams remembered per connection; older ones count as closed long ago."""


class ClosedStreams:
    """The most recent `limit` closed stream ids and how each closed (oldest forgotten first).

    A ring of ids beside a plain dict rather than an OrderedDict: a stream closes once
    per call on each connection, and the ring's list and dict operations stay native
    in the compiled build where OrderedDict's are calls into its C type."""

    __slots__ = ("_ids", "_next", "_ring", "limit")

    def __init__(self, limit: int = MAX_CLOSED_STREAMS) -> None:
        if limit < 1:
            raise ValueError(f"closed streams limit must be 1 or more, got {limit}")
        self.limit = limit
        self._ids: dict[int, Closure] = {}
        self._ring: list[int] = []
        """The remembered ids in the order they closed; a full ring is overwritten in turn."""
        self._next = 0
        """Where the next id goes once the ring is full: the oldest one's place."""

    def add(self, stream_id: int, closure: Closure) -> None:
        ids = self._ids
        if stream_id in ids:  # closed again (a reset after END_STREAM): how is updated
            ids[stream_id] = closure
            return
        ids[stream_id] = closure
        ring = self._ring
        if len(ring) < self.limit:
            ring.append(stream_id)
            return
        index = self._next
        del ids[ring[index]]
        ring[index] = stream_id
        self._next = index + 1 if index + 1 < self.limit else 0

    def get(self, stream_id: int) -> Closure | None:
        """How `stream_id` closed, or None when it is not among the remembered ones."""
        return self._ids.get(stream_id)

    def __len__(self) -> int:
        return len(self._ids)
