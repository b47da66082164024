"""One heartbeat session: a stream to the registry that carries beats out and directives in.

A session opens the stream, writes the first beat and waits (bounded) for the
acknowledgement: from then on the engine is attached. It then writes a beat
every interval, or at once when woken (a status change), and reads the
registry's responses, until either side fails; the error that says most (the
reader's, which carries the status) is raised as an `AgentError`. Re-attaching
after a failure is the agent's decision, not the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from registry.sdk.errors import AgentError, RegistryUnavailableError, translate, translate_status


class HeartbeatSession:
    """One heartbeat stream, from the first beat until it breaks."""

    def __init__(
        self,
        stub: Any,
        metadata: Any,
        *,
        registry: str,
        rpc_timeout_s: float,
        request: Callable[[], Any],
        interval_s: Callable[[], float],
        wake: asyncio.Event,
        on_response: Callable[[Any], None],
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._registry = registry
        self._rpc_timeout_s = rpc_timeout_s
        self._request = request
        self._interval_s = interval_s
        self._wake = wake
        self._on_response = on_response

    async def run(self, on_attached: Callable[[], None]) -> None:
        """Attach (`on_attached` once acknowledged), then beat until the stream fails."""
        call = self._stub.Heartbeat(metadata=self._metadata)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self._rpc_timeout_s):
                await self._write(call)
                ack = await call.read()
            if ack is grpc.aio.EOF:
                raise await self._ended(call)
            on_attached()
            self._on_response(ack)
            await first_to_stop(self._read_responses(call), self._write_beats(call))
        except grpc.RpcError as exc:
            raise translate(exc, "heartbeat", self._registry) from None
        except TimeoutError:
            raise RegistryUnavailableError("heartbeat stream stopped moving") from None
        finally:
            call.cancel()

    async def _write_beats(self, call: Any) -> None:
        while True:
            # Clear before building the request: a status change during the write wakes us again.
            self._wake.clear()
            async with asyncio.timeout(self._rpc_timeout_s):
                await self._write(call)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s()):
                    await self._wake.wait()

    async def _write(self, call: Any) -> None:
        try:
            await call.write(self._request())
        except asyncio.InvalidStateError:
            raise await self._ended(call) from None

    async def _read_responses(self, call: Any) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise await self._ended(call)
            self._on_response(response)

    async def _ended(self, call: Any) -> AgentError:
        """Why a stream the registry closed ended (an OK close is still a lost stream)."""
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return RegistryUnavailableError("heartbeat stream closed by the registry")
        details = await call.details()
        return translate_status(code, details or "", "heartbeat", self._registry)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until each has finished."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def first_to_stop(*coros: Coroutine[Any, Any, None]) -> None:
    """Run `coros` together until one returns or raises; cancel the rest.

    Re-raises the error of the earliest-listed coroutine that failed, so callers
    list first the one whose errors say most (the stream reader carries the status).
    """
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_all(tasks)
    for task in tasks:
        if task in done and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
