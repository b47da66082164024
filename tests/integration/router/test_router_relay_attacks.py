"""The relay under attack: one hostile or slow caller must not cost the other callers.

One registry and one echo engine (processes) serve the module; each test starts
its own relay in the test's event loop with the limits it exercises, runs an
attacker from `tests.support.relay_attacks` beside ordinary gRPC callers, and
checks that the attacker is cut off (or contained) while the others keep their
success and latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hpack import Decoder
from prometheus_client import generate_latest

from router.config import RouterConfig
from router.core import RouterCore, build_core
from router.relay import RelayServer, start_relay
from router.relay import frames as f
from tests.support import relay_attacks as attacks
from tests.support.processes import wait_until_async
from tests.support.relay_attacks import GoodLoad, LoadResult, RawCaller, request_headers
from tests.support.router_harness import (
    UNARY,
    EchoStack,
    EngineSpec,
    StackSpec,
    echo_stack,
    metric,
    parse_metrics,
)

Relay = RelayServer
pytestmark = [pytest.mark.timeout(90), pytest.mark.asyncio(loop_scope="module")]

ALIAS = "one"
ENGINE = "attack-e1"
GOOD_P99_S = 0.5
"""A normal caller's p99 beside an attacker; unloaded it is about 10 ms."""
CLOSE_S = 5.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[EngineSpec(ENGINE, {"lang": ALIAS})], aliases={ALIAS: f"lang={ALIAS}"}, routers={}
    )
    with echo_stack(tmp_path_factory.mktemp("attacks"), spec) as running:
        yield running


@asynccontextmanager
async def relay_on(
    stack: EchoStack, **limits: Any
) -> AsyncIterator[tuple[RouterCore, RelayServer]]:
    config = RouterConfig(
        registry=stack.registry.grpc,
        listen="127.0.0.1:0",
        state_file=None,
        slow_start_s=0,
        unary_methods=(UNARY,),
        **limits,
    )
    core = build_core(config)
    watch = asyncio.create_task(core.watcher.run())
    relay = await start_relay(core, "127.0.0.1", 0)
    try:
        await wait_until_async(
            lambda: len(core.table.endpoints(ALIAS)) == 1, 10, "the relay never saw the engine"
        )
        yield core, relay
    finally:
        await relay.close(0.5)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await core.close()


def good_load(relay: RelayServer) -> GoodLoad:
    return GoodLoad(f"127.0.0.1:{relay.port}", UNARY, [("x-tidepool-alias", ALIAS)]).start()


def assert_unharmed(result: LoadResult) -> None:
    assert result.ok > 20, result.describe()
    assert result.failed == 0, result.describe()
    assert result.p99_s < GOOD_P99_S, result.describe()


def refusals(core: RouterCore, reason: str) -> float:
    samples = parse_metrics(generate_latest(core.metrics.registry).decode())
    return metric(samples, "tidepool_router_refusals_total", reason=reason)


async def engine_calls(stack: EchoStack, method: str = "Unary") -> int:
    stats = await stack.stats_async(ENGINE)
    return int(stats["calls"].get(method, 0))


# ---- 1, 2: slow callers --------------------------------------------------------------


async def test_callers_that_grant_no_window_do_not_slow_other_callers_of_the_engine(
    stack: EchoStack,
) -> None:
    async with relay_on(stack) as (_, relay):
        # 24 open calls hold 1 MB each that they will never take: more than the
        # 16 MiB window one engine connection has for every caller together.
        stalled = await attacks.stalled_responses(relay.port, ALIAS, 24)
        try:
            await asyncio.sleep(1.0)  # the answers reach the relay and stall there
            load = good_load(relay)
            await asyncio.sleep(2.0)
            result = await load.stop()
            held = sum(held_for_callers(relay))
        finally:
            for caller in stalled:
                await caller.close()
    assert_unharmed(result)
    assert held <= 24 * 64 * 1024, f"the relay holds {held} bytes for callers that take none"


