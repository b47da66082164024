"""The relay's per-peer budgets on one `Connection` driven with bytes (no sockets), and the rules.

Rate budgets, request validation, and the flow-control decoupling: an engine
connection returns its connection window as DATA arrives, a caller connection
whose transport is full stops feeding (and so crediting) its streams, and
floods of resets or control frames end the connection with ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.connection import Connection, Flusher, Stream, StreamHandler
from router.relay.frames import Header, Settings
from router.relay.grpcwire import check_request, check_trailers
from router.relay.h2core import RecvWindow
from router.relay.limits import BURST_S, RateBudget, RelayLimits

MiB = 1 << 20


class BufferingTransport(asyncio.Transport):
    """A transport whose kernel takes nothing: writes stay buffered, with pause/resume."""

    def __init__(self, protocol: Connection) -> None:
        super().__init__()
        self.protocol = protocol
        self.buffered = bytearray()
        self.high = 64 * 1024
        self.paused = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.buffered += data
        if not self.paused and len(self.buffered) > self.high:
            self.paused = True
            self.protocol.pause_writing()

    def take(self) -> list[f.Frame]:
        """The peer reads everything: frames out, buffer empty, writing resumed."""
        parsed, used = f.parse_frames(bytes(self.buffered), f.MAX_FRAME_LIMIT)
        del self.buffered[:used]
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        return parsed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high

    def get_write_buffer_size(self) -> int:
        return len(self.buffered)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Recorder(StreamHandler):
    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.resets: list[int] = []

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        pass

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        self.received += len(data)  # never handed on: the caller is stalled

    def on_sent(self, stream: Stream, length: int) -> None:
        self.sent += length

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        self.resets.append(code)


def caller_side(limits: RelayLimits) -> tuple[Connection, BufferingTransport, list[str]]:
    refused: list[str] = []
    conn = Connection(
        Flusher(), Settings(), client_side=False, limits=limits, on_refused=refused.append
    )
    transport = BufferingTransport(conn)
    conn.connection_made(transport)
    conn.data_received(f.PREFACE + f.frame(f.SETTINGS, 0, 0))
    transport.take()
    return conn, transport, refused


def engine_side(limits: RelayLimits | None = None) -> tuple[Connection, BufferingTransport]:
    conn = Connection(Flusher(), Settings(), client_side=True, limits=limits)
    transport = BufferingTransport(conn)
    conn.connection_made(transport)
    transport.buffered.clear()
    return conn, transport


def goaway_code(frames: list[f.Frame]) -> int | None:
    codes = [f.read_u32(x.payload, 4) for x in frames if x.type == f.GOAWAY]
    return codes[0] if codes else None


# ---- rate budgets ----------------------------------------------------------------


def test_a_rate_budget_takes_a_burst_then_refuses_then_refills() -> None:
    budget = RateBudget(10.0, now=0.0)
    assert all(budget.spend(0.0) for _ in range(int(10 * BURST_S)))
    assert not budget.spend(0.0)
    assert budget.spend(0.1)  # one token back after 1/rate seconds
    assert not budget.spend(0.1)


@given(st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=300))
def test_a_rate_budget_never_allows_more_than_burst_plus_rate_times_time(gaps: list[float]) -> None:
    budget = RateBudget(5.0, now=0.0)
    now = allowed = 0.0
    for gap in gaps:
        now += gap
        allowed += budget.spend(now)
    assert allowed <= 5.0 * BURST_S + 5.0 * now + 1e-9


# ---- 1: an engine connection is never frozen by one stalled caller ----------------


async def test_an_engine_connection_returns_window_on_receipt_though_no_caller_takes_it() -> None:
    conn, transport = engine_side()
    streams = [conn.open_stream(Recorder()) for _ in range(10)]
    for stream in streams:  # 10 MiB that no caller takes: more than half the 16 MiB window
        for _ in range(64):
            conn.data_received(f.frame(f.DATA, 0, stream.id, b"x" * 16_384))
    conn.flush()
    updates = [x for x in transport.take() if x.type == f.WINDOW_UPDATE]
    assert sum(f.read_u32(x.payload) for x in updates if x.stream_id == 0) >= 8 * MiB
    assert not [x for x in updates if x.stream_id], "stream windows wait for the caller"


# ---- 2: a caller that does not read is not fed ------------------------------------


async def test_a_caller_whose_transport_is_full_is_not_fed_and_its_engine_not_credited() -> None:
    conn, transport, _ = caller_side(RelayLimits(connection_buffer_bytes=64 * 1024))
    conn.data_received(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
    conn.data_received(f.frame(f.SETTINGS, 0, 0, f.settings_payload([(4, f.MAX_WINDOW)])))
    block = f.encode_headers([(b":path", b"/s/m")])
    opened: list[Stream] = []
    conn.on_new_stream = lambda stream, headers, end: opened.append(stream)
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, block))
    stream = opened[0]
    recorder = Recorder()
    stream.handler = recorder
    for _ in range(16):  # 16 MiB of answers for a caller that reads nothing
        conn.send_data(stream, b"y" * MiB, False)
        conn.flush()
    assert transport.get_write_buffer_size() <= 2 * 64 * 1024 + f.DEFAULT_MAX_FRAME
    assert recorder.sent <= 2 * 64 * 1024, "bytes the caller never took were credited upstream"
    while transport.take():  # the caller reads: everything flows again, in order
        conn.flush()
    assert recorder.sent == 16 * MiB


async def test_a_peer_that_only_talks_and_never_reads_is_dropped() -> None:
    limits = RelayLimits(connection_buffer_bytes=65_536, max_control_frames_per_s=1e6)
    conn, transport, refused = caller_side(limits)
    pings = f.frame(f.PING, 0, 0, b"12345678") * 1000
    for _ in range(30):  # each PING's ACK piles up unread
        conn.data_received(pings)
        if transport.closed:
            break
    assert transport.closed
    assert refused == ["slow_reader"]


# ---- 3, 4: floods ------------------------------------------------------------------


async def test_rapid_reset_past_the_budget_is_goaway_enhance_your_calm() -> None:
    conn, transport, refused = caller_side(RelayLimits(max_resets_per_s=1.0))
    block = f.encode_headers([(b":path", b"/s/m")])
    conn.on_new_stream = lambda stream, headers, end: None
    flood = b"".join(
        f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, block) + f.rst_stream(sid, f.CANCEL)
        for sid in range(1, 2 * int(BURST_S) + 5, 2)
    )
    conn.data_received(flood)
    assert goaway_code(transport.take()) == f.ENHANCE_YOUR_CALM
    assert transport.closed
    assert refused == ["rapid_reset"]


@pytest.mark.parametrize(
    "flood",
    [
        f.frame(f.PING, 0, 0, b"12345678"),
        f.frame(f.SETTINGS, 0, 0),
        f.frame(f.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"),
    ],
    ids=["ping", "settings", "priority"],
)
async def test_a_control_frame_flood_is_goaway_enhance_your_calm(flood: bytes) -> None:
    conn, transport, refused = caller_side(RelayLimits(max_control_frames_per_s=2.0))
    conn.data_received(flood * (2 * int(BURST_S) + 1))
    assert goaway_code(transport.take()) == f.ENHANCE_YOUR_CALM
    assert refused == ["control_flood"]


async def test_an_empty_continuation_flood_is_goaway_enhance_your_calm() -> None:
    conn, transport, refused = caller_side(RelayLimits(max_control_frames_per_s=2.0))
    block = f.encode_headers([(b":path", b"/s/m")])
    empty = f.frame(f.CONTINUATION, 0, 1, b"")
    conn.data_received(f.frame(f.HEADERS, 0, 1, block) + empty * (2 * int(BURST_S) + 1))
    assert goaway_code(transport.take()) == f.ENHANCE_YOUR_CALM
    assert refused == ["control_flood"]


async def test_the_first_frame_after_the_preface_must_be_settings() -> None:
    conn = Connection(Flusher(), Settings(), client_side=False)
    transport = BufferingTransport(conn)
    conn.connection_made(transport)
    conn.data_received(f.PREFACE + f.frame(f.PING, 0, 0, b"12345678"))
    assert goaway_code(transport.take()) == f.PROTOCOL_ERROR
    assert not conn.core.handshaken


# ---- 6: validation -------------------------------------------------------------------

GOOD: list[Header] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/pkg.Service/Method"),
    (b":authority", b"router"),
    (b"content-type", b"application/grpc+proto"),
    (b"te", b"trailers"),
    (b"x-tidepool-alias", b"echo"),
]


def test_a_well_formed_grpc_request_passes() -> None:
    assert check_request(GOOD) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([*GOOD, (b"X-Upper", b"1")], "malformed"),
        ([*GOOD[:5], (b"te", b"gzip")], "malformed"),
        ([*GOOD, (b"connection", b"close")], "malformed"),
        ([*GOOD, (b"transfer-encoding", b"chunked")], "malformed"),
        ([*GOOD, (b":authority", b"again")], "malformed"),
        ([(b":status", b"200"), *GOOD], "malformed"),
        ([h for h in GOOD if h[0] != b":scheme"], "malformed"),
        ([(b":method", b"GET"), *GOOD[1:]], "malformed"),
        ([h for h in GOOD if h[0] != b"content-type"], "content_type"),
        ([*GOOD[:4], (b"content-type", b"application/grpcx")], "content_type"),
        ([*GOOD[:4], (b"content-type", b"text/plain")], "content_type"),
    ],
)
def test_a_malformed_or_non_grpc_request_is_refused(headers: list[Header], reason: str) -> None:
    problem = check_request(headers)
    assert problem is not None
    assert problem[0] == reason


def test_pseudo_headers_and_uppercase_names_are_not_allowed_in_trailers() -> None:
    assert check_trailers([(b"x-checksum", b"1")]) is None
    assert check_trailers([(b":path", b"/x")]) is not None
    assert check_trailers([(b"X-Checksum", b"1")]) is not None


async def test_data_after_end_stream_is_a_stream_closed_error_not_a_connection_error() -> None:
    conn, transport, refused = caller_side(RelayLimits())
    block = f.encode_headers([(b":path", b"/s/m")])
    opened: list[Stream] = []
    conn.on_new_stream = lambda stream, headers, end: opened.append(stream)
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, block))
    recorder = Recorder()
    opened[0].handler = recorder
    conn.data_received(f.frame(f.DATA, 0, 1, b"late"))
    conn.flush()
    resets = [f.read_u32(x.payload) for x in transport.take() if x.type == f.RST_STREAM]
    assert resets == [f.STREAM_CLOSED]
    assert recorder.resets == [f.STREAM_CLOSED]
    assert refused == ["stream_closed"]
    assert not transport.closed


# ---- more engine connections when streams pile up ----------------------------------


async def test_an_engine_connection_takes_at_most_its_share_of_streams() -> None:
    conn, _ = engine_side(RelayLimits(engine_streams_per_connection=2))
    conn.open_stream(Recorder())
    assert conn.accepting
    conn.open_stream(Recorder())
    assert not conn.accepting  # the pool opens another connection to the engine


def test_a_window_grows_only_as_its_bytes_are_taken_and_never_past_the_cap() -> None:
    window = RecvWindow(64 * 1024)
    window.receive(64 * 1024)
    assert window.release(16 * 1024, grow_to=MiB) == 0  # below the batch: nothing yet
    increment = window.release(16 * 1024, grow_to=MiB)
    assert increment == 32 * 1024 + 64 * 1024  # the batch, and the window doubled
    assert window.size == 128 * 1024
    for _ in range(20):
        window.receive(window.available)
        window.release(window.size, grow_to=MiB)
    assert window.size == MiB
    assert window.available == MiB
