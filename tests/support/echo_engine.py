"""An engine for router tests: raw-bytes methods of every gRPC shape, steered by request metadata.

Run as ``python -m tests.support.echo_engine --registry HOST:PORT --labels k=v,… --weight N``.
It serves ``tidepool.test.v1.Echo`` through grpc generic handlers (no proto),
registers through the SDK's `EngineAgent` (heartbeats; SIGTERM drains and
deregisters) and prints ``tidepool echo-engine ready grpc=… http=… id=…``.

Methods (every message is opaque bytes):

- ``Unary`` and ``Mutate`` (unary): answer ``<id>|<request>``.
- ``ClientStream``: answer ``<id>|<count>|<messages joined>``.
- ``ServerStream``: the request is a decimal N; answer ``<id>|0`` … ``<id>|N-1``.
- ``Bidi``: answer ``echo:<message>`` to each message.

Request metadata steers every method:

- ``x-echo-*`` (``-bin`` too): sent back as initial and as trailing metadata.
- ``x-fail-code: NAME``: abort with that status, a details text naming the
  engine and a ``grpc-status-details-bin`` trailer (a google.rpc.Status);
  with ``x-fail-instance: ID`` only the engine ``ID`` fails.
- ``x-sleep-ms: N``: wait N ms before answering.
- ``x-hang: 1``: never answer; ``x-hang-after: N``: answer N messages, then hang.
- ``x-greet: 1``: ``Bidi`` first sends ``hello from <id>`` unprompted.

Every answer carries the trailer ``x-engine-id``. ``GET /stats`` on the HTTP port
gives calls, cancellations and the deadline each method last saw, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop
from prometheus_client import CollectorRegistry

from registry.sdk import (
    AgentConfig,
    EngineAgent,
    GpuSample,
    LoadReport,
    new_instance_id,
    run_until_signal,
)
from tidepool.runtime.signals import ShutdownSignals, unless_signalled
from tidepool.runtime.status_http import StatusServer

SERVICE = "tidepool.test.v1.Echo"
READY_PREFIX = "tidepool echo-engine ready"
SLOTS = 64
NO_DEADLINE_S = 1e8
STOP_GRACE_S = 0.5

Metadata = tuple[tuple[str, str | bytes], ...]

HEADERS_APART_S = 0.02
"""Pause between echoed headers and the rest of the answer (see `Call.start`)."""


def method_path(name: str) -> str:
    """The full gRPC path of one Echo method, e.g. ``/tidepool.test.v1.Echo/Unary``."""
    return f"/{SERVICE}/{name}"


def status_details(code: grpc.StatusCode, message: str) -> bytes:
    """A serialized google.rpc.Status {code, message} (grpcio-status may be absent)."""
    number = code.value[0]
    text = message.encode()
    return b"\x08" + _varint(number) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Drainless:
    """Directives are accepted and ignored: the echo engine has no model to switch."""

    async def on_drain(self) -> None:
        pass

    async def on_resume(self) -> None:
        pass

    async def on_switch_model(self, model: str) -> None:
        pass


class _NoGpu:
    def sample(self) -> GpuSample:
        return GpuSample.absent("the echo engine has no GPU")


@dataclass
class EchoStats:
    """What tests read from /stats."""

    instance_id: str
    calls: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    deadlines: dict[str, float | None] = field(default_factory=dict)
    in_flight: int = 0
    finished: int = 0

    def load(self) -> LoadReport:
        return LoadReport(self.in_flight, 0, SLOTS, self.finished)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "calls": dict(self.calls),
            "cancelled": dict(self.cancelled),
            "deadlines": self.deadlines,
            "in_flight": self.in_flight,
        }


class _Call:
    """One call's steering metadata, read once."""

    def __init__(self, context: Any, instance_id: str) -> None:
        self.context = context
        pairs: list[tuple[str, str | bytes]] = list(context.invocation_metadata() or ())
        self.headers = {k: v for k, v in pairs}
        self.echo: Metadata = tuple((k, v) for k, v in pairs if k.startswith("x-echo-"))
        self.instance_id = instance_id

    def text(self, key: str) -> str:
        value = self.headers.get(key, "")
        return value.decode() if isinstance(value, bytes) else value

    @property
    def trailing(self) -> Metadata:
        return (*self.echo, ("x-engine-id", self.instance_id))

    async def start(self) -> None:
        """Echo headers as initial metadata, sleep or hang as asked, fail as asked."""
        if self.echo:
            await self.context.send_initial_metadata(self.echo)
            # Let the headers leave on their own: a grpc client that reads headers and
            # trailers in one go sometimes reports no initial metadata for a stream.
            await asyncio.sleep(HEADERS_APART_S)
        sleep_ms = self.text("x-sleep-ms")
        if sleep_ms:
            await asyncio.sleep(int(sleep_ms) / 1000)
        if self.text("x-hang") == "1":
            await asyncio.Event().wait()
        name = self.text("x-fail-code")
        only = self.text("x-fail-instance")
        if name and (not only or only == self.instance_id):
            code = grpc.StatusCode[name]
            message = f"echo engine {self.instance_id} failed as asked: {name}"
            details = status_details(code, message)
            trailing = (*self.trailing, ("grpc-status-details-bin", details))
            await self.context.abort(code, message, trailing)

    def finish(self) -> None:
        self.context.set_trailing_metadata(self.trailing)

    def hang_after(self) -> int | None:
        text = self.text("x-hang-after")
        return int(text) if text else None


