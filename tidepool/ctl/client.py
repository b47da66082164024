"""The ctl's registry adapter: calls with a deadline and the token; gRPC errors stay here."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry.client import freshest
from tidepool.ctl.diagnose import not_a_registry, suspect
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import auth_metadata, channel_options
from tidepool.runtime.replicas import parse_addresses, rebind

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 1.0
"""How long telling an engine from another gRPC server may take, after a call failed."""
ENGINE_SERVICE = "tidepool.engine.v1.Evaluator"


class CtlError(Exception):
    """A call failed; the message is one line meant for the operator."""


class RegistryGoneError(CtlError):
    """The registry went away or ended a stream (a watch reconnects after this)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        """Why, without the address: what a reconnecting watch says."""


class RegistryClient:
    """Synchronous stubs for the registry's Registry, Admin and Scheduling services.

    `targets` may name several replicas ("A,B,C"): a call that cannot reach one is
    sent to the next (each replica once per call), and a lost watch resumes on the
    next; any replica serves any request, since they share one state.
    """

    def __init__(self, targets: str, token: str | None) -> None:
        self.targets = parse_addresses(targets)
        self._index = 0
        self._metadata = auth_metadata(token)
        self._connect()

    @property
    def target(self) -> str:
        """The replica calls go to now."""
        return self.targets[self._index]

    def _connect(self) -> None:
        self._channel = grpc.insecure_channel(self.target, options=channel_options())
        self.registry = pb_grpc.RegistryStub(self._channel)
        self.admin = pb_grpc.AdminStub(self._channel)
        self.scheduling = pb_grpc.SchedulingStub(self._channel)

    def _next_replica(self) -> None:
        if len(self.targets) > 1:
            self._channel.close()
            self._index = (self._index + 1) % len(self.targets)
            self._connect()

    def _stubs(self) -> tuple[object, ...]:
        return (self.registry, self.admin, self.scheduling)

    def call(self, method: Callable[..., T], request: Any) -> T:
        for attempt in range(len(self.targets)):
            try:
                return method(request, timeout=CALL_TIMEOUT_S, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = self._error(exc)
                if not isinstance(error, RegistryGoneError) or attempt == len(self.targets) - 1:
                    raise error from None
            old = self._stubs()
            self._next_replica()
            method = rebind(method, old, self._stubs())
        raise AssertionError("unreachable")  # pragma: no cover

    def watch(self, request: pb.WatchRequest) -> Iterator[pb.WatchEvent]:
        """The registry's watch events until the stream ends (RegistryGoneError).

        After a lost watch the next attempt goes to the next replica.
        """
        stream = self.registry.Watch(request, metadata=self._metadata)
        try:
            yield from stream
        except grpc.RpcError as exc:
            error = self._error(exc)
            if isinstance(error, RegistryGoneError):
                self._next_replica()
            raise error from None
        finally:
            stream.cancel()
        self._next_replica()
        raise RegistryGoneError("the registry ended the watch", "it ended the watch")

    def _error(self, exc: grpc.RpcError) -> CtlError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        kind = suspect(code.name, details)
        if kind is not None:
            engine = kind == "grpc" and self._is_engine()
            return CtlError(not_a_registry(self.target, kind, details, engine=engine))
        if code == grpc.StatusCode.UNAVAILABLE:
            return RegistryGoneError(
                f"UNAVAILABLE: cannot reach the registry at {self.target}: {details}", details
            )
        return CtlError(f"{code.name}: {details}")

    def _is_engine(self) -> bool:
        """An engine reports its Evaluator in grpc.health.v1; bounded to a second."""
        request = health_pb2.HealthCheckRequest(service=ENGINE_SERVICE)
        try:
            health_pb2_grpc.HealthStub(self._channel).Check(request, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return False
        return True

    def list_instances(self, service: str = "") -> list[pb.Instance]:
        """Every instance, page by page (a large fleet does not fit one message). With
        several replicas each is listed and every engine shown as the replica holding its
        heartbeat stream reports it: only that one knows its load."""
        if len(self.targets) == 1:
            return self._pages(lambda r: self.call(self.registry.ListInstances, r), service)
        listings: list[list[pb.Instance]] = []
        errors: list[str] = []
        for target in self.targets:
            with grpc.insecure_channel(target, options=channel_options()) as channel:
                stub = pb_grpc.RegistryStub(channel)
                try:
                    listings.append(self._pages(partial(self._list, stub), service))
                except grpc.RpcError as exc:
                    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
                    details = exc.details() if hasattr(exc, "details") else str(exc)
                    errors.append(f"{target}: {code}: {details}")
        if not listings:
            raise CtlError("no registry replica answered: " + "; ".join(errors))
        if errors:  # the load of engines attached there is missing: say so, then go on
            sys.stderr.write("warning: listed without " + "; ".join(errors) + "\n")
        return freshest(listings)

    def _list(
        self, registry: pb_grpc.RegistryStub, request: pb.ListInstancesRequest
    ) -> pb.ListInstancesResponse:
        response: pb.ListInstancesResponse = registry.ListInstances(
            request, timeout=CALL_TIMEOUT_S, metadata=self._metadata
        )
        return response

    @staticmethod
    def _pages(
        list_page: Callable[[pb.ListInstancesRequest], pb.ListInstancesResponse], service: str
    ) -> list[pb.Instance]:
        instances: list[pb.Instance] = []
        token = ""
        while True:
            response = list_page(pb.ListInstancesRequest(service=service, page_token=token))
            instances.extend(response.instances)
            token = response.next_page_token
            if not token:
                return instances

    def close(self) -> None:
        self._channel.close()
