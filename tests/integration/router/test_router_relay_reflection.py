"""gRPC server reflection on the relay's own port, read with grpc_reflection's own client.

What `grpcurl list` and `describe` do against a real relay on loopback: list
the services, then resolve a method from the reflected schema only (a fresh
descriptor pool fed by reflection, not the generated modules). The sync grpc
client runs in a thread, so the relay's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from router.config import RouterConfig
from router.core import build_core
from router.relay import RelayServer, start_relay

pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 5.0
LISTED = {
    "tidepool.engine.v1.Evaluator",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest_asyncio.fixture(loop_scope="module")
async def relay() -> AsyncIterator[RelayServer]:
    # No registry is needed to answer reflection: the watch on it is never started.
    core = build_core(RouterConfig(registry="127.0.0.1:9", listen="127.0.0.1:0", state_file=None))
    server = await start_relay(core, "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(1.0)
        await core.close()


def reflect(address: str) -> tuple[set[str], list[str]]:
    """Listed services, and Evaluate's input type and fields, from reflection alone."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        evaluator = DescriptorPool(database).FindServiceByName("tidepool.engine.v1.Evaluator")
    method = evaluator.methods_by_name["Evaluate"]
    return services, [method.input_type.full_name, *(f.name for f in method.input_type.fields)]


def ask(address: str, path: str, requests: list[bytes]) -> tuple[list[bytes], grpc.StatusCode]:
    """Raw messages on one reflection stream: the responses and the final status."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(path)(iter(requests), timeout=WAIT_S)
        try:
            return list(call), grpc.StatusCode.OK
        except grpc.RpcError as error:
            return [], error.code()


def request(**kwargs: str) -> bytes:
    return reflection_pb2.ServerReflectionRequest(**kwargs).SerializeToString()  # type: ignore[no-any-return]


async def test_the_relay_lists_its_services_and_describes_evaluate(relay: RelayServer) -> None:
    services, evaluate = await asyncio.to_thread(reflect, f"127.0.0.1:{relay.port}")
    assert services == LISTED
    assert evaluate[0] == "tidepool.engine.v1.EvaluateRequest"
    assert {"audio", "text", "lang"} <= set(evaluate[1:])


@pytest.mark.parametrize("path", [V1ALPHA, V1], ids=["v1alpha", "v1"])
async def test_each_request_on_a_stream_gets_its_answer_in_order(
    relay: RelayServer, path: str
) -> None:
    asked = [request(list_services=""), request(file_containing_symbol="no.such.Thing")]
    raw, code = await asyncio.to_thread(ask, f"127.0.0.1:{relay.port}", path, asked)
    assert code is grpc.StatusCode.OK
    answers = [reflection_pb2.ServerReflectionResponse.FromString(r) for r in raw]
    assert {s.name for s in answers[0].list_services_response.service} == LISTED
    assert answers[1].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(answers) == 2


async def test_a_request_that_does_not_decode_is_invalid_argument(relay: RelayServer) -> None:
    _, code = await asyncio.to_thread(ask, f"127.0.0.1:{relay.port}", V1ALPHA, [b"\xff\xff"])
    assert code is grpc.StatusCode.INVALID_ARGUMENT
