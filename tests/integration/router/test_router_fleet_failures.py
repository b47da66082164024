"""What callers of a router process see when engines die, stop, hang off the network or lapse.

Each test runs its own registry, engines and router as processes and sends
Evaluate through the router continuously while it breaks something, then checks
the calls (no client-visible error) and the router's metrics (who was ejected,
how, and who kept getting attempts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.fleet_harness import (
    Engine,
    EngineSpec,
    Fleet,
    Router,
    RouterCaller,
    Traffic,
    http_get,
    wait_for_metric,
    wait_routable,
)

PUBLIC = "zh-public"
RATE_PER_S = 250.0
"""Calls per second while an engine fails: enough that some are in flight at the time."""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as running:
        yield running


def three_engines(fleet: Fleet) -> tuple[Router, dict[str, Engine]]:
    """Registry, zh-public over pub-a/b/c (weight 100 each), and a router on them."""
    fleet.start_registry()
    fleet.put_aliases({PUBLIC: "lang=zh"})
    engines = fleet.start_engines(*(EngineSpec(f"pub-{x}") for x in "abc"))
    return fleet.start_router(), {engine.id: engine for engine in engines}


async def attempts(router: Router, instance: str) -> float:
    """Attempts the router sent to `instance`, whatever their outcome."""
    return (await router.metrics()).total("tidepool_router_requests_total", engine=instance)


async def assert_no_more_attempts(router: Router, traffic: Traffic, instance: str) -> None:
    """Once ejected, `instance` gets no attempt in a window of half a second's calls.

    An attempt sent just before the ejection is counted only when it fails, so the
    window starts after a first half second of calls has let those end."""
    window = int(RATE_PER_S / 2)
    await traffic.wait_answers(window, since=time.monotonic())
    before = await attempts(router, instance)
    await traffic.wait_answers(window, since=time.monotonic())
    after = await attempts(router, instance)
    assert after == before, f"{instance} still got attempts after ejection: {before} -> {after}"


def ejections(instance: str, kind: str | None = None) -> str:
    return f"tidepool_router_ejections_total for {instance}" + (f" ({kind})" if kind else "")


async def test_kill_9_of_an_engine_under_load_costs_callers_nothing(fleet: Fleet) -> None:
    router, engines = three_engines(fleet)
    await wait_routable(router, PUBLIC, 3)
    victim = engines["pub-b"].process
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=8, rate_per_s=RATE_PER_S) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()
        await wait_for_metric(
            router,
            lambda m: (
                m.total("tidepool_router_ejections_total", engine="pub-b") >= 1
                and m.value("tidepool_router_endpoints", alias=PUBLIC, state="routable") == 2
            ),
            10,
            ejections("pub-b"),
        )
        await assert_no_more_attempts(router, traffic, "pub-b")
    traffic.assert_no_errors()
    after = traffic.counts(since=killed_at + 0.5)
    assert set(after) == {"pub-a", "pub-c"}, f"answers after the kill: {after}"


async def test_sigterm_of_an_engine_under_load_costs_callers_nothing(fleet: Fleet) -> None:
    router, engines = three_engines(fleet)
    await wait_routable(router, PUBLIC, 3)
    leaving = engines["pub-b"].process
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=8, rate_per_s=RATE_PER_S) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        leaving.terminate()
        code = await asyncio.to_thread(leaving.wait, 15)
        assert code == 0, leaving.describe("a drained engine must exit 0")
        await wait_for_metric(
            router,
            lambda m: m.value("tidepool_router_pool_endpoints", alias=PUBLIC) == 2,
            10,
            "pub-b gone from zh-public after it deregistered",
        )
        await assert_no_more_attempts(router, traffic, "pub-b")
    traffic.assert_no_errors()
    assert traffic.counts()["pub-b"] > 0, "pub-b never served: the test proved nothing"


async def test_connect_failure_ejects_an_engine_before_the_registry_notices(
    fleet: Fleet,
) -> None:
    # A long TTL and a partitioned registry link: the registry will not hear of the
    # death for seconds, so only the router's own (passive) ejection can explain a
    # quick exit from rotation.
    fleet.start_registry(ttl_s=20.0, heartbeat_interval_s=2.0)
    fleet.put_aliases({PUBLIC: "lang=zh"})
    link = fleet.link()
    *_, victim = fleet.start_engines(
        EngineSpec("pub-a"), EngineSpec("pub-b"), EngineSpec("pub-c", via=link)
    )
    router = fleet.start_router("--ejection-base-s", "30")
    await wait_routable(router, PUBLIC, 3)
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=8, rate_per_s=RATE_PER_S) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        link.partition()
        await asyncio.to_thread(victim.process.kill)
        metrics = await wait_for_metric(
            router,
            lambda m: (
                m.value(
                    "tidepool_router_ejections_total",
                    alias=PUBLIC,
                    engine="pub-c",
                    kind="passive",
                )
                == 1
            ),
            5,
            ejections("pub-c", "passive"),
        )
        states = await fleet.instance_states()
        assert states["pub-c"] == "INSTANCE_STATE_READY", (
            f"the registry already knew ({states}): the test no longer isolates passive ejection"
        )
        active = metrics.value(
            "tidepool_router_ejections_total", alias=PUBLIC, engine="pub-c", kind="active"
        )
        assert active is None, f"an active ejection of pub-c without a registry event: {active}"
        assert metrics.value("tidepool_router_endpoints", alias=PUBLIC, state="ejected") == 1
        await assert_no_more_attempts(router, traffic, "pub-c")
    traffic.assert_no_errors()


async def test_panic_spreads_load_over_the_whole_pool_when_most_lapse(fleet: Fleet) -> None:
    fleet.start_registry()
    fleet.put_aliases({PUBLIC: "lang=zh"})
    link = fleet.link()
    fleet.start_engines(EngineSpec("pub-a"), *(EngineSpec(f"pub-{x}", via=link) for x in "bcd"))
    router = fleet.start_router("--panic-threshold-percent", "50")
    await wait_routable(router, PUBLIC, 4)
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=8, rate_per_s=RATE_PER_S) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        # b, c and d stay up but fall silent to the registry: 1 of 4 healthy is below 50 %.
        link.partition()
        await wait_for_metric(
            router,
            lambda m: m.value("tidepool_router_panic", alias=PUBLIC) == 1,
            10,
            "panic in zh-public",
        )
        states = await fleet.instance_states()
        assert [states[f"pub-{x}"] for x in "bcd"] == ["INSTANCE_STATE_UNHEALTHY"] * 3, states
        panicked = time.monotonic()
        await traffic.wait_answers(300, since=panicked)
        in_panic = traffic.counts(since=panicked)

        link.heal()
        await wait_for_metric(
            router,
            lambda m: (
                m.value("tidepool_router_panic", alias=PUBLIC) == 0
                and m.value("tidepool_router_endpoints", alias=PUBLIC, state="routable") == 4
            ),
            10,
            "zh-public out of panic once the engines re-attached",
        )
    traffic.assert_no_errors()
    total = sum(in_panic.values())
    # Spread over all four (about 25 % each), not piled on the one the registry trusts.
    assert set(in_panic) == {"pub-a", "pub-b", "pub-c", "pub-d"}, in_panic
    assert in_panic["pub-a"] / total < 0.4, f"the survivor was crushed: {in_panic}"
    metrics = await router.metrics()
    assert metrics.value("tidepool_router_panic_entered_total", alias=PUBLIC) == 1


async def test_last_resort_keeps_routing_to_lapsed_but_live_engines_until_they_deregister(
    fleet: Fleet,
) -> None:
    fleet.start_registry()
    fleet.put_aliases({PUBLIC: "lang=zh"})
    link = fleet.link()
    engines = fleet.start_engines(EngineSpec("pub-a", via=link), EngineSpec("pub-b", via=link))
    router = fleet.start_router()
    await wait_routable(router, PUBLIC, 2)
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=4, rate_per_s=150) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        link.partition()  # the registry gives up on both; both still answer
        await wait_for_metric(
            router,
            lambda m: m.value("tidepool_router_last_resort", alias=PUBLIC) == 1,
            10,
            "last resort in zh-public",
        )
        states = await fleet.instance_states()
        assert set(states.values()) == {"INSTANCE_STATE_UNHEALTHY"}, states
        kept = time.monotonic()
        await traffic.wait_answers(200, since=kept)
        assert set(traffic.counts(since=kept)) == {"pub-a", "pub-b"}, traffic.counts(since=kept)

        link.heal()
        await wait_for_metric(
            router,
            lambda m: (
                m.value("tidepool_router_last_resort", alias=PUBLIC) == 0
                and m.value("tidepool_router_endpoints", alias=PUBLIC, state="routable") == 2
            ),
            10,
            "zh-public healthy again once the engines re-attached",
        )
    traffic.assert_no_errors()

    # A deregistration is final: the last one empties the pool instead of being kept.
    for engine in engines:
        engine.process.terminate()
        assert await asyncio.to_thread(engine.process.wait, 15) == 0, engine.process.describe(
            "a stopped engine must exit 0"
        )
    await wait_for_metric(
        router,
        lambda m: m.value("tidepool_router_pool_endpoints", alias=PUBLIC) == 0,
        5,
        "zh-public empty after both engines deregistered (not kept as a last resort)",
    )
    async with RouterCaller(router.grpc, alias=PUBLIC) as call:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert "no healthy instance in alias" in (caught.value.details() or ""), caught.value
    status, body = await http_get(router.http, f"/v1/resolve?alias={PUBLIC}")
    assert status == 503, f"/v1/resolve still hands out a deregistered engine: {body}"
    metrics = await router.metrics()
    assert metrics.value("tidepool_router_last_resort", alias=PUBLIC) == 0
