"""An in-process registry on a real loopback socket, plus a hand-driven engine for tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from registry.config import RegistryConfig
from registry.server import RegistryServer, build_server
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import auth_metadata, open_channel

FAST = {"heartbeat_interval_s": 0.1, "ttl_s": 0.5, "restart_grace_s": 0.5}


@contextlib.asynccontextmanager
async def running_registry(data_dir: Path, **settings: Any) -> AsyncIterator[RegistryServer]:
    """Start a registry on 127.0.0.1:0 with `settings`, stop it afterwards."""
    config = RegistryConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", data_dir=str(data_dir), **settings
    )
    server = build_server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class _OwningRegistryStub:
    """The Registry stub as an engine uses it: it keeps the secret each Register returns
    and presents it on re-registration and Deregister, as the SDK does."""

    def __init__(self, stub: pb_grpc.RegistryStub, secrets: dict[str, str]) -> None:
        self._stub = stub
        self._secrets = secrets

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    async def Register(self, request: pb.RegisterRequest, **kwargs: Any) -> Any:
        if not request.secret and request.instance_id in self._secrets:
            request.secret = self._secrets[request.instance_id]
        response = await self._stub.Register(request, **kwargs)
        self._secrets[response.instance.id] = response.secret
        return response

    async def Deregister(self, request: pb.DeregisterRequest, **kwargs: Any) -> Any:
        if not request.secret:
            request.secret = self._secrets.get(request.instance_id, "")
        return await self._stub.Deregister(request, **kwargs)


@dataclass
class Clients:
    """Stubs for one registry, with a token for each call, and the secrets of the
    instances registered through it."""

    channel: grpc.aio.Channel
    token: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> Any:
        return _OwningRegistryStub(pb_grpc.RegistryStub(self.channel), self.secrets)

    @property
    def raw_registry(self) -> pb_grpc.RegistryStub:
        """The plain stub: presents no secret unless the request carries one."""
        return pb_grpc.RegistryStub(self.channel)

    @property
    def admin(self) -> pb_grpc.AdminStub:
        return pb_grpc.AdminStub(self.channel)

    @property
    def scheduling(self) -> pb_grpc.SchedulingStub:
        return pb_grpc.SchedulingStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.token)

    def with_token(self, token: str | None) -> Clients:
        return replace(self, token=token)


@contextlib.asynccontextmanager
async def clients(server: RegistryServer, token: str | None = None) -> AsyncIterator[Clients]:
    channel = open_channel(server.grpc_address)
    try:
        yield Clients(channel, token)
    finally:
        await channel.close()


def registration(port: int, **changes: Any) -> pb.RegisterRequest:
    request = pb.RegisterRequest(
        service="speech",
        address=f"127.0.0.1:{port}",
        weight=100,
        capacity=4,
        labels={"lang": "zh", "tier": "idc"},
    )
    for key, value in changes.items():
        if key == "labels":
            request.labels.clear()
            request.labels.update(value)
        else:
            setattr(request, key, value)
    return request


@dataclass
class RawEngine:
    """A heartbeat stream driven by hand: the test decides when to beat, stop or break."""

    clients: Clients
    instance_id: str
    call: Any = None
    directives: asyncio.Queue[pb.Directive] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None

    async def attach(self, **load: int) -> None:
        self.call = self.clients.registry.Heartbeat(metadata=self.clients.md)
        await self.beat(**load)
        ack = await asyncio.wait_for(self.call.read(), 5)
        assert not ack.HasField("directive"), "the first response must be a bare acknowledgement"
        self._reader = asyncio.create_task(self._read())

    async def beat(self, status: int = pb.ENGINE_STATUS_SERVING, **load: int) -> None:
        secret = self.clients.secrets.get(self.instance_id, "")
        await self.call.write(
            pb.HeartbeatRequest(
                instance_id=self.instance_id, status=status, load=pb.Load(**load), secret=secret
            )
        )

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    return
                await self.directives.put(response.directive)

    def break_stream(self) -> None:
        """Cancel the stream as a dying process would (RST), not a polite close."""
        self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()


async def wait_for(
    predicate: Callable[[], Any], timeout_s: float, message: str, poll_s: float = 0.01
) -> Any:
    """Poll an async or sync predicate until truthy; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s: {message}")
        await asyncio.sleep(poll_s)


async def state_of(clients: Clients, instance_id: str) -> int | None:
    response = await clients.registry.ListInstances(pb.ListInstancesRequest(), metadata=clients.md)
    for instance in response.instances:
        if instance.id == instance_id:
            return int(instance.state)
    return None
