"""Scheduler leader election on a real fleet: standby takeover, release on SIGTERM,
moves resumed by the new leader, and fencing of a deposed leader.

Registry, engine stubs and two schedulers (`sched-a`, `sched-b`) run as separate
processes on 127.0.0.1; leadership is read back over the registry's Scheduling
service, as `tidepool ctl top` reads it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

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
)
from tests.support.processes import RunningProcess, wait_until_async
from tests.support.scheduler_harness import two_pool_policy
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

TAKEOVER_LIMIT_S = 5.0
SWITCHING = pb.Move.STATE_SWITCHING
FINISHED = (pb.Move.STATE_DONE, pb.Move.STATE_ROLLED_BACK)


async def _held_by(fleet: Fleet, holder: str) -> bool:
    return (await leadership(fleet)).holder == holder


async def _wait_leader(fleet: Fleet, holder: str, timeout_s: float) -> float:
    """Until `holder` leads; the seconds it took."""
    started = time.monotonic()
    await wait_until_async(
        lambda: _held_by(fleet, holder),
        timeout_s,
        lambda: f"{holder} did not take the leadership",
        interval_s=0.05,
    )
    return time.monotonic() - started


async def _wait_log(process: RunningProcess, *needles: str, timeout_s: float = 5.0) -> None:
    """Until the scheduler's log (stderr) holds one of `needles`."""
    await wait_until_async(
        lambda: any(n in process.stderr() for n in needles),
        timeout_s,
        lambda: process.describe(f"no log line with any of {needles}"),
        interval_s=0.05,
    )


def _start_pair(fleet: Fleet, leader_ttl_s: float) -> tuple[RunningProcess, RunningProcess]:
    policy = two_pool_policy(leader_ttl_s=leader_ttl_s)
    leader = fleet.start_scheduler(policy, holder="sched-a")
    standby = fleet.start_scheduler(policy, holder="sched-b", role="standby")
    return leader, standby


async def test_standby_takes_over_within_5s_of_the_leader_being_killed(fleet: Fleet) -> None:
    leader, standby = _start_pair(fleet, leader_ttl_s=2.0)
    before = await leadership(fleet)
    assert before.holder == "sched-a"

    killed_at = time.monotonic()
    leader.kill()
    await _wait_leader(fleet, "sched-b", timeout_s=10.0)
    took_s = time.monotonic() - killed_at

    assert took_s <= TAKEOVER_LIMIT_S, f"standby took {took_s:.2f}s to take over"
    after = await leadership(fleet)
    assert after.fence > before.fence, "a new leader must carry a higher fencing number"
    await _wait_log(standby, "role standby -> leader")

    # The new leader does the work: an engine that registers now gets admitted.
    fleet.start_engines(EngineSpec("zh-0", model_load_s=0.1))
    await wait_until_async(
        lambda: _pool_is(fleet, "zh-0", "zh-public"),
        5.0,
        lambda: standby.describe("the new leader did not admit zh-0"),
        interval_s=0.1,
    )


async def _pool_is(fleet: Fleet, instance_id: str, pool: str) -> bool:
    return (await fleet.pools()).get(instance_id) == pool


async def test_sigterm_hands_the_leadership_over_long_before_the_ttl(fleet: Fleet) -> None:
    leader_ttl_s = 20.0
    leader, standby = _start_pair(fleet, leader_ttl_s=leader_ttl_s)

    stopped_at = time.monotonic()
    leader.terminate()
    assert leader.wait(timeout_s=10.0) == 0, leader.describe("SIGTERM should exit 0")
    await _wait_leader(fleet, "sched-b", timeout_s=5.0)
    took_s = time.monotonic() - stopped_at

    assert took_s < leader_ttl_s / 4, f"takeover after {took_s:.2f}s: the lease was not released"
    assert "released the leadership" in leader.stderr(), leader.describe("no release logged")
    await _wait_log(standby, "role standby -> leader")


