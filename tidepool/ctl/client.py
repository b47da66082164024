"""The ctl's registry adapter: calls with a deadline and the token; gRPC errors stay here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from registry.sdk.channel import auth_metadata, channel_options
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0


class CtlError(Exception):
    """A call failed; the message is one line meant for the operator."""


class RegistryClient:
    """Synchronous stubs for the registry's Registry, Admin and Scheduling services."""

    def __init__(self, target: str, token: str | None) -> None:
        self._target = target
        self._channel = grpc.insecure_channel(target, options=channel_options())
        self._metadata = auth_metadata(token)
        self.registry = pb_grpc.RegistryStub(self._channel)
        self.admin = pb_grpc.AdminStub(self._channel)
        self.scheduling = pb_grpc.SchedulingStub(self._channel)

    def call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=CALL_TIMEOUT_S, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.UNAVAILABLE:
                details = f"cannot reach the registry at {self._target}: {details}"
            raise CtlError(f"{code.name}: {details}") from None

    def close(self) -> None:
        self._channel.close()
