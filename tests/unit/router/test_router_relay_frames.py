"""The relay's HTTP/2 frame codec, literal HPACK encoding, flow control, and its gRPC rules.

Pure functions first (frames, windows, message prefixes, stream timers,
keepalive decisions); then one `Connection` driven with bytes through a fake
transport (no sockets) to check windows, queueing, protocol errors, keepalive
PINGs and the local health service end to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hpack import Decoder, Encoder
from hypothesis import given
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.connection import Connection, Flusher, Stream, StreamHandler
from router.relay.frames import ProtocolError, Settings
from router.relay.grpcwire import MessageMeter, message
from router.relay.h2core import RecvWindow, SendWindow
from router.relay.health import CHECK, HealthCall
from router.relay.upstream import Keepalive, UpstreamPool
from router.timers import FIRST_RESPONSE, IDLE, StreamTimeouts, stream_expired

# ---- frames ------------------------------------------------------------------


def test_frames_round_trip_and_a_partial_frame_waits() -> None:
    data = f.frame(f.HEADERS, f.END_HEADERS, 1, b"abc") + f.frame(f.DATA, f.END_STREAM, 1, b"x")
    parsed, used = f.parse_frames(data + b"\x00\x00\x05", f.DEFAULT_MAX_FRAME)
    assert parsed == [
        f.Frame(f.HEADERS, f.END_HEADERS, 1, b"abc"),
        f.Frame(f.DATA, f.END_STREAM, 1, b"x"),
    ]
    assert used == len(data)


def test_frame_header_encodes_24_bit_length_and_masks_reserved_bit() -> None:
    raw = f.frame(f.DATA, 0, 3, b"z" * 70_000)
    assert raw[:3] == (70_000).to_bytes(3, "big")
    reserved = raw[:5] + bytes([raw[5] | 0x80]) + raw[6:]
    parsed, _ = f.parse_frames(reserved, f.MAX_FRAME_LIMIT)
    assert parsed[0].stream_id == 3


def test_frame_larger_than_advertised_is_a_frame_size_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        f.parse_frames(f.frame(f.DATA, 0, 1, b"x" * 16_385), f.DEFAULT_MAX_FRAME)
    assert caught.value.code == f.FRAME_SIZE_ERROR


def test_padding_and_priority_are_stripped() -> None:
    padded = bytes([3]) + b"body" + b"\x00\x00\x00"
    assert f.strip_padding(padded, f.PADDED, f.DATA) == b"body"
    with_priority = b"\x00\x00\x00\x01\x10" + b"block"
    assert f.strip_padding(with_priority, f.PRIORITY_FLAG, f.HEADERS) == b"block"
    with pytest.raises(ProtocolError):
        f.strip_padding(bytes([9]) + b"ab", f.PADDED, f.DATA)


def test_settings_payload_must_be_a_multiple_of_six() -> None:
    payload = f.settings_payload([(f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)])
    assert list(f.parse_settings(payload)) == [(f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]
    with pytest.raises(ProtocolError):
        list(f.parse_settings(payload + b"\x00"))


# ---- HPACK ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"),
    [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a"), (31, 5, b"\x1f\x00")],
)
def test_hpack_integers_match_rfc_7541(value: int, prefix: int, encoded: bytes) -> None:
    assert f.hpack_int(value, prefix) == encoded


@given(
    st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=300).map(lambda b: b.lower()),
            st.binary(max_size=600),
        ),
        max_size=12,
    )
)
def test_literal_block_decodes_to_the_same_headers_and_no_table(
    headers: list[tuple[bytes, bytes]],
) -> None:
    decoder = Decoder()
    block = f.encode_headers(headers)
    assert decoder.decode(block, raw=True) == headers
    assert len(decoder.header_table.dynamic_entries) == 0


def test_literal_encoding_is_stateless_across_decoders() -> None:
    block = f.encode_headers([(b":path", b"/a.B/C"), (b"x-tidepool-alias", b"zh")])
    first, second = Decoder(), Decoder()
    second.decode(Encoder().encode([("x-tidepool-alias", "other")]))  # a table in use
    assert first.decode(block, raw=True) == second.decode(block, raw=True)


# ---- gRPC values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(b"100m", 0.1), (b"5S", 5.0), (b"2M", 120.0), (b"1H", 3600.0), (b"250u", 250e-6)],
)
def test_grpc_timeout_parses(text: bytes, seconds: float) -> None:
    assert f.parse_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [b"", b"S", b"10x", b"123456789S", b"-1S", b"1.5S"])
def test_malformed_grpc_timeout_is_none(bad: bytes) -> None:
    assert f.parse_grpc_timeout(bad) is None


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_formatted_timeout_never_shortens_the_deadline(seconds: float) -> None:
    text = f.format_grpc_timeout(seconds)
    parsed = f.parse_grpc_timeout(text)
    assert parsed is not None
    assert parsed >= seconds * (1 - 1e-12)
    assert len(text) <= 9


def test_grpc_message_is_percent_encoded() -> None:
    assert f.grpc_message("ok: 100% 'zh' é") == b"ok: 100%25 'zh' %C3%A9"


# ---- windows -------------------------------------------------------------------


def test_send_window_grows_by_updates_and_refuses_overflow() -> None:
    window = SendWindow(65_535)
    window.grant(10)
    assert window.available == 65_545
    with pytest.raises(ProtocolError) as caught:
        window.grant(f.MAX_WINDOW)
    assert caught.value.code == f.FLOW_CONTROL_ERROR
    window.adjust(-70_000)  # a smaller SETTINGS_INITIAL_WINDOW_SIZE may make it negative
    assert window.available == -4_455


def test_recv_window_credits_back_in_batches_only_what_was_passed_on() -> None:
    window = RecvWindow(1000, threshold=400)
    window.receive(700)
    assert window.available == 300
    assert window.release(300) == 0  # not yet worth a frame
    assert window.release(100) == 400
    assert window.available == 700
    with pytest.raises(ProtocolError) as caught:
        window.receive(701)
    assert caught.value.code == f.FLOW_CONTROL_ERROR


# ---- gRPC message prefixes ---------------------------------------------------------


@given(
    sizes=st.lists(st.integers(0, 300), max_size=6),
    cut=st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
def test_meter_follows_messages_cut_anywhere_and_passes_those_within_the_limit(
    sizes: list[int], cut: list[int]
) -> None:
    stream = b"".join(message(b"m" * size) for size in sizes)
    meter = MessageMeter(300)
    pos, index = 0, 0
    while pos < len(stream):
        step = cut[index % len(cut)]
        assert meter.feed(stream[pos : pos + step]) is None
        pos, index = pos + step, index + 1
    assert (meter.left, meter.partial) == (0, b"")  # at a boundary after the last one


@pytest.mark.parametrize("cut", [1, 3, 5, 6, 1000])
def test_meter_names_the_first_message_over_the_limit_wherever_its_prefix_is_cut(
    cut: int,
) -> None:
    stream = message(b"a" * 10) + message(b"b" * 101) + message(b"c")
    meter = MessageMeter(100)
    found = [meter.feed(stream[pos : pos + cut]) for pos in range(0, len(stream), cut)]
    assert next(length for length in found if length is not None) == 101


# ---- stream timers and keepalive decisions -----------------------------------------

TIMERS = StreamTimeouts(first_response_s=2.0, idle_s=5.0)


@pytest.mark.parametrize(
    ("spoke", "answered", "silence", "verdict"),
    [
        (False, False, 4.9, None),  # nothing sent yet: only the idle timer runs
        (False, False, 5.0, (IDLE, 5.0)),
        (True, False, 1.9, None),
        (True, False, 2.0, (FIRST_RESPONSE, 2.0)),  # the caller spoke, the engine did not
        (True, True, 4.0, None),  # answered: back to the idle timer
        (True, True, 5.0, (IDLE, 5.0)),
        (False, True, 5.0, (IDLE, 5.0)),  # the engine spoke first
    ],
)
def test_stream_timer_that_runs_depends_on_who_spoke(
    spoke: bool, answered: bool, silence: float, verdict: tuple[str, float] | None
) -> None:
    assert stream_expired(100.0 + silence, 100.0, spoke, answered, TIMERS) == verdict


def test_keepalive_pings_silent_connections_and_drops_one_without_ack() -> None:
    keepalive = Keepalive(interval_s=10.0, timeout_s=5.0)
    assert keepalive.action(19.9, 10.0, None, idle=True) is None
    assert keepalive.action(20.0, 10.0, None, idle=True) == "ping"
    # Busy connections: see tests/unit/router/test_router_relay_ping.py.
    assert keepalive.action(60.0, 10.0, None, idle=False, busy_pings=2) is None
    assert keepalive.action(24.9, 10.0, 20.0, idle=True) is None
    assert keepalive.action(25.0, 10.0, 20.0, idle=True) == "drop"


# ---- one connection, bytes in and out --------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high

    def get_write_buffer_size(self) -> int:
        return 0  # the kernel took it all

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def frames(self) -> list[f.Frame]:
        parsed, used = f.parse_frames(bytes(self.out), f.MAX_FRAME_LIMIT)
        assert used == len(self.out)
        self.out.clear()
        return parsed


class Recorder(StreamHandler):
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.resets: list[tuple[int, bool]] = []

    def on_headers(self, stream: Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        pass

    def on_sent(self, stream: Stream, length: int) -> None:
        self.sent.append(length)

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        self.resets.append((code, unprocessed))


def upstream() -> tuple[Connection, FakeTransport]:
    conn = Connection(Flusher(), Settings(), client_side=True)
    transport = FakeTransport()
    conn.connection_made(transport)
    assert transport.out.startswith(f.PREFACE)
    transport.out = transport.out[len(f.PREFACE) :]
    transport.frames()
    return conn, transport


async def test_data_waits_for_window_and_reports_what_was_written() -> None:
    conn, transport = upstream()
    conn.data_received(f.frame(f.SETTINGS, 0, 0, f.settings_payload([(4, 100)])))
    recorder = Recorder()
    stream = conn.open_stream(recorder)
    conn.send_data(stream, b"a" * 250, True)
    conn.flush()
    sent = [fr for fr in transport.frames() if fr.type == f.DATA]
    assert [len(fr.payload) for fr in sent] == [100]
    assert recorder.sent == [100]
    conn.data_received(f.window_update(stream.id, 1000))
    conn.flush()
    rest = [fr for fr in transport.frames() if fr.type == f.DATA]
    assert [(len(fr.payload), fr.flags) for fr in rest] == [(150, f.END_STREAM)]
    assert recorder.sent == [100, 150]


async def test_goaway_hands_back_unprocessed_streams_as_retryable() -> None:
    conn, _ = upstream()
    first, second = Recorder(), Recorder()
    conn.open_stream(first)
    conn.open_stream(second)
    conn.data_received(f.goaway(1, f.NO_ERROR))
    assert (first.resets, second.resets) == ([], [(f.REFUSED_STREAM, True)])
    assert not conn.accepting


async def test_data_past_our_window_is_a_flow_control_error() -> None:
    conn = Connection(Flusher(), Settings(stream_window=100),
                      client_side=False)  # fmt: skip
    transport = FakeTransport()
    conn.connection_made(transport)
    opened: list[Stream] = []
    conn.on_new_stream = lambda stream, headers, end: opened.append(stream)
    block = f.encode_headers([(b":path", b"/s/m")])
    conn.data_received(
        f.PREFACE + f.frame(f.SETTINGS, 0, 0) + f.frame(f.HEADERS, f.END_HEADERS, 1, block)
    )
    assert len(opened) == 1
    transport.frames()
    conn.data_received(f.frame(f.DATA, 0, 1, b"x" * 101))
    goaways = [fr for fr in transport.frames() if fr.type == f.GOAWAY]
    assert f.read_u32(goaways[0].payload, 4) == f.FLOW_CONTROL_ERROR
    assert transport.closed


async def test_bad_preface_closes_the_connection() -> None:
    conn = Connection(Flusher(), Settings(), client_side=False)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.closed


async def test_a_full_connection_takes_no_new_stream() -> None:
    conn, _ = upstream()
    conn.data_received(f.frame(f.SETTINGS, 0, 0, f.settings_payload([(3, 1)])))
    assert conn.accepting
    conn.open_stream(Recorder())
    assert not conn.accepting  # the pool opens a second connection to the engine


async def test_long_header_block_is_split_into_continuations() -> None:
    block = b"h" * 40_000
    out = f.header_frames(5, block, True, f.DEFAULT_MAX_FRAME)
    parsed, _ = f.parse_frames(b"".join(out), f.DEFAULT_MAX_FRAME)
    assert [(fr.type, fr.flags) for fr in parsed] == [
        (f.HEADERS, f.END_STREAM),
        (f.CONTINUATION, 0),
        (f.CONTINUATION, f.END_HEADERS),
    ]
    assert b"".join(fr.payload for fr in parsed) == block


async def test_keepalive_pings_an_idle_connection_and_drops_it_without_an_ack() -> None:
    pool = UpstreamPool(Flusher(), Settings(), Keepalive(interval_s=10.0, timeout_s=5.0))
    conn, transport = upstream()
    conn.core.last_received = 100.0
    pool.keep_alive(conn, 110.0)
    conn.flush()
    (ping,) = transport.frames()
    assert (ping.type, ping.flags, ping.payload) == (f.PING, 0, f.KEEPALIVE_PING)
    conn.data_received(f.frame(f.PING, f.ACK, 0, f.KEEPALIVE_PING))
    pool.keep_alive(conn, 116.0)
    assert not transport.closed, "the ACK came back: the engine is there"
    conn.core.last_received = 100.0
    pool.keep_alive(conn, 120.0)
    pool.keep_alive(conn, 125.0)
    assert transport.closed


def health_request(conn: Connection, transport: FakeTransport, path: bytes, body: bytes) -> Any:
    """Send one health call on a server-side connection; its (headers, messages) frames."""
    opened: list[Stream] = []
    conn.on_new_stream = lambda stream, headers, end: opened.append(stream)
    block = f.encode_headers([(b":path", path)])
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, block))
    HealthCall(opened[0], path, lambda: True).start(False)
    conn.data_received(f.frame(f.DATA, f.END_STREAM, 1, body))
    conn.flush()
    decoder = Decoder()
    frames = [fr for fr in transport.frames() if fr.stream_id == 1]
    blocks = [dict(decoder.decode(fr.payload, raw=True)) for fr in frames if fr.type == f.HEADERS]
    return blocks, [fr.payload for fr in frames if fr.type == f.DATA]


async def test_health_check_is_answered_by_the_relay_itself() -> None:
    conn = Connection(Flusher(), Settings(), client_side=False)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(f.PREFACE + f.frame(f.SETTINGS, 0, 0))
    transport.frames()
    request = message(health_pb2.HealthCheckRequest(service="").SerializeToString())
    blocks, messages = health_request(conn, transport, CHECK, request)
    assert blocks[-1][b"grpc-status"] == b"0"
    answer = health_pb2.HealthCheckResponse.FromString(messages[0][5:])
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_watch_is_unimplemented() -> None:
    conn = Connection(Flusher(), Settings(), client_side=False)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(f.PREFACE + f.frame(f.SETTINGS, 0, 0))
    transport.frames()
    request = message(health_pb2.HealthCheckRequest(service="").SerializeToString())
    blocks, messages = health_request(conn, transport, b"/grpc.health.v1.Health/Watch", request)
    code = str(grpc.StatusCode.UNIMPLEMENTED.value[0]).encode()
    assert (blocks[-1][b"grpc-status"], messages) == (code, [])
