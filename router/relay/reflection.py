"""gRPC server reflection answered by the relay itself, as `health` is: no engine, no grpc server.

`grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo` (and the v1
name, whose messages are the same on the wire) lists the services the router
serves or forwards (the engine's Evaluator, Health, reflection itself) and
hands out their file descriptors from the default descriptor pool, so
`grpcurl list` and `describe` work on the relay's port as on the grpc path's.
Each request is answered with grpc_reflection's own servicer logic, one
message at a time, as the caller's messages arrive.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health as grpc_health
from grpc_reflection.v1alpha import reflection as grpc_reflection
from grpc_reflection.v1alpha import reflection_pb2

from router.relay import frames as f
from router.relay import grpcwire
from router.relay.frames import Header
from router.relay.stream import Stream, StreamHandler
from tidepool.engine.v1 import evaluator_pb2

PREFIXES: Final[tuple[bytes, ...]] = (
    b"/grpc.reflection.v1alpha.ServerReflection/",
    b"/grpc.reflection.v1.ServerReflection/",
)
METHOD: Final = b"ServerReflectionInfo"
SERVICES: Final[tuple[str, ...]] = (
    evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,
    grpc_health.SERVICE_NAME,
    grpc_reflection.SERVICE_NAME,
)
"""What the relay lists: the engine service it forwards (any other method is forwarded
too, but has no schema here), and the two it answers itself."""
MAX_REQUEST_BYTES: Final = 64 << 10
"""A reflection request is a name or two: anything longer is refused."""
_SERVICER = grpc_reflection.ReflectionServicer(SERVICES)


def answer(request: reflection_pb2.ServerReflectionRequest) -> bytes:
    """The serialized response to one request (grpc_reflection's logic, no grpc server)."""
    responses: Any = _SERVICER.ServerReflectionInfo(iter([request]), None)
    response: reflection_pb2.ServerReflectionResponse = next(responses)
    return response.SerializeToString()  # type: ignore[no-any-return]


class ReflectionCall(StreamHandler):
    """One ServerReflectionInfo stream (the client stream's handler): a response per request."""

    def __init__(self, stream: Stream, path: bytes) -> None:
        self.stream = stream
        self.path = path
        self.buffer = b""
        self.responding = False
        self.done = False
        stream.handler = self

    def start(self, end: bool) -> None:
        if not self.path.endswith(b"/" + METHOD):
            name = self.path.decode(errors="replace")
            self.fail(grpc.StatusCode.UNIMPLEMENTED, f"method {name} is not served by the router")
        elif end:
            self.finish()

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        if end:
            self.finish()

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.conn.credit(stream, len(data))
        if self.done:
            return
        self.buffer += data
        while not self.done and len(self.buffer) >= grpcwire.PREFIX_SIZE:
            length = int.from_bytes(self.buffer[1:5], "big")
            if self.buffer[0] != 0 or length > MAX_REQUEST_BYTES:
                problem = "a compressed" if self.buffer[0] else f"over {MAX_REQUEST_BYTES} bytes, a"
                self.fail(grpc.StatusCode.INVALID_ARGUMENT, f"{problem} reflection request")
                return
            if len(self.buffer) < grpcwire.PREFIX_SIZE + length:
                break
            body = self.buffer[grpcwire.PREFIX_SIZE : grpcwire.PREFIX_SIZE + length]
            self.buffer = self.buffer[grpcwire.PREFIX_SIZE + length :]
            self.respond(body)
        if end and not self.done:
            self.finish()

    def on_sent(self, stream: Stream, length: int) -> None:
        pass

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        self.done = True

    def respond(self, body: bytes) -> None:
        try:
            request = reflection_pb2.ServerReflectionRequest.FromString(body)
        except DecodeError as error:
            self.fail(grpc.StatusCode.INVALID_ARGUMENT, f"bad ServerReflectionRequest: {error}")
            return
        conn, stream = self.stream.conn, self.stream
        if not self.responding:
            self.responding = True
            conn.send_headers(stream, grpcwire.RESPONSE_HEADERS, False)
        conn.send_data(stream, grpcwire.message(answer(request)), False)

    def finish(self) -> None:
        """The caller half-closed: every request was answered, the stream ends OK."""
        if self.done:
            return
        if self.buffer:
            self.fail(grpc.StatusCode.INVALID_ARGUMENT, "a truncated reflection request")
            return
        self.done = True
        conn, stream = self.stream.conn, self.stream
        if self.responding:
            conn.send_headers(stream, grpcwire.OK_TRAILERS, True)
        else:
            conn.send_headers(stream, grpcwire.status_block(grpc.StatusCode.OK, "", True), True)

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        self.done = True
        conn, stream = self.stream.conn, self.stream
        if conn.streams.get(stream.id) is stream:
            block = grpcwire.status_block(code, message, not self.responding)
            conn.send_headers(stream, block, True)
            if not stream.remote_done:
                conn.reset(stream, f.NO_ERROR)  # we need nothing more of the request