class EchoServicer:
    """The Echo methods; each records its call, deadline and cancellation in `stats`."""

    def __init__(self, stats: EchoStats) -> None:
        self.stats = stats
        self.id = stats.instance_id

    def _enter(self, name: str, context: Any) -> _Call:
        self.stats.calls[name] += 1
        self.stats.in_flight += 1
        left = context.time_remaining()
        self.stats.deadlines[name] = None if left is None or left > NO_DEADLINE_S else left
        return _Call(context, self.id)

    def _leave(self, name: str, cancelled: bool) -> None:
        self.stats.in_flight -= 1
        self.stats.finished += 1
        if cancelled:
            self.stats.cancelled[name] += 1
            sys.stdout.write(f"echo-engine cancelled method={name} id={self.id}\n")
            sys.stdout.flush()

    async def unary(self, request: bytes, context: Any, name: str = "Unary") -> bytes:
        call = self._enter(name, context)
        cancelled = False
        try:
            await call.start()
            call.finish()
            return self.id.encode() + b"|" + request
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._leave(name, cancelled)

    async def mutate(self, request: bytes, context: Any) -> bytes:
        return await self.unary(request, context, "Mutate")

    async def client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        call = self._enter("ClientStream", context)
        cancelled = False
        try:
            messages = [message async for message in requests]
            await call.start()
            call.finish()
            return f"{self.id}|{len(messages)}|".encode() + b"".join(messages)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._leave("ClientStream", cancelled)

    async def server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        call = self._enter("ServerStream", context)
        cancelled = False
        try:
            await call.start()
            hang_after = call.hang_after()
            for index in range(int(request or b"0")):
                if index == hang_after:
                    await asyncio.Event().wait()
                yield f"{self.id}|{index}".encode()
            call.finish()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._leave("ServerStream", cancelled)

    async def bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        call = self._enter("Bidi", context)
        cancelled = False
        try:
            await call.start()
            if call.text("x-greet") == "1":
                yield f"hello from {self.id}".encode()
            hang_after = call.hang_after()
            answered = 0
            async for message in requests:
                if answered == hang_after:
                    await asyncio.Event().wait()
                answered += 1
                yield b"echo:" + message
            call.finish()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._leave("Bidi", cancelled)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Mutate": grpc.unary_unary_rpc_method_handler(self.mutate),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            },
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.echo_engine")
    parser.add_argument("--registry", required=True, help="registry gRPC host:port")
    parser.add_argument("--token", default=None, help="engine token")
    parser.add_argument("--labels", default="lang=zh", help="k=v,… registered labels")
    parser.add_argument("--weight", type=int, default=100)
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--advertise",
        default=None,
        help="register this host:port instead of the bound one (a fake, unreachable instance)",
    )
    return parser.parse_args(list(argv))


def parse_labels(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {key.strip(): value.strip() for key, value in pairs}


async def run(args: argparse.Namespace) -> int:
    instance_id = args.instance_id or new_instance_id("echo")
    stats = EchoStats(instance_id)
    with ShutdownSignals() as signals:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((EchoServicer(stats).handler(),))
        port = server.add_insecure_port(args.listen)
        await server.start()
        status = StatusServer(
            "127.0.0.1",
            0,
            CollectorRegistry(),
            lambda: (True, "echo engine"),
            routes={"/stats": lambda _query: _stats_json(stats)},
        )
        await status.start()
        try:
            grpc_at = f"127.0.0.1:{port}"
            config = AgentConfig(
                registry=args.registry,
                address=args.advertise or grpc_at,
                token=args.token,
                weight=args.weight,
                capacity=SLOTS,
                labels=parse_labels(args.labels),
                instance_id=instance_id,
                drain_timeout_s=1.0,
            )
            agent = EngineAgent(config, stats, _Drainless(), _NoGpu())
            if not await unless_signalled(agent.start(timeout_s=20), signals):
                return 0
            sys.stdout.write(
                f"{READY_PREFIX} grpc={grpc_at} http=127.0.0.1:{status.port} "
                f"id={instance_id} advertised={config.address}\n"
            )
            sys.stdout.flush()
            return await run_until_signal(agent, signals)
        finally:
            await status.stop()
            await server.stop(STOP_GRACE_S)


def _stats_json(stats: EchoStats) -> tuple[str, bytes, str]:
    return "200 OK", json.dumps(stats.to_json()).encode() + b"\n", "application/json"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
