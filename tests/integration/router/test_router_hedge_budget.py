"""A fleet that is slow all at once is not a frozen engine: no retry storm, no error, no ejection.

Every engine takes 300 ms while the attempt timeout is at most 100 ms, so every
attempt runs past it. The retry budget (20 % of the calls, plus its small
reserve) is then all the extra load the router may add; once it is spent, calls
wait on the attempt they have. Real processes: a registry, three echo engines,
one router per data path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from router.retry import RetryBudget
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
)

ENGINES = ("slow-a", "slow-b", "slow-c")
CALLS = 400
RATE_PER_S = 100.0
SLEEP_MS = 300
BUDGET_PERCENT = 20.0
FLAGS = (
    *("--idempotent-methods", UNARY, "--unary-methods", UNARY),
    *("--attempt-timeout-min-s", "0.05", "--attempt-timeout-max-s", "0.1"),
    *("--retry-budget-percent", f"{BUDGET_PERCENT:g}"),
)
BUDGET = RetryBudget()
WINDOW_S = 10.0
"""The budget's window: what was spent decays linearly over it (`RetryBudget`)."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    spec = StackSpec(
        engines=[EngineSpec(e, {"lang": "zh"}) for e in ENGINES],
        aliases={"echo": "lang=zh"},
        routers=each_data_path(FLAGS),
    )
    with echo_stack(tmp_path_factory.mktemp("hedge-budget"), spec) as running:
        yield running


async def _engine_calls(stack: EchoStack) -> int:
    return sum((await stack.calls_async("Unary")).values())


async def test_a_fleet_slow_all_at_once_gets_at_most_the_budget_in_extra_attempts(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    call = channel.unary_unary(UNARY)
    metadata = alias_key("echo", ("x-sleep-ms", str(SLEEP_MS)))
    before = await _engine_calls(stack)
    started = time.monotonic()

    async def one(index: int) -> bytes:
        await asyncio.sleep(index / RATE_PER_S)  # open-loop pacing, not synchronisation
        return bytes(await call(b"x", metadata=metadata, timeout=5))

    answers = await asyncio.gather(*(one(i) for i in range(CALLS)), return_exceptions=True)
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, f"{len(errors)} errors; first: {errors[:3]}"
    run_s = time.monotonic() - started
    extra = await _engine_calls(stack) - before - CALLS
    # What the budget allows at once, grown by what decays away during the run.
    at_once = CALLS * BUDGET_PERCENT / 100 + BUDGET.tokens
    bound = at_once / (1 - run_s / WINDOW_S)
    assert extra <= bound, f"{extra} extra attempts in {run_s:.1f} s; the budget allows {bound:g}"
    assert extra < CALLS, f"{extra} extra attempts for {CALLS} calls: a retry storm"
    samples = await stack.metrics_async()
    assert metric(samples, "tidepool_router_attempt_timeouts_total") >= CALLS / 2
    assert metric(samples, "tidepool_router_retry_budget_exhausted_total") > 0, "never refused"
    assert metric(samples, "tidepool_router_ejections_total", kind="passive") == 0, (
        f"a uniformly slow engine was ejected: {http_get(stack.router().http, '/v1/endpoints')}"
    )