def held_for_callers(relay: RelayServer) -> tuple[int, int]:
    """(bytes in caller transports' buffers, bytes queued in caller streams) in the relay."""
    buffered = queued = 0
    for conn in relay.connections:
        if conn.transport is not None:
            buffered += conn.transport.get_write_buffer_size()
        queued += sum(len(item[1]) for stream in conn.streams.values() for item in stream.queue)
    return buffered, queued


async def test_a_caller_that_never_reads_is_not_fed_past_its_connection_buffer(
    stack: EchoStack,
) -> None:
    limit = 256 * 1024
    async with relay_on(stack, connection_buffer_bytes=limit) as (_, relay):
        callers = []
        for _ in range(2):  # 28 MB of answers asked for, not one byte of them read
            caller = await RawCaller.open(
                relay.port, [(f.SETTINGS_INITIAL_WINDOW_SIZE, attacks.BIG_WINDOW)], reading=False,
                rcvbuf=4096,
            )  # fmt: skip
            caller.send(f.window_update(0, attacks.BIG_WINDOW - f.DEFAULT_WINDOW))
            await asyncio.wait_for(caller.settled.wait(), CLOSE_S)
            for _ in range(14):
                caller.call(request_headers(attacks.BIDI_PATH, ALIAS), b"x" * 1_000_000, end=False)
            await caller.drain()
            callers.append(caller)
        try:
            load = good_load(relay)
            peak = 0
            for _ in range(20):
                await asyncio.sleep(0.1)
                peak = max(peak, held_for_callers(relay)[0])
            result = await load.stop()
        finally:
            for caller in callers:
                await caller.close()
    assert peak <= 2 * (2 * limit + f.DEFAULT_MAX_FRAME), f"{peak} bytes buffered for 2 callers"
    assert_unharmed(result)


# ---- 3: rapid reset --------------------------------------------------------------------


async def test_rapid_reset_is_answered_with_enhance_your_calm_and_costs_the_engine_nothing(
    stack: EchoStack,
) -> None:
    async with relay_on(stack, max_resets_per_s=10.0) as (core, relay):
        before = await engine_calls(stack)
        load = good_load(relay)
        caller = await attacks.rapid_reset(relay.port, ALIAS, 3.0)
        try:
            assert await caller.wait_closed(CLOSE_S), "the relay never closed the attacker"
            assert caller.goaway == f.ENHANCE_YOUR_CALM
            await asyncio.sleep(0.5)
            result = await load.stop()
        finally:
            await caller.close()
        reached = await engine_calls(stack) - before - result.ok - result.failed
        assert refusals(core, "rapid_reset") == 1
    assert reached < 10, f"{reached} reset requests reached the engine"
    assert_unharmed(result)


# ---- 4: control-frame floods -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["ping", "settings", "continuation"])
async def test_control_frame_floods_are_answered_with_enhance_your_calm(
    stack: EchoStack, kind: str
) -> None:
    async with relay_on(stack, max_control_frames_per_s=100.0) as (core, relay):
        load = good_load(relay)
        caller = await attacks.control_flood(relay.port, kind, ALIAS, 3.0)
        try:
            assert await caller.wait_closed(CLOSE_S), f"a {kind} flood was never cut off"
            assert caller.goaway == f.ENHANCE_YOUR_CALM
            await asyncio.sleep(0.5)
            result = await load.stop()
        finally:
            await caller.close()
        assert refusals(core, "control_flood") == 1
    assert_unharmed(result)


# ---- 5: connections that never speak -------------------------------------------------


async def test_silent_and_trickling_connections_are_closed_after_the_handshake_timeout(
    stack: EchoStack,
) -> None:
    async with relay_on(stack, handshake_timeout_s=0.5) as (core, relay):
        silent = await attacks.silent_sockets(relay.port, 20)
        trickling = await attacks.silent_sockets(relay.port, 20, trickle=True)
        try:
            load = good_load(relay)
            closed = await asyncio.gather(*(c.wait_closed(CLOSE_S) for c in silent + trickling))
            result = await load.stop()
        finally:
            for caller in silent + trickling:
                await caller.close()
        assert all(closed), f"{closed.count(False)} of 40 silent connections left open"
        assert refusals(core, "handshake_timeout") == 40
    assert_unharmed(result)


