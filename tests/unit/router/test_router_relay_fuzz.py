"""Fuzz the relay's sans-IO HTTP/2 core with hypothesis-made frame sequences, then raw-frame cases.

`H2Connection` is driven directly: bytes and a time in, events and bytes out,
no transport and no event loop. Whatever a peer sends, no exception escapes
(a protocol error is GOAWAY and `ConnectionTerminated`), the windows stay
within HTTP/2's bounds, every stream moves only forward through RFC 9113's
states, no stream is reported on after it was reset, what we write parses as
frames that never follow our own END_STREAM or RST_STREAM on a stream, and the
streams held never pass the advertised limit.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.frames import Settings
from router.relay.h2core import (
    Closure,
    ConnectionTerminated,
    DataReceived,
    H2Connection,
    H2Stream,
    HeadersReceived,
    RequestReceived,
    StreamReset,
    StreamState,
)
from router.relay.h2core.state import MAX_CLOSED_STREAMS
from router.relay.limits import RelayLimits

MAX_STREAMS = 8
ORDER = {
    StreamState.IDLE: 0,
    StreamState.OPEN: 1,
    StreamState.HALF_CLOSED_LOCAL: 2,
    StreamState.HALF_CLOSED_REMOTE: 2,
    StreamState.CLOSED: 3,
}
"""How far along RFC 9113 §5.1 a state is: a stream never goes back."""

REQUEST = f.encode_headers(
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/m"), (b"te", b"trailers")]
)
RESPONSE = f.encode_headers([(b":status", b"200")])
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


class Peer:
    """Drives one caller-side core as the relay would: answers, echoes, credits; and checks."""

    def __init__(self, stream_window: int = 1 << 20) -> None:
        self.core: H2Connection[H2Stream] = H2Connection(
            Settings(max_concurrent_streams=MAX_STREAMS, stream_window=stream_window),
            H2Stream,
            client_side=False,
            now=0.0,
            limits=RelayLimits(max_resets_per_s=1.0, max_control_frames_per_s=1.0),
        )
        self.core.initiate()
        self.out = bytearray()
        self.seen: dict[int, StreamState] = {}
        self.reset: set[int] = set()
        self.ended_by_us: set[int] = set()
        self.terminated = False
        self.failed = False
        self.opened = 0

    def feed(self, data: bytes, now: float) -> None:
        self.core.receive(data, now)  # nothing may escape: no transport to catch it here
        self.handle_events()
        self.out += self.core.data_to_send()

    def handle_events(self) -> None:
        core = self.core
        while core.events:
            events, core.events = core.events, []
            for item in events:
                self.check_event(item)
                if isinstance(item, RequestReceived):
                    self.opened += 1
                    core.send_headers(item.stream, RESPONSE, False)
                elif isinstance(item, DataReceived):
                    core.credit(item.stream, len(item.data))
                    core.send_data(item.stream, item.data, item.end)

    def check_event(self, item: object) -> None:
        assert not self.terminated, "an event after the connection was terminated"
        stream = getattr(item, "stream", None)
        if isinstance(stream, H2Stream):
            assert stream.id not in self.reset, f"stream {stream.id} reported on after its reset"
            if isinstance(item, StreamReset):
                self.reset.add(stream.id)
                assert stream.state is StreamState.CLOSED
            if isinstance(item, (RequestReceived, HeadersReceived, DataReceived)) and item.end:
                assert stream.remote_done, "END_STREAM received but the state says otherwise"
        if isinstance(item, ConnectionTerminated):
            self.terminated = True

    def check(self) -> None:
        core = self.core
        assert len(core.streams) <= MAX_STREAMS
        assert len(core.closed_streams) <= MAX_CLOSED_STREAMS
        assert core.send_window.available <= f.MAX_WINDOW
        assert 0 <= core.recv_window.available <= core.recv_window.size
        for sid, stream in core.streams.items():
            assert stream.id == sid
            assert sid % 2 == 1
            assert sid <= core.last_peer_stream
            assert stream.state is not StreamState.CLOSED, "a closed stream is still held"
            assert stream.send.available <= f.MAX_WINDOW
            assert 0 <= stream.recv.available <= f.MAX_WINDOW
        for sid, stream in core.streams.items():
            before = self.seen.get(sid, StreamState.IDLE)
            assert ORDER[stream.state] >= ORDER[before], f"stream {sid}: {before} → {stream.state}"
            self.seen[sid] = stream.state
        self.check_output()

    def check_output(self) -> None:
        parsed, used = f.parse_frames(bytes(self.out), f.MAX_FRAME_LIMIT)
        del self.out[:used]
        for item in parsed:
            assert not self.failed, "a frame after GOAWAY for an error"
            if item.type == f.GOAWAY:
                code = f.read_u32(item.payload, 4)
                assert code != f.INTERNAL_ERROR, "an exception escaped the protocol code"
                self.failed = code != f.NO_ERROR
            if not item.stream_id or item.type in (f.RST_STREAM, f.WINDOW_UPDATE):
                continue
            assert item.stream_id not in self.ended_by_us, "a frame after our END_STREAM"
            if item.flags & f.END_STREAM and item.type in (f.DATA, f.HEADERS):
                self.ended_by_us.add(item.stream_id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=30), st.integers(1, 5))
def test_no_frame_sequence_breaks_the_core_invariants(sequence: list[bytes], chunk: int) -> None:
    peer = Peer()
    start = f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST)
    start += f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 3, REQUEST)
    data = f.PREFACE + f.frame(f.SETTINGS, 0, 0) + start + b"".join(sequence)
    step = max(1, len(data) // chunk)
    for index, at in enumerate(range(0, len(data), step)):  # cut anywhere: frames span reads
        peer.feed(data[at : at + step], now=index * 0.01)
        peer.check()
        if peer.core.terminated:
            break
    event(f"streams opened: {min(peer.opened, 4)}+, open at the end: {len(peer.core.streams)}")


def test_closed_streams_are_remembered_only_up_to_the_bound() -> None:
    peer = Peer()
    peer.feed(f.PREFACE + f.frame(f.SETTINGS, 0, 0), now=0.0)
    ended = f.END_HEADERS | f.END_STREAM
    for sid in range(1, 2 * (MAX_CLOSED_STREAMS + 50), 2):  # each answered and closed at once
        peer.feed(f.frame(f.HEADERS, ended, sid, REQUEST), now=0.0)
        peer.core.send_headers(peer.core.streams[sid], RESPONSE, True)
    assert len(peer.core.closed_streams) == MAX_CLOSED_STREAMS
    assert not peer.core.streams
    assert peer.core.closed_streams.get(1) is None, "the oldest is forgotten"


# ---- conformance: raw frames in, the RFC 9113 answer out --------------------------------

OPEN = f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST)
ENDED = f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, REQUEST)
CONFORMANCE: dict[str, tuple[bytes, str, int]] = {
    "DATA on stream 0": (f.frame(f.DATA, 0, 0, b"x"), "goaway", f.PROTOCOL_ERROR),
    "HEADERS on an even stream": (f.frame(f.HEADERS, f.END_HEADERS, 2, REQUEST), "goaway",
                                  f.PROTOCOL_ERROR),
    "a stream id going down": (f.frame(f.HEADERS, f.END_HEADERS, 5, REQUEST) + OPEN, "goaway",
                               f.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0": (f.window_update(0, 0), "goaway", f.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0 on a stream": (OPEN + f.window_update(1, 0), "rst", f.PROTOCOL_ERROR),
    "WINDOW_UPDATE on an idle stream": (f.window_update(7, 1), "goaway", f.PROTOCOL_ERROR),
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
    "DATA after END_STREAM": (ENDED + f.frame(f.DATA, 0, 1, b"x"), "rst", f.STREAM_CLOSED),
    "HEADERS after END_STREAM": (ENDED + f.frame(f.HEADERS, f.END_HEADERS, 1, REQUEST), "rst",
                                 f.STREAM_CLOSED),
    "DATA after the peer's RST_STREAM": (OPEN + f.rst_stream(1, f.CANCEL)
                                         + f.frame(f.DATA, 0, 1, b"x"), "rst", f.STREAM_CLOSED),
    "a stream past SETTINGS_MAX_CONCURRENT_STREAMS": (
        b"".join(f.frame(f.HEADERS, f.END_HEADERS, s, REQUEST) for s in range(1, 20, 2)),
        "rst", f.REFUSED_STREAM),
}  # fmt: skip


def answers(sent: bytes) -> tuple[H2Connection[H2Stream], list[f.Frame]]:
    """A caller-side core that takes every request and answers nothing; what it wrote."""
    core: H2Connection[H2Stream] = H2Connection(
        Settings(max_concurrent_streams=MAX_STREAMS, stream_window=65_535),
        H2Stream,
        client_side=False,
        now=0.0,
    )
    core.initiate()
    core.data_to_send()
    core.receive(f.PREFACE + f.frame(f.SETTINGS, 0, 0) + sent, now=0.0)
    parsed, _ = f.parse_frames(core.data_to_send(), f.MAX_FRAME_LIMIT)
    return core, parsed


@pytest.mark.parametrize(("sent", "answer", "code"), CONFORMANCE.values(), ids=CONFORMANCE.keys())
def test_conformance(sent: bytes, answer: str, code: int) -> None:
    core, parsed = answers(sent)
    if answer == "goaway":
        assert [f.read_u32(x.payload, 4) for x in parsed if x.type == f.GOAWAY] == [code]
        assert core.terminated
        assert isinstance(core.events[-1], ConnectionTerminated)
    else:
        assert code in [f.read_u32(x.payload) for x in parsed if x.type == f.RST_STREAM]
        assert not core.terminated, "a stream error must not end the connection"


def test_data_on_a_stream_we_reset_is_ignored_but_counted_against_the_window() -> None:
    core, _ = answers(OPEN)
    core.reset(core.streams[1], f.CANCEL)
    core.data_to_send()
    core.receive(f.frame(f.DATA, 0, 1, b"x" * 1000), now=0.0)
    assert not [x for x in f.parse_frames(core.data_to_send(), f.MAX_FRAME_LIMIT)[0]
                if x.type in (f.RST_STREAM, f.GOAWAY)]  # fmt: skip
    window = core.recv_window
    assert (window.available, window.pending) == (window.size - 1000, 1000), "not credited back"
    assert not core.terminated


# ---- the state machine, step by step ------------------------------------------------------


def engine_core() -> H2Connection[H2Stream]:
    """Our side of a connection to an engine, past its SETTINGS."""
    core: H2Connection[H2Stream] = H2Connection(Settings(), H2Stream, client_side=True, now=0.0)
    core.initiate()
    core.receive(f.frame(f.SETTINGS, 0, 0), now=0.0)
    core.data_to_send()
    return core


def test_a_stream_moves_through_every_state_and_is_remembered_once_closed() -> None:
    core = engine_core()
    stream = core.open_stream()
    assert stream.state is StreamState.IDLE
    core.send_headers(stream, REQUEST, False)
    assert stream.state is StreamState.OPEN
    core.send_data(stream, b"x", True)
    assert stream.state is StreamState.HALF_CLOSED_LOCAL
    core.receive(f.frame(f.HEADERS, f.END_HEADERS, stream.id, RESPONSE), now=0.0)
    assert stream.state is StreamState.HALF_CLOSED_LOCAL
    trailers = f.encode_headers([(b"grpc-status", b"0")])
    core.receive(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, trailers), now=0.0)
    assert stream.state is StreamState.CLOSED
    assert stream.id not in core.streams
    assert core.closed_streams.get(stream.id) is Closure.ENDED
    core.data_to_send()
    core.receive(f.frame(f.DATA, 0, stream.id, b"late"), now=0.0)  # the engine broke the rules
    resets = [x for x in f.parse_frames(core.data_to_send(), f.MAX_FRAME_LIMIT)[0]
              if x.type == f.RST_STREAM]  # fmt: skip
    assert [(x.stream_id, f.read_u32(x.payload)) for x in resets] == [(stream.id, f.STREAM_CLOSED)]


def test_nothing_is_written_after_goaway_for_an_error() -> None:
    core = engine_core()
    stream = core.open_stream()
    core.send_headers(stream, REQUEST, False)
    core.data_to_send()
    core.receive(f.frame(f.DATA, 0, 0, b"x"), now=0.0)  # DATA on stream 0: a connection error
    assert core.terminated
    core.send_data(stream, b"more", True)
    core.credit(stream, 100)
    core.reset(stream, f.CANCEL)
    core.ping(1.0)
    parsed, _ = f.parse_frames(core.data_to_send(), f.MAX_FRAME_LIMIT)
    assert [x.type for x in parsed] == [f.GOAWAY]
