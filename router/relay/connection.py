"""One HTTP/2 connection, either side: frames in, frames out, flow control both ways.

The relay terminates HTTP/2 on both hops, so this class speaks the protocol
(SETTINGS, PING, GOAWAY, RST_STREAM, WINDOW_UPDATE, header blocks) and hands
each stream's headers and DATA to its `StreamHandler` (a relayed call). Output
is batched per event-loop turn through a shared `Flusher`. Any protocol error
ends this connection with GOAWAY, never the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from hpack import Decoder
from hpack.exceptions import HPACKError

from router.relay import frames as f
from router.relay.frames import (
    Header,
    PeerSettings,
    ProtocolError,
    RecvWindow,
    SendWindow,
    Settings,
)
from router.relay.limits import RateBudget, RelayLimits
from router.relay.stream import CONNECTION_LOST, Flusher, Stream, StreamHandler

__all__ = ["CONNECTION_LOST", "Connection", "Flusher", "Stream", "StreamHandler"]

log = logging.getLogger(__name__)


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
        self.on_refused = on_refused
        """Told the reason each time a per-peer budget closes this connection or a stream."""
        now = time.monotonic()
        self.made_at = now
        self.idle_since = now
        """When this connection last had no stream (kept current by the server's sweep)."""
        self.handshaken = client_side
        """A caller's connection: once its preface and first SETTINGS arrived."""
        self.paused = False
        """The transport's buffer is over `connection_buffer_bytes`: streams are not fed."""
        self.credit_on_receipt = client_side
        """Engine connections return connection window as DATA arrives, so one stalled
        caller holds only its own stream's window, never the window every caller shares."""
        self.grow_to = self.limits.stream_buffer_bytes if client_side else 0
        """Engine streams start with a small window that grows while the caller reads."""
        self._resets = RateBudget(self.limits.max_resets_per_s, now)
        self._control = RateBudget(self.limits.max_control_frames_per_s, now)
        self._out_size = 0
        self._starved = False
        self._deferred: list[Callable[[], None]] = []
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.decoder = Decoder(max_header_list_size=settings.max_header_list_size)
        self.peer = PeerSettings()
        self.send_window = SendWindow(f.DEFAULT_WINDOW)
        self.recv_window = RecvWindow(max(settings.connection_window, f.DEFAULT_WINDOW))
        self.next_stream_id = 1
        self.last_peer_stream = 0
        self.goaway_received: int | None = None
        self.goaway_sent = False
        self.closed = False
        self.closing = False
        """Closed or aborted by us, `connection_lost` yet to come."""
        self.last_received = time.monotonic()
        self.ping_sent: float | None = None
        """When our keepalive PING went out, until its ACK (see `upstream`)."""
        self.on_new_stream: Callable[[Stream, list[Header], bool], None] | None = None
        self.on_closed: Callable[[Connection], None] | None = None
        self._out: list[bytes] = []
        self._buffer = b""
        self._preface_pending = not client_side
        self._block: tuple[int, int, bytearray] | None = None
        self._blocked: dict[int, Stream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.set_write_buffer_limits(high=self.limits.connection_buffer_bytes)
        if self.client_side:
            self._out.append(f.PREFACE)
        self._out.extend(self.settings.frames(self.client_side))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        for stream in streams.values():
            stream.handler.on_reset(stream, CONNECTION_LOST, False)
        if self.on_closed is not None:
            self.on_closed(self)
        self.flusher.flush()

    def flush(self) -> None:
        if self._out and self.transport is not None and not self.closed:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.transport.write(data)
            # Streams stop at the limit (plus a frame); only control frames (PING and
            # SETTINGS ACKs, WINDOW_UPDATE, RST_STREAM) go on, so a buffer three times
            # over means a peer that keeps talking but never reads.
            if self.transport.get_write_buffer_size() > 3 * self.limits.connection_buffer_bytes:
                self.refused("slow_reader")
                self.abort("the peer reads nothing of what it asks for")
            elif self._starved and not self.paused:
                self._starved = False
                self._drain_all()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if not self.closed:
            self._drain_all()

    def refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    def defer(self, action: Callable[[], None]) -> None:
        """Run `action` once every frame of the current read is handled (see `data_received`)."""
        self._deferred.append(action)

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        self.flusher.mark(self)

    def fail(self, code: int, message: str) -> None:
        """End the connection for a protocol error: GOAWAY, then close."""
        log.info("relay: closing an HTTP/2 connection: %s", message)
        self._out.append(f.goaway(self.last_peer_stream, code, message[:128].encode()))
        self.close()

    def close(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def ping(self, now: float) -> None:
        """A keepalive PING; its ACK clears `ping_sent`."""
        self.ping_sent = now
        self.write(f.frame(f.PING, 0, 0, f.KEEPALIVE_PING))

    def abort(self, message: str) -> None:
        """Drop the connection without flushing: the peer is gone, writes would only queue."""
        log.info("relay: dropping an HTTP/2 connection: %s", message)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def send_goaway(self) -> None:
        """Graceful: no new streams; those up to the last seen still finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.write(f.goaway(self.last_peer_stream, f.NO_ERROR))

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        try:
            self._receive(data)
        except ProtocolError as error:
            if error.reason is not None:
                self.refused(error.reason)
            self.fail(error.code, str(error))
        except Exception:  # a bug must cost one connection, never the process
            log.exception("relay: unexpected error on an HTTP/2 connection")
            self.fail(f.INTERNAL_ERROR, "internal error")
        # Why calls start only now: a request reset in the same read (rapid reset)
        # never costs an engine stream.
        deferred, self._deferred = self._deferred, []
        if not self.closing:
            for action in deferred:
                action()
        self.flusher.flush()

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if self._preface_pending:
            if len(buffer) < len(f.PREFACE):
                if not f.PREFACE.startswith(buffer):
                    raise ProtocolError(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                self._buffer = buffer
                return
            if not buffer.startswith(f.PREFACE):
                raise ProtocolError(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
            buffer = buffer[len(f.PREFACE) :]
            self._preface_pending = False
        parsed, used = f.parse_frames(buffer, self.settings.max_frame_size)
        self._buffer = buffer[used:]
        for item in parsed:
            if self.closed:
                return
            self._dispatch(item)

    def _dispatch(self, item: f.Frame) -> None:  # noqa: C901 - one branch per frame type
        kind, flags, sid, payload = item
        if self._block is not None and kind != f.CONTINUATION:
            raise ProtocolError(f.PROTOCOL_ERROR, "header block interrupted")
        if not self.handshaken:
            if kind != f.SETTINGS or flags & f.ACK:
                raise ProtocolError(f.PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self.handshaken = True
        costly = (kind > f.HEADERS or not payload) and _costs_work(kind, flags, payload)
        if costly and not self._control.spend(time.monotonic()):  # DATA, HEADERS: no call
            raise ProtocolError(f.ENHANCE_YOUR_CALM, "too many control frames", "control_flood")
        if kind == f.DATA:
            self._on_data(sid, flags, payload)
        elif kind == f.HEADERS:
            self._on_headers(sid, flags, payload)
        elif kind == f.CONTINUATION:
            self._on_continuation(sid, flags, payload)
        elif kind == f.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == f.SETTINGS:
            self._on_settings(sid, flags, payload)
        elif kind == f.PING:
            if sid or len(payload) != 8:
                raise ProtocolError(f.FRAME_SIZE_ERROR, "bad PING")
            if not flags & f.ACK:
                self.write(f.frame(f.PING, f.ACK, 0, payload))
            elif payload == f.KEEPALIVE_PING:
                self.ping_sent = None
        elif kind == f.RST_STREAM:
            if not sid or len(payload) != 4:
                raise ProtocolError(f.PROTOCOL_ERROR, "bad RST_STREAM")
            self._on_rst(sid, f.read_u32(payload))
        elif kind == f.GOAWAY:
            if sid or len(payload) < 8:
                raise ProtocolError(f.PROTOCOL_ERROR, "bad GOAWAY")
            self._on_goaway(f.read_u32(payload) & f.MAX_STREAM_ID)
        elif kind == f.PUSH_PROMISE:
            raise ProtocolError(f.PROTOCOL_ERROR, "PUSH_PROMISE not enabled")
        elif kind == f.PRIORITY and (not sid or len(payload) != 5):
            raise ProtocolError(f.PROTOCOL_ERROR, "bad PRIORITY")

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(f.PROTOCOL_ERROR, "DATA on stream 0")
        self.recv_window.receive(len(payload))
        if self.credit_on_receipt:
            self._credit_connection(len(payload))
        stream = self.streams.get(sid)
        if stream is None or stream.remote_done:
            if self._idle(sid):
                raise ProtocolError(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if not self.credit_on_receipt:
                self._credit_connection(len(payload))  # a stream we already closed
            if stream is not None:
                self._stream_closed(stream)
            return
        stream.recv.receive(len(payload))
        data = f.strip_padding(payload, flags, f.DATA)
        if len(data) != len(payload):
            self.credit(stream, len(payload) - len(data))
        end = bool(flags & f.END_STREAM)
        if end:
            stream.remote_done = True
        stream.handler.on_data(stream, data, end)
        if end:
            self._maybe_forget(stream)

    def _idle(self, sid: int) -> bool:
        if self.client_side:
            return sid >= self.next_stream_id
        return sid > self.last_peer_stream

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = f.strip_padding(payload, flags, f.HEADERS)
        if flags & f.END_HEADERS:
            self._on_block(sid, flags, block)
        else:
            self._block = (sid, flags, bytearray(block))

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != sid:
            raise ProtocolError(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = self._block[2]
        block += payload
        if len(block) > self.settings.max_header_list_size:
            raise ProtocolError(f.ENHANCE_YOUR_CALM, "header block too large")
        if flags & f.END_HEADERS:
            first_flags = self._block[1]  # END_STREAM rides on the HEADERS frame
            self._block = None
            self._on_block(sid, first_flags, bytes(block))

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        try:  # always decode: the HPACK table must follow every block
            headers: list[Header] = self.decoder.decode(block, raw=True)  # type: ignore[assignment]
        except HPACKError as error:
            raise ProtocolError(f.COMPRESSION_ERROR, f"bad header block: {error}") from None
        end = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None and stream.remote_done:
            self._stream_closed(stream)
        elif stream is not None:
            if end:
                stream.remote_done = True
            stream.handler.on_headers(stream, headers, end)
            if end:
                self._maybe_forget(stream)
        elif not self.client_side:
            self._open_peer_stream(sid, headers, end)

    def _open_peer_stream(self, sid: int, headers: list[Header], end: bool) -> None:
        if sid % 2 == 0 or sid <= self.last_peer_stream:
            raise ProtocolError(f.PROTOCOL_ERROR, f"HEADERS on stream {sid} out of order")
        self.last_peer_stream = sid
        if self.goaway_sent or len(self.streams) >= self.settings.max_concurrent_streams:
            self.write(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        stream = Stream(self, sid)
        stream.remote_done = end
        self.streams[sid] = stream
        if self.on_new_stream is not None:
            self.on_new_stream(stream, headers, end)

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(f.FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = f.read_u32(payload) & f.MAX_WINDOW
        if not sid:
            self.send_window.grant(increment)
            self._drain_all()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.send.grant(increment)
            self._drain(stream)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise ProtocolError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ProtocolError(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        delta = self.peer.apply(payload)
        if delta:
            for stream in self.streams.values():
                stream.send.adjust(delta)
        self.write(f.frame(f.SETTINGS, f.ACK, 0))
        self._drain_all()

    def _on_rst(self, sid: int, code: int) -> None:
        if not self.client_side and not self._resets.spend(time.monotonic()):
            raise ProtocolError(f.ENHANCE_YOUR_CALM, "too many stream resets", "rapid_reset")
        stream = self.streams.pop(sid, None)
        if stream is None:
            if self._idle(sid):
                raise ProtocolError(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self._blocked.pop(sid, None)
        stream.handler.on_reset(stream, code, self.client_side and code == f.REFUSED_STREAM)
        self._maybe_close_drained()

    def _on_goaway(self, last_stream_id: int) -> None:
        self.goaway_received = last_stream_id
        if self.client_side:  # streams past the last one were never seen: safe to retry
            for sid in [s for s in self.streams if s > last_stream_id]:
                stream = self.streams.pop(sid)
                self._blocked.pop(sid, None)
                stream.handler.on_reset(stream, f.REFUSED_STREAM, True)
        self._maybe_close_drained()

    @property
    def accepting(self) -> bool:
        """Whether a new stream may be opened on this (client-side) connection."""
        return (
            not self.closed
            and self.goaway_received is None
            and not self.goaway_sent
            and len(self.streams) < self.peer.max_streams
            and len(self.streams) < self.limits.engine_streams_per_connection
            and self.next_stream_id < f.MAX_STREAM_ID
        )

    def open_stream(self, handler: StreamHandler) -> Stream:
        stream = Stream(self, self.next_stream_id)
        self.next_stream_id += 2
        stream.handler = handler
        self.streams[stream.id] = stream
        return stream

    def send_headers(self, stream: Stream, block: bytes, end: bool) -> None:
        if stream.queue:
            stream.queue.append((f.HEADERS, block, end))
            return
        self._write_headers(stream, block, end)

    def _write_headers(self, stream: Stream, block: bytes, end: bool) -> None:
        for frame in f.header_frames(stream.id, block, end, self.peer.max_frame):
            self._out.append(frame)
            self._out_size += len(frame)
        self.flusher.mark(self)
        if end:
            stream.local_done = True
            self._maybe_forget(stream)

    def send_data(self, stream: Stream, data: bytes, end: bool) -> None:
        """Send now what the windows allow; the rest waits. `on_sent` reports what went."""
        stream.queue.append((f.DATA, data, end))
        if len(stream.queue) == 1:
            self._drain(stream)

    def _drain_all(self) -> None:
        for stream in list(self._blocked.values()):
            self._drain(stream)

    def _drain(self, stream: Stream) -> None:
        queue = stream.queue
        limit = self.limits.connection_buffer_bytes
        while queue:
            if self.paused or self._out_size >= limit:
                self._blocked[stream.id] = stream  # resume_writing (or a flush) drains it
                self._starved = True
                break
            kind, payload, end = queue[0]
            if kind == f.HEADERS:
                queue.pop(0)
                self._write_headers(stream, payload, end)
                continue
            room = min(self.send_window.available, stream.send.available, self.peer.max_frame)
            size = len(payload)
            if size > room:
                if room <= 0:
                    self._blocked[stream.id] = stream
                    return
                queue[0] = (kind, payload[room:], end)
                payload, size, end = payload[:room], room, False
            else:
                queue.pop(0)
            self.send_window.available -= size
            stream.send.available -= size
            self._out.append(f.data_header(size, f.END_STREAM if end else 0, stream.id))
            self._out.append(payload)
            self._out_size += size + f.HEADER_SIZE
            if end:
                stream.local_done = True
            stream.handler.on_sent(stream, size)
        else:
            self._blocked.pop(stream.id, None)
        self.flusher.mark(self)
        if stream.local_done:
            self._maybe_forget(stream)

    def credit(self, stream: Stream, length: int) -> None:
        """`length` received bytes were handed on: reopen the windows (in batches)."""
        if length <= 0:
            return
        if not stream.remote_done and self.streams.get(stream.id) is stream:
            increment = stream.recv.release(length, self.grow_to)
            if increment:
                self.write(f.window_update(stream.id, increment))
        if not self.credit_on_receipt:
            self._credit_connection(length)

    def _credit_connection(self, length: int) -> None:
        increment = self.recv_window.release(length)
        if increment:
            self.write(f.window_update(0, increment))

    def reset(self, stream: Stream, code: int) -> None:
        """RST_STREAM ours: the stream is gone on both sides; its queue is dropped."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self._blocked.pop(stream.id, None)
            stream.queue.clear()
            self.write(f.rst_stream(stream.id, code))
            self._maybe_close_drained()

    def _stream_closed(self, stream: Stream) -> None:
        """A frame after the peer's END_STREAM: stream error STREAM_CLOSED (RFC 9113 §5.1)."""
        self.refused("stream_closed")
        self.reset(stream, f.STREAM_CLOSED)
        stream.handler.on_reset(stream, f.STREAM_CLOSED, False)

    def _maybe_forget(self, stream: Stream) -> None:
        if stream.local_done and stream.remote_done and not stream.queue:
            if self.streams.get(stream.id) is stream:
                del self.streams[stream.id]
                self._blocked.pop(stream.id, None)
                self._maybe_close_drained()

    def _maybe_close_drained(self) -> None:
        draining = self.goaway_sent or self.goaway_received is not None
        if draining and not self.streams and not self.closed:
            self.close()


def _costs_work(kind: int, flags: int, payload: bytes) -> bool:
    """A frame that asks work of us without carrying a request: what a flood is made of."""
    if kind in (f.SETTINGS, f.PING):
        return not flags & f.ACK
    if kind == f.PRIORITY:
        return True
    if kind == f.DATA:
        return not payload and not flags & f.END_STREAM
    if kind == f.CONTINUATION:
        return not payload and not flags & f.END_HEADERS
    return False
