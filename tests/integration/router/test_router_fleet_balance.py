"""How a router process shares traffic over a real fleet: weights, drains, tenants, slow start.

One registry, three public engines (weights 100/50/50) and one router serve the
whole module; a test that changes the public pool puts it back before it ends.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.fleet_harness import (
    Engine,
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

WEIGHTS = {"pub-a": 100, "pub-b": 50, "pub-c": 50}
PUBLIC = "zh-public"
ACME = "zh-acme"
SHARE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with Fleet(tmp_path_factory.mktemp("balance")) as running:
        running.start_registry()
        running.put_aliases({PUBLIC: "lang=zh,pool=zh-public", ACME: "lang=zh,pool=zh-acme"})
        running.start_engines(*(EngineSpec(e, w, pool=PUBLIC) for e, w in WEIGHTS.items()))
        yield running


@pytest.fixture(scope="module")
def router(fleet: Fleet) -> Router:
    # Started on a registered, warm fleet: nothing is ramped by slow start.
    return fleet.start_router()


def shares(picks: list[str]) -> dict[str, float]:
    counts = Counter(picks)
    return {engine: counts[engine] / len(picks) for engine in sorted(counts)}


def longest_run(picks: list[str]) -> tuple[str, int]:
    return max(((e, len(list(run))) for e, run in itertools.groupby(picks)), key=lambda r: r[1])


async def test_shares_follow_static_weights_and_picks_interleave(router: Router) -> None:
    await wait_routable(router, PUBLIC, 3)
    async with RouterCaller(router.grpc, alias=PUBLIC) as call:
        picks = await sequential(call, 2000)

    total = sum(WEIGHTS.values())
    expected = {engine: weight / total for engine, weight in WEIGHTS.items()}
    got = shares(picks)
    assert got.keys() == expected.keys(), f"engines answering: {got}"
    for engine, share in expected.items():
        assert abs(got[engine] - share) <= SHARE_TOLERANCE, (
            f"{engine}: share {got[engine]:.3f}, expected {share:.3f} ± {SHARE_TOLERANCE}; "
            f"all: {got}"
        )
    # Smooth WRR over 100/50/50 goes a b c a, a b c a, ...: a heavy engine gets its
    # share spread out, never in bursts.
    engine, run = longest_run(picks)
    assert run <= 2, f"{engine} was picked {run} times in a row: {''.join(p[-1] for p in picks)}"


async def test_weight_zero_and_drain_take_an_engine_out_of_new_traffic(
    fleet: Fleet, router: Router
) -> None:
    await wait_routable(router, PUBLIC, 3)
    try:
        out = await asyncio.to_thread(fleet.ctl, "weight", "pub-b", "0")
        assert "pub-b" in out
        await wait_routable(router, PUBLIC, 2)
        async with RouterCaller(router.grpc, alias=PUBLIC) as call:
            picks = await sequential(call, 300)
            assert "pub-b" not in picks, f"weight 0 engine still picked: {Counter(picks)}"
            assert shares(picks) == pytest.approx({"pub-a": 2 / 3, "pub-c": 1 / 3}, abs=0.02)

            await asyncio.to_thread(fleet.ctl, "drain", "pub-c")
            await wait_routable(router, PUBLIC, 1)
            picks = await sequential(call, 100)
            assert set(picks) == {"pub-a"}, f"drained engine still picked: {Counter(picks)}"

        metrics = await router.metrics()
        before = metrics.by_label("tidepool_router_requests_total", "engine", alias=PUBLIC)
        async with RouterCaller(router.grpc, alias=PUBLIC) as call:
            await sequential(call, 50)
        after = (await router.metrics()).by_label(
            "tidepool_router_requests_total", "engine", alias=PUBLIC
        )
        for engine in ("pub-b", "pub-c"):
            assert after.get(engine) == before.get(engine), (
                f"{engine} got attempts while out of traffic: {before} -> {after}"
            )
    finally:
        await asyncio.to_thread(fleet.ctl, "weight", "pub-b", "--clear")
        await asyncio.to_thread(fleet.ctl, "restore", "pub-c")
    await wait_routable(router, PUBLIC, 3)


async def test_tenant_route_falls_back_to_public_when_its_dedicated_pool_is_out(
    fleet: Fleet, router: Router
) -> None:
    (acme,) = await asyncio.to_thread(fleet.start_engines, EngineSpec("acme-1", 100, pool=ACME))
    await asyncio.to_thread(
        fleet.ctl, "tenant", "set", "acme", "--lang", "zh", "--aliases", f"{ACME},{PUBLIC}"
    )
    await wait_routable(router, ACME, 1)
    async with RouterCaller(router.grpc, tenant="acme", lang="zh") as call:
        await wait_until_async(
            lambda: _answers(call, "acme-1"), 10, "the tenant route never reached acme-1"
        )
        assert set(await sequential(call, 50)) == {"acme-1"}, "acme traffic left its own pool"

        await asyncio.to_thread(fleet.ctl, "drain", "acme-1")
        await wait_routable(router, ACME, 0)
        picks = await sequential(call, 200)
        assert set(picks) <= set(WEIGHTS), f"drained acme-1 still picked: {Counter(picks)}"
        assert len(set(picks)) == 3, f"fallback did not balance over {PUBLIC}: {Counter(picks)}"

        await asyncio.to_thread(fleet.ctl, "restore", "acme-1")
        await wait_routable(router, ACME, 1)
        assert set(await sequential(call, 50)) == {"acme-1"}, "restored acme-1 not preferred"

        async with Traffic(call, concurrency=4, rate_per_s=150) as traffic:
            await traffic.wait_answers(50, since=time.monotonic())
            await asyncio.to_thread(acme.process.kill)
            await wait_for_metric(
                router,
                lambda m: m.total("tidepool_router_ejections_total", engine="acme-1") > 0,
                10,
                "acme-1 ejected after kill -9",
            )
            cut = time.monotonic()
            await traffic.wait_answers(100, since=cut)
            before = await _attempts(router, "acme-1")
            await traffic.wait_answers(100, since=time.monotonic())
            after = await _attempts(router, "acme-1")
        traffic.assert_no_errors()
        assert set(traffic.counts(since=cut)) <= set(WEIGHTS), traffic.counts(since=cut)
        # The registry said acme-1 is gone: its pool has nothing healthy, so the tenant's
        # next alias serves it, without first trying the dead engine on every call.
        assert after == before, (
            f"the router kept sending attempts to the dead acme-1 ({before} -> {after}) "
            f"although {PUBLIC} had healthy engines"
        )


async def _answers(call: RouterCaller, engine: str) -> bool:
    return await call() == engine


async def _attempts(router: Router, instance: str) -> float:
    metrics = await router.metrics()
    return metrics.total("tidepool_router_requests_total", engine=instance)


async def test_slow_start_gives_a_joining_engine_a_small_share_that_grows(fleet: Fleet) -> None:
    window_s = 3.0
    ramped = fleet.start_router("--slow-start-s", f"{window_s:g}")
    await wait_routable(ramped, PUBLIC, 3)
    joiner: list[Engine] = []
    try:
        async with (
            RouterCaller(ramped.grpc, alias=PUBLIC) as call,
            Traffic(call, concurrency=1, rate_per_s=None) as traffic,
        ):
            await traffic.wait_answers(100, since=time.monotonic())
            started = await asyncio.to_thread(
                fleet.start_engines, EngineSpec("pub-new", 100, pool=PUBLIC)
            )
            joiner.extend(started)
            await wait_until_async(
                lambda: traffic.counts()["pub-new"] > 0, 10, "pub-new never got a request"
            )
            joined = min(at for at, engine in traffic.answers if engine == "pub-new")
            late = joined + window_s + 0.3
            await wait_until_async(
                lambda: traffic.answers[-1][0] >= late + 1.0,
                15,
                "traffic stopped before the ramp was over",
            )
        traffic.assert_no_errors()
        early_share = _share(traffic.counts(joined, joined + 1.0), "pub-new")
        late_share = _share(traffic.counts(late, late + 1.0), "pub-new")
        full = 100 / (sum(WEIGHTS.values()) + 100)
        # Ramp 10 % -> 100 % of its weight over 3 s: about 8 % of the calls in the
        # first second, its full third once the window is over.
        assert 0 < early_share < 0.2, f"first second: share {early_share:.3f}, expected < 0.2"
        assert abs(late_share - full) <= 0.05, f"after the window: {late_share:.3f} vs {full:.3f}"
        assert late_share > 2 * early_share, f"share did not grow: {early_share} -> {late_share}"
    finally:
        for engine in joiner:
            await asyncio.to_thread(engine.process.stop)
        await asyncio.to_thread(ramped.process.stop)


def _share(counts: Counter[str], engine: str) -> float:
    total = sum(counts.values())
    assert total >= 100, f"too few calls in the window to measure a share: {counts}"
    return counts[engine] / total
