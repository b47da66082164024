"""A frozen engine (SIGSTOP: sockets open, nothing answered) under load, on both data paths.

Real processes: a registry with a long TTL (so only the router's own detection
can explain a quick exit from rotation), three engine stubs, one router. Evaluate
runs continuously while one engine is frozen, then thawed: the callers see no
error, the calls the other engines answer keep their latency, the frozen engine
is ejected by the router within about a second, and once thawed it comes back
through slow start.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from router.client import RouterClient
from tests.support.fleet_harness import (
    READ_TOKEN,
    EngineSpec,
    Fleet,
    Metrics,
    Router,
    RouterCaller,
    Traffic,
    evaluate_request,
    http_get,
    wait_for_metric,
    wait_routable,
)
from tests.support.processes import wait_until_async

PUBLIC = "zh-public"
RATE_PER_S = 150.0
EJECTED_WITHIN_S = 3.0
"""The frozen engine must be ejected by the router well before the registry's TTL."""
BACK_WITHIN_S = 25.0
"""Ejection backoff (it may have been re-ejected while frozen) plus the registry's view."""
SLOWEST_CALL_S = 2.0
"""No call may come near its 5 s deadline: a frozen engine costs one attempt timeout."""

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as running:
        yield running


class TimedCaller:
    """Wraps a caller: keeps (start, seconds, engine) of every answered call."""

    def __init__(self, call: Callable[[], Awaitable[str]]) -> None:
        self.call = call
        self.seen: list[tuple[float, float, str]] = []

    async def __call__(self) -> str:
        started = time.monotonic()
        engine = await self.call()
        self.seen.append((started, time.monotonic() - started, engine))
        return engine

    def latencies(self, since: float, until: float, skip: str = "") -> list[float]:
        return [s for at, s, engine in self.seen if since <= at < until and engine != skip]


async def endpoint_row(router: Router, engine: str) -> dict[str, Any]:
    status, body = await http_get(router.http, f"/v1/endpoints?alias={PUBLIC}")
    assert status == 200, body
    rows = json.loads(body)["aliases"][0]["endpoints"]
    return next(row for row in rows if row["engine"] == engine)


async def attempts(router: Router, engine: str) -> float:
    return (await router.metrics()).total("tidepool_router_requests_total", engine=engine)


@pytest.mark.parametrize("data_path", ["relay", "grpc"])
async def test_a_frozen_engine_costs_callers_nothing_and_returns_through_slow_start(
    fleet: Fleet, data_path: str
) -> None:
    fleet.start_registry(ttl_s=6.0, heartbeat_interval_s=0.5)
    fleet.put_aliases({PUBLIC: "lang=zh"})
    engines = {e.id: e for e in fleet.start_engines(*(EngineSpec(f"pub-{x}") for x in "abc"))}
    router = fleet.start_router("--data-path", data_path, "--slow-start-s", "30")
    await wait_routable(router, PUBLIC, 3)
    victim = engines["pub-b"].process
    timed = TimedCaller(RouterCaller(router.grpc, alias=PUBLIC))
    async with Traffic(timed, concurrency=16, rate_per_s=RATE_PER_S) as traffic:
        await traffic.wait_answers(300, since=time.monotonic())  # latencies learnt
        frozen_at = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            await wait_for_metric(
                router,
                lambda m: m.total("tidepool_router_ejections_total", engine="pub-b") >= 1,
                EJECTED_WITHIN_S,
                "a passive ejection of the frozen pub-b",
            )
            ejected_after = time.monotonic() - frozen_at
            await traffic.wait_answers(300, since=time.monotonic())
            states = await fleet.instance_states()
            assert states["pub-b"] == "INSTANCE_STATE_READY", (
                f"the registry already gave up on pub-b ({states}): the test no longer "
                "isolates the router's own detection"
            )
            metrics = await router.metrics()
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        await _comes_back_through_slow_start(router, traffic, thawed_at)
    traffic.assert_no_errors()
    assert ejected_after < EJECTED_WITHIN_S
    assert metrics.total("tidepool_router_attempt_timeouts_total") >= 1, "no attempt timed out"
    assert metrics.total("tidepool_router_hedges_total") >= 1, "no call was tried elsewhere"
    before = timed.latencies(0.0, frozen_at)
    during = timed.latencies(frozen_at, thawed_at, skip="pub-b")
    slowest = max(s for _, s, _ in timed.seen)
    assert slowest < SLOWEST_CALL_S, f"a call took {slowest:.2f} s"
    # Calls the other engines answered keep their latency (hedged ones aside: a few %).
    median_before, median_during = statistics.median(before), statistics.median(during)
    assert median_during <= 2 * median_before + 0.02, (median_before, median_during)


async def _comes_back_through_slow_start(router: Router, traffic: Traffic, since: float) -> None:
    """The thawed engine is pickable again, first at a ramped weight, and answers calls."""
    rows: list[dict[str, Any]] = []

    async def pickable() -> bool:
        rows.append(await endpoint_row(router, "pub-b"))
        return bool(rows[-1]["pickable"]) and not rows[-1]["ejected"]

    await wait_until_async(pickable, BACK_WITHIN_S, lambda: f"pub-b never came back: {rows[-3:]}")
    first = rows[-1]
    assert first["slow_start_weight"] < first["effective_weight"], first
    await wait_until_async(
        lambda: traffic.counts(since=since)["pub-b"] > 0,
        BACK_WITHIN_S,
        lambda: f"pub-b pickable but answered nothing since the thaw; {rows[-1]}",
    )


