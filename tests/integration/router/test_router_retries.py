"""The router retries elsewhere only when it is safe, and never past --max-attempts.

Three real echo engines (a, b, c) and one fake instance whose registered address
refuses connections serve the module, with one router (max 2 attempts, Echo/Unary
idempotent, Echo/Mutate not). Each test routes through its own alias, so one
test's passive ejections cannot steer another's picks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support.router_harness import (
    CLIENT_STREAM,
    MUTATE,
    SERVER_STREAM,
    UNARY,
    EchoStack,
    EngineSpec,
    RefusingPort,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
    metric,
    trailer,
)

pytestmark = pytest.mark.timeout(30)

A, B, C, FAKE = "retry-a", "retry-b", "retry-c", "retry-fake"
MAX_ATTEMPTS = 2
ALIASES = {
    "flaky-unary": "member=fake|a",
    "flaky-stream": "member=fake|a",
    "pair-mutate": "member=a|b",
    "pair-stream": "member=a|b",
    "pair-idempotent": "member=a|b",
    "trio": "member=a|b|c",
}
ROUTER_FLAGS = [
    *("--max-attempts", str(MAX_ATTEMPTS)),
    *("--idempotent-methods", UNARY),
    *("--unary-methods", f"{UNARY},{MUTATE}"),
]
FAIL_UNAVAILABLE = ("x-fail-code", "UNAVAILABLE")
CALLS_PER_TEST = 4
"""Enough calls that round robin over two equal weights must pick each at least once."""


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    """One stack, one router per data path."""
    with RefusingPort() as refusing:
        spec = StackSpec(
            engines=[
                EngineSpec(A, {"lang": "zh", "member": "a"}),
                EngineSpec(B, {"lang": "zh", "member": "b"}),
                EngineSpec(C, {"lang": "zh", "member": "c"}),
                EngineSpec(FAKE, {"lang": "zh", "member": "fake"}, advertise=refusing.address),
            ],
            aliases=ALIASES,
            routers=each_data_path(ROUTER_FLAGS),
        )
        with echo_stack(tmp_path_factory.mktemp("retries"), spec) as running:
            yield running


async def retries(stack: EchoStack, alias: str, reason: str | None = None) -> float:
    labels = {"alias": alias} if reason is None else {"alias": alias, "reason": reason}
    return metric(await stack.metrics_async(), "tidepool_router_retries_total", **labels)


async def call_once(channel: grpc.aio.Channel, method: str, alias: str, *extra: Any) -> Any:
    """One call in the method's own shape; the response (or the AioRpcError raised)."""
    metadata = alias_key(alias, *extra)
    if method in (UNARY, MUTATE):
        call: Any = channel.unary_unary(method)(b"x", metadata=metadata, timeout=5)
    elif method == CLIENT_STREAM:
        call = channel.stream_unary(method)(iter([b"x"]), metadata=metadata, timeout=5)
    else:
        call = channel.unary_stream(method)(b"1", metadata=metadata, timeout=5)
    if method == SERVER_STREAM:
        responses = [message async for message in call]
        assert len(responses) == 1
    else:
        await call
    return await call.trailing_metadata()


@pytest.mark.parametrize(
    ("method", "alias"), [(MUTATE, "flaky-unary"), (SERVER_STREAM, "flaky-stream")]
)
async def test_connect_failure_is_retried_on_another_instance_without_client_error(
    stack: EchoStack, channel: grpc.aio.Channel, method: str, alias: str
) -> None:
    # Mutate is not idempotent: a call that never reached an engine is retried anyway.
    answered_by = set()
    for _ in range(CALLS_PER_TEST):
        trailing = await call_once(channel, method, alias)
        answered_by.add(trailer(trailing, "x-engine-id"))
    assert answered_by == {A}
    samples = await stack.metrics_async()
    assert metric(samples, "tidepool_router_retries_total", alias=alias, reason="connect") >= 1
    ejected = metric(
        samples, "tidepool_router_ejections_total", alias=alias, engine=FAKE, kind="passive"
    )
    assert ejected >= 1, "a refused connection must eject the instance at once"


@pytest.mark.parametrize(
    ("method", "short", "alias"),
    [(MUTATE, "Mutate", "pair-mutate"), (CLIENT_STREAM, "ClientStream", "pair-stream")],
)
async def test_unavailable_from_an_engine_is_not_retried_for_a_non_idempotent_method(
    stack: EchoStack, channel: grpc.aio.Channel, method: str, short: str, alias: str
) -> None:
    before = await stack.calls_async(short)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_once(channel, method, alias, FAIL_UNAVAILABLE)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    engine = trailer(caught.value.trailing_metadata(), "x-engine-id")
    assert engine in (A, B)
    assert caught.value.details() == f"echo engine {engine!s} failed as asked: UNAVAILABLE"
    after = await stack.calls_async(short)
    assert sum(after.values()) - sum(before.values()) == 1, "it reached an engine: one attempt"
    assert await retries(stack, alias) == 0


async def test_unavailable_from_an_engine_is_retried_for_an_idempotent_method(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    alias = "pair-idempotent"
    before = await stack.calls_async("Unary")
    only_a_fails = (FAIL_UNAVAILABLE, ("x-fail-instance", A))
    for _ in range(CALLS_PER_TEST):
        trailing = await call_once(channel, UNARY, alias, *only_a_fails)
        assert trailer(trailing, "x-engine-id") == B
    after = await stack.calls_async("Unary")
    failed_on_a = after[A] - before[A]
    assert failed_on_a >= 1, "round robin never picked engine a"
    assert after[B] - before[B] == CALLS_PER_TEST
    assert await retries(stack, alias, "answered") == failed_on_a


async def test_retries_stop_at_max_attempts(stack: EchoStack, channel: grpc.aio.Channel) -> None:
    alias = "trio"
    before = await stack.calls_async("Unary")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_once(channel, UNARY, alias, FAIL_UNAVAILABLE)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    after = await stack.calls_async("Unary")
    tried = {engine for engine in (A, B, C) if after[engine] > before[engine]}
    # Three engines would take a third attempt; --max-attempts 2 forbids it.
    assert sum(after.values()) - sum(before.values()) == MAX_ATTEMPTS
    assert len(tried) == MAX_ATTEMPTS, "a retry goes to another instance"
    assert await retries(stack, alias) == MAX_ATTEMPTS - 1
