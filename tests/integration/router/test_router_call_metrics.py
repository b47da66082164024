"""A router process times each call by method on both data paths, with no `_created` series."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.support.router_harness import (
    UNARY,
    EchoStack,
    EngineSpec,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
    http_get,
    metric,
    parse_metrics,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[EngineSpec("calls-e1", {"lang": "cm"})],
        aliases={"cm": "lang=cm"},
        routers=each_data_path(),
    )
    with echo_stack(tmp_path_factory.mktemp("call-metrics"), spec) as running:
        yield running


async def test_each_call_is_timed_by_method_and_no_created_series_is_exposed(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    for _ in range(3):
        await channel.unary_unary(UNARY)(b"x", metadata=alias_key("cm"), timeout=5)
    status, text = http_get(stack.router().http, "/metrics")
    assert status == 200
    samples = parse_metrics(text)
    assert metric(samples, "tidepool_router_call_seconds_count", method=UNARY) >= 3
    created = [line for line in text.splitlines() if "_created" in line]
    assert created == []
