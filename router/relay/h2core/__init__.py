"""The relay's sans-IO HTTP/2 core: bytes in, events and bytes out; no asyncio, no clock.

`H2Connection` is one connection (either side), `H2Stream` one stream with an
explicit `StreamState`, `ClosedStreams` the bounded memory of closed ones, and
`events` what the core reports. The asyncio transport is `router.relay.connection`.
"""

from router.relay.h2core.connection import H2Connection
from router.relay.h2core.events import (
    CONNECTION_LOST,
    ConnectionTerminated,
    DataReceived,
    DataSent,
    Event,
    HeadersReceived,
    Refused,
    RequestReceived,
    StreamReset,
)
from router.relay.h2core.flow import RecvWindow, SendWindow
from router.relay.h2core.state import ClosedStreams, Closure, StreamState
from router.relay.h2core.stream import H2Stream

__all__ = [
    "CONNECTION_LOST",
    "ClosedStreams",
    "Closure",
    "ConnectionTerminated",
    "DataReceived",
    "DataSent",
    "Event",
    "H2Connection",
    "H2Stream",
    "HeadersReceived",
    "RecvWindow",
    "Refused",
    "RequestReceived",
    "SendWindow",
    "StreamReset",
    "StreamState",
]
