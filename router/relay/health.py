"""grpc.health.v1.Health answered by the relay itself, on its own port, as the grpc frontend does.

Check on the whole server (service "") says SERVING once the router serves and
NOT_SERVING while it stops; any other service is NOT_FOUND. Watch sends the
current status, then each change, until the caller leaves or the relay closes
(any other service: SERVICE_UNKNOWN, as grpc's own servicer does). Any other
method of the service is UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from router.relay import frames as f
from router.relay import grpcwire
from router.relay.frames import Header
from router.relay.stream import Stream, StreamHandler

PREFIX: Final = b"/grpc.health.v1.Health/"
CHECK: Final = PREFIX + b"Check"
WATCH: Final = PREFIX + b"Watch"
MAX_REQUEST_BYTES: Final = 4096
"""A HealthCheckRequest is a service name: anything longer is refused."""
_SERVING: Final = grpcwire.message(
    health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVING
    ).SerializeToString()
)
_NOT_SERVING: Final = grpcwire.message(
    health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.NOT_SERVING
    ).SerializeToString()
)
_SERVICE_UNKNOWN: Final = grpcwire.message(
    health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    ).SerializeToString()
)


class Watchers:
    """The open Watch calls; told of each change of the serving state."""

    def __init__(self) -> None:
        self.calls: set[HealthCall] = set()

    def changed(self, serving: bool) -> None:
        for call in list(self.calls):
            call.send_status(serving)

    def close(self) -> None:
        """End every Watch (the relay is closing): UNAVAILABLE, as a server going away."""
        for call in list(self.calls):
            call.end(grpc.StatusCode.UNAVAILABLE, "the router is shutting down")


class HealthCall(StreamHandler):
    """One call to the health service (the client stream's handler)."""

    def __init__(
        self,
        stream: Stream,
        path: bytes,
        serving: Callable[[], bool],
        watchers: Watchers | None = None,
    ) -> None:
        self.stream = stream
        self.path = path
        self.serving = serving
        self.watchers = watchers
        self.body = b""
        self.done = False
        stream.handler = self

    def start(self, end: bool) -> None:
        if self.path not in (CHECK, WATCH) or (self.path == WATCH and self.watchers is None):
            name = self.path.decode(errors="replace")
            self.fail(grpc.StatusCode.UNIMPLEMENTED, f"method {name} is not served by the router")
        elif end:
            self.answer()

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        if end:
            self.answer()

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.conn.credit(stream, len(data))
        if self.done:
            return
        self.body += data
        if len(self.body) > MAX_REQUEST_BYTES:
            limit = MAX_REQUEST_BYTES
            self.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, f"health check over {limit} bytes")
        elif end:
            self.answer()

    def on_sent(self, stream: Stream, length: int) -> None:
        pass

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        self.done = True
        if self.watchers is not None:
            self.watchers.calls.discard(self)

    def answer(self) -> None:
        if self.done:
            return
        body = self.body
        length = int.from_bytes(body[1:5], "big") if len(body) >= 5 else -1
        try:
            if length != len(body) - 5 or body[0] != 0:
                raise DecodeError("not one uncompressed message")
            request = health_pb2.HealthCheckRequest.FromString(body[5:])
        except DecodeError as error:
            self.fail(grpc.StatusCode.INVALID_ARGUMENT, f"bad HealthCheckRequest: {error}")
            return
        if self.path == WATCH:
            self.watch(request.service)
            return
        if request.service:
            self.fail(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
            return
        self.done = True
        conn, stream = self.stream.conn, self.stream
        conn.send_headers(stream, grpcwire.RESPONSE_HEADERS, False)
        conn.send_data(stream, _SERVING if self.serving() else _NOT_SERVING, False)
        conn.send_headers(stream, grpcwire.OK_TRAILERS, True)

    def watch(self, service: str) -> None:
        """The current status now, then every change (`Watchers.changed`)."""
        self.done = True  # nothing more is read of the request
        conn, stream = self.stream.conn, self.stream
        conn.send_headers(stream, grpcwire.RESPONSE_HEADERS, False)
        if service:  # never changes: sent once, the call stays open as grpc's does
            conn.send_data(stream, _SERVICE_UNKNOWN, False)
        else:
            self.send_status(self.serving())
        assert self.watchers is not None
        self.watchers.calls.add(self)

    def send_status(self, serving: bool) -> None:
        conn, stream = self.stream.conn, self.stream
        if conn.streams.get(stream.id) is stream and self.path == WATCH:
            conn.send_data(stream, _SERVING if serving else _NOT_SERVING, False)

    def end(self, code: grpc.StatusCode, message: str) -> None:
        conn, stream = self.stream.conn, self.stream
        if self.watchers is not None:
            self.watchers.calls.discard(self)
        if conn.streams.get(stream.id) is stream:
            conn.send_headers(stream, grpcwire.status_block(code, message, False), True)
            if not stream.remote_done:
                conn.reset(stream, f.NO_ERROR)

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        self.done = True
        conn, stream = self.stream.conn, self.stream
        if conn.streams.get(stream.id) is stream:
            conn.send_headers(stream, grpcwire.status_block(code, message, True), True)
            if not stream.remote_done:
                conn.reset(stream, f.NO_ERROR)  # we need nothing more of the request
