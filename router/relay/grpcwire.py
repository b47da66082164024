"""gRPC on top of HTTP/2, as much as the relay reads: request headers, statuses, message prefixes.

The relay never decodes a message; it only reads each one's 5-byte prefix
(compressed flag, 32-bit length) as DATA passes, to enforce the size limit
before a byte of an oversized message is forwarded. A request header list that
repeats (`frames.HeaderList`) is checked and parsed once, its result kept in it.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import grpc

from router.relay import frames as f
from router.relay.frames import Header, HeaderList
from router.table import ALIAS_KEY, LANG_KEY, TENANT_KEY

PREFIX_SIZE: Final = 5
"""A gRPC message's prefix: one flag byte, then the length (big-endian u32)."""
_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)
_STATUS_BY_NUMBER: Final = {code.value[0]: code for code in grpc.StatusCode}
_UNKNOWN: Final = grpc.StatusCode.UNKNOWN
_OK: Final = grpc.StatusCode.OK
_ALIAS, _TENANT, _LANG = ALIAS_KEY.encode(), TENANT_KEY.encode(), LANG_KEY.encode()
RESPONSE_HEADERS: Final = f.encode_headers(
    [(b":status", b"200"), (b"content-type", b"application/grpc")]
)
OK_TRAILERS: Final = f.encode_headers([(b"grpc-status", b"0")])


def grpc_status(headers: list[Header]) -> grpc.StatusCode:
    """The grpc-status in a trailer block (UNKNOWN when absent or malformed)."""
    for key, value in headers:
        if key == b"grpc-status":
            if value == b"0":  # the common answer, without int() and a dict lookup
                return _OK
            return _STATUS_BY_NUMBER.get(int(value), _UNKNOWN) if value.isdigit() else _UNKNOWN
    return _UNKNOWN


def status_block(code: grpc.StatusCode, message: str, trailers_only: bool) -> bytes:
    """A gRPC error as trailers (after response headers) or as a trailers-only response."""
    status = [
        (b"grpc-status", str(code.value[0]).encode()),
        (b"grpc-message", f.grpc_message(message)),
    ]
    if trailers_only:
        status = [(b":status", b"200"), (b"content-type", b"application/grpc"), *status]
    return f.encode_headers(status)


class Request(NamedTuple):
    """What routing needs of a request's headers. Why a NamedTuple, not a plain tuple:
    mypyc unboxes a plain tuple, so the one kept in a `HeaderList` would be rebuilt per call."""

    path: bytes | None
    alias: str | None
    tenant: str | None
    lang: str | None
    timeout: float | None
    forward: list[Header]
    method: str
    """`path` decoded, as metrics and the retry policy name methods ("" without one)."""


def parse_request(headers: list[Header]) -> Request:
    """:path, alias, tenant, lang, grpc-timeout, and the headers to send on (no timeout)."""
    if type(headers) is HeaderList:
        return _memo(headers, "request", _parse_request)  # type: ignore[no-any-return]
    return _parse_request(headers)


def _memo(headers: HeaderList, key: str, work: Any) -> Any:
    memo = headers.memo
    if key in memo:
        return memo[key]
    found = memo[key] = work(headers)
    return found


def _parse_request(headers: list[Header]) -> Request:
    path = alias = tenant = lang = None
    timeout: float | None = None
    forward: list[Header] = []
    for key, value in headers:
        if key == b":path":
            path = value
        elif key == b"grpc-timeout":
            timeout = f.parse_grpc_timeout(value)
            continue
        elif key in _HOP_BY_HOP:
            continue
        elif key == _ALIAS:
            alias = value.decode(errors="replace")
        elif key == _TENANT:
            tenant = value.decode(errors="replace")
        elif key == _LANG:
            lang = value.decode(errors="replace")
        forward.append((key, value))
    # A HeaderList, so its encoding is kept with it too (`frames.encode_headers`).
    method = path.decode(errors="replace") if path else ""
    return Request(path, alias, tenant, lang, timeout, HeaderList(forward), method)


