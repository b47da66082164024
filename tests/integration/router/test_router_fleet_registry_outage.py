"""A router process keeps routing through a registry outage, and a restarted one starts on its file.

The registry is SIGKILLed with traffic flowing; the router must go on serving from
its last known good view, say so on /readyz and in its metrics, and re-attach its
watch when a registry comes back on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet_harness import (
    EngineSpec,
    Fleet,
    Router,
    RouterCaller,
    Traffic,
    sequential,
    wait_for_metric,
    wait_routable,
)
from tests.support.processes import wait_until_async

PUBLIC = "zh-public"
ENGINES = ("pub-a", "pub-b")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as running:
        yield running


def two_engines(fleet: Fleet) -> Router:
    fleet.start_registry()
    fleet.put_aliases({PUBLIC: "lang=zh"})
    fleet.start_engines(*(EngineSpec(engine) for engine in ENGINES))
    return fleet.start_router()


async def watch_connected(router: Router, connected: bool) -> None:
    await wait_for_metric(
        router,
        lambda m: m.value("tidepool_router_watch_connected") == float(connected),
        15,
        f"tidepool_router_watch_connected {int(connected)}",
    )


def saved_instances(path: Path) -> set[str]:
    """Instance ids in the router's view file (empty while it is not written yet)."""
    try:
        document = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return set()
    return {instance["id"] for instance in document["view"]["instances"]}


async def test_routing_survives_a_registry_kill_and_the_watch_reattaches(fleet: Fleet) -> None:
    router = two_engines(fleet)
    await wait_routable(router, PUBLIC, 2)
    async with (
        RouterCaller(router.grpc, alias=PUBLIC) as call,
        Traffic(call, concurrency=4, rate_per_s=150) as traffic,
    ):
        await traffic.wait_answers(100, since=time.monotonic())
        assert fleet.registry is not None
        await asyncio.to_thread(fleet.registry.kill)
        await watch_connected(router, False)
        outage = time.monotonic()
        await traffic.wait_answers(150, since=outage)

        status, body = await router.readyz()
        assert status == 200, f"/readyz during the outage: {status} {body}"
        assert "stale" in body, f"/readyz does not mention staleness: {body!r}"
        metrics = await router.metrics()
        stale = metrics.value("tidepool_router_view_stale_seconds")
        assert stale is not None, "no tidepool_router_view_stale_seconds"
        assert stale > 0, f"view_stale_seconds during the outage: {stale}"
        # Nothing is ejected merely because the registry cannot be reached.
        assert metrics.value("tidepool_router_endpoints", alias=PUBLIC, state="routable") == 2
        assert set(traffic.counts(since=outage)) == set(ENGINES), traffic.counts(since=outage)

        await asyncio.to_thread(fleet.restart_registry)
        await watch_connected(router, True)
        await wait_routable(router, PUBLIC, 2, timeout_s=15)
        back = time.monotonic()
        await traffic.wait_answers(150, since=back)
    traffic.assert_no_errors()
    assert set(traffic.counts(since=back)) == set(ENGINES), traffic.counts(since=back)
    metrics = await router.metrics()
    assert metrics.value("tidepool_router_view_stale_seconds") == 0
    status, body = await router.readyz()
    assert status == 200, f"/readyz after the watch is back: {status} {body!r}"
    assert "stale" not in body, f"/readyz after the watch is back: {body!r}"


async def test_router_restarted_during_an_outage_routes_on_its_view_file(fleet: Fleet) -> None:
    first = two_engines(fleet)
    await wait_routable(first, PUBLIC, 2)
    await wait_until_async(
        lambda: saved_instances(first.state_file) == set(ENGINES),
        10,
        lambda: f"the view file never listed {ENGINES}: {saved_instances(first.state_file)}",
    )
    assert fleet.registry is not None
    fleet.registry.kill()
    await watch_connected(first, False)
    first.process.terminate()
    assert await asyncio.to_thread(first.process.wait, 15) == 0, first.process.describe(
        "the router must exit 0 on SIGTERM"
    )

    # The registry stays down: only the file can give the new router a view.
    second = fleet.start_router(state_file=first.state_file)
    async with RouterCaller(second.grpc, alias=PUBLIC) as call:
        picks = await sequential(call, 100)
    assert set(picks) == set(ENGINES), f"answers from the file's view: {set(picks)}"
    status, body = await second.readyz()
    assert status == 200, f"/readyz on the file's view: {status} {body}"
    assert "file" in body, f"/readyz should say where the view came from: {body}"
    assert "stale" in body, f"/readyz should say the view is stale: {body}"
    metrics = await second.metrics()
    assert metrics.value("tidepool_router_watch_connected") == 0
