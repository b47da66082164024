"""grpc.health.v1.Health for the grpc data path, with the relay's semantics.

Why not grpc's own `health.aio.HealthServicer`: its Watch never returns, and
`grpc.aio.Server.stop(grace)` waits for every call, so one open Watch (a load
balancer or Kubernetes watching the router) held every SIGTERM for the whole
drain grace. Here `close()` ends each Watch with UNAVAILABLE right after it has
sent NOT_SERVING, as the relay does (router/relay/health.py): Check on service ""
says SERVING or NOT_SERVING, any other service is NOT_FOUND; Watch sends the
status now, then each change (any other service: SERVICE_UNKNOWN, then nothing).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_STATUS = health_pb2.HealthCheckResponse


class RouterHealthServicer(health_pb2_grpc.HealthServicer):
    """The router's whole-server health; `set()` on each change, `close()` on stop."""

    def __init__(self) -> None:
        self._serving = False
        self._closed = False
        self._changed = asyncio.Condition()

    async def set(self, serving: bool) -> None:
        async with self._changed:
            self._serving = serving
            self._changed.notify_all()

    async def close(self) -> None:
        """End every Watch (after the status it has yet to send) and refuse new ones."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _status(self) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        return _STATUS.SERVING if self._serving else _STATUS.NOT_SERVING

    def _news(self, known: bool, sent: int | None) -> bool:
        """Whether a Watch that last sent `sent` has something to do."""
        return self._closed or (known and self._status() != sent)

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        if request.service:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _STATUS(status=self._status())

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        known = not request.service
        if not known:
            await context.write(_STATUS(status=_STATUS.SERVICE_UNKNOWN))
        sent: int | None = None
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._news, known, sent))
                status, closed = self._status(), self._closed
            if known and status != sent:
                await context.write(_STATUS(status=status))
                sent = status
            if closed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the router is shutting down")
