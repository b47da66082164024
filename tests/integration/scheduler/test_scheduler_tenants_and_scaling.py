"""The scheduler's tenant alias lists and its local provider, on a real fleet.

Tenants: the published list drops an alias with no ready engine and brings it
back when one registers, and a router follows it. Scaling: a saturated pool gets
engines from the `local` provider (the cheapest tier that starts in time), and
they are given back when the pool idles or stopped with the scheduler.
Provider engines run in their own session with no pipe to the test, so they are
found by command line in /proc, and killed there if a test fails half-way.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from tests.support.fleet_harness import (
    EngineSpec,
    Fleet,
    Metrics,
    Router,
    RouterCaller,
    http_get,
    sequential,
    tenant_routes,
    wait_routable,
)
from tests.support.processes import RunningProcess, wait_until_async
from tests.support.scheduler_harness import assert_finished_cleanly, start_loadtest
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

LOOP = """\
[scheduler]
interval_s = 0.25
window_s = 1.0
cooldown_s = 1.0
min_stay_s = 4.0
drain_timeout_s = 2.0
switch_timeout_s = 10.0
leader_ttl_s = 1.0
expected_switch_s = 0.5
start_within_s = 5.0
urgent_start_within_s = 5.0

[[pools]]
name = "zh-public"
lang = "zh"
min = 1
max = 4
target_utilization = 0.5
high_watermark = 0.75
low_watermark = 0.25
"""
TENANT_POLICY = (
    LOOP
    + """
[[tenants]]
tenant = "acme"
lang = "zh"
aliases = ["zh-acme", "zh-public"]
"""
)
ACME = ("acme", "zh")
CALLS = 10


def _provider_policy(cvm_start_s: float) -> str:
    """One zh pool that scales through `local`: serverless starts in 1 s, cvm in `cvm_start_s`."""
    return (
        LOOP
        + f"""
[providers.local]
tiers = ["cvm", "serverless"]
start_s = {{ cvm = {cvm_start_s}, serverless = 1.0 }}
price_per_hour = {{ cvm = 1.0, serverless = 2.5 }}
max_engines = 2
slots = 4
speed = 0.1
model_load_s = 0.2
"""
    )


def provider_engine_pids(fleet: Fleet) -> list[int]:
    """Engine stubs a local provider started against this fleet's registry, by command line."""
    registry = fleet.registry_address
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # it exited while we looked
        labelled = any("provider=local" in word for word in words)
        if "engine-stub" in words and registry in words and labelled:
            pids.append(int(entry.name))
    return pids


# ---- tenants -------------------------------------------------------------------------------


async def _acme_list_is(fleet: Fleet, aliases: list[str]) -> bool:
    return (await tenant_routes(fleet)).get(ACME) == aliases


async def _wait_acme_list(fleet: Fleet, aliases: list[str], timeout_s: float) -> None:
    await wait_until_async(
        lambda: _acme_list_is(fleet, aliases),
        timeout_s,
        lambda: f"acme/zh never listed {aliases}",
        interval_s=0.05,
    )


async def _answered_only_by(router: Router, engines: set[str]) -> bool:
    """`CALLS` calls routed as tenant acme, lang zh, all answered by `engines`."""
    async with RouterCaller(router.grpc, tenant="acme", lang="zh") as call:
        try:
            answers = await sequential(call, CALLS)
        except grpc.RpcError:
            return False
    return set(answers) <= engines


async def _wait_routed_to(router: Router, engines: set[str]) -> None:
    await wait_until_async(
        lambda: _answered_only_by(router, engines),
        10.0,
        lambda: f"tenant acme/zh was not routed to {sorted(engines)} alone",
        interval_s=0.1,
    )


async def test_a_tenant_falls_back_to_the_public_pool_while_its_own_is_empty(
    fleet: Fleet,
) -> None:
    fleet.start_scheduler(TENANT_POLICY)
    acme, *_ = fleet.start_engines(
        EngineSpec("acme-0", pool="zh-acme", model_load_s=0.1),
        EngineSpec("zh-0", model_load_s=0.1),
        EngineSpec("zh-1", model_load_s=0.1),
    )
    await _wait_acme_list(fleet, ["zh-acme", "zh-public"], 10.0)
    router = fleet.start_router()
    await _wait_routed_to(router, {"acme-0"})

    killed_at = time.monotonic()
    acme.process.kill()
    await _wait_acme_list(fleet, ["zh-public"], 5.0)
    dropped_s = time.monotonic() - killed_at
    await _wait_routed_to(router, {"zh-0", "zh-1"})

    fleet.start_engines(EngineSpec("acme-1", pool="zh-acme", model_load_s=0.1))
    await _wait_acme_list(fleet, ["zh-acme", "zh-public"], 5.0)
    await _wait_routed_to(router, {"acme-1"})
    assert dropped_s <= 5.0


