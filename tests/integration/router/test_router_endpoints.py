"""GET /v1/endpoints on a router process over a real fleet: configured share next to the
share each engine received, the share-gap gauge, and an ejection with its reason.

Per data path, one registry, three engine stubs (weights 1:2:3) and one router, all
processes on loopback; both paths pick through the same table, so both must count.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fleet_harness import (
    Engine,
    EngineSpec,
    Fleet,
    Router,
    RouterCaller,
    Traffic,
    http_get,
    sequential,
    wait_routable,
)
from tests.support.processes import wait_until_async
from tests.support.router_harness import DATA_PATHS

POOL = "zh-public"
WEIGHTS = {"w1": 100, "w2": 200, "w3": 300}
CALLS = 600
JOINER = "w4"
SHARE_TOLERANCE = 0.02
"""Smooth WRR over 1:2:3 is exact per cycle of 6 picks: 600 calls land within 1/600."""


@dataclass
class Stack:
    fleet: Fleet
    router: Router
    engines: dict[str, Engine]
    data_path: str


@pytest.fixture(scope="module", params=DATA_PATHS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The fleet of one data path; its last test kills an engine."""
    path = str(request.param)
    with Fleet(tmp_path_factory.mktemp(f"endpoints-{path}")) as running:
        running.start_registry()
        running.put_aliases({POOL: f"lang=zh,pool={POOL}"})
        engines = running.start_engines(*(EngineSpec(e, w, pool=POOL) for e, w in WEIGHTS.items()))
        # Started on a warm fleet: nothing ramps, so weights alone decide the shares.
        router = running.start_router("--data-path", path)
        yield Stack(running, router, {e.id: e for e in engines}, path)


async def endpoints(router: Router, query: str = f"alias={POOL}") -> dict[str, Any]:
    status, body = await http_get(router.http, f"/v1/endpoints?{query}")
    assert status == 200, f"/v1/endpoints?{query} answered {status}: {body}"
    document: dict[str, Any] = json.loads(body)
    return document


def rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (pool,) = document["aliases"]
    return {row["engine"]: row for row in pool["endpoints"]}


async def test_received_shares_match_weights_one_two_three_and_the_gap_is_small(
    stack: Stack,
) -> None:
    router = stack.router
    await wait_routable(router, POOL, 3)
    async with RouterCaller(router.grpc, alias=POOL) as call:
        answered = await sequential(call, CALLS)

    document = await endpoints(router)
    assert document["window_s"] == 60
    pool = document["aliases"][0]
    assert (pool["alias"], pool["picks"], pool["panic"]) == (POOL, CALLS, False)
    total = sum(WEIGHTS.values())
    for engine, row in rows(document).items():
        configured = WEIGHTS[engine] / total
        assert row["configured_share"] == pytest.approx(configured, abs=1e-4), row
        assert abs(row["received_share"] - configured) <= SHARE_TOLERANCE, row
        # Picks are what the balancer chose: each call was answered by its pick.
        assert row["picks"] == answered.count(engine), (row, engine)
        assert (row["state"], row["ejected"], row["pickable"]) == ("ready", False, True), row
        assert row["registered_weight"] == row["effective_weight"] == WEIGHTS[engine], row
        assert (row["in_flight"], row["errors"]) == (0, 0), row
    assert pool["share_gap"] <= SHARE_TOLERANCE, pool
    gap = (await router.metrics()).value("tidepool_router_share_gap", alias=POOL)
    assert gap is not None, "no tidepool_router_share_gap sample for the pool"
    assert gap <= SHARE_TOLERANCE, f"share gap gauge {gap} for shares that follow the weights"

    whole = await endpoints(router, "")
    assert [p["alias"] for p in whole["aliases"]] == [POOL]
    status, body = await http_get(router.http, "/v1/endpoints?alias=nope")
    assert (status, json.loads(body)["code"]) == (404, "NOT_FOUND"), body
    status, body = await http_get(router.http, "/v1/endpoints?pool=x")
    assert (status, json.loads(body)["code"]) == (400, "INVALID_ARGUMENT"), body


async def test_a_ramping_engine_shows_a_gap_between_configured_and_received(
    stack: Stack,
) -> None:
    # Its own router, so its received shares hold only this test's calls.
    ramped = stack.fleet.start_router("--data-path", stack.data_path, "--slow-start-s", "60")
    joiner: list[Engine] = []
    try:
        await wait_routable(ramped, POOL, 3)
        joiner += await asyncio.to_thread(
            stack.fleet.start_engines, EngineSpec(JOINER, 300, pool=POOL)
        )
        await wait_routable(ramped, POOL, 4)
        async with RouterCaller(ramped.grpc, alias=POOL) as call:
            await sequential(call, CALLS)
        document = await endpoints(ramped)
        row = rows(document)[JOINER]
        # A 60 s ramp from 10 %: about 30 of its 300 while the calls run.
        assert row["effective_weight"] == 300, row
        assert row["slow_start_weight"] < 100, row
        assert row["configured_share"] == pytest.approx(300 / 900, abs=1e-4), row
        assert row["received_share"] < row["configured_share"] - 0.15, row
        gap = (await ramped.metrics()).value("tidepool_router_share_gap", alias=POOL)
        assert gap is not None, "no tidepool_router_share_gap sample for the pool"
        assert gap > 0.15, f"gap gauge {gap} while {JOINER} ramps: {row}"
        assert document["aliases"][0]["share_gap"] == pytest.approx(gap, abs=0.01), document
    finally:
        for engine in joiner:
            await asyncio.to_thread(engine.process.stop)
        await asyncio.to_thread(ramped.process.stop)


async def test_a_killed_engine_shows_as_ejected_with_its_reason(
    stack: Stack,
) -> None:
    router, victim_id = stack.router, "w3"
    await wait_routable(router, POOL, 3)
    seen: list[dict[str, Any]] = []

    async def ejected() -> bool:
        row = rows(await endpoints(router)).get(victim_id)
        seen[:] = [row or {}]
        return row is not None and row["ejected"]

    async with (
        RouterCaller(router.grpc, alias=POOL) as call,
        Traffic(call, concurrency=2, rate_per_s=100) as traffic,
    ):
        await traffic.wait_answers(20, since=time.monotonic())
        await asyncio.to_thread(stack.engines[victim_id].process.kill)
        await wait_until_async(
            ejected, 10, lambda: f"{victim_id} never showed as ejected: {seen}", interval_s=0.05
        )
    row = seen[0]
    assert (row["pickable"], row["configured_share"]) == (False, 0.0), row
    ejection = row["ejection"]
    assert ejection["kind"] in ("active", "passive"), row
    if ejection["kind"] == "active":
        assert ejection["reason"] == "the registry says unhealthy", row
    else:
        assert ejection["reason"].startswith("this router saw "), row
        assert ejection["remaining_s"] > 0, row
        assert ejection["until"].endswith("Z"), row
