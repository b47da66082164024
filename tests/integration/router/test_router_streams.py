"""Every gRPC call shape through the router's stream path, and the stream watchdog's timers.

One registry, one echo engine and one router whose stream timers are short
(first response 1 s, idle 1 s) serve the module. The router keeps its default
unary methods, so even Echo/Unary is proxied as a stream here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support.processes import wait_until_async
from tests.support.router_harness import (
    BIDI,
    CLIENT_STREAM,
    SERVER_STREAM,
    UNARY,
    EchoStack,
    EngineSpec,
    Metadata,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
    pairs,
    trailer,
)

pytestmark = pytest.mark.timeout(30)

ENGINE = "streams-e1"
FIRST_RESPONSE_S = 1.0
IDLE_S = 1.0
SPEC = StackSpec(
    engines=[EngineSpec(ENGINE, {"lang": "zh"})],
    aliases={"echo": "lang=zh"},
    routers=each_data_path(
        [
            *("--stream-first-response-s", str(FIRST_RESPONSE_S)),
            *("--stream-idle-s", str(IDLE_S)),
        ]
    ),
)
ECHOED: Metadata = (("x-echo-trace", "t-42"), ("x-echo-token-bin", b"\x01\x02\xfe"))
WAIT_S = 5.0
READ_S = 3.0
"""Longest wait for one message: far above the router's timers, far below the test's."""


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    """One stack, one router per data path."""
    with echo_stack(tmp_path_factory.mktemp("streams"), SPEC) as running:
        yield running


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), READ_S)


# ---- the four shapes -----------------------------------------------------------------


async def test_client_streaming_call_delivers_every_message_in_order(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    before = (await stack.calls_async("ClientStream"))[ENGINE]
    chunks = [b"one ", b"two ", bytes(range(256)), b" four"]
    call = channel.stream_unary(CLIENT_STREAM)(metadata=alias_key("echo", *ECHOED), timeout=10)
    for chunk in chunks:
        await call.write(chunk)
    await call.done_writing()
    response = await asyncio.wait_for(call, READ_S)
    assert response == f"{ENGINE}|4|".encode() + b"".join(chunks)
    assert pairs(await call.initial_metadata(), "x-echo-") == list(ECHOED)
    assert pairs(await call.trailing_metadata(), "x-echo-") == list(ECHOED)
    assert (await stack.calls_async("ClientStream"))[ENGINE] == before + 1


async def test_a_slow_client_stream_is_not_cut_off_while_the_caller_keeps_sending(
    channel: grpc.aio.Channel,
) -> None:
    # The first-response timer runs from the caller's last message: a recording
    # streamed for longer than the timer is fine as long as chunks keep coming.
    call = channel.stream_unary(CLIENT_STREAM)(metadata=alias_key("echo"), timeout=10)
    started = time.monotonic()
    for index in range(5):
        await call.write(b"%d" % index)
        await asyncio.sleep(FIRST_RESPONSE_S / 2.5)  # paced by design: a slow uploader
    await call.done_writing()
    response = await asyncio.wait_for(call, READ_S)
    assert time.monotonic() - started > FIRST_RESPONSE_S * 1.5
    assert response == f"{ENGINE}|5|01234".encode()


async def test_server_streaming_call_relays_every_response(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    call = channel.unary_stream(SERVER_STREAM)(b"5", metadata=alias_key("echo"), timeout=10)
    responses = [message async for message in call]
    assert responses == [f"{ENGINE}|{i}".encode() for i in range(5)]
    assert await call.code() is grpc.StatusCode.OK
    assert trailer(await call.trailing_metadata(), "x-engine-id") == ENGINE


async def test_bidi_call_interleaves_sends_and_receives(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream(BIDI)(metadata=alias_key("echo", *ECHOED), timeout=10)
    for word in (b"alpha", b"beta", b"gamma"):
        await call.write(word)
        # Each answer arrives before the next message is sent: no batching anywhere.
        assert await read(call) == b"echo:" + word
    await call.done_writing()
    assert await read(call) is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK
    assert pairs(await call.initial_metadata(), "x-echo-") == list(ECHOED)
    trailing = await call.trailing_metadata()
    assert pairs(trailing, "x-echo-") == list(ECHOED)
    assert trailer(trailing, "x-engine-id") == ENGINE


async def test_bidi_call_where_the_engine_speaks_first_needs_no_client_message(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.stream_stream(BIDI)(metadata=alias_key("echo", ("x-greet", "1")), timeout=10)
    # Nothing written yet: the router must have connected to the engine regardless.
    assert await read(call) == f"hello from {ENGINE}".encode()
    await call.write(b"then me")
    assert await read(call) == b"echo:then me"
    await call.done_writing()
    assert await read(call) is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK


async def test_unary_method_not_listed_as_unary_is_proxied_on_the_stream_path(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    before = (await stack.calls_async("Unary"))[ENGINE]
    call = channel.unary_unary(UNARY)(b"via stream", metadata=alias_key("echo", *ECHOED), timeout=5)
    assert await call == f"{ENGINE}|via stream".encode()
    assert pairs(await call.initial_metadata(), "x-echo-") == list(ECHOED)
    trailing = await call.trailing_metadata()
    assert pairs(trailing, "x-echo-") == list(ECHOED)
    assert trailer(trailing, "x-engine-id") == ENGINE
    assert (await stack.calls_async("Unary"))[ENGINE] == before + 1


# ---- the watchdog ----------------------------------------------------------------------


async def _cancelled(stack: EchoStack, method: str) -> int:
    return int((await stack.stats_async(ENGINE))["cancelled"].get(method, 0))


async def test_engine_silent_after_the_callers_last_message_fails_the_stream_naming_it(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    cancelled = await _cancelled(stack, "ServerStream")
    metadata = alias_key("echo", ("x-hang", "1"))
    started = time.monotonic()
    call = channel.unary_stream(SERVER_STREAM)(b"3", metadata=metadata, timeout=20)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    elapsed = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == f"engine {ENGINE} sent no response within 1 s"
    assert FIRST_RESPONSE_S - 0.05 <= elapsed < FIRST_RESPONSE_S + 1.5

    async def engine_let_go() -> bool:
        return await _cancelled(stack, "ServerStream") > cancelled

    await wait_until_async(engine_let_go, WAIT_S, "the router never cancelled the hung call")


async def test_stream_idle_after_a_response_fails_naming_the_engine(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    metadata = alias_key("echo", ("x-hang-after", "1"))
    call = channel.unary_stream(SERVER_STREAM)(b"3", metadata=metadata, timeout=20)
    assert await read(call) == f"{ENGINE}|0".encode()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    elapsed = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == f"engine {ENGINE} idle for 1 s"
    assert IDLE_S - 0.1 <= elapsed < IDLE_S + 1.5


async def test_bidi_idle_in_both_directions_fails_after_the_idle_timer(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.stream_stream(BIDI)(metadata=alias_key("echo"), timeout=20)
    await call.write(b"only one")
    assert await read(call) == b"echo:only one"
    # Neither side says anything more: the stream is idle, not merely slow.
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == f"engine {ENGINE} idle for 1 s"
    assert time.monotonic() - started < IDLE_S + 1.5
