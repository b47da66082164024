"""gRPC server reflection on the registry and on the router's grpc data path.

What `grpcurl list` and `grpcurl describe` do, with grpc_reflection's own client
(`ProtoReflectionDescriptorDatabase`) over a real channel to real processes: list
the services, then resolve a method's descriptor from the reflected schema only
(a fresh descriptor pool, not the generated modules this test imports).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support.processes import ProcessSet
from tests.support.router_harness import REGISTRY_READY, ROUTER_READY, registry_args, router_args
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

READ_TOKEN = "reflection-read-token"
ADMIN_TOKEN = "reflection-admin-token"
STANDARD = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def addresses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A registry that demands tokens for reads, and a router on the grpc data path."""
    work: Path = tmp_path_factory.mktemp("reflection")
    with ProcessSet() as processes:
        tokens = ("--read-token", READ_TOKEN, "--admin-token", ADMIN_TOKEN)
        registry = processes.start([*registry_args(work / "data"), *tokens], REGISTRY_READY)
        router = processes.start(
            router_args(
                registry.grpc, work / "view.json", "--data-path", "grpc", "--token", READ_TOKEN
            ),
            ROUTER_READY,
        )
        yield {"registry": registry.grpc, "router": router.grpc}


@contextlib.contextmanager
def _reflect(address: str) -> Iterator[tuple[set[str], DescriptorPool]]:
    """The services a server lists, and a descriptor pool fed only by its reflection."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        yield set(database.get_services()), DescriptorPool(database)


def test_registry_lists_its_services_without_a_token(addresses: dict[str, str]) -> None:
    with _reflect(addresses["registry"]) as (services, _):
        pass
    expected = {f"tidepool.registry.v1.{name}" for name in ("Registry", "Admin", "Scheduling")}
    assert services == expected | STANDARD


def test_registry_reflection_resolves_a_method_descriptor(addresses: dict[str, str]) -> None:
    with _reflect(addresses["registry"]) as (_, pool):
        registry = pool.FindServiceByName("tidepool.registry.v1.Registry")
    method = registry.methods_by_name["Heartbeat"]
    assert method.input_type.full_name == "tidepool.registry.v1.HeartbeatRequest"
    assert method.client_streaming
    assert method.server_streaming
    fields = {f.name for f in method.input_type.fields}
    assert {"instance_id", "secret", "load"} <= fields


def test_reads_still_need_the_token_that_reflection_does_not(addresses: dict[str, str]) -> None:
    with grpc.insecure_channel(addresses["registry"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.RegistryStub(channel).ListInstances(pb.ListInstancesRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_router_grpc_path_lists_the_engine_service(addresses: dict[str, str]) -> None:
    with _reflect(addresses["router"]) as (services, _):
        pass
    assert services == {"tidepool.engine.v1.Evaluator"} | STANDARD


def test_router_reflection_resolves_the_streaming_method(addresses: dict[str, str]) -> None:
    with _reflect(addresses["router"]) as (_, pool):
        evaluator = pool.FindServiceByName("tidepool.engine.v1.Evaluator")
    method = evaluator.methods_by_name["EvaluateStream"]
    assert method.client_streaming
    assert not method.server_streaming
    assert method.output_type.full_name == "tidepool.engine.v1.EvaluateResponse"
