"""The sans-IO HTTP/2 connection: bytes in, events and bytes out, no clock, no sockets.

`receive(data, now)` parses frames and appends what happened to `events`;
`send_headers`, `send_data`, `credit`, `reset` and the rest queue frames that
`data_to_send()` hands to whatever transport carries them (python-hyper's `h2`
and Go's `x/net/http2` are split the same way). Streams follow `StreamState`;
recently closed ones are remembered (`ClosedStreams`) so a late frame gets the
answer RFC 9113 §5.1 asks for. Every per-peer budget of `RelayLimits` that is
about frames (resets, control frames, output queued) is enforced here, with
`now` passed in. A protocol error queues GOAWAY and reports `ConnectionTerminated`;
after it nothing more is read or written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

from router.relay import frames as f
from router.relay.frames import Header, PeerSettings, ProtocolError, Settings
from router.relay.h2core import events as ev
from router.relay.h2core.flow import RecvWindow, SendWindow
from router.relay.h2core.hpack_decoder import HpackDecoder
from router.relay.h2core.state import ClosedStreams, Closure, StreamState
from router.relay.h2core.stream import H2Stream
from router.relay.limits import RateBudget, RelayLimits

S = TypeVar("S", bound=H2Stream)
_pack_header: Final = f.HEADER.pack
_PAD_OR_PRIORITY: Final = f.PADDED | f.PRIORITY_FLAG
_CLOSED: Final = StreamState.CLOSED
_HALF_LOCAL: Final = StreamState.HALF_CLOSED_LOCAL
_HALF_REMOTE: Final = StreamState.HALF_CLOSED_REMOTE


class H2Connection(Generic[S]):
    """One HTTP/2 connection, either side (`client_side`: we opened it, to an engine).

    `new_stream(id, send_window, recv_window)` builds the stream objects, so a
    transport can hand out its own subclass of `H2Stream`.
    """

    def __init__(
        self,
        settings: Settings,
        new_stream: Callable[[int, int, int], S],
        *,
        client_side: bool,
        now: float,
        limits: RelayLimits | None = None,
    ) -> None:
        self.settings = settings
        self.client_side = client_side
        self.limits = limits or RelayLimits()
        self._new_stream = new_stream
        self.events: list[ev.Event[S]] = []
        """What happened since the transport last took them, oldest first."""
        self.streams: dict[int, S] = {}
        """Streams not closed yet (idle ones we opened, open, half-closed)."""
        self.closed_streams = ClosedStreams()
        self.peer = PeerSettings()
        self.send_window = SendWindow(f.DEFAULT_WINDOW)
        self.recv_window = RecvWindow(max(settings.connection_window, f.DEFAULT_WINDOW))
        self.decoder = HpackDecoder(settings.max_header_list_size)
        self.credit_on_receipt = client_side
        """Engine connections return connection window as DATA arrives, so one stalled
        caller holds only its own stream's window, never the window every caller shares."""
        self.grow_to = self.limits.stream_buffer_bytes if client_side else 0
        """Engine streams start with a small window that grows while the caller reads."""
        self.made_at = self.idle_since = self.last_received = now
        self.handshaken = client_side
        """A caller's connection: once its preface and first SETTINGS arrived."""
        self._plain = client_side
        """Handshaken and no header block open: DATA, HEADERS, WINDOW_UPDATE go the short way."""
        self.ping_sent: float | None = None
        """When our keepalive PING went out, until its ACK."""
        self.next_stream_id = 1
        self.last_peer_stream = 0
        self.goaway_received: int | None = None
        self.goaway_sent = False
        self.terminated = False
        """Ended by us (GOAWAY for an error) or by the transport: nothing more is read."""
        self.paused = False
        """The transport cannot take more: streams are not fed (nor their peers credited)."""
        self.starved = False
        """A stream stopped for the output limit or a pause; `resume` feeds it again."""
        self._resets = RateBudget(self.limits.max_resets_per_s, now)
        self._control = RateBudget(self.limits.max_control_frames_per_s, now)
        self._out: list[bytes] = []
        self.out_size = 0
        self._buffer = b""
        self._preface_pending = not client_side
        self._block: tuple[int, int, bytearray] | None = None
        self._blocked: dict[int, S] = {}

    # ---- output -------------------------------------------------------------------

    def initiate(self) -> None:
        """Our side of the handshake: the preface (client side) and our SETTINGS."""
        if self.client_side:
            self._write(f.PREFACE)
        for frame in self.settings.frames(self.client_side):
            self._write(frame)

    def data_to_send(self) -> bytes:
        """Every frame queued since the last call, as one buffer."""
        data = b"".join(self._out)
        self._out.clear()
        self.out_size = 0
        return data

    @property
    def has_output(self) -> bool:
        return bool(self._out)  # and so is `out_size`: every frame written counts there

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self.out_size += len(data)

    # ---- input --------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Take bytes from the peer; what they mean is appended to `events`."""
        if self.terminated:
            return
        self.last_received = now
        try:
            self._receive(data, now)
        except ProtocolError as error:
            if error.reason is not None:
                self.events.append(ev.Refused(error.reason))
            self.fail(error.code, str(error))

    def fail(self, code: int, message: str) -> None:
        """End the connection for an error: GOAWAY(`code`), then `ConnectionTerminated`."""
        if self.terminated:
            return
        self.terminated = True
        self._write(f.goaway(self.last_peer_stream, code, message[:128].encode()))
        self.events.append(ev.ConnectionTerminated(code, message))

    def _receive(self, data: bytes, now: float) -> None:
        buffer = self._buffer + data if self._buffer else data
        if self._preface_pending:
            rest = f.after_preface(buffer)
            if rest is None:
                self._buffer = buffer
                return
            self._preface_pending = False
            buffer = rest
        # The frame loop of `frames.parse_frames`, inline: no list and no tuple per frame,
        # and the header read byte by byte (native integer work once compiled, where
        # struct's unpack would box a tuple of five ints per frame).
        pos, end, limit = 0, len(buffer), self.settings.max_frame_size
        try:
            while end - pos >= f.HEADER_SIZE:
                length = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
                kind = buffer[pos + 3]
                flags = buffer[pos + 4]
                sid = f.read_u32(buffer, pos + 5) & f.MAX_STREAM_ID
                if length > limit:
                    raise ProtocolError(f.FRAME_SIZE_ERROR, f"frame of {length} bytes > {limit}")
                start = pos + f.HEADER_SIZE
                if start + length > end:
                    break
                pos = start + length
                payload = buffer[start:pos]
                if kind == f.DATA and self._plain and (payload or flags & f.END_STREAM):
                    self._on_data(sid, flags, payload)  # an empty one is a control frame
                elif kind == f.HEADERS and self._plain:
                    self._on_headers(sid, flags, payload)
                elif kind == f.WINDOW_UPDATE and self._plain:  # never costs work (a flood)
                    self._on_window_update(sid, payload)
                else:
                    self._dispatch(kind, flags, sid, payload, now)
                if self.terminated:
                    return
        finally:
            self._buffer = buffer[pos:]

    def _dispatch(  # noqa: C901 - a branch per type
        self, kind: int, flags: int, sid: int, payload: bytes, now: float
    ) -> None:
        """Every frame the loop in `_receive` does not hand on directly."""
        if self._block is not None and kind != f.CONTINUATION:
            raise ProtocolError(f.PROTOCOL_ERROR, "header block interrupted")
        if not self.handshaken:
            if kind != f.SETTINGS or flags & f.ACK:
                raise ProtocolError(f.PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self.handshaken = self._plain = True
        costly = (kind > f.HEADERS or not payload) and f.costs_work(kind, flags, payload)
        if costly and not self._control.spend(now):  # DATA, HEADERS: no call
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
            self._on_ping(sid, flags, payload)
        elif kind == f.RST_STREAM:
            if not sid or len(payload) != 4:
                raise ProtocolError(f.PROTOCOL_ERROR, "bad RST_STREAM")
            self._on_rst(sid, f.read_u32(payload), now)
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
        if stream is None or stream.state is _HALF_REMOTE:
            if not self.credit_on_receipt:
                self._credit_connection(len(payload))  # nobody will hand these bytes on
            self._late_frame(sid, stream, "DATA")
            return
        recv = stream.recv
        if len(payload) <= recv.available:  # `RecvWindow.receive`, inline: once per DATA
            recv.available -= len(payload)
        else:
            recv.receive(len(payload))
        data = payload
        if flags & f.PADDED:
            data = f.strip_padding(payload, flags, f.DATA)
            self.credit(stream, len(payload) - len(data))
        end = bool(flags & f.END_STREAM)
        if end:
            stream.state = _CLOSED if stream.state is _HALF_LOCAL else _HALF_REMOTE
        self.events.append(ev.DataReceived(stream, data, end))
        if end and stream.state is _CLOSED and not stream.queue:  # `_maybe_forget`, inline
            self._close(stream, Closure.ENDED)

    def _late_frame(self, sid: int, stream: S | None, what: str) -> None:
        """A frame on a stream the peer already ended or that is gone (RFC 9113 §5.1)."""
        if stream is not None:  # half-closed (remote): a stream error
            self._stream_error(stream, f.STREAM_CLOSED)
            return
        if self._idle(sid):
            raise ProtocolError(f.PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        closure = self.closed_streams.get(sid)
        if closure is Closure.RESET_BY_US:
            return  # sent before our RST_STREAM reached the peer
        if closure is not None:
            self.events.append(ev.Refused("stream_closed"))
            self._write(f.rst_stream(sid, f.STREAM_CLOSED))
        elif what == "HEADERS":  # a stream id going down, or reused long after it closed
            raise ProtocolError(f.PROTOCOL_ERROR, f"HEADERS on stream {sid} out of order")

    def _idle(self, sid: int) -> bool:
        """Never opened: not by us (push is off, so none of the peer's parity either way)."""
        if self.client_side:
            return sid >= self.next_stream_id or sid % 2 == 0
        return sid > self.last_peer_stream or sid % 2 == 0

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise ProtocolError(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = f.strip_padding(payload, flags, f.HEADERS) if flags & _PAD_OR_PRIORITY else payload
        if flags & f.END_HEADERS:
            self._on_block(sid, flags, block)
        else:
            self._block = (sid, flags, bytearray(block))
            self._plain = False

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
            self._plain = True
            self._on_block(sid, first_flags, bytes(block))

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # always: the HPACK table must follow every block
        end = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None and stream.state is not _HALF_REMOTE:
            if end:
                stream.state = _CLOSED if stream.state is _HALF_LOCAL else _HALF_REMOTE
            self.events.append(ev.HeadersReceived(stream, headers, end))
            if end and stream.state is _CLOSED and not stream.queue:  # `_maybe_forget`
                self._close(stream, Closure.ENDED)
        elif stream is None and not self.client_side and sid > self.last_peer_stream:
            self._open_peer_stream(sid, headers, end)
        else:
            self._late_frame(sid, stream, "HEADERS")

    def _open_peer_stream(self, sid: int, headers: list[Header], end: bool) -> None:
        if sid % 2 == 0:
            raise ProtocolError(f.PROTOCOL_ERROR, f"HEADERS on stream {sid} out of order")
        self.last_peer_stream = sid
        if self.goaway_sent or len(self.streams) >= self.settings.max_concurrent_streams:
            self._write(f.rst_stream(sid, f.REFUSED_STREAM))
            self.closed_streams.add(sid, Closure.RESET_BY_US)
            return
        stream = self._new_stream(sid, self.peer.initial_window, self.settings.stream_window)
        stream.state = _HALF_REMOTE if end else StreamState.OPEN
        self.streams[sid] = stream
        self.events.append(ev.RequestReceived(stream, headers, end))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(f.FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = f.read_u32(payload) & f.MAX_WINDOW
        if not sid:
            self.send_window.grant(increment)
            if self._blocked:
                self._drain_all()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            if increment == 0:  # a stream error only (RFC 9113 §6.9)
                self._stream_error(stream, f.PROTOCOL_ERROR)
                return
            stream.send.grant(increment)
            if stream.queue:  # an empty queue has nothing to send, nor to forget
                self._drain(stream)
        elif self._idle(sid):
            raise ProtocolError(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")

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
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        self._drain_all()

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid or len(payload) != 8:
            raise ProtocolError(f.FRAME_SIZE_ERROR, "bad PING")
        if not flags & f.ACK:
            self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif payload == f.KEEPALIVE_PING:
            self.ping_sent = None

    def _on_rst(self, sid: int, code: int, now: float) -> None:
        if not self.client_side and not self._resets.spend(now):
            raise ProtocolError(f.ENHANCE_YOUR_CALM, "too many stream resets", "rapid_reset")
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise ProtocolError(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self._close(stream, Closure.RESET_BY_PEER)
        unprocessed = self.client_side and code == f.REFUSED_STREAM
        self.events.append(ev.StreamReset(stream, code, unprocessed))

    def _on_goaway(self, last_stream_id: int) -> None:
        self.goaway_received = last_stream_id
        if self.client_side:  # streams past the last one were never seen: safe to retry
            for sid in [s for s in self.streams if s > last_stream_id]:
                stream = self.streams[sid]
                self._close(stream, Closure.RESET_BY_PEER)
                self.events.append(ev.StreamReset(stream, f.REFUSED_STREAM, True))

    # ---- streams ------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a new stream may be opened on this (client-side) connection."""
        return (
            not self.terminated
            and self.goaway_received is None
            and not self.goaway_sent
            and len(self.streams) < self.peer.max_streams
            and len(self.streams) < self.limits.engine_streams_per_connection
            and self.next_stream_id < f.MAX_STREAM_ID
        )

    @property
    def wants_close(self) -> bool:
        """Draining (GOAWAY either way) and no stream left: the transport may close."""
        draining = self.goaway_sent or self.goaway_received is not None
        return draining and not self.streams and not self.terminated

    def open_stream(self) -> S:
        """A new stream of ours (idle until its HEADERS go out)."""
        sid = self.next_stream_id
        self.next_stream_id += 2
        stream = self._new_stream(sid, self.peer.initial_window, self.settings.stream_window)
        self.streams[sid] = stream
        return stream

    def send_headers(self, stream: S, block: bytes, end: bool) -> None:
        """A header block, in order after any DATA still waiting for window."""
        if self.terminated:
            return  # the connection is going: GOAWAY was the last frame
        if stream.queue:
            stream.queue.append((f.HEADERS, block, end))
        elif self.streams.get(stream.id) is stream:
            self._write_headers(stream, block, end)

    def _write_headers(self, stream: S, block: bytes, end: bool) -> None:
        size = len(block)
        if size <= self.peer.max_frame:  # the usual case: one HEADERS frame
            flags = f.END_HEADERS | f.END_STREAM if end else f.END_HEADERS
            self._out.append(_pack_header(size >> 8, size & 0xFF, f.HEADERS, flags, stream.id))
            self._out.append(block)
            self.out_size += size + f.HEADER_SIZE
        else:
            for frame in f.header_frames(stream.id, block, end, self.peer.max_frame):
                self._write(frame)
        if end:
            stream.state = _CLOSED if stream.state is _HALF_REMOTE else _HALF_LOCAL
            self._maybe_forget(stream)
        elif stream.state is StreamState.IDLE:
            stream.state = StreamState.OPEN

    def send_data(self, stream: S, data: bytes, end: bool) -> None:
        """Send now what the windows allow; the rest waits. `DataSent` reports what went."""
        if self.terminated or self.streams.get(stream.id) is not stream:
            return
        queue = stream.queue
        size = len(data)
        if (  # the usual case, without queueing: nothing waits and everything fits
            not queue
            and size <= self.send_window.available
            and size <= stream.send.available
            and size <= self.peer.max_frame
            and not self.paused
            and self.out_size < self.limits.connection_buffer_bytes
        ):
            self._put_data(stream, data, size, end)
            if end:
                self._maybe_forget(stream)
            return
        queue.append((f.DATA, data, end))
        if len(queue) == 1:
            self._drain(stream)

    def pause(self) -> None:
        """The transport's buffer is full: feed no stream until `resume`."""
        self.paused = True

    def resume(self) -> None:
        """Feed the streams that stopped for a pause or the output limit."""
        self.paused = False
        self.starved = False
        self._drain_all()

    def _drain_all(self) -> None:
        if self.terminated:
            return
        for stream in list(self._blocked.values()):
            self._drain(stream)

    def _drain(self, stream: S) -> None:
        queue = stream.queue
        limit = self.limits.connection_buffer_bytes
        while queue:
            if self.paused or self.out_size >= limit:
                self._blocked[stream.id] = stream  # `resume` drains it
                self.starved = True
                return
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
            self._put_data(stream, payload, size, end)
        self._blocked.pop(stream.id, None)
        self._maybe_forget(stream)

    def _put_data(self, stream: S, payload: bytes, size: int, end: bool) -> None:
        """One DATA frame out, inside both windows (the caller checked)."""
        self.send_window.available -= size
        stream.send.available -= size
        out = self._out
        out.append(_pack_header(size >> 8, size & 0xFF, f.DATA, end, stream.id))  # END_STREAM: 1
        out.append(payload)
        self.out_size += size + f.HEADER_SIZE
        self.events.append(ev.DataSent(stream, size))
        if end:
            stream.state = _CLOSED if stream.state is _HALF_REMOTE else _HALF_LOCAL

    def credit(self, stream: S, length: int) -> None:
        """`length` received bytes were handed on: reopen the windows (in batches)."""
        if length <= 0 or self.terminated:
            return
        if stream.state is not _HALF_REMOTE and self.streams.get(stream.id) is stream:
            recv = stream.recv
            if recv.pending + length < recv.threshold:  # short of a batch (`release`, inline)
                recv.pending += length
            else:
                increment = recv.release(length, self.grow_to)
                if increment:
                    self._write(f.window_update(stream.id, increment))
        if not self.credit_on_receipt:
            self._credit_connection(length)

    def _credit_connection(self, length: int) -> None:
        window = self.recv_window
        if window.pending + length < window.threshold:  # short of a batch (`release`, inline)
            window.pending += length
            return
        increment = window.release(length)
        if increment:
            self._write(f.window_update(0, increment))

    def reset(self, stream: S, code: int) -> None:
        """RST_STREAM ours: the stream is gone on both sides; its queue is dropped."""
        if self.streams.get(stream.id) is stream:
            self._close(stream, Closure.RESET_BY_US)
            stream.queue.clear()
            if not self.terminated:
                self._write(f.rst_stream(stream.id, code))

    def _stream_error(self, stream: S, code: int) -> None:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM(`code`), and the handler is told."""
        self.events.append(ev.Refused("stream_closed" if code == f.STREAM_CLOSED else "malformed"))
        self.reset(stream, code)
        self.events.append(ev.StreamReset(stream, code, False))

    def _maybe_forget(self, stream: S) -> None:
        if stream.state is _CLOSED and not stream.queue:
            self._close(stream, Closure.ENDED)

    def _close(self, stream: S, closure: Closure) -> None:
        stream.state = _CLOSED
        if self.streams.pop(stream.id, None) is not None:
            self._blocked.pop(stream.id, None)
            self.closed_streams.add(stream.id, closure)

    # ---- connection-wide ----------------------------------------------------------

    def ping(self, now: float) -> None:
        """A keepalive PING; its ACK clears `ping_sent`."""
        if self.terminated:
            return
        self.ping_sent = now
        self._write(f.frame(f.PING, 0, 0, f.KEEPALIVE_PING))

    def send_goaway(self) -> None:
        """Graceful: no new streams; those up to the last seen still finish."""
        if not self.goaway_sent and not self.terminated:
            self.goaway_sent = True
            self._write(f.goaway(self.last_peer_stream, f.NO_ERROR))

    def connection_lost(self) -> None:
        """The transport is gone: every stream still held is reset (`CONNECTION_LOST`)."""
        self.terminated = True
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        for stream in streams.values():
            stream.state = _CLOSED
            stream.queue.clear()
            self.events.append(ev.StreamReset(stream, ev.CONNECTION_LOST, False))

    def timed_out(self, now: float) -> str | None:
        """A caller connection past a timeout of `RelayLimits` at `now`, and which one."""
        limits = self.limits
        if self.streams:
            self.idle_since = now
            return None
        if not self.handshaken:
            late = now - self.made_at >= limits.handshake_timeout_s
            return "handshake_timeout" if late else None
        return "idle_timeout" if now - self.idle_since >= limits.idle_timeout_s else None
