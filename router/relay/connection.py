"""The asyncio transport around the sans-IO HTTP/2 core: one `Connection` per socket, either side.

It feeds the socket's bytes to `H2Connection` with the time, hands each event
the core reports to its stream's handler (`StreamHandler`, a relayed call), and
writes what the core queued once per event-loop turn through a shared `Flusher`.
Everything about HTTP/2 itself is in `router.relay.h2core`; what stays here is
what needs the event loop: the transport's pause and resume, the slow-reader
check, closing, and actions deferred to the end of a read. Any error ends this
connection with GOAWAY, never the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, cast

from router.relay import frames as f
from router.relay.frames import Header, PeerSettings, Settings
from router.relay.h2core import H2Connection
from router.relay.h2core.events import (
    ConnectionTerminated,
    DataReceived,
    DataSent,
    HeadersReceived,
    Refused,
    RequestReceived,
    StreamReset,
)
from router.relay.limits import RelayLimits
from router.relay.stream import CONNECTION_LOST, Flusher, Stream, StreamHandler

__all__ = ["CONNECTION_LOST", "Connection", "Flusher", "Stream", "StreamHandler"]

log = logging.getLogger(__name__)
_monotonic: Final = time.monotonic


class Connection(asyncio.Protocol):
    """An HTTP/2 connection; `client_side` when we opened it (to an engine)."""

    def __init__(
        self,
        flusher: Flusher,
        settings: Settings,
        *,
        client_side: bool,
        limits: RelayLimits | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.flusher = flusher
        self.settings = settings
        self.client_side = client_side
        self.limits = limits or RelayLimits()
        self.core: H2Connection[Stream] = H2Connection(
            settings,
            self._new_stream,
            client_side=client_side,
            now=time.monotonic(),
            limits=self.limits,
        )
        self.peer: PeerSettings = self.core.peer
        self.on_refused = on_refused
        """Told the reason each time a per-peer budget closes this connection or a stream."""
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.closing = False
        """Closed or aborted by us, `connection_lost` yet to come."""
        self.on_new_stream: Callable[[Stream, list[Header], bool], None] | None = None
        self.on_closed: Callable[[Connection], None] | None = None
        self._deferred: list[Callable[[], None]] = []
        self._marked = False
        """Handed to the flusher since the last flush (it flushes each once)."""
        self._delivering = False

    def _new_stream(self, stream_id: int, send_window: int, recv_window: int) -> Stream:
        return Stream(self, stream_id, send_window, recv_window)

    @property
    def streams(self) -> dict[int, Stream]:
        return self.core.streams

    @property
    def accepting(self) -> bool:
        """Whether a new stream may be opened on this (client-side) connection."""
        return not self.closed and not self.closing and self.core.accepting

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.set_write_buffer_limits(high=self.limits.connection_buffer_bytes)
        self.core.initiate()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.core.connection_lost()
        self._deliver()
        if self.on_closed is not None:
            self.on_closed(self)
        self.flusher.flush()

    def data_received(self, data: bytes) -> None:
        flusher = self.flusher
        flusher.held = True  # flushed below, at the end of this read
        try:
            self.core.receive(data, _monotonic())
            self._deliver()
        except Exception:  # a bug must cost one connection, never the process
            log.exception("relay: unexpected error on an HTTP/2 connection")
            self._delivering = False
            self.core.events.clear()
            self.fail(f.INTERNAL_ERROR, "internal error")
        # Why calls start only now: a request reset in the same read (rapid reset)
        # never costs an engine stream.
        deferred, self._deferred = self._deferred, []
        if not self.closing:
            for action in deferred:
                action()
        flusher.flush()

    def pause_writing(self) -> None:
        self.core.pause()

    def resume_writing(self) -> None:
        if not self.closed:
            self.core.resume()
            self._deliver()

    # ---- events -----------------------------------------------------------------------

    def _deliver(self) -> None:  # noqa: C901 - one branch per event type
        """Hand every event the core reported to its handler, oldest first.

        Why not re-entrant: a handler acting on this connection adds events that
        the running loop below picks up, so they keep their order.
        """
        if self._delivering:
            return
        core = self.core
        events = core.events
        if events:
            self._delivering = True
            try:
                for event in events:  # a list iterator also sees what handlers append
                    if type(event) is DataReceived:
                        event.stream.handler.on_data(event.stream, event.data, event.end)
                    elif type(event) is DataSent:
                        event.stream.handler.on_sent(event.stream, event.length)
                    elif type(event) is HeadersReceived:
                        event.stream.handler.on_headers(event.stream, event.headers, event.end)
                    elif type(event) is RequestReceived:
                        if self.on_new_stream is not None:
                            self.on_new_stream(event.stream, event.headers, event.end)
                    elif type(event) is StreamReset:
                        event.stream.handler.on_reset(event.stream, event.code, event.unprocessed)
                    elif type(event) is Refused:
                        self.refused(event.reason)
                    elif type(event) is ConnectionTerminated:
                        log.info("relay: closing an HTTP/2 connection: %s", event.message)
                        self.close()
            finally:
                events.clear()
                self._delivering = False
        if core.out_size and not self._marked and not self.closed:  # out_size: has_output
            self._marked = True
            self.flusher.mark(self)
        if (core.goaway_sent or core.goaway_received is not None) and not self.closing:
            if core.wants_close:
                self.close()

    def refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    # ---- what handlers do -------------------------------------------------------------

    def defer(self, action: Callable[[], None]) -> None:
        """Run `action` once every frame of the current read is handled (see `data_received`)."""
        self._deferred.append(action)

    def open_stream(self, handler: StreamHandler) -> Stream:
        stream = self.core.open_stream()
        stream.handler = handler
        return stream

    def send_headers(self, stream: Stream, block: bytes, end: bool) -> None:
        self.core.send_headers(stream, block, end)
        if not self._delivering:  # else the running delivery sees to it
            self._deliver()

    def send_data(self, stream: Stream, data: bytes, end: bool) -> None:
        """Send now what the windows allow; the rest waits. `on_sent` reports what went."""
        self.core.send_data(stream, data, end)
        if not self._delivering:  # else the running delivery sees to it
            self._deliver()

    def credit(self, stream: Stream, length: int) -> None:
        """`length` received bytes were handed on: reopen the windows (in batches)."""
        self.core.credit(stream, length)
        if not self._delivering:  # else the running delivery sees to it
            self._deliver()

    def reset(self, stream: Stream, code: int) -> None:
        """RST_STREAM ours: the stream is gone on both sides; its queue is dropped."""
        self.core.reset(stream, code)
        if not self._delivering:  # else the running delivery sees to it
            self._deliver()

    # ---- the connection -----------------------------------------------------------------

    def flush(self) -> None:
        self._marked = False
        core = self.core
        if core.has_output and self.transport is not None and not self.closed:
            self.transport.write(core.data_to_send())
            # Streams stop at the limit (plus a frame); only control frames (PING and
            # SETTINGS ACKs, WINDOW_UPDATE, RST_STREAM) go on, so a buffer three times
            # over means a peer that keeps talking but never reads.
            if self.transport.get_write_buffer_size() > 3 * self.limits.connection_buffer_bytes:
                self.refused("slow_reader")
                self.abort("the peer reads nothing of what it asks for")
            elif core.starved and not core.paused:
                core.resume()
                self._deliver()

    def ping(self, now: float) -> None:
        """A keepalive PING; its ACK clears `core.ping_sent`."""
        self.core.ping(now)
        self._deliver()

    def send_goaway(self) -> None:
        """Graceful: no new streams; those up to the last seen still finish."""
        self.core.send_goaway()
        self._deliver()

    def fail(self, code: int, message: str) -> None:
        """End the connection for an error: GOAWAY, then close."""
        self.core.fail(code, message)
        self._deliver()

    def close(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self, message: str) -> None:
        """Drop the connection without flushing: the peer is gone, writes would only queue."""
        log.info("relay: dropping an HTTP/2 connection: %s", message)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
