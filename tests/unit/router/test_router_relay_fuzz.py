"""Fuzz one caller-side `Connection` with hypothesis-made frame sequences (bytes in, bytes out).

Whatever a peer sends, no exception escapes as an internal error (a bug ends the
connection with GOAWAY INTERNAL_ERROR, which is what is checked), windows stay
within HTTP/2's bounds, and the streams held never pass the advertised limit.
No event loop: a flusher that writes on demand stands in for the per-turn one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.connection import Connection, Flusher, Stream
from router.relay.frames import Header, Settings
from router.relay.limits import RelayLimits

MAX_STREAMS = 8


class NowFlusher(Flusher):
    def mark(self, conn: Any) -> None:
        self._dirty.add(conn)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Echo:
    """Answers each stream's DATA with DATA of the same size, and credits what it got."""

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        stream.conn.send_headers(stream, f.encode_headers([(b":status", b"200")]), False)

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.conn.credit(stream, len(data))
        stream.conn.send_data(stream, data, end)

    def on_sent(self, stream: Stream, length: int) -> None:
        pass

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        pass


class Silent(Echo):
    """Takes nothing: a caller's window only closes."""

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        pass


REQUEST = f.encode_headers(
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/m"), (b"te", b"trailers")]
)
# Mostly the streams a caller would open, in order, so sequences get past the first frame.
sids = st.one_of(st.sampled_from([1, 3, 5, 7]), st.integers(0, 13))
flags = st.sampled_from([0, f.END_STREAM, f.END_HEADERS, f.END_STREAM | f.END_HEADERS, f.PADDED])
opening = st.builds(
    lambda s, end: f.frame(f.HEADERS, f.END_HEADERS | end, s, REQUEST),
    st.sampled_from([1, 3, 5, 7, 9, 11]),
    st.sampled_from([0, f.END_STREAM]),
)
frames = st.one_of(
    opening,
    opening,
    st.builds(lambda s, fl: f.frame(f.HEADERS, fl, s, REQUEST), sids, flags),
    st.builds(lambda s, fl, n: f.frame(f.DATA, fl & ~f.PADDED, s, b"d" * n), sids, flags,
              st.integers(0, 40_000).map(lambda n: min(n, 16_384))),
    st.builds(lambda s, fl, b: f.frame(f.CONTINUATION, fl, s, b), sids, flags,
              st.sampled_from([b"", REQUEST[:3], REQUEST])),
    st.builds(lambda s, n: f.window_update(s, n), sids, st.integers(0, 1 << 31)),
    st.builds(lambda s, c: f.rst_stream(s, c), sids, st.integers(0, 13)),
    st.builds(lambda k, v: f.frame(f.SETTINGS, 0, 0, f.settings_payload([(k, v)])),
              st.integers(1, 6), st.integers(0, 1 << 31)),
    st.just(f.frame(f.SETTINGS, f.ACK, 0)),
    st.just(f.frame(f.PING, 0, 0, b"12345678")),
    st.builds(lambda s: f.frame(f.PRIORITY, 0, s, b"\x00\x00\x00\x01\x10"), sids),
    st.builds(lambda n: f.goaway(n, f.NO_ERROR), st.integers(0, 13)),
    st.binary(max_size=12).filter(lambda b: b[:1] != b"P"),
)  # fmt: skip


