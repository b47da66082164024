"""grpc.health.v1.Health/Watch on a router process, on both data paths: SERVING once
ready, NOT_SERVING the moment SIGTERM arrives, and the stream ends with the process
instead of holding the shutdown for the whole drain grace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.fleet_harness import Fleet
from tests.support.router_harness import DATA_PATHS

WAIT_S = 5.0
STOP_S = 5.0
"""Well under the router's 10 s drain grace: an open Watch must not hold the exit."""
STATUS = health_pb2.HealthCheckResponse


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with Fleet(tmp_path_factory.mktemp("health-watch")) as running:
        running.start_registry()
        yield running


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_watch_says_serving_then_not_serving_on_sigterm_and_ends_with_the_router(
    fleet: Fleet, data_path: str
) -> None:
    router = fleet.start_router("--data-path", data_path)
    async with grpc.aio.insecure_channel(router.grpc) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S + STOP_S
        )
        first = await asyncio.wait_for(watch.read(), WAIT_S)
        stopping = time.monotonic()
        router.process.terminate()
        second = await asyncio.wait_for(watch.read(), WAIT_S)
        code = await asyncio.wait_for(watch.code(), STOP_S)
        status = await asyncio.to_thread(router.process.wait, STOP_S)
        took = time.monotonic() - stopping
    assert (first.status, second.status) == (STATUS.SERVING, STATUS.NOT_SERVING)
    assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, "the Watch outlived the router"
    assert status == 0, router.process.describe("the router did not exit cleanly")
    assert took < STOP_S, f"the router took {took:.1f} s to stop with a Watch open"