async def test_a_frozen_engine_stops_getting_calls_within_half_a_second_of_its_ejection(
    fleet: Fleet,
) -> None:
    fleet.start_registry(ttl_s=6.0, heartbeat_interval_s=0.5)
    fleet.put_aliases({PUBLIC: "lang=zh"})
    engines = {e.id: e for e in fleet.start_engines(*(EngineSpec(f"pub-{x}") for x in "abc"))}
    router = fleet.start_router("--ejection-base-s", "30")
    await wait_routable(router, PUBLIC, 3)
    victim = engines["pub-c"].process
    async with Traffic(RouterCaller(router.grpc, alias=PUBLIC), 16, RATE_PER_S) as traffic:
        await traffic.wait_answers(300, since=time.monotonic())
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            await wait_for_metric(
                router,
                lambda m: m.total("tidepool_router_ejections_total", engine="pub-c") >= 1,
                EJECTED_WITHIN_S,
                "a passive ejection of the frozen pub-c",
            )
            # Attempts are counted when they end; those cut short by their attempt
            # timeout end within one: after that, nothing more may reach pub-c.
            await traffic.wait_answers(int(RATE_PER_S / 2), since=time.monotonic())
            settled = await attempts(router, "pub-c")
            await traffic.wait_answers(int(RATE_PER_S / 2), since=time.monotonic())
            later = await attempts(router, "pub-c")
        finally:
            os.kill(victim.pid, signal.SIGCONT)
    traffic.assert_no_errors()
    assert later == settled, f"pub-c still got attempts after its ejection: {settled} -> {later}"


async def test_the_registry_expires_a_frozen_engine_at_its_ttl_and_routers_hear_at_once(
    fleet: Fleet,
) -> None:
    """No traffic, so nothing but the registry can take the frozen engine out: its lease
    lapses at the TTL (plus one sweep), and the watch brings that to the router."""
    ttl_s = 1.0
    fleet.start_registry(ttl_s=ttl_s, heartbeat_interval_s=0.25)
    fleet.put_aliases({PUBLIC: "lang=zh"})
    engines = {e.id: e for e in fleet.start_engines(*(EngineSpec(f"pub-{x}") for x in "ab"))}
    router = fleet.start_router()
    await wait_routable(router, PUBLIC, 2)
    victim = engines["pub-b"].process
    os.kill(victim.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        await wait_routable(router, PUBLIC, 1, timeout_s=ttl_s + 2.0)
        dropped_after = time.monotonic() - frozen_at
        states = await fleet.instance_states()
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert states["pub-b"] == "INSTANCE_STATE_UNHEALTHY", states
    # The last beat came up to one interval before the freeze; one sweep (0.1 s) and the
    # watch's delivery (tens of ms) add to the TTL. A wide margin for a loaded machine.
    assert dropped_after <= ttl_s + 0.1 + 0.5, f"the router heard after {dropped_after:.2f} s"
    await wait_routable(router, PUBLIC, 2, timeout_s=10.0)  # heartbeats resume: back


async def test_the_in_process_client_hedges_past_a_frozen_engine(fleet: Fleet) -> None:
    fleet.start_registry(ttl_s=6.0, heartbeat_interval_s=0.5)
    fleet.put_aliases({PUBLIC: "lang=zh"})
    engines = {e.id: e for e in fleet.start_engines(*(EngineSpec(f"pub-{x}") for x in "abc"))}
    async with RouterClient(fleet.registry_address, token=READ_TOKEN) as client:
        await wait_until_async(
            lambda: sum(e.routable for e in client.core.table.endpoints(PUBLIC)) == 3,
            10,
            "the client never saw the three engines",
        )

        async def call() -> str:
            response = await client.evaluate(evaluate_request(), alias=PUBLIC, timeout=5)
            return str(response.engine_id)

        timed = TimedCaller(call)
        async with Traffic(timed, concurrency=16, rate_per_s=RATE_PER_S) as traffic:
            await traffic.wait_answers(300, since=time.monotonic())
            os.kill(engines["pub-b"].process.pid, signal.SIGSTOP)
            try:
                await traffic.wait_answers(300, since=time.monotonic())
                table = client.core.table
                ejected = {e for pool in table.pools() for e in pool.ejected}
            finally:
                os.kill(engines["pub-b"].process.pid, signal.SIGCONT)
        metrics = Metrics.parse(generate_latest(client.core.metrics.registry).decode())
    traffic.assert_no_errors()
    assert ejected == {"pub-b"}, f"ejected while pub-b was frozen: {ejected}"
    assert metrics.total("tidepool_router_hedges_total") >= 1
    assert metrics.total("tidepool_router_hedge_wins_total") >= 1, "no hedge ever answered first"
    assert max(s for _, s, _ in timed.seen) < SLOWEST_CALL_S
