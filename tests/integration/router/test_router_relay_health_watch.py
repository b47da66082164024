"""grpc.health.v1.Health/Watch on the relay's own port: the status now, then each change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.config import RouterConfig
from router.core import build_core
from router.relay import RelayServer, start_relay

pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest_asyncio.fixture(loop_scope="module")
async def relay() -> AsyncIterator[RelayServer]:
    # No registry is needed to answer health: the watch on it is never started.
    core = build_core(RouterConfig(registry="127.0.0.1:9", listen="127.0.0.1:0", state_file=None))
    server = await start_relay(core, "127.0.0.1", 0)
    server.set_serving(True)
    try:
        yield server
    finally:
        await server.close(1.0)
        await core.close()


async def test_watch_sends_the_status_then_each_change(relay: RelayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S)
        first = await asyncio.wait_for(call.read(), WAIT_S)
        relay.set_serving(False)
        second = await asyncio.wait_for(call.read(), WAIT_S)
        relay.set_serving(True)
        third = await asyncio.wait_for(call.read(), WAIT_S)
        call.cancel()
    assert [first.status, second.status, third.status] == [SERVING, NOT_SERVING, SERVING]


async def test_watch_of_an_unknown_service_says_service_unknown(relay: RelayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT_S)
        answer = await asyncio.wait_for(call.read(), WAIT_S)
        call.cancel()
    assert answer.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


async def test_closing_the_relay_ends_a_watch_without_waiting_for_the_grace() -> None:
    core = build_core(RouterConfig(registry="127.0.0.1:9", listen="127.0.0.1:0", state_file=None))
    server = await start_relay(core, "127.0.0.1", 0)
    server.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            await asyncio.wait_for(call.read(), WAIT_S)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.close(10.0)
            assert loop.time() - started < 2.0
            assert await asyncio.wait_for(call.code(), WAIT_S) == grpc.StatusCode.UNAVAILABLE
    finally:
        await core.close()
