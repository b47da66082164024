"""What the sans-IO core reports: one small object per happening, in the order it happened.

The transport hands each to the stream's handler. Why plain slotted classes and
no base class: a relayed unary call makes about seven of them, so they are kept
as cheap to build and to tell apart (`type(event) is ...`) as Python allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Generic, TypeVar

from router.relay.frames import Header

if TYPE_CHECKING:
    from router.relay.h2core.stream import H2Stream

S = TypeVar("S", bound="H2Stream")

CONNECTION_LOST: Final = -1
"""`StreamReset.code` when the whole connection went away."""


class RequestReceived(Generic[S]):
    """The peer opened `stream` with a header block (server side only)."""

    __slots__ = ("end", "headers", "stream")

    def __init__(self, stream: S, headers: list[Header], end: bool) -> None:
        self.stream = stream
        self.headers = headers
        self.end = end


class HeadersReceived(Generic[S]):
    """A header block on an open stream: response headers or trailers."""

    __slots__ = ("end", "headers", "stream")

    def __init__(self, stream: S, headers: list[Header], end: bool) -> None:
        self.stream = stream
        self.headers = headers
        self.end = end


class DataReceived(Generic[S]):
    """DATA (padding stripped); the bytes count against the windows until `credit`ed."""

    __slots__ = ("data", "end", "stream")

    def __init__(self, stream: S, data: bytes, end: bool) -> None:
        self.stream = stream
        self.data = data
        self.end = end


class DataSent(Generic[S]):
    """`length` bytes of what was queued with `send_data` were written out."""

    __slots__ = ("length", "stream")

    def __init__(self, stream: S, length: int) -> None:
        self.stream = stream
        self.length = length


class StreamReset(Generic[S]):
    """The stream died: RST_STREAM from the peer, a stream error of ours, GOAWAY, or the
    connection lost (`CONNECTION_LOST`); `unprocessed` when the peer says it never saw it."""

    __slots__ = ("code", "stream", "unprocessed")

    def __init__(self, stream: S, code: int, unprocessed: bool) -> None:
        self.stream = stream
        self.code = code
        self.unprocessed = unprocessed


class Refused:
    """A per-peer budget or rule refused something (`router.metrics.REFUSAL_REASONS`)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ConnectionTerminated:
    """We ended the connection with GOAWAY(`code`): the transport should close it."""

    __slots__ = ("code", "message")

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


Event = (
    RequestReceived[S]
    | HeadersReceived[S]
    | DataReceived[S]
    | DataSent[S]
    | StreamReset[S]
    | Refused
    | ConnectionTerminated
)