async def test_a_move_under_way_when_the_leader_dies_is_finished_by_the_new_leader(
    fleet: Fleet,
) -> None:
    leader, standby = _start_pair(fleet, leader_ttl_s=1.0)
    fleet.start_engines(
        EngineSpec("zh-0", lang="zh", model_load_s=0.1),
        EngineSpec("en-0", lang="en", model_load_s=3.0),  # slow switch: time to kill mid-way
        EngineSpec("en-1", lang="en", model_load_s=0.1),
    )
    await _wait_published(fleet, {"zh-public": 1, "en-public": 2})

    fleet.ctl("move", "--instance", "en-0", "--to", "zh-public")
    await wait_until_async(
        lambda: _move_in(fleet, "en-0", (SWITCHING,)),
        10.0,
        lambda: leader.describe("the move of en-0 never reached switching"),
        interval_s=0.05,
    )
    leader.kill()

    await _wait_leader(fleet, "sched-b", timeout_s=TAKEOVER_LIMIT_S)
    await wait_until_async(
        lambda: _move_in(fleet, "en-0", FINISHED),
        20.0,
        lambda: standby.describe("the new leader left the move of en-0 unfinished"),
        interval_s=0.1,
    )
    move = next(m for m in await fleet.moves() if m.instance_id == "en-0")
    expected = (
        {"pool": "zh-public", "lang": "zh"}
        if move.state == pb.Move.STATE_DONE
        else {"pool": "en-public", "lang": "en"}
    )
    await wait_until_async(
        lambda: _all_placed_and_ready(fleet, 3),
        5.0,
        lambda: f"not every engine is in a pool and ready after move {move}",
        interval_s=0.1,
    )
    en_0 = (await fleet.instances())["en-0"]
    assert {k: en_0.labels[k] for k in expected} == expected, (move, dict(en_0.labels))


async def _wait_published(fleet: Fleet, ready: dict[str, int]) -> None:
    """Until the leader has admitted the engines and published `ready` per pool."""

    async def published() -> bool:
        pools = (await list_pools(fleet)).pools
        return {p.name: p.ready for p in pools} == ready

    await wait_until_async(
        published, 10.0, lambda: f"pool status never showed ready={ready}", interval_s=0.1
    )


async def _move_in(fleet: Fleet, instance_id: str, states: tuple[int, ...]) -> bool:
    """Whether the move of `instance_id` is in one of `states` now."""
    return any(m.state in states for m in await fleet.moves() if m.instance_id == instance_id)


async def _all_placed_and_ready(fleet: Fleet, count: int) -> bool:
    instances = await fleet.instances()
    return len(instances) == count and all(
        i.labels.get("pool") and i.state == pb.INSTANCE_STATE_READY and not i.admin_drained
        for i in instances.values()
    )


async def test_a_deposed_leader_is_fenced_off_and_turns_standby(fleet: Fleet) -> None:
    leader, standby = _start_pair(fleet, leader_ttl_s=1.0)
    old = await leadership(fleet)
    assert old.holder == "sched-a"

    os.kill(leader.pid, signal.SIGSTOP)
    try:
        await _wait_leader(fleet, "sched-b", timeout_s=TAKEOVER_LIMIT_S)
        new = await leadership(fleet)
        assert new.fence > old.fence
        await _assert_fence_refused(fleet, old.fence)
    finally:
        os.kill(leader.pid, signal.SIGCONT)

    # Back from the freeze, A still believes it leads until the registry says otherwise:
    # a keep-alive that is not granted, or a write refused for its stale fence.
    await _wait_log(leader, "role leader -> standby", "lost the leadership")
    await wait_until_async(
        lambda: _leader_gauge(leader, 0.0),
        5.0,
        lambda: leader.describe("the deposed leader still reports itself leader"),
        interval_s=0.1,
    )
    now = await leadership(fleet)
    assert (now.holder, now.fence) == ("sched-b", new.fence), "B must keep the leadership"
    assert await _leader_gauge(standby, 1.0)
    assert "-> standby" not in standby.stderr(), standby.describe("B lost the leadership")
    assert (await list_pools(fleet)).leader == "sched-b"


async def _assert_fence_refused(fleet: Fleet, fence: int) -> None:
    """A write carrying the deposed leader's fence is refused by the registry."""
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"), ("x-tidepool-fence", str(fence)))
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        stub = pb_grpc.SchedulingStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PutPools(pb.PutPoolsRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stale" in (refused.value.details() or "")


async def _leader_gauge(scheduler: RunningProcess, value: float) -> bool:
    with contextlib.suppress(OSError):
        status, body = await http_get(scheduler.http, "/metrics")
        return status == 200 and Metrics.parse(body).value("tidepool_scheduler_leader") == value
    return False
