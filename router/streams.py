"""Forward a streaming call of any shape: client-, server- or bidirectional streaming.

Every gRPC shape is the same on the wire (a stream of length-prefixed messages
each way), so the proxy treats all non-unary methods as bidirectional streams
and pumps bytes both ways without decoding them.

Why the watchdog: streams have no total deadline by default (a recording may be
long), so a hung engine is caught by two timers instead: no first response
within `first_response_s` of the caller's last message, or no message either
way for `idle_s` after that. A call is retried on another engine only while it
is safe: the engine never answered, and we hold every message it was sent (at
most the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc

from router.forward import Forwarder, ForwardError
from router.metadata import Metadata, answer_metadata
from router.retry import classify
from router.timers import Deadline, StreamTimeouts, stream_expired, stream_limit

__all__ = ["StreamForwarder", "StreamTimeouts"]

_NONE: frozenset[str] = frozenset()
WATCH_S = 0.25
"""How often a stream's timers are looked at."""
READ_AHEAD_S = 0.05
"""Longest wait for a caller's half-close before an engine whose answer was lost is asked again."""


class _Exchange:
    """The state of one proxied stream across its attempts."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.call: Any = None
        self.sent = 0
        self.first: bytes | None = None
        self.half_closed = False
        self.responses = 0
        self.last_activity = time.monotonic()
        self.attached = asyncio.Event()
        """Set when `call` is ready for the pump to write to."""
        self.read_ahead = asyncio.Event()
        """Set once the pump, its attempt ended, has read what the caller sent next."""


class StreamForwarder:
    """Pumps one server-side stream to a picked engine and back."""

    def __init__(self, forwarder: Forwarder, timeouts: StreamTimeouts) -> None:
        self._forwarder = forwarder
        self._timeouts = timeouts

    async def forward(
        self,
        method: str,
        context: Any,
        aliases: tuple[str, ...],
        metadata: Metadata,
        timeout: float | None,  # noqa: ASYNC109 - the caller's deadline, passed on
    ) -> None:
        """Run the exchange; raises ForwardError with the status for the caller."""
        fwd = self._forwarder
        fwd.budget.deposit()
        exchange = _Exchange(context)
        pump = asyncio.create_task(self._pump_up(exchange))
        deadline = Deadline.after(time.monotonic(), timeout)
        exclude = _NONE
        attempts = 0
        asked_again = again = False
        try:
            while True:
                if not again:
                    alias, endpoint = fwd.pick(aliases, exclude)
                    attempts += 1
                left = deadline.attempt_timeout(time.monotonic())
                call = self._call(endpoint.address, method, exchange, left, metadata, again)
                again = False
                exchange.call = call
                fwd.table.in_flight[endpoint.id] = fwd.table.in_flight.get(endpoint.id, 0) + 1
                started = time.monotonic()
                try:
                    await self._send_held(exchange, call)
                    exchange.attached.set()
                    code = await self._pump_down(exchange, endpoint.id)
                finally:
                    exchange.attached.clear()
                    fwd.table.in_flight[endpoint.id] -= 1
                if not asked_again and await _status_lost(call, code, exchange):
                    asked_again = again = True  # the same engine, not a retry: `_status_lost`
                    with contextlib.suppress(TimeoutError):  # a unary caller's half-close
                        await asyncio.wait_for(exchange.read_ahead.wait(), READ_AHEAD_S)
                    continue
                fwd.metrics.answered(alias, endpoint.id, code.name, time.monotonic() - started)
                initial: Metadata = ()
                if exchange.responses == 0:  # headers not relayed with a message yet
                    initial = answer_metadata(await call.initial_metadata())
                if code is grpc.StatusCode.OK:
                    fwd.table.report_success(alias, endpoint.id)
                    if initial:
                        await context.send_initial_metadata(initial)
                    context.set_trailing_metadata(answer_metadata(await call.trailing_metadata()))
                    return
                details = await call.details()
                failure = classify(code, details, exchange.responses > 0)
                safe = exchange.responses == 0 and exchange.sent <= 1
                left = deadline.left(time.monotonic())
                if fwd.after_failure(method, alias, endpoint, failure, code, attempts, left, safe):
                    exclude = exclude | {endpoint.id}
                    continue
                trailing = answer_metadata(await call.trailing_metadata())
                raise ForwardError(code, details or "", trailing, endpoint.id, initial)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            if exchange.call is not None:
                exchange.call.cancel()

    def _call(
        self,
        address: str,
        method: str,
        exchange: _Exchange,
        timeout: float | None,
        metadata: Metadata,
        one_batch: bool,
    ) -> Any:
        """A new attempt's call; with `one_batch`, a caller that sent one message and
        half-closed is asked in a single batch (unary-stream), so no write can race
        the engine's answer."""
        if one_batch and exchange.half_closed and exchange.first is not None:
            channel = self._forwarder.channels.channel(address)
            return channel.unary_stream(method)(exchange.first, timeout=timeout, metadata=metadata)
        return self._forwarder.channels.stream(address, method)(timeout=timeout, metadata=metadata)

    @staticmethod
    async def _send_held(exchange: _Exchange, call: Any) -> None:
        """Resend what an earlier attempt was sent; the call's status tells any failure."""
        if not hasattr(call, "write"):
            return  # a unary-stream call carries its one message
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            if exchange.first is not None:
                await call.write(exchange.first)
            if exchange.half_closed:
                await call.done_writing()

    async def _pump_up(self, exchange: _Exchange) -> None:
        """Caller → engine. Keeps the first message so an early retry can resend it."""
        context = exchange.context
        ahead: Any = None
        while True:
            if ahead is None:
                message = await context.read()
                exchange.last_activity = time.monotonic()
            else:
                message, ahead = ahead, None
            await exchange.attached.wait()
            call = exchange.call
            try:
                if message is grpc.aio.EOF:
                    exchange.half_closed = True
                    await call.done_writing()
                    return
                if exchange.sent == 0:
                    exchange.first = message
                exchange.sent += 1
                await call.write(message)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                # The attempt ended. Its status decides: a retry resends the first
                # message and the half-close itself, and we carry on with the next call.
                if exchange.sent > 1:
                    return
                ahead = await self._next_attempt(exchange, call)
                if exchange.half_closed:
                    return

    @staticmethod
    async def _next_attempt(exchange: _Exchange, call: Any) -> Any:
        """Wait for the next attempt's call; what the caller sent meanwhile (or None)."""
        ahead: Any = None
        if not exchange.half_closed:
            # Read ahead: a caller that has half-closed is asked again in one
            # batch (see `_status_lost`); a message waits for the next call.
            ahead = await exchange.context.read()
            if ahead is grpc.aio.EOF:
                exchange.half_closed = True
            exchange.read_ahead.set()
        while exchange.call is call:
            exchange.attached.clear()
            await exchange.attached.wait()
        return ahead

    async def _pump_down(self, exchange: _Exchange, instance: str) -> grpc.StatusCode:
        """Engine → caller, under the first-response and idle timers; the final status."""
        call = exchange.call
        reader = asyncio.ensure_future(self._relay(exchange))
        try:
            while True:
                # The same two timers as the relay's (`router.timers`): waiting for the
                # engine's first answer to what the caller sent, or idle.
                spoke = exchange.sent > 0 or exchange.half_closed
                answered = exchange.responses > 0
                _, limit = stream_limit(spoke, answered, self._timeouts)
                wait_s = exchange.last_activity + limit - time.monotonic()
                # Wake at least every WATCH_S: the caller's messages change the limit.
                done, _ = await asyncio.wait({reader}, timeout=min(max(wait_s, 0), WATCH_S))
                if done:
                    reader.result()
                    code: grpc.StatusCode = await call.code()
                    return code
                now = time.monotonic()
                verdict = stream_expired(
                    now, exchange.last_activity, spoke, answered, self._timeouts
                )
                if verdict is not None:
                    what, limit = verdict
                    call.cancel()
                    raise ForwardError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"engine {instance} {what} {limit:g} s",
                        instance=instance,
                    )
        finally:
            if not reader.done():
                reader.cancel()

    async def _relay(self, exchange: _Exchange) -> None:
        call, context = exchange.call, exchange.context
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                if exchange.responses == 0:
                    initial = answer_metadata(await call.initial_metadata())
                    if initial:
                        await context.send_initial_metadata(initial)
                exchange.responses += 1
                exchange.last_activity = time.monotonic()
                await context.write(message)
        except grpc.aio.AioRpcError:
            return  # the status is read from the call


CORE_INTERNAL = "Internal error from Core"
"""What grpc's client reports when a write meets a call its engine already ended."""


async def _status_lost(call: Any, code: grpc.StatusCode, exchange: _Exchange) -> bool:
    """Whether grpc's client replaced the engine's status with its own INTERNAL.

    Why: an engine may answer (UNIMPLEMENTED, say) as soon as it sees the headers;
    the router's write of the first message then meets a finished call, and grpc's
    client reports INTERNAL instead of the engine's status (a client race, about 8 %
    of calls to an unimplemented method). The engine never saw that message, so
    asking the same engine again, in one batch, is safe and gives its real answer.
    """
    if code is not grpc.StatusCode.INTERNAL or exchange.responses or exchange.sent > 1:
        return False
    details: str | None = await call.details()
    return details == CORE_INTERNAL
