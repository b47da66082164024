"""The generic gRPC proxy: any service, any method, forwarded as raw bytes.

Methods listed as unary (Evaluate by default) take grpc's cheaper unary path;
every other method is proxied as a bidirectional stream, which carries unary,
client-, server- and bidi-streaming calls alike on the wire. Handlers are built
once per method name and cached (bounded), since grpc asks for one per call.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import grpc

from router.forward import Forwarder, ForwardError
from router.metadata import split_metadata
from router.streams import StreamForwarder
from router.table import RouteError

MAX_CACHED_METHODS = 1024
DEFAULT_UNARY_METHODS = ("/tidepool.engine.v1.Evaluator/Evaluate",)
NO_DEADLINE_S = 1e8
"""grpc reports "no deadline" as a time remaining of about 10^10 s or as None."""


class ProxyHandler(grpc.GenericRpcHandler):
    """Answers every method not served by the router itself by forwarding it."""

    def __init__(
        self,
        forwarder: Forwarder,
        streams: StreamForwarder,
        *,
        default_deadline_s: float,
        unary_methods: Collection[str] = DEFAULT_UNARY_METHODS,
    ) -> None:
        self._forwarder = forwarder
        self._streams = streams
        self._default_deadline_s = default_deadline_s
        self._unary_methods = frozenset(unary_methods)
        self._handlers: dict[str, Any] = {}

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._build(method)
            if len(self._handlers) < MAX_CACHED_METHODS:
                self._handlers[method] = handler
        return handler

    def _build(self, method: str) -> Any:
        if method in self._unary_methods:

            async def unary(request: bytes, context: Any) -> bytes:
                return await self._unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        async def stream(request_iterator: Any, context: Any) -> None:
            await self._stream(method, context)

        return grpc.stream_stream_rpc_method_handler(stream)

    async def _unary(self, method: str, request: bytes, context: Any) -> bytes:
        began = time.monotonic()
        try:
            return await self._unary_call(method, request, context)
        finally:
            self._forwarder.metrics.called(method, time.monotonic() - began)

    async def _unary_call(self, method: str, request: bytes, context: Any) -> bytes:
        routed = split_metadata(context.invocation_metadata())
        timeout = context.time_remaining()
        if timeout is None or timeout > NO_DEADLINE_S:
            timeout = self._default_deadline_s
        try:
            aliases = self._forwarder.table.route(routed.alias, routed.tenant, routed.lang)
            answer = await self._forwarder.unary(method, request, aliases, routed.forward, timeout)
        except (RouteError, ForwardError) as error:
            await self._abort(context, error)
        if answer.initial:
            await context.send_initial_metadata(answer.initial)
        if answer.trailing:
            context.set_trailing_metadata(answer.trailing)
        return answer.response

    async def _stream(self, method: str, context: Any) -> None:
        began = time.monotonic()
        try:
            await self._stream_call(method, context)
        finally:
            self._forwarder.metrics.called(method, time.monotonic() - began)

    async def _stream_call(self, method: str, context: Any) -> None:
        routed = split_metadata(context.invocation_metadata())
        timeout = context.time_remaining()
        if timeout is not None and timeout > NO_DEADLINE_S:
            timeout = None
        try:
            aliases = self._forwarder.table.route(routed.alias, routed.tenant, routed.lang)
            await self._streams.forward(method, context, aliases, routed.forward, timeout)
        except (RouteError, ForwardError) as error:
            await self._abort(context, error)

    async def _abort(self, context: Any, error: RouteError | ForwardError) -> None:
        """End the call with the error's status; count it if the router itself refused."""
        if isinstance(error, RouteError):
            self._forwarder.metrics.failed(error.code.name)
            await context.abort(error.code, error.message)
        else:
            if error.instance is None:
                self._forwarder.metrics.failed(error.code.name)
            if error.initial:
                await context.send_initial_metadata(error.initial)
            await context.abort(error.code, error.details, error.trailing)