# ---- scaling through the local provider ----------------------------------------------------


async def _provider_engines(fleet: Fleet) -> list[pb.Instance]:
    return [i for i in (await fleet.instances()).values() if i.labels.get("provider") == "local"]


async def _provider_engines_ready(fleet: Fleet) -> bool:
    engines = await _provider_engines(fleet)
    return bool(engines) and all(
        i.state == pb.INSTANCE_STATE_READY and i.labels.get("pool") == "zh-public" for i in engines
    )


async def _scale_up_under_load(
    fleet: Fleet, policy: str
) -> tuple[list[pb.Instance], RunningProcess]:
    """Scheduler, one slow zh engine, a router and saturating load until provider engines
    serve in zh-public; those engines, and the scheduler process."""
    # Already labelled, so the pool is at its min from the first tick and only load scales it.
    fleet.start_engines(
        EngineSpec("zh-0", pool="zh-public", slots=2, speed="0.1", model_load_s=0.1)
    )
    scheduler = fleet.start_scheduler(policy)
    router = fleet.start_router()
    await wait_routable(router, "zh-public", 1)
    # zh load far above one slow two-slot engine; errors allowed (it is overloaded).
    load = await asyncio.to_thread(start_loadtest, router, "zh-public", 40, 6.0, max_error_rate=1.0)
    try:
        await wait_until_async(
            lambda: _provider_engines_ready(fleet),
            15.0,
            lambda: scheduler.describe("no provider engine joined zh-public under saturation"),
            interval_s=0.1,
        )
    finally:
        await asyncio.to_thread(assert_finished_cleanly, load)
    return await _provider_engines(fleet), scheduler


async def test_a_saturated_pool_gets_serverless_engines_and_gives_them_back_when_idle(
    fleet: Fleet,
) -> None:
    # cvm takes 60 s to start, beyond start_within_s: serverless is the only tier that fits.
    started, scheduler = await _scale_up_under_load(fleet, _provider_policy(cvm_start_s=60.0))
    assert {i.labels["tier"] for i in started} == {"serverless"}
    assert all(i.labels["home"] == "zh-public" for i in started)
    assert len(started) <= 2, "max_engines = 2"

    await wait_until_async(
        lambda: _no_provider_engines(fleet),
        20.0,
        lambda: scheduler.describe("provider engines were not given back once zh idled"),
        interval_s=0.1,
    )
    assert "gave back" in scheduler.stderr()
    assert list(await fleet.instances()) == ["zh-0"], "the fixed engine is never given back"
    await _stop_and_check_no_engines_left(fleet, scheduler)


async def test_the_cheaper_cvm_tier_is_chosen_when_it_starts_in_time(fleet: Fleet) -> None:
    started, scheduler = await _scale_up_under_load(fleet, _provider_policy(cvm_start_s=1.0))
    assert {i.labels["tier"] for i in started} == {"cvm"}
    # Stopping the scheduler stops the engines its provider started.
    await _stop_and_check_no_engines_left(fleet, scheduler)


async def _no_provider_engines(fleet: Fleet) -> bool:
    return not await _provider_engines(fleet) and not provider_engine_pids(fleet)


async def _stop_and_check_no_engines_left(fleet: Fleet, scheduler: RunningProcess) -> None:
    scheduler.terminate()
    assert await asyncio.to_thread(scheduler.wait, 45.0) == 0, scheduler.describe("exit status")
    await wait_until_async(
        lambda: _no_provider_engines(fleet),
        10.0,
        lambda: f"provider engines outlived the scheduler: pids {provider_engine_pids(fleet)}",
        interval_s=0.1,
    )


async def test_admitting_an_engine_into_an_empty_pool_starts_no_provider_engine(
    fleet: Fleet,
) -> None:
    fleet.start_engines(EngineSpec("zh-0", model_load_s=0.1))  # no pool: the scheduler admits it
    scheduler = fleet.start_scheduler(_provider_policy(cvm_start_s=60.0))
    await wait_until_async(
        lambda: _ticks(scheduler, at_least=8),
        10.0,
        lambda: scheduler.describe("the scheduler did not tick 8 times"),
        interval_s=0.1,
    )
    assert (await fleet.pools()) == {"zh-0": "zh-public"}
    assert "scale_up" not in scheduler.stderr(), scheduler.describe("scaled up an idle pool")


async def _ticks(scheduler: RunningProcess, at_least: int) -> bool:
    status, body = await http_get(scheduler.http, "/metrics")
    count = Metrics.parse(body).value("tidepool_scheduler_tick_seconds_count")
    return status == 200 and count is not None and count >= at_least
