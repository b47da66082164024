"""The HTTP/2 relay data path proxies real gRPC calls to real engines, and fails over.

One registry and five echo engines (processes) serve the module; the relay runs
in the test's event loop on a `RouterCore` watching that registry. Alias `echo`
has three real engines; `flaky` adds one registered at a refusing port; `hole`
has one registered at a port that accepts TCP but never speaks HTTP/2.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router.config import RouterConfig
from router.core import RouterCore, build_core
from router.relay import Keepalive, RelayServer, start_relay
from tests.support.processes import wait_until_async
from tests.support.router_harness import (
    BIDI,
    CLIENT_STREAM,
    MUTATE,
    SERVER_STREAM,
    UNARY,
    EchoStack,
    EngineSpec,
    RefusingPort,
    StackSpec,
    alias_key,
    echo_stack,
    pairs,
    trailer,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

DEFAULT_DEADLINE_S = 1.5
ECHO = ("relay-e1", "relay-e2", "relay-e3")
WAIT_S = 5.0
MiB = 1 << 20


@dataclass
class Relayed:
    stack: EchoStack
    core: RouterCore
    relay: RelayServer
    address: str


@pytest.fixture(scope="module")
def refusing() -> Iterator[RefusingPort]:
    with RefusingPort() as port:
        yield port


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    """A port that completes TCP handshakes and then never reads or answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, refusing: RefusingPort, black_hole: str
) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[
            *(EngineSpec(e, {"lang": "zh", "tier": "idc"}) for e in ECHO),
            EngineSpec("relay-refused", {"lang": "fl"}, advertise=refusing.address),
            EngineSpec("relay-hole", {"lang": "hole"}, advertise=black_hole),
        ],
        aliases={"echo": "lang=zh", "flaky": "lang=fl|zh", "hole": "lang=hole"},
        tenants={("acme", "zh"): ["echo"]},
        routers={},
    )
    with echo_stack(tmp_path_factory.mktemp("relay"), spec) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relayed(stack: EchoStack) -> AsyncIterator[Relayed]:
    config = RouterConfig(
        registry=stack.registry.grpc,
        listen="127.0.0.1:0",
        state_file=None,
        slow_start_s=0,
        unary_methods=(UNARY, MUTATE),
        idempotent_methods=(UNARY,),
        default_deadline_s=DEFAULT_DEADLINE_S,
        # The black hole is a frozen engine: keep its PING failure past the deadlines
        # these tests are about (tests/integration/router/test_router_frozen_*.py).
        engine_ping_timeout_s=5.0,
    )
    core = build_core(config)
    watch = asyncio.create_task(core.watcher.run())
    relay = await start_relay(core, "127.0.0.1", 0)
    try:
        for alias, count in (("echo", 3), ("flaky", 4), ("hole", 1)):
            await wait_until_async(
                lambda a=alias, n=count: len(core.table.endpoints(a)) == n,  # type: ignore[misc]
                10,
                f"the relay's table never saw {count} instances in {alias}",
            )
        yield Relayed(stack, core, relay, f"127.0.0.1:{relay.port}")
    finally:
        await relay.close(1.0)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await core.close()


@pytest_asyncio.fixture(loop_scope="module")
async def channel(relayed: Relayed) -> AsyncIterator[grpc.aio.Channel]:
    options = [("grpc.max_receive_message_length", 8 * MiB)]
    async with grpc.aio.insecure_channel(relayed.address, options=options) as opened:
        yield opened


def unary(channel: grpc.aio.Channel, method: str = UNARY) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(method)


async def test_unary_call_reaches_an_engine_and_back(channel: grpc.aio.Channel) -> None:
    answer = await unary(channel)(b"hello", metadata=alias_key("echo"), timeout=WAIT_S)
    engine, _, echoed = answer.partition(b"|")
    assert engine.decode() in ECHO
    assert echoed == b"hello"


async def test_tenant_and_lang_route_like_an_alias(channel: grpc.aio.Channel) -> None:
    metadata = (("x-tidepool-tenant", "acme"), ("x-tidepool-lang", "zh"))
    answer = await unary(channel)(b"t", metadata=metadata, timeout=WAIT_S)
    assert answer.endswith(b"|t")


async def test_client_stream_relays_every_message(channel: grpc.aio.Channel) -> None:
    call = channel.stream_unary(CLIENT_STREAM)
    messages = [bytes([i]) * (1000 + i) for i in range(20)]
    answer = await call(iter(messages), metadata=alias_key("echo"), timeout=WAIT_S)
    _, count, joined = answer.split(b"|", 2)
    assert (int(count), joined) == (20, b"".join(messages))


