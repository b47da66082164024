"""The in-process client: the router's balancer, ejection and retries, with no proxy hop.

For access layers written in Python. It watches the registry itself and calls
engines directly over one channel per engine, so a call costs a pick and a
direct gRPC call. Errors are raised as `RouterCallError`, a `grpc.RpcError` with
`code()` and `details()`, so callers handle them like any gRPC error.

    async with RouterClient("127.0.0.1:7700", token=...) as client:
        reply = await client.evaluate(request, alias="zh-public")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

import grpc

from router.config import RouterConfig
from router.core import RouterCore, build_core
from router.endpoint import Endpoint
from router.forward import ForwardError
from router.metadata import Metadata
from router.table import RouteError
from tidepool.engine.v1 import evaluator_pb2

EVALUATE = "/tidepool.engine.v1.Evaluator/Evaluate"


class RouterCallError(grpc.RpcError):
    """A call the client could not complete: the status code and why."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Metadata:
        return self._trailing


class RouterClient:
    """Watch the registry and call engines directly, balanced like the router."""

    def __init__(
        self,
        registry: str,
        *,
        token: str | None = None,
        config: RouterConfig | None = None,
        state_file: str | None = None,
    ) -> None:
        base = config or RouterConfig(state_file=None)
        self._config = replace(base, registry=registry, token=token or base.token)
        if state_file is not None:
            self._config = replace(self._config, state_file=state_file)
        self._core: RouterCore | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def core(self) -> RouterCore:
        if self._core is None:
            raise RuntimeError("RouterClient: call start() (or use `async with`) first")
        return self._core

    async def start(self, wait_s: float = 10.0) -> None:
        """Start watching; wait up to `wait_s` for a view (from the registry or the file)."""
        core = self._core = build_core(self._config)
        core.watcher.load_file()
        self._watch = asyncio.get_running_loop().create_task(core.watcher.run())
        try:
            await asyncio.wait_for(core.view_ready.wait(), wait_s)
        except TimeoutError:
            problem = core.watcher.problem
            await self.close()
            raise RouterCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"no routing view within {wait_s:g} s from {self._config.registry}: {problem}",
            ) from None

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._core is not None:
            await self._core.close()

    async def __aenter__(self) -> RouterClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def pick(
        self, *, alias: str | None = None, tenant: str | None = None, lang: str | None = None
    ) -> Endpoint:
        """One instance for a call the caller makes itself (streams, other services)."""
        try:
            aliases = self.core.table.route(alias, tenant, lang)
        except RouteError as error:
            raise RouterCallError(error.code, error.message) from None
        picked = self.core.table.pick(aliases)
        if picked is None:
            names = ", ".join(map(repr, aliases))
            raise RouterCallError(grpc.StatusCode.UNAVAILABLE, f"no healthy instance in {names}")
        return picked[1]

    async def unary(
        self,
        method: str,
        request: bytes,
        *,
        alias: str | None = None,
        tenant: str | None = None,
        lang: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, passed on
        metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> bytes:
        """Call a unary `method` with serialized `request`; the serialized response.

        The routing key picks the engine here and is not sent to it; `metadata`
        (any sequence of pairs, as grpc takes) goes to the engine as given.
        """
        core = self.core
        try:
            aliases = core.table.route(alias, tenant, lang)
            answer = await core.forwarder.unary(
                method,
                request,
                aliases,
                tuple(metadata),  # the forwarder (compiled) takes a tuple, callers often a list
                timeout if timeout is not None else self._config.default_deadline_s,
                with_metadata=False,
            )
        except RouteError as error:
            raise RouterCallError(error.code, error.message) from None
        except ForwardError as error:
            raise RouterCallError(error.code, error.details, error.trailing) from None
        return answer.response

    async def evaluate(
        self,
        request: evaluator_pb2.EvaluateRequest,
        *,
        alias: str | None = None,
        tenant: str | None = None,
        lang: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, passed on
        metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> evaluator_pb2.EvaluateResponse:
        """`Evaluator.Evaluate` on a balanced engine."""
        raw = await self.unary(
            EVALUATE,
            request.SerializeToString(),
            alias=alias,
            tenant=tenant,
            lang=lang,
            timeout=timeout,
            metadata=metadata,
        )
        response: Any = evaluator_pb2.EvaluateResponse.FromString(raw)
        return response  # type: ignore[no-any-return]