def check(conn: Connection, transport: Transport) -> None:
    parsed, _ = f.parse_frames(bytes(transport.out), f.MAX_FRAME_LIMIT)
    codes = [f.read_u32(x.payload, 4) for x in parsed if x.type == f.GOAWAY]
    assert f.INTERNAL_ERROR not in codes, "an exception escaped the protocol code"
    assert len(conn.streams) <= MAX_STREAMS
    assert conn.send_window.available <= f.MAX_WINDOW
    assert conn.recv_window.available >= 0
    for stream in conn.streams.values():
        assert stream.send.available <= f.MAX_WINDOW
        assert 0 <= stream.recv.available <= f.MAX_WINDOW


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=30), st.integers(1, 5))
def test_no_frame_sequence_breaks_the_connection_invariants(
    sequence: list[bytes], chunk: int
) -> None:
    flusher = NowFlusher()
    conn = Connection(
        flusher,
        Settings(max_concurrent_streams=MAX_STREAMS),
        client_side=False,
        limits=RelayLimits(max_resets_per_s=1.0, max_control_frames_per_s=1.0),
    )
    transport = Transport()
    opened: list[Stream] = []

    def open_stream(stream: Stream, headers: list[Header], end: bool) -> None:
        stream.handler = Echo()
        opened.append(stream)

    conn.on_new_stream = open_stream
    conn.connection_made(transport)
    start = f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST)
    start += f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 3, REQUEST)
    data = f.PREFACE + f.frame(f.SETTINGS, 0, 0) + start + b"".join(sequence)
    step = max(1, len(data) // chunk)
    for at in range(0, len(data), step):  # cut anywhere: frames span reads
        conn.data_received(data[at : at + step])
        flusher.flush()
        check(conn, transport)
        if transport.closed:
            break
    event(f"streams opened: {min(len(opened), 4)}+, open at the end: {len(conn.streams)}")


# ---- conformance: raw frames in, the RFC 9113 answer out --------------------------------

OPEN = f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST)
CONFORMANCE: dict[str, tuple[bytes, str, int]] = {
    "DATA on stream 0": (f.frame(f.DATA, 0, 0, b"x"), "goaway", f.PROTOCOL_ERROR),
    "HEADERS on an even stream": (f.frame(f.HEADERS, f.END_HEADERS, 2, REQUEST), "goaway",
                                  f.PROTOCOL_ERROR),
    "a stream id going down": (f.frame(f.HEADERS, f.END_HEADERS, 5, REQUEST) + OPEN, "goaway",
                               f.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0": (f.window_update(0, 0), "goaway", f.PROTOCOL_ERROR),
    "SETTINGS of 5 bytes": (f.frame(f.SETTINGS, 0, 0, b"\x00" * 5), "goaway",
                            f.FRAME_SIZE_ERROR),
    "SETTINGS ACK with a payload": (f.frame(f.SETTINGS, f.ACK, 0, b"\x00" * 6), "goaway",
                                    f.FRAME_SIZE_ERROR),
    "initial window past 2^31-1": (
        f.frame(f.SETTINGS, 0, 0, f.settings_payload([(f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)])),
        "goaway", f.FLOW_CONTROL_ERROR),
    "PING of 7 bytes": (f.frame(f.PING, 0, 0, b"1234567"), "goaway", f.FRAME_SIZE_ERROR),
    "PUSH_PROMISE from a client": (f.frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\x00" * 4),
                                   "goaway", f.PROTOCOL_ERROR),
    "a frame over SETTINGS_MAX_FRAME_SIZE": (f.frame(f.DATA, 0, 1, b"x" * 16_385), "goaway",
                                             f.FRAME_SIZE_ERROR),
    "CONTINUATION without HEADERS": (f.frame(f.CONTINUATION, f.END_HEADERS, 1, REQUEST),
                                     "goaway", f.PROTOCOL_ERROR),
    "a header block interrupted": (f.frame(f.HEADERS, 0, 1, REQUEST) + f.frame(f.PING, 0, 0,
                                   b"12345678"), "goaway", f.PROTOCOL_ERROR),
    "RST_STREAM on an idle stream": (f.rst_stream(9, f.CANCEL), "goaway", f.PROTOCOL_ERROR),
    "an undecodable header block": (f.frame(f.HEADERS, f.END_HEADERS, 1, b"\xff\xff\xff\xff"),
                                    "goaway", f.COMPRESSION_ERROR),
    "DATA past the stream window": (OPEN + f.frame(f.DATA, 0, 1, b"x" * 16_384) * 5, "goaway",
                                    f.FLOW_CONTROL_ERROR),
    "DATA after END_STREAM": (f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, REQUEST)
                              + f.frame(f.DATA, 0, 1, b"x"), "rst", f.STREAM_CLOSED),
    "HEADERS after END_STREAM": (f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, REQUEST)
                                 + f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST), "rst",
                                 f.STREAM_CLOSED),
    "a stream past SETTINGS_MAX_CONCURRENT_STREAMS": (
        b"".join(f.frame(f.HEADERS, f.END_HEADERS, s, REQUEST) for s in range(1, 20, 2)),
        "rst", f.REFUSED_STREAM),
}  # fmt: skip


@pytest.mark.parametrize(("sent", "answer", "code"), CONFORMANCE.values(), ids=CONFORMANCE.keys())
def test_conformance(sent: bytes, answer: str, code: int) -> None:
    flusher = NowFlusher()
    conn = Connection(flusher, Settings(max_concurrent_streams=MAX_STREAMS, stream_window=65_535),
                      client_side=False)  # fmt: skip
    transport = Transport()
    conn.on_new_stream = lambda stream, headers, end: setattr(stream, "handler", Silent())
    conn.connection_made(transport)
    transport.out.clear()
    conn.data_received(f.PREFACE + f.frame(f.SETTINGS, 0, 0) + sent)
    flusher.flush()
    parsed, _ = f.parse_frames(bytes(transport.out), f.MAX_FRAME_LIMIT)
    if answer == "goaway":
        assert [f.read_u32(x.payload, 4) for x in parsed if x.type == f.GOAWAY] == [code]
        assert transport.closed
    else:
        assert code in [f.read_u32(x.payload) for x in parsed if x.type == f.RST_STREAM]
        assert not transport.closed, "a stream error must not end the connection"