async def test_server_stream_and_bidi_flow_both_ways(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(SERVER_STREAM)(b"5", metadata=alias_key("echo"), timeout=WAIT_S)
    answers = [m async for m in call]
    assert [a.split(b"|")[1] for a in answers] == [b"0", b"1", b"2", b"3", b"4"]
    bidi = channel.stream_stream(BIDI)(metadata=alias_key("echo"), timeout=WAIT_S)
    for word in (b"a", b"b", b"c"):
        await bidi.write(word)
        assert await bidi.read() == b"echo:" + word
    await bidi.done_writing()
    assert await bidi.read() is grpc.aio.EOF
    assert await bidi.code() is grpc.StatusCode.OK


async def test_metadata_and_trailers_pass_through(channel: grpc.aio.Channel) -> None:
    sent = (("x-echo-plain", "hi"), ("x-echo-blob-bin", b"\x00\xff binary"))
    call = unary(channel)(b"m", metadata=alias_key("echo", *sent), timeout=WAIT_S)
    await call
    assert pairs(await call.initial_metadata(), "x-echo-") == list(sent)
    trailing = await call.trailing_metadata()
    assert pairs(trailing, "x-echo-") == list(sent)
    assert trailer(trailing, "x-engine-id") in ECHO


async def test_engine_error_status_and_details_pass_through(channel: grpc.aio.Channel) -> None:
    metadata = alias_key("echo", ("x-fail-code", "RESOURCE_EXHAUSTED"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, MUTATE)(b"x", metadata=metadata, timeout=WAIT_S)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "failed as asked" in (caught.value.details() or "")
    assert trailer(caught.value.trailing_metadata(), "grpc-status-details-bin")


async def test_unknown_alias_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel)(b"x", metadata=alias_key("nope"), timeout=WAIT_S)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "x-tidepool-alias: unknown alias 'nope'"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await unary(channel)(b"x", timeout=WAIT_S)
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_deadline_reaches_the_engine(relayed: Relayed, channel: grpc.aio.Channel) -> None:
    await unary(channel, MUTATE)(b"d", metadata=alias_key("echo"), timeout=3.0)
    seen = [(await relayed.stack.stats_async(e))["deadlines"].get("Mutate") for e in ECHO]
    assert any(s is not None and 2.0 < s <= 3.05 for s in seen), seen


async def test_deadline_enforced_by_the_relay(channel: grpc.aio.Channel) -> None:
    """The `hole` engine never answers: only the relay can end the call on time."""
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel)(b"x", metadata=alias_key("hole"), timeout=0.5)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    call = channel.stream_unary(CLIENT_STREAM)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await call(iter([b"a", b"b"]), metadata=alias_key("hole"), timeout=0.5)
    assert streamed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_default_deadline_applies_to_unary_methods(channel: grpc.aio.Channel) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel)(b"x", metadata=alias_key("hole"))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert DEFAULT_DEADLINE_S - 0.1 < time.monotonic() - started < DEFAULT_DEADLINE_S + 1.0


