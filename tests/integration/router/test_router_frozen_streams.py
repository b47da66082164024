"""Streams on an engine that freezes (SIGSTOP), on both data paths: the stream retry rules hold.

A stream that already received answers is never replayed: the caller gets an
error once the router sees the connection is dead (PING/keepalive), not a
second, silent copy of the call elsewhere. A stream frozen before its first
answer, whose request the router holds in full, is retried on another engine.
Real processes: a registry, three echo engines, one router per data path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.support.processes import wait_until_async
from tests.support.router_harness import (
    BIDI,
    CLIENT_STREAM,
    EchoStack,
    EngineSpec,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
)

ENGINES = ("frozen-a", "frozen-b", "frozen-c")
DETECTED_WITHIN_S = 5.0
"""PING silence plus its ACK timeout (relay), or keepalive time plus timeout (grpc), with room."""
SLEEP_MS = 1500
"""How long an engine takes to answer the client stream: time to find and freeze it."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[EngineSpec(e, {"lang": "zh"}) for e in ENGINES],
        aliases={"echo": "lang=zh"},
        routers=each_data_path(),
    )
    with echo_stack(tmp_path_factory.mktemp("frozen-streams"), spec) as running:
        yield running


async def _read_to_the_end(call: grpc.aio.StreamStreamCall) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_a_stream_that_already_had_answers_is_not_retried(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    call = channel.stream_stream(BIDI)(metadata=alias_key("echo", ("x-greet", "1")), timeout=30)
    greeting = await call.read()
    engine = bytes(greeting).decode().rsplit(" ", 1)[-1]
    assert engine in ENGINES, greeting
    others = [e for e in ENGINES if e != engine]
    before = {e: (await stack.stats_async(e))["calls"].get("Bidi", 0) for e in others}
    process = stack.engines[engine]
    os.kill(process.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        await call.write(b"are you there")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _read_to_the_end(call)
        took = time.monotonic() - started
        after = {e: (await stack.stats_async(e))["calls"].get("Bidi", 0) for e in others}
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value
    assert took < DETECTED_WITHIN_S, f"the dead connection was noticed after {took:.1f} s"
    assert after == before, f"the answered stream was replayed elsewhere: {before} -> {after}"


async def test_a_stream_frozen_before_its_first_answer_is_retried_elsewhere(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    counts = {e: (await stack.stats_async(e))["calls"].get("ClientStream", 0) for e in ENGINES}
    metadata = alias_key("echo", ("x-sleep-ms", str(SLEEP_MS)))
    call = channel.stream_unary(CLIENT_STREAM)(iter([b"only"]), metadata=metadata, timeout=30)
    answer = asyncio.ensure_future(call)
    got: list[str] = []

    async def reached() -> bool:
        for engine in ENGINES:
            stats = await stack.stats_async(engine)
            if stats["calls"].get("ClientStream", 0) > counts[engine]:
                got.append(engine)
                return True
        return False

    try:
        await wait_until_async(reached, 5, "the client stream reached no engine")
        process = stack.engines[got[0]]
        os.kill(process.pid, signal.SIGSTOP)  # while it sleeps: it has not answered yet
        frozen_at = time.monotonic()
        try:
            response = await answer
            took = time.monotonic() - frozen_at
        finally:
            os.kill(process.pid, signal.SIGCONT)
    finally:
        answer.cancel()
    engine, count, body = bytes(response).split(b"|", 2)
    assert engine.decode() != got[0], "the answer came from the frozen engine"
    assert (count, body) == (b"1", b"only")
    assert took < DETECTED_WITHIN_S + SLEEP_MS / 1000, f"answered {took:.1f} s after the freeze"
