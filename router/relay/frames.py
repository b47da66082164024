"""HTTP/2 framing for the relay: frame codec, settings, stateless HPACK encoding, gRPC values.

Pure code, no I/O, so the byte-level rules can be tested on their own (the
windows are in `h2core.flow`). Why the encoder only writes literals "without
indexing": it keeps no dynamic table, so one encoder serves every connection
and never has to follow a peer's SETTINGS_HEADER_TABLE_SIZE; the cost (a few
more bytes per header) is small next to a gRPC message, and each header pair's
encoding is cached.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

try:
    from mypy_extensions import mypyc_attr as mypyc_attr  # re-exported: `stream` uses it too
except ImportError:  # the pure build runs without mypy; compiled, mypyc drops the decorator

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls


PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER: Final = struct.Struct(">HBBBL")
"""A frame header: 24-bit length (as 16 + 8), type, flags, stream id."""
HEADER_SIZE: Final = 9

# Frame types (RFC 9113 §6).
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (RFC 9113 §7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings identifiers.
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

KEEPALIVE_PING: Final = b"tidepool"
"""The opaque 8 bytes of our keepalive PINGs."""
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME: Final = 16_384
MAX_FRAME_LIMIT: Final = (1 << 24) - 1
MAX_WINDOW: Final = (1 << 31) - 1
MAX_STREAM_ID: Final = (1 << 31) - 1

_U32: Final = struct.Struct(">L")
_SETTING: Final = struct.Struct(">HL")


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY(`code`)."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        """A refusal reason (`router.metrics.REFUSAL_REASONS`) when a per-peer budget ran out."""


class Frame(NamedTuple):
    type: int
    flags: int
    stream_id: int
    payload: bytes


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    n = len(payload)
    return HEADER.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def data_header(length: int, flags: int, stream_id: int) -> bytes:
    """The header of a DATA frame whose payload is written separately (no copy)."""
    return HEADER.pack(length >> 8, length & 0xFF, DATA, flags, stream_id)


def parse_frames(buffer: bytes, max_frame_size: int) -> tuple[list[Frame], int]:
    """The complete frames at the start of `buffer` and how many bytes they used.

    A frame longer than `max_frame_size` (what we advertised) is a connection
    error: waiting for the rest of it would let a peer make us buffer 16 MiB.
    The core (`h2core.connection`) runs the same loop inline, with no tuple per frame.
    """
    frames: list[Frame] = []
    pos = 0
    end = len(buffer)
    while end - pos >= HEADER_SIZE:
        hi, lo, kind, flags, stream_id = HEADER.unpack_from(buffer, pos)
        length = (hi << 8) | lo
        if length > max_frame_size:
            raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes > {max_frame_size}")
        stop = pos + HEADER_SIZE + length
        if stop > end:
            break
        frames.append(Frame(kind, flags, stream_id & MAX_STREAM_ID, buffer[pos + 9 : stop]))
        pos = stop
    return frames, pos


def after_preface(buffer: bytes) -> bytes | None:
    """`buffer` past a client's connection preface; None while it is not all here yet."""
    if len(buffer) < len(PREFACE):
        if not PREFACE.startswith(buffer):
            raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 preface")
        return None
    if not buffer.startswith(PREFACE):
        raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 preface")
    return buffer[len(PREFACE) :]


def costs_work(kind: int, flags: int, payload: bytes) -> bool:
    """A frame that asks work of us without carrying a request: what a flood is made of."""
    if kind in (SETTINGS, PING):
        return not flags & ACK
    if kind == PRIORITY:
        return True
    if kind == DATA:
        return not payload and not flags & END_STREAM
    if kind == CONTINUATION:
        return not payload and not flags & END_HEADERS
    return False


def strip_padding(payload: bytes, flags: int, kind: int) -> bytes:
    """A DATA or HEADERS payload without its padding and priority fields."""
    start = 0
    stop = len(payload)
    if flags & PADDED:
        if stop < 1 or payload[0] >= stop:
            raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
        stop -= payload[0]
        start = 1
    if kind == HEADERS and flags & PRIORITY_FLAG:
        start += 5
        if start > stop:
            raise ProtocolError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
    return payload if start == 0 and stop == len(payload) else payload[start:stop]


