"""The router proxies calls untouched: bytes, metadata, statuses, deadlines and cancellation.

One registry, one echo engine and one router (processes, loopback) serve the
whole module. `Unary` and `Mutate` take the router's unary path, every other
method its stream path; most checks run on both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support.echo_engine import status_details
from tests.support.processes import wait_until_async
from tests.support.router_harness import (
    BIDI,
    CLIENT_STREAM,
    MUTATE,
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

ENGINE = "proxy-e1"
DEFAULT_DEADLINE_S = 2.0
SPEC = StackSpec(
    engines=[EngineSpec(ENGINE, {"lang": "zh", "tier": "idc"})],
    aliases={"echo": "lang=zh", "empty": "lang=fr"},
    tenants={("acme", "zh"): ["echo"]},
    routers=each_data_path(
        [
            *("--unary-methods", f"{UNARY},{MUTATE}"),
            *("--default-deadline-s", str(DEFAULT_DEADLINE_S)),
        ]
    ),
)
PAYLOAD = bytes(range(256))
ECHOED: Metadata = (
    ("x-echo-plain", "hello, engine"),
    ("x-echo-blob-bin", b"\x00\xff\x10 binary \x80"),
)
WAIT_S = 5.0
SLACK_S = 0.05
"""grpc rounds a deadline up when it encodes it in the grpc-timeout header."""


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    """One stack, one router per data path."""
    with echo_stack(tmp_path_factory.mktemp("proxy"), SPEC) as running:
        yield running


async def call_any(
    channel: grpc.aio.Channel,
    method: str,
    metadata: Metadata,
    timeout: float | None = WAIT_S,  # noqa: ASYNC109 - the gRPC deadline under test
    request: bytes | None = None,
) -> tuple[grpc.StatusCode, str, Any, Any, list[bytes]]:
    """Call `method` in its own shape with one message; code, details, metadata, responses.

    The message is `request`, by default PAYLOAD (for ServerStream: b"2", two answers).
    """
    if request is None:
        request = b"2" if method == SERVER_STREAM else PAYLOAD
    if method in (UNARY, MUTATE):
        call: Any = channel.unary_unary(method)(request, metadata=metadata, timeout=timeout)
    elif method == CLIENT_STREAM:
        call = channel.stream_unary(method)(iter([request]), metadata=metadata, timeout=timeout)
    elif method == SERVER_STREAM:
        call = channel.unary_stream(method)(request, metadata=metadata, timeout=timeout)
    else:
        call = channel.stream_stream(method)(iter([request]), metadata=metadata, timeout=timeout)
    responses: list[bytes] = []
    try:
        if method in (SERVER_STREAM, BIDI):
            responses = [message async for message in call]
        else:
            responses = [await call]
    except grpc.aio.AioRpcError:
        pass  # the status is read from the call below
    return (
        await call.code(),
        await call.details() or "",
        await call.initial_metadata(),
        await call.trailing_metadata(),
        responses,
    )


# ---- bytes and metadata ----------------------------------------------------------


async def test_unary_call_returns_the_engines_bytes_unchanged(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    before = (await stack.calls_async("Unary"))[ENGINE]
    response = await channel.unary_unary(UNARY)(PAYLOAD, metadata=alias_key("echo"), timeout=5)
    assert response == ENGINE.encode() + b"|" + PAYLOAD
    assert (await stack.calls_async("Unary"))[ENGINE] == before + 1


async def test_tenant_and_lang_route_through_the_tenants_alias_list(
    channel: grpc.aio.Channel,
) -> None:
    metadata = (("x-tidepool-tenant", "acme"), ("x-tidepool-lang", "zh"))
    response = await channel.unary_unary(UNARY)(b"t", metadata=metadata, timeout=5)
    assert response == f"{ENGINE}|t".encode()


@pytest.mark.parametrize("method", [UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI])
async def test_metadata_reaches_the_engine_and_its_answer_metadata_comes_back_untouched(
    channel: grpc.aio.Channel, method: str
) -> None:
    code, details, initial, trailing, responses = await call_any(
        channel, method, alias_key("echo", *ECHOED)
    )
    assert code is grpc.StatusCode.OK, details
    assert responses, "no response came back"
    # The engine echoes exactly the x-echo-* headers it received, text and binary.
    assert pairs(initial, "x-echo-") == list(ECHOED)
    assert pairs(trailing, "x-echo-") == list(ECHOED)
    assert trailer(trailing, "x-engine-id") == ENGINE


FAIL = ("x-fail-code", "FAILED_PRECONDITION")


@pytest.mark.parametrize(
    ("method", "extra", "request_bytes"),
    [
        pytest.param(UNARY, (FAIL,), None, id="unary-path-error"),
        pytest.param(SERVER_STREAM, (FAIL,), None, id="stream-path-error"),
        pytest.param(SERVER_STREAM, (), b"0", id="stream-path-ok-without-messages"),
    ],
)
async def test_initial_metadata_comes_back_even_when_the_engine_sends_no_message(
    stack: EchoStack,
    channel: grpc.aio.Channel,
    method: str,
    extra: Metadata,
    request_bytes: bytes | None,
) -> None:
    metadata = alias_key("echo", *ECHOED, *extra)
    async with grpc.aio.insecure_channel(stack.engines[ENGINE].grpc) as direct:
        expected = await call_any(direct, method, metadata, request=request_bytes)
    got = await call_any(channel, method, metadata, request=request_bytes)
    # Called directly, the engine's headers reach the caller; a proxy must not lose them.
    assert pairs(expected[2], "x-echo-") == list(ECHOED)
    assert (got[0], got[1]) == (expected[0], expected[1])
    assert pairs(got[2], "x-echo-") == list(ECHOED), "the engine's initial metadata was dropped"


# ---- statuses ----------------------------------------------------------------------


@pytest.mark.parametrize("method", [UNARY, CLIENT_STREAM, SERVER_STREAM])
@pytest.mark.parametrize(
    "code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
async def test_engine_error_status_details_and_status_details_bin_pass_through(
    stack: EchoStack, channel: grpc.aio.Channel, method: str, code: grpc.StatusCode
) -> None:
    short = method.rsplit("/", 1)[1]
    before = (await stack.calls_async(short))[ENGINE]
    metadata = alias_key("echo", ("x-fail-code", code.name), *ECHOED)
    got, details, _, trailing, _ = await call_any(channel, method, metadata)
    message = f"echo engine {ENGINE} failed as asked: {code.name}"
    assert (got, details) == (code, message)
    assert trailer(trailing, "grpc-status-details-bin") == status_details(code, message)
    assert trailer(trailing, "x-engine-id") == ENGINE
    assert pairs(trailing, "x-echo-") == list(ECHOED)
    # An answered error is the engine's verdict, not a reason to try it again.
    assert (await stack.calls_async(short))[ENGINE] == before + 1


ROUTING_ERRORS = [
    pytest.param(
        (),
        grpc.StatusCode.INVALID_ARGUMENT,
        "missing routing key: set x-tidepool-alias, or x-tidepool-tenant and x-tidepool-lang",
        id="no-key",
    ),
    pytest.param(
        (("x-tidepool-alias", "no-such-pool"),),
        grpc.StatusCode.NOT_FOUND,
        "x-tidepool-alias: unknown alias 'no-such-pool'",
        id="unknown-alias",
    ),
    pytest.param(
        (("x-tidepool-tenant", "acme"),),
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-tidepool-lang: required with x-tidepool-tenant",
        id="tenant-without-lang",
    ),
    pytest.param(
        (("x-tidepool-tenant", "ghost"), ("x-tidepool-lang", "zh")),
        grpc.StatusCode.NOT_FOUND,
        "x-tidepool-tenant: no route for tenant 'ghost' and lang 'zh'",
        id="unknown-tenant",
    ),
    pytest.param(
        (("x-tidepool-alias", "empty"),),
        grpc.StatusCode.UNAVAILABLE,
        "no healthy instance in alias 'empty'",
        id="alias-without-instances",
    ),
]


@pytest.mark.parametrize("method", [UNARY, BIDI])
@pytest.mark.parametrize(("metadata", "code", "message"), ROUTING_ERRORS)
async def test_unroutable_calls_fail_with_a_meaningful_status_and_message(
    stack: EchoStack,
    channel: grpc.aio.Channel,
    method: str,
    metadata: Metadata,
    code: grpc.StatusCode,
    message: str,
) -> None:
    short = method.rsplit("/", 1)[1]
    before = (await stack.calls_async(short))[ENGINE]
    if method == BIDI:
        # The stream is opened and left unwritten: grpc itself (any aio server, not only
        # the router) sometimes turns a status sent before the request was read into
        # INTERNAL "Internal error from Core" at a client that is writing meanwhile.
        call = channel.stream_stream(method)(metadata=metadata, timeout=WAIT_S)
        got, details = await call.code(), await call.details()
    else:
        got, details, _, _, _ = await call_any(channel, method, metadata)
    assert (got, details) == (code, message)
    assert (await stack.calls_async(short))[ENGINE] == before, "the engine must not be called"


# ---- deadlines and cancellation ------------------------------------------------------


@pytest.mark.parametrize(("method", "short"), [(UNARY, "Unary"), (SERVER_STREAM, "ServerStream")])
async def test_callers_deadline_reaches_the_engine_and_expires_on_time(
    stack: EchoStack, channel: grpc.aio.Channel, method: str, short: str
) -> None:
    deadline_s = 0.6
    metadata = alias_key("echo", ("x-sleep-ms", "3000"))
    started = time.monotonic()
    code, _, _, _, _ = await call_any(channel, method, metadata, timeout=deadline_s)
    elapsed = time.monotonic() - started
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert deadline_s - 0.05 <= elapsed < deadline_s + 0.8
    seen = (await stack.stats_async(ENGINE))["deadlines"][short]
    assert seen is not None, "the engine saw no deadline"
    assert 0 < seen <= deadline_s + SLACK_S


async def test_default_deadline_applies_to_unary_calls_that_carry_none(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    metadata = alias_key("echo", ("x-sleep-ms", "6000"))
    started = time.monotonic()
    code, details, _, _, _ = await call_any(channel, UNARY, metadata, timeout=None)
    elapsed = time.monotonic() - started
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED, details
    assert DEFAULT_DEADLINE_S - 0.05 <= elapsed < DEFAULT_DEADLINE_S + 1.0
    seen = (await stack.stats_async(ENGINE))["deadlines"]["Unary"]
    assert seen is not None, "the engine saw no deadline"
    assert DEFAULT_DEADLINE_S - 0.5 < seen <= DEFAULT_DEADLINE_S + SLACK_S


@pytest.mark.parametrize(("method", "short"), [(UNARY, "Unary"), (BIDI, "Bidi")])
async def test_caller_cancellation_reaches_the_engine(
    stack: EchoStack, channel: grpc.aio.Channel, method: str, short: str
) -> None:
    before = await stack.stats_async(ENGINE)
    calls, cancelled = before["calls"].get(short, 0), before["cancelled"].get(short, 0)
    metadata = alias_key("echo", ("x-hang", "1"))
    if method == UNARY:
        call: Any = channel.unary_unary(method)(b"hang", metadata=metadata, timeout=20)
    else:
        call = channel.stream_stream(method)(metadata=metadata, timeout=20)
        await call.write(b"hang")
    hanging = asyncio.ensure_future(call) if method == UNARY else asyncio.ensure_future(call.read())

    async def engine_has_it() -> bool:
        stats = await stack.stats_async(ENGINE)
        return bool(stats["calls"].get(short, 0) > calls and stats["in_flight"] > 0)

    await wait_until_async(engine_has_it, WAIT_S, "the hanging call never reached the engine")
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging

    async def engine_saw_cancel() -> bool:
        stats = await stack.stats_async(ENGINE)
        return bool(stats["cancelled"].get(short, 0) > cancelled)

    await wait_until_async(engine_saw_cancel, WAIT_S, "the engine never saw the cancellation")
    # Well before any deadline could have ended it: the cancel itself travelled.
    assert time.monotonic() - cancelled_at < 3.0
