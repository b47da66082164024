"""AgentConfig validation, instance ids, status values and the error table."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.sdk import AgentConfig, EngineStatus, new_instance_id
from registry.sdk.errors import (
    InstanceNotFoundError,
    RegistrationError,
    RegistryUnavailableError,
    translate,
)
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.rules import INSTANCE_ID


def config(**changes: Any) -> AgentConfig:
    settings: dict[str, Any] = {"registry": "127.0.0.1:7700", "address": "127.0.0.1:9001"}
    settings.update(changes)
    return AgentConfig(**settings)


def test_defaults() -> None:
    made = config()
    assert made.service == "speech"
    assert made.instance_id is None
    assert (made.drain_timeout_s, made.reconnect_min_s, made.reconnect_max_s) == (30, 0.1, 1.0)
    assert made.rpc_timeout_s == 5


def test_labels_are_copied_and_read_only() -> None:
    labels = {"lang": "zh"}
    made = config(labels=labels)
    labels["lang"] = "en"
    assert made.labels == {"lang": "zh"}
    with pytest.raises(TypeError):
        made.labels["lang"] = "en"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("registry", "no-port"),
        ("address", "localhost:9001"),
        ("address", "0.0.0.0:9001"),
        ("address", "127.0.0.1:0"),
        ("service", ""),
        ("weight", -1),
        ("weight", 1001),
        ("capacity", 0),
        ("labels", {"": "x"}),
        ("instance_id", "-leading-dash"),
        ("instance_id", "has space"),
        ("instance_id", "x" * 129),
        ("drain_timeout_s", -1),
        ("reconnect_min_s", 0),
        ("reconnect_max_s", 0.05),
        ("rpc_timeout_s", 0),
    ],
)
def test_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"AgentConfig.{field}:"):
        config(**{field: value})


def test_accepts_ipv6_and_limits() -> None:
    assert config(address="[::1]:9001", weight=0).weight == 0
    assert config(weight=1000, instance_id="a" * 128).weight == 1000


@given(st.text(max_size=80))
def test_generated_ids_are_valid_for_any_host_name(hostname: str) -> None:
    assert INSTANCE_ID.fullmatch(new_instance_id(hostname))


def test_generated_ids_differ() -> None:
    assert new_instance_id("gpu-7") != new_instance_id("gpu-7")
    assert new_instance_id("gpu-7").startswith("gpu-7-")


def test_engine_status_values_are_the_protos() -> None:
    assert EngineStatus.SERVING == pb.ENGINE_STATUS_SERVING
    assert EngineStatus.DRAINING == pb.ENGINE_STATUS_DRAINING
    assert EngineStatus.SWITCHING == pb.ENGINE_STATUS_SWITCHING


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, RegistrationError),
        (grpc.StatusCode.PERMISSION_DENIED, RegistrationError),
        (grpc.StatusCode.INVALID_ARGUMENT, RegistrationError),
        (grpc.StatusCode.UNIMPLEMENTED, RegistrationError),
        (grpc.StatusCode.NOT_FOUND, InstanceNotFoundError),
        (grpc.StatusCode.UNAVAILABLE, RegistryUnavailableError),
        (grpc.StatusCode.FAILED_PRECONDITION, RegistryUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, RegistryUnavailableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RegistryUnavailableError),
        (grpc.StatusCode.INTERNAL, RegistryUnavailableError),
    ],
)
def test_status_codes_map_to_agent_errors(code: grpc.StatusCode, kind: type) -> None:
    error = translate(FakeRpcError(code, "why"), "register", "10.0.0.1:7700")
    assert type(error) is kind
    assert error.code == code.name
    assert str(error) == f"register at registry 10.0.0.1:7700 failed: {code.name}: why"