async def test_connect_failure_is_retried_without_a_client_error(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    answers = await asyncio.gather(
        *(unary(channel, MUTATE)(b"r", metadata=alias_key("flaky"), timeout=WAIT_S)
          for _ in range(40))
    )  # fmt: skip
    assert all(a.split(b"|")[0].decode() in ECHO for a in answers)
    registry = relayed.core.metrics.registry
    labels = {"alias": "flaky", "engine": "relay-refused", "code": "UNAVAILABLE"}
    assert (registry.get_sample_value("tidepool_router_requests_total", labels) or 0) >= 1
    retried = {"alias": "flaky", "reason": "connect"}
    assert (registry.get_sample_value("tidepool_router_retries_total", retried) or 0) >= 1
    ejected = {"alias": "flaky", "engine": "relay-refused", "kind": "passive"}
    assert (registry.get_sample_value("tidepool_router_ejections_total", ejected) or 0) >= 1


async def test_a_3_mib_message_flows_both_ways(channel: grpc.aio.Channel) -> None:
    payload = bytes(range(256)) * (3 * MiB // 256)
    answer = await unary(channel)(payload, metadata=alias_key("echo"), timeout=20)
    assert answer.split(b"|", 1)[1] == payload


async def test_a_request_message_over_the_limit_is_refused_before_any_byte_reaches_an_engine(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    limit = relayed.core.config.max_message_bytes
    before = await relayed.stack.calls_async("Mutate")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, MUTATE)(b"x" * (limit + 1), metadata=alias_key("echo"), timeout=20)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        caught.value.details() == f"request message larger than max ({limit + 1} vs. {limit} bytes)"
    )
    assert await relayed.stack.calls_async("Mutate") == before
    answer = await unary(channel)(b"after", metadata=alias_key("echo"), timeout=WAIT_S)
    assert answer.endswith(b"|after"), "the connection still carries other calls"


async def test_a_response_message_over_the_limit_is_refused_naming_the_engine(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    limit = relayed.core.config.max_message_bytes
    request = b"y" * (limit - 4)  # within the limit; the engine's "<id>|" prefix is not
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, MUTATE)(request, metadata=alias_key("echo"), timeout=20)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert details.startswith(f"response message larger than max ({limit - 4 + 9} vs. {limit} ")
    assert details.rsplit(" ", 1)[1] in ECHO, details


async def test_health_check_follows_the_serving_state(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    status = health_pb2.HealthCheckResponse
    try:
        relayed.relay.set_serving(True)
        assert (await health.Check(request, timeout=WAIT_S)).status == status.SERVING
        relayed.relay.set_serving(False)  # stopping
        assert (await health.Check(request, timeout=WAIT_S)).status == status.NOT_SERVING
    finally:
        relayed.relay.set_serving(True)
    watch = health.Watch(request, timeout=WAIT_S)
    assert (await watch.read()).status == status.SERVING  # see test_router_relay_health_watch
    watch.cancel()


async def test_keepalive_drops_an_idle_connection_whose_engine_stopped_answering(
    relayed: Relayed, black_hole: str
) -> None:
    keepalive = Keepalive(interval_s=0.3, timeout_s=0.3)
    second = await start_relay(relayed.core, "127.0.0.1", 0, keepalive=keepalive)
    pool = second.relay.pool
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as opened:
            with pytest.raises(grpc.aio.AioRpcError):  # the hole takes TCP, never answers
                await unary(opened)(b"x", metadata=alias_key("hole"), timeout=0.3)
            assert pool.connection_count(black_hole) == 1
            started = time.monotonic()
            await wait_until_async(
                lambda: pool.connection_count(black_hole) == 0,
                WAIT_S,
                "the relay kept a connection whose PINGs went unanswered",
            )
            assert time.monotonic() - started < 2.0
    finally:
        await second.close(0.0)


async def test_200_concurrent_calls(channel: grpc.aio.Channel) -> None:
    calls = [
        unary(channel)(str(i).encode(), metadata=alias_key("echo"), timeout=20) for i in range(200)
    ]
    answers = await asyncio.gather(*calls)
    assert sorted(int(a.split(b"|")[1]) for a in answers) == list(range(200))


async def test_malformed_client_is_closed_others_keep_working(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relayed.relay.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x09garbage-garbage!")
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), WAIT_S)  # until the relay closes it
    writer.close()
    assert b"\x07" in received  # a GOAWAY frame came before the close
    answer = await unary(channel)(b"ok", metadata=alias_key("echo"), timeout=WAIT_S)
    assert answer.endswith(b"|ok")


async def _unary_calls(relayed: Relayed) -> int:
    """Unary calls the alias's engines have started, all together."""
    stats = [await relayed.stack.stats_async(engine) for engine in ECHO]
    return sum(int(s["calls"].get("Unary", 0)) for s in stats)


async def test_graceful_close_lets_calls_in_flight_finish(relayed: Relayed) -> None:
    second = await start_relay(relayed.core, "127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as opened:
        metadata = alias_key("echo", ("x-sleep-ms", "300"))
        before = await _unary_calls(relayed)
        call = unary(opened)(b"slow", metadata=metadata, timeout=WAIT_S)

        async def at_the_engine() -> bool:
            return await _unary_calls(relayed) > before

        await wait_until_async(at_the_engine, WAIT_S, "the slow call never reached an engine")
        started = time.monotonic()
        await second.close(3.0)
        assert (await call).endswith(b"|slow")
        assert time.monotonic() - started < 2.0  # closed as soon as the call ended
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(opened)(b"late", metadata=alias_key("echo"), timeout=1.0)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_kill_9_of_one_engine_under_load_costs_no_client_error(
    relayed: Relayed, channel: grpc.aio.Channel
) -> None:
    errors: list[grpc.StatusCode] = []
    answered = 0

    async def one() -> None:
        nonlocal answered
        try:
            metadata = alias_key("echo", ("x-sleep-ms", "50"))  # calls in flight at the kill
            await unary(channel)(b"k", metadata=metadata, timeout=WAIT_S)
            answered += 1
        except grpc.aio.AioRpcError as error:
            errors.append(error.code())

    tasks: set[asyncio.Task[None]] = set()
    for tick in range(400):  # 200 req/s for 2 s, open loop
        if tick == 100:
            relayed.stack.engines["relay-e2"].kill()
        task = asyncio.create_task(one())
        tasks.add(task)
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert errors == []
    assert answered == 400
    registry = relayed.core.metrics.registry
    retried = registry.get_sample_value(
        "tidepool_router_retries_total", {"alias": "echo", "reason": "reset"}
    )
    assert (retried or 0) >= 1, "calls in flight on the killed engine were retried"
