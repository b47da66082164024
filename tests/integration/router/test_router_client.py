"""The in-process RouterClient against a real registry and real engine processes.

The client runs in the test's own event loop: it watches the registry itself and
calls engines directly, so it must balance, eject and retry as the router process does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from prometheus_client import generate_latest

from router.client import RouterCallError, RouterClient
from tests.support.fleet_harness import (
    READ_TOKEN,
    EngineSpec,
    Fleet,
    Metrics,
    Traffic,
    evaluate_request,
)
from tests.support.processes import wait_until_async

PUBLIC = "zh-public"
WEIGHTS = {"pub-a": 100, "pub-b": 50, "pub-c": 50}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with Fleet(tmp_path_factory.mktemp("client")) as running:
        running.start_registry()
        running.put_aliases({PUBLIC: "lang=zh"})
        running.start_engines(*(EngineSpec(engine, w) for engine, w in WEIGHTS.items()))
        yield running


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[RouterClient]:
    async with RouterClient(fleet.registry_address, token=READ_TOKEN) as started:
        await wait_until_async(
            lambda: routable(started) >= len(WEIGHTS),
            10,
            lambda: f"the client sees {routable(started)} routable engines in {PUBLIC}",
        )
        yield started


def routable(client: RouterClient) -> int:
    return sum(1 for e in client.core.table.endpoints(PUBLIC) if e.routable)


def client_metrics(client: RouterClient) -> Metrics:
    return Metrics.parse(generate_latest(client.core.metrics.registry).decode())


async def engine_of(client: RouterClient) -> str:
    response = await client.evaluate(evaluate_request(), alias=PUBLIC, timeout=5)
    return str(response.engine_id)


async def test_client_balances_across_engines_per_their_weights(client: RouterClient) -> None:
    picks = Counter([await engine_of(client) for _ in range(800)])
    total = sum(WEIGHTS.values())
    got = {engine: picks[engine] / 800 for engine in picks}
    assert got.keys() == WEIGHTS.keys(), f"engines answering: {picks}"
    for engine, weight in WEIGHTS.items():
        assert abs(got[engine] - weight / total) <= 0.02, f"{engine}: {got[engine]:.3f}; {got}"


async def test_client_takes_metadata_as_any_sequence_of_pairs(client: RouterClient) -> None:
    """A list, as grpc's own stubs take it (the compiled forwarder takes only a tuple)."""
    for metadata in ([("x-request-id", "r-1")], (("x-request-id", "r-2"),)):
        response = await client.evaluate(
            evaluate_request(), alias=PUBLIC, timeout=5, metadata=metadata
        )
        assert response.engine_id in WEIGHTS


async def test_client_raises_not_found_for_an_unknown_alias(client: RouterClient) -> None:
    with pytest.raises(RouterCallError) as caught:
        await client.evaluate(evaluate_request(), alias="no-such-pool", timeout=5)
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert "no-such-pool" in error.details()


async def test_client_rides_out_a_kill_9_under_load(fleet: Fleet) -> None:
    # Its own victim, started before the client so that it is part of a warm view.
    (victim,) = await asyncio.to_thread(fleet.start_engines, EngineSpec("pub-victim", 100))
    async with RouterClient(fleet.registry_address, token=READ_TOKEN) as client:
        await wait_until_async(
            lambda: routable(client) == len(WEIGHTS) + 1, 10, "the client never saw pub-victim"
        )
        async with Traffic(lambda: engine_of(client), concurrency=8, rate_per_s=250) as traffic:
            await wait_until_async(
                lambda: traffic.counts()["pub-victim"] >= 20, 10, "pub-victim got no traffic"
            )
            await asyncio.to_thread(victim.process.kill)
            await wait_until_async(
                lambda: (
                    client_metrics(client).total(
                        "tidepool_router_ejections_total", engine="pub-victim"
                    )
                    >= 1
                    and routable(client) == len(WEIGHTS)
                ),
                10,
                lambda: f"pub-victim never ejected; routable: {routable(client)}",
            )
            # An attempt sent just before the ejection is counted when it fails: let those end.
            ejected_at = time.monotonic()
            await traffic.wait_answers(100, since=ejected_at)
            await wait_until_async(
                lambda: client.core.table.in_flight.get("pub-victim", 0) == 0,
                5,
                lambda: f"attempts in flight to pub-victim: {client.core.table.in_flight}",
            )
            before = client_metrics(client).total(
                "tidepool_router_requests_total", engine="pub-victim"
            )
            await traffic.wait_answers(125, since=time.monotonic())
            after = client_metrics(client).total(
                "tidepool_router_requests_total", engine="pub-victim"
            )
        traffic.assert_no_errors()
        assert after == before, f"pub-victim still got attempts: {before} -> {after}"
