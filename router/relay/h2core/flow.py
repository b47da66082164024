"""HTTP/2 flow-control windows, each direction on its own (as Go's `x/net/http2/flow.go`).

Pure arithmetic: a `SendWindow` is what the peer lets us send, a `RecvWindow`
what we let the peer send and the credit we owe it back.
"""

from __future__ import annotations

from router.relay.frames import FLOW_CONTROL_ERROR, MAX_WINDOW, PROTOCOL_ERROR, ProtocolError


class SendWindow:
    """How many DATA bytes the peer lets us send (a stream's or the connection's)."""

    __slots__ = ("available",)

    def __init__(self, size: int) -> None:
        self.available = size

    def grant(self, increment: int) -> None:
        """WINDOW_UPDATE from the peer; past 2^31-1 is the peer's FLOW_CONTROL_ERROR."""
        if increment == 0:
            raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if self.available + increment > MAX_WINDOW:
            raise ProtocolError(FLOW_CONTROL_ERROR, "window grown past 2^31-1")
        self.available += increment

    def adjust(self, delta: int) -> None:
        """A new SETTINGS_INITIAL_WINDOW_SIZE shifts open stream windows (may go negative)."""
        if self.available + delta > MAX_WINDOW:
            raise ProtocolError(FLOW_CONTROL_ERROR, "window grown past 2^31-1")
        self.available += delta


class RecvWindow:
    """How many DATA bytes we let the peer send, and the credit we owe it back.

    Credit is released only when the relay has handed the bytes on (that is the
    backpressure), and sent back in batches of `threshold` to save frames.
    """

    __slots__ = ("available", "pending", "size", "threshold")

    def __init__(self, size: int, threshold: int | None = None) -> None:
        self.size = size
        self.available = size
        self.pending = 0
        self.threshold = size // 2 if threshold is None else threshold

    def receive(self, length: int) -> None:
        """The peer sent `length` flow-controlled bytes; more than allowed is its error."""
        if length > self.available:
            message = f"{length} bytes sent into a window of {self.available}"
            raise ProtocolError(FLOW_CONTROL_ERROR, message)
        self.available -= length

    def release(self, length: int, grow_to: int = 0) -> int:
        """`length` bytes were passed on; the WINDOW_UPDATE increment to send now (or 0).

        With `grow_to`, each batch also doubles the window up to that size: a window
        grows only while its bytes are taken, so a peer that takes none holds little.
        """
        self.pending += length
        if self.pending < self.threshold:
            return 0
        increment, self.pending = self.pending, 0
        if self.size < grow_to:
            extra = min(self.size, grow_to - self.size)
            self.size += extra
            self.threshold = self.size // 2
            increment += extra
        self.available += increment
        return increment