async def test_a_connection_without_a_stream_is_closed_after_the_idle_timeout(
    stack: EchoStack,
) -> None:
    async with relay_on(stack, idle_timeout_s=0.5) as (core, relay):
        caller = await RawCaller.open(relay.port)
        try:
            assert await caller.wait_closed(CLOSE_S), "an idle connection stayed open"
        finally:
            await caller.close()
        assert caller.goaway == f.NO_ERROR
        assert refusals(core, "idle_timeout") == 1


async def test_connections_past_max_connections_are_closed_at_once(stack: EchoStack) -> None:
    async with relay_on(stack, max_connections=3) as (core, relay):
        held = [await RawCaller.open(relay.port) for _ in range(3)]
        for caller in held:
            await asyncio.wait_for(caller.settled.wait(), CLOSE_S)
        extra = await RawCaller.open(relay.port)
        try:
            assert await extra.wait_closed(CLOSE_S), "a connection past the limit was kept"
            assert not any(c.closed.is_set() for c in held)
            assert refusals(core, "max_connections") == 1
        finally:
            for caller in [*held, extra]:
                await caller.close()


# ---- 6: validation -----------------------------------------------------------------------

BAD_REQUESTS = {
    "uppercase name": [(b"X-Upper", b"1")],
    "te gzip": [(b"te", b"gzip")],
    "connection header": [(b"connection", b"keep-alive")],
    "pseudo after regular": [(b":authority", b"again")],
}


@pytest.mark.parametrize("extra", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_a_malformed_request_is_reset_and_never_reaches_the_engine(
    stack: EchoStack, extra: list[tuple[bytes, bytes]]
) -> None:
    async with relay_on(stack) as (core, relay):
        before = await engine_calls(stack)
        caller = await RawCaller.open(relay.port)
        try:
            await asyncio.wait_for(caller.settled.wait(), CLOSE_S)
            headers = [h for h in request_headers(UNARY, ALIAS) if h[0] != b"te"] + extra
            sid = caller.call(headers, b"hello")
            await wait_until_async(lambda: caller.reset_codes(sid), CLOSE_S, "never reset")
            assert caller.reset_codes(sid) == [f.PROTOCOL_ERROR]
            assert not caller.closed.is_set(), "a stream error must not cost the connection"
        finally:
            await caller.close()
        assert await engine_calls(stack) == before
        assert refusals(core, "malformed") == 1


async def test_a_request_that_is_not_grpc_gets_415(stack: EchoStack) -> None:
    async with relay_on(stack) as (_, relay):
        caller = await RawCaller.open(relay.port)
        try:
            await asyncio.wait_for(caller.settled.wait(), CLOSE_S)
            headers = [
                (k, b"text/plain" if k == b"content-type" else v)
                for k, v in request_headers(UNARY, ALIAS)
            ]
            sid = caller.call(headers, None)
            await wait_until_async(lambda: caller.headers_on(sid), CLOSE_S, "no answer")
        finally:
            await caller.close()
        block = caller.headers_on(sid)[0].payload
        assert (b":status", b"415") in Decoder().decode(block, raw=True)


async def test_data_after_end_stream_gets_stream_closed(stack: EchoStack) -> None:
    async with relay_on(stack) as (core, relay):
        caller = await RawCaller.open(relay.port)
        try:
            await asyncio.wait_for(caller.settled.wait(), CLOSE_S)
            headers = request_headers(UNARY, ALIAS, (b"x-sleep-ms", b"2000"))
            sid = caller.call(headers, b"hello")
            await asyncio.sleep(0.2)
            caller.send(f.frame(f.DATA, 0, sid, b"more"))
            await wait_until_async(lambda: caller.reset_codes(sid), CLOSE_S, "never reset")
            assert caller.reset_codes(sid) == [f.STREAM_CLOSED]
        finally:
            await caller.close()
        assert refusals(core, "stream_closed") == 1
