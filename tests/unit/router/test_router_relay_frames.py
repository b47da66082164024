"""The relay's HTTP/2 frame codec, literal HPACK encoding and flow-control arithmetic.

Pure functions first; then one `Connection` driven with bytes through a fake
transport (no sockets) to check windows, queueing and protocol errors end to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hpack import Decoder, Encoder
from hypothesis import given
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.connection import Connection, Flusher, Stream
from router.relay.frames import ProtocolError, RecvWindow, SendWindow, Settings

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


# ---- one connection, bytes in and out --------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[f.Frame]:
        parsed, used = f.parse_frames(bytes(self.out), f.MAX_FRAME_LIMIT)
        assert used == len(self.out)
        self.out.clear()
        return parsed


class Recorder:
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
    conn.data_received(f.PREFACE + f.frame(f.HEADERS, f.END_HEADERS, 1, block))
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