def settings_payload(settings: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(_SETTING.pack(k, v) for k, v in settings)


def parse_settings(payload: bytes) -> Iterator[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
    for offset in range(0, len(payload), 6):
        yield _SETTING.unpack_from(payload, offset)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def read_u32(payload: bytes, offset: int = 0) -> int:
    """The big-endian u32 at `offset` (the caller checked the length). Byte by byte:
    native integer work once compiled, where struct would box a tuple and an int."""
    return (
        (payload[offset] << 24)
        | (payload[offset + 1] << 16)
        | (payload[offset + 2] << 8)
        | payload[offset + 3]
    )


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, u32(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, u32(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, u32(last_stream_id) + u32(code) + debug)


def header_frames(stream_id: int, block: bytes, end: bool, max_frame: int) -> list[bytes]:
    """A header block as HEADERS plus CONTINUATION frames of at most `max_frame` bytes."""
    flags = END_STREAM if end else 0
    if len(block) <= max_frame:
        return [frame(HEADERS, flags | END_HEADERS, stream_id, block)]
    out = [frame(HEADERS, flags, stream_id, block[:max_frame])]
    for start in range(max_frame, len(block), max_frame):
        last = start + max_frame >= len(block)
        chunk = block[start : start + max_frame]
        out.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))
    return out


@dataclass(frozen=True)
class Settings:
    """What we let a peer do on one connection."""

    max_concurrent_streams: int = 1000
    stream_window: int = 1 << 20
    """Bytes a peer may send on one stream before we hand them on (the backpressure)."""
    connection_window: int = 16 << 20
    max_frame_size: int = DEFAULT_MAX_FRAME
    max_header_list_size: int = 64 << 10

    def frames(self, client_side: bool) -> list[bytes]:
        """Our SETTINGS and the connection WINDOW_UPDATE that opens its window."""
        ours = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
            (SETTINGS_MAX_FRAME_SIZE, self.max_frame_size),
            (SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        if client_side:
            ours.append((SETTINGS_ENABLE_PUSH, 0))
        out = [frame(SETTINGS, 0, 0, settings_payload(ours))]
        if self.connection_window > DEFAULT_WINDOW:  # it starts at 64 KiB and only grows
            out.append(window_update(0, self.connection_window - DEFAULT_WINDOW))
        return out


class PeerSettings:
    """The limits a peer's SETTINGS put on what we send it."""

    __slots__ = ("initial_window", "max_frame", "max_streams")

    def __init__(self) -> None:
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = DEFAULT_MAX_FRAME
        self.max_streams = 1 << 31

    def apply(self, payload: bytes) -> int:
        """Apply one SETTINGS frame; the change of the initial stream window."""
        delta = 0
        for key, value in parse_settings(payload):
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window past 2^31-1")
                delta += value - self.initial_window
                self.initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
                    raise ProtocolError(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.max_frame = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise ProtocolError(PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
        return delta


# ---- HPACK: literal encoding -------------------------------------------------

Header = tuple[bytes, bytes]
_CACHE_LIMIT: Final = 4096
_cache: dict[Header, bytes] = {}


@mypyc_attr(native_class=False)  # a list subclass cannot be a native class
class HeaderList(list[Header]):
    """A decoded header list that comes back whenever its block repeats (the HPACK
    decoder's block cache, `h2core.hpack_decoder`), so what is derived from it is
    worked out once and kept in `memo` (its encoding here, the parsed request in
    `grpcwire`). Read-only by convention: every call that sent the block shares it."""

    __slots__ = ("memo",)

    def __init__(self, headers: Iterable[Header] = ()) -> None:
        super().__init__(headers)
        self.memo: dict[str, object] = {}


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) in a `prefix_bits` prefix, OR-ed with `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_header(name: bytes, value: bytes) -> bytes:
    """One header as a literal without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


_TIMEOUT_FIELD: Final = encode_header(b"grpc-timeout", b"")[:-1]
"""A grpc-timeout field up to its value's length (a value is at most 9 bytes: one length byte)."""


def grpc_timeout_field(seconds: float) -> bytes:
    """The grpc-timeout header field for `seconds`, encoded (see `format_grpc_timeout`)."""
    value = format_grpc_timeout(seconds)
    return b"%s%c%s" % (_TIMEOUT_FIELD, len(value), value)


def encode_headers(headers: Iterable[Header]) -> bytes:
    """A header block that leaves every HPACK dynamic table untouched."""
    if type(headers) is HeaderList:
        block = headers.memo.get("encoded")
        if block is None:
            block = headers.memo["encoded"] = _encode_headers(headers)
        return block  # type: ignore[return-value]
    return _encode_headers(headers)


def _encode_headers(headers: Iterable[Header]) -> bytes:
    out = []
    for pair in headers:
        encoded = _cache.get(pair)
        if encoded is None:
            encoded = encode_header(*pair)
            if len(_cache) < _CACHE_LIMIT:
                _cache[pair] = encoded
        out.append(encoded)
    return b"".join(out)


# ---- gRPC header values ------------------------------------------------------

_TIMEOUT_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds in a grpc-timeout value ("100m", "5S"); None when it is malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def format_grpc_timeout(seconds: float) -> bytes:
    """A grpc-timeout value of at least `seconds` in at most 8 digits (rounded up)."""
    micros = math.ceil(max(seconds, 0.0) * 1e6)
    if micros < 100_000_000:  # under 100 s, as a call's deadline usually is: microseconds
        return b"%du" % max(micros, 1)
    for unit, scale in ((b"m", 1e3), (b"S", 1.0), (b"M", 1 / 60), (b"H", 1 / 3600)):
        amount = math.ceil(max(seconds, 0.0) * scale)
        if amount < 100_000_000:
            return str(max(amount, 1)).encode() + unit
    return b"99999999H"


def grpc_message(text: str) -> bytes:
    """Percent-encode a grpc-message value (printable ASCII except '%' passes as is)."""
    out = bytearray()
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)