_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":path", b":authority"})
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def check_request(headers: list[Header]) -> tuple[str, str] | None:
    """Why a request's header block is refused: ("malformed" | "content_type", message), or None."""
    if type(headers) is HeaderList:
        return _memo(headers, "problem", _check_request)  # type: ignore[no-any-return]
    return _check_request(headers)


def _check_request(headers: list[Header]) -> tuple[str, str] | None:  # noqa: C901 - a rule a line
    """Why a request's header block is refused.

    RFC 9113 §8.1.1 and §8.3.1 (pseudo-headers once each, first, only the request
    ones; lowercase names; no connection-specific fields; `te` only "trailers")
    and the gRPC spec (POST, content-type application/grpc…).
    """
    seen: set[bytes] = set()
    regular = False
    content_type = method = path = b""
    for key, value in headers:
        if not key.islower() and key != key.lower():  # islower: no cased letter is upper
            return "malformed", f"uppercase header name {key!r}"
        if key[:1] == b":":
            if regular or key not in _REQUEST_PSEUDO or key in seen:
                return "malformed", f"misplaced, unknown or repeated pseudo-header {key!r}"
            seen.add(key)
            if key == b":method":
                method = value
            elif key == b":path":
                path = value
            continue
        regular = True
        if key in _CONNECTION_SPECIFIC or (key == b"te" and value != b"trailers"):
            return "malformed", f"connection-specific header {key!r}"
        if key == b"content-type":
            content_type = value
    if not {b":method", b":scheme", b":path"} <= seen:
        return "malformed", "a request needs :method, :scheme and :path"
    if method != b"POST" or not path:
        return "malformed", "gRPC requests are POST to a non-empty :path"
    if content_type != b"application/grpc" and not content_type.startswith(
        (b"application/grpc+", b"application/grpc;")
    ):
        return "content_type", f"content-type {content_type!r} is not gRPC"
    return None


def check_trailers(headers: list[Header]) -> str | None:
    """Why a request's trailer block is malformed (a pseudo-header, an uppercase name), or None."""
    for key, _ in headers:
        if key.startswith(b":") or key != key.lower():
            return f"header {key!r} in trailers"
    return None


def message(payload: bytes) -> bytes:
    """One uncompressed gRPC message: prefix and payload."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class MessageMeter:
    """Follows the message boundaries in one direction of a stream and checks each length.

    DATA frames cut messages anywhere, even inside a prefix, so the meter keeps
    how much of the current message is still to come and any partial prefix.
    """

    __slots__ = ("left", "limit", "partial")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = 0
        """Bytes of the current message's payload not seen yet."""
        self.partial = b""
        """The start of a prefix cut by a frame boundary."""

    def restart(self) -> None:
        """A new stream (another attempt) starts at a message boundary."""
        self.left = 0
        self.partial = b""

    def feed(self, data: bytes) -> int | None:
        """Walk `data`; the length of the first message over the limit, or None."""
        pos, size = 0, len(data)
        if not self.left and not self.partial and size >= PREFIX_SIZE:  # at a message start
            length = f.read_u32(data, 1)
            if length > self.limit:
                return length
            if size - PREFIX_SIZE <= length:  # the usual case: one message, in this frame or on
                self.left = length - (size - PREFIX_SIZE)
                return None
        while pos < size:
            if self.left:
                step = min(self.left, size - pos)
                self.left -= step
                pos += step
                continue
            if not self.partial and size - pos >= PREFIX_SIZE:  # the usual case: no copy
                length = f.read_u32(data, pos + 1)
                pos += PREFIX_SIZE
            else:
                prefix = self.partial + data[pos : pos + PREFIX_SIZE - len(self.partial)]
                pos += len(prefix) - len(self.partial)
                if len(prefix) < PREFIX_SIZE:
                    self.partial = prefix
                    return None
                self.partial = b""
                length = f.read_u32(prefix, 1)
            if length > self.limit:
                return length
            self.left = length
        return None
