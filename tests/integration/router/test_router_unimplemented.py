"""A method no engine implements is UNIMPLEMENTED for the caller on both data paths, every time.

Why a test of its own: an engine answers such a call as soon as it sees the
headers, and grpc's client, still writing the first message, used to report
its own INTERNAL instead of the engine's status for about 8 % of the calls on
the grpc.aio path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from tests.support.router_harness import (
    EchoStack,
    EngineSpec,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
)

pytestmark = pytest.mark.timeout(120)

MISSING = "/tidepool.test.v1.Echo/Missing"
CALLS = 150


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[EngineSpec("unimpl-e1", {"lang": "un"})],
        aliases={"un": "lang=un"},
        routers=each_data_path(),
    )
    with echo_stack(tmp_path_factory.mktemp("unimplemented"), spec) as running:
        yield running


async def _one(channel: grpc.aio.Channel, shape: str) -> str:
    metadata = alias_key("un")
    try:
        if shape == "unary":
            await channel.unary_unary(MISSING)(b"x", metadata=metadata, timeout=5)
        else:  # the router proxies it as a stream; the caller sends in one batch, so
            # the caller's own grpc client cannot race (as the router's did) the answer
            call = channel.unary_stream(MISSING)(b"x", metadata=metadata, timeout=5)
            async for _ in call:
                pass
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name}: {error.details()}"
    return "OK"


@pytest.mark.parametrize("shape", ["unary", "stream"])
async def test_an_unimplemented_method_is_unimplemented_every_time(
    stack: EchoStack, channel: grpc.aio.Channel, shape: str
) -> None:
    outcomes = Counter([await _one(channel, shape) for _ in range(CALLS)])
    codes = Counter(outcome.split(":")[0] for outcome in outcomes.elements())
    assert codes == {"UNIMPLEMENTED": CALLS}, dict(outcomes)
