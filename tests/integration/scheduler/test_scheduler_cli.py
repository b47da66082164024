"""`tidepool scheduler run` and `tidepool ctl move` as an operator uses them: policy errors,
dry runs, a manual move under load, and the pools' `min`/`max` bounds.

Everything runs as separate processes on 127.0.0.1; load comes from `tidepool
loadtest` with `--max-error-rate 0`, so its exit status proves no call failed.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.support.fleet_harness import (
    ADMIN_TOKEN,
    CALL_TIMEOUT_S,
    EngineSpec,
    Fleet,
    Metrics,
    http_get,
    leadership,
    list_pools,
    run_ctl,
    tidepool_args,
    wait_for_metric,
    wait_routable,
)
from tests.support.processes import REPO_ROOT, child_env, wait_until_async
from tests.support.scheduler_harness import (
    assert_finished_cleanly,
    start_loadtest,
    two_pool_policy,
)
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

BAD_EXIT_S = 30.0


# ---- policy validation ---------------------------------------------------------------------


def _scheduler_run(*args: str) -> subprocess.CompletedProcess[str]:
    """`tidepool scheduler run ARGS` against an address nothing listens on (never reached)."""
    return subprocess.run(
        tidepool_args(
            "scheduler", "run", "--registry", "127.0.0.1:9", "--http-listen", "127.0.0.1:0", *args
        ),
        capture_output=True,
        text=True,
        timeout=BAD_EXIT_S,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, f"exit {done.returncode}, stderr: {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {done.stderr}"
    return lines[0]


def test_an_unknown_policy_key_exits_2_naming_the_key_and_its_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[scheduler]\nintervall_s = 1\n")
    line = _one_line_error(_scheduler_run("--policy", str(policy)))
    assert "intervall_s" in line
    assert f"{policy}:2:" in line


def test_a_missing_policy_file_exits_2_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "policy.toml"
    line = _one_line_error(_scheduler_run("--policy", str(missing)))
    assert str(missing) in line


def test_no_policy_flag_exits_2_naming_the_flag() -> None:
    line = _one_line_error(_scheduler_run())
    assert "--policy" in line


# ---- dry run -------------------------------------------------------------------------------


async def test_a_dry_run_prints_admissions_and_changes_nothing(fleet: Fleet) -> None:
    fleet.start_engines(
        EngineSpec("zh-0", lang="zh", model_load_s=0.1),
        EngineSpec("en-0", lang="en", model_load_s=0.1),
    )
    scheduler = fleet.start_scheduler(two_pool_policy(), "--dry-run", role="dry-run")
    await wait_until_async(
        lambda: all(f"dry-run: would admit {p}: {e}" in scheduler.stdout() for p, e in _ADMITS),
        10.0,
        lambda: scheduler.describe("no dry-run admission for each engine"),
        interval_s=0.1,
    )
    # Several more ticks (a decision is printed once, not again while it stands), then
    # look at the registry.
    ticks = await _ticks(scheduler.http)
    await wait_until_async(
        lambda: _ticks_since(scheduler.http, ticks + 3),
        10.0,
        lambda: scheduler.describe("the dry run stopped ticking"),
        interval_s=0.1,
    )
    assert scheduler.stdout().count("dry-run: would admit zh-public") == 1
    assert await fleet.pools() == {"zh-0": "", "en-0": ""}
    assert await _alias_names(fleet) == set()
    assert (await leadership(fleet)).holder == "", "a dry run must never lead"
    assert not (await list_pools(fleet)).pools, "a dry run must publish no pool status"
    assert await fleet.moves() == []


_ADMITS = (("zh-public", "zh-0"), ("en-public", "en-0"))


async def _ticks(http: str) -> float:
    status, body = await http_get(http, "/metrics")
    assert status == 200, body
    return Metrics.parse(body).value("tidepool_scheduler_tick_seconds_count") or 0.0


async def _ticks_since(http: str, count: float) -> bool:
    return await _ticks(http) >= count


async def _alias_names(fleet: Fleet) -> set[str]:
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        listed = await pb_grpc.RegistryStub(channel).ListAliases(
            pb.ListAliasesRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
    return {a.name for a in listed.aliases}


# ---- manual moves ----------------------------------------------------------------------------


async def _wait_published(fleet: Fleet, ready: dict[str, int]) -> None:
    """Until the leader has admitted the engines and published `ready` per pool."""

    async def published() -> bool:
        pools = (await list_pools(fleet)).pools
        return {p.name: p.ready for p in pools} == ready

    await wait_until_async(
        published, 10.0, lambda: f"pool status never showed ready={ready}", interval_s=0.1
    )


async def test_a_manual_move_under_load_loses_no_call(fleet: Fleet) -> None:
    fleet.start_scheduler(two_pool_policy())
    fleet.start_engines(
        EngineSpec("zh-0", lang="zh", model_load_s=0.1),
        *(EngineSpec(f"en-{i}", lang="en", model_load_s=0.5) for i in range(3)),
    )
    await _wait_published(fleet, {"zh-public": 1, "en-public": 3})
    router = fleet.start_router()
    await wait_routable(router, "en-public", 3)

    load = await asyncio.to_thread(start_loadtest, router, "en-public", 40, 8.0)
    try:
        await wait_for_metric(
            router,
            lambda m: m.total("tidepool_router_requests_total", alias="en-public") >= 20,
            10.0,
            "20 calls answered in en-public before the move",
        )
        move = ("move", "--instance", "en-0", "--to", "zh-public", "--wait", "--timeout", "20")
        moved = await asyncio.to_thread(fleet.ctl, *move)
    finally:
        await asyncio.to_thread(assert_finished_cleanly, load)

    assert "done" in moved.splitlines()[-1], moved
    assert load.returncode == 0
    en_0 = (await fleet.instances())["en-0"]
    assert (en_0.labels["pool"], en_0.labels["lang"]) == ("zh-public", "zh")


async def test_ctl_refuses_a_move_below_min_or_above_max(fleet: Fleet) -> None:
    fleet.start_scheduler(two_pool_policy(zh_max=1, en_min=2))
    fleet.start_engines(
        EngineSpec("zh-0", lang="zh", model_load_s=0.1),
        *(EngineSpec(f"en-{i}", lang="en", model_load_s=0.1) for i in range(3)),
    )
    await _wait_published(fleet, {"zh-public": 1, "en-public": 3})

    below_min = run_ctl(fleet, "move", "--instance", "zh-0", "--to", "en-public")
    assert below_min.returncode == 1, below_min.stderr
    assert "below its min of 1" in below_min.stderr

    above_max = run_ctl(fleet, "move", "--instance", "en-0", "--to", "zh-public")
    assert above_max.returncode == 1, above_max.stderr
    assert "above its max of 1" in above_max.stderr
    assert await fleet.moves() == [], "a refused move must not be created"


async def test_the_scheduler_itself_refuses_a_move_that_breaks_min_or_max(fleet: Fleet) -> None:
    """Moves created without ctl's checks (PutMove straight away) are refused at the tick."""
    scheduler = fleet.start_scheduler(two_pool_policy(zh_max=1, en_min=2))
    fleet.start_engines(
        EngineSpec("zh-0", lang="zh", model_load_s=0.1),
        *(EngineSpec(f"en-{i}", lang="en", model_load_s=0.1) for i in range(3)),
    )
    await _wait_published(fleet, {"zh-public": 1, "en-public": 3})

    await _put_pending_move(fleet, "zh-0", "en-public")
    await _put_pending_move(fleet, "en-0", "zh-public")
    await wait_until_async(
        lambda: _all_finished(fleet, 2),
        10.0,
        lambda: scheduler.describe("the scheduler did not settle both moves"),
        interval_s=0.1,
    )
    moves = {m.instance_id: m for m in await fleet.moves()}
    assert {i: m.state for i, m in moves.items()} == {
        "zh-0": pb.Move.STATE_ROLLED_BACK,
        "en-0": pb.Move.STATE_ROLLED_BACK,
    }
    assert "refused: it would leave zh-public below its min of 1" in moves["zh-0"].reason
    assert "refused: it would take zh-public above its max of 1" in moves["en-0"].reason
    assert await fleet.pools() == {
        "zh-0": "zh-public",
        "en-0": "en-public",
        "en-1": "en-public",
        "en-2": "en-public",
    }


async def _put_pending_move(fleet: Fleet, instance_id: str, to_pool: str) -> None:
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    move = pb.Move(instance_id=instance_id, to_pool=to_pool, state=pb.Move.STATE_PENDING)
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        await pb_grpc.SchedulingStub(channel).PutMove(
            pb.PutMoveRequest(move=move), metadata=metadata, timeout=CALL_TIMEOUT_S
        )


async def _all_finished(fleet: Fleet, count: int) -> bool:
    moves = await fleet.moves()
    finished = (pb.Move.STATE_DONE, pb.Move.STATE_ROLLED_BACK)
    return len(moves) == count and all(m.state in finished for m in moves)
