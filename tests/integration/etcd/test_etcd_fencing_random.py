"""Randomized leader changes on etcd: a deposed scheduler's fenced writes never land.

Twenty runs on two registry replicas: the leader writes with its fence through either
replica, its leader key is deleted at a random moment (what etcd does when the lease of a
paused or partitioned leader lapses), a contender takes over, and the deposed leader keeps
writing. Every write it starts after the takeover must be refused, whichever replica it
reaches, and the new leader's writes must land.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from registry.store.etcd_client import EtcdClient, EtcdSettings
from tests.integration.etcd.conftest import PREFIX, Replicas, replica_clients
from tests.support.etcd_harness import EtcdCluster, etcd_cluster
from tests.support.registry_harness import Clients, registration
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

RUNS = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path / "etcd", members=3) as running:
        yield running


async def _acquire(clients: Clients, holder: str) -> pb.Leadership:
    ttl = Duration()
    ttl.FromSeconds(5)
    return await clients.scheduling.AcquireLeadership(
        pb.AcquireLeadershipRequest(holder=holder, ttl=ttl)
    )


async def _write(clients: Clients, fence: int, tag: str) -> bool:
    """A fenced relabel; True when it landed, False when refused as stale. A write that met
    another replica's concurrent change of the record (UNAVAILABLE) is retried, as the
    scheduler retries it."""
    request = pb.SetLabelsRequest(instance_id="e-1", set={"writer": tag})
    for _ in range(50):
        try:
            await clients.admin.SetLabels(request, metadata=(("x-tidepool-fence", str(fence)),))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return False
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.01)  # let this replica's mirror catch up, then retry
            continue
        return True
    raise AssertionError(f"write {tag} kept meeting concurrent changes")


async def test_no_write_of_a_deposed_leader_lands_over_twenty_random_takeovers(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    rng = random.Random(20)
    etcd = EtcdClient(EtcdSettings(tuple(cluster.endpoints.split(","))))
    async with replica_clients(a) as ca, replica_clients(b) as cb:
        both = (ca, cb)
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        leader = await _acquire(ca, "sched-0")
        assert leader.granted
        landed_after_takeover = []
        for run in range(1, RUNS + 1):
            old = leader
            # The leader writes for a random while, then loses its key mid-stream.
            writes = [_write(rng.choice(both), old.fence, f"{run}-{n}") for n in range(5)]
            deposing = asyncio.create_task(_depose(etcd, rng.uniform(0, 0.05)))
            await asyncio.gather(*writes, deposing)
            holder = f"sched-{run}"
            leader = await _take_over(rng.choice(both), holder)
            assert leader.fence > old.fence
            for n in range(5):
                if await _write(rng.choice(both), old.fence, f"stale-{run}-{n}"):
                    landed_after_takeover.append((run, old.fence, n))
            assert await _write(rng.choice(both), leader.fence, f"new-{run}"), (
                f"run {run}: the new leader's write was refused"
            )
        assert landed_after_takeover == []
    await etcd.close()


async def _depose(etcd: EtcdClient, after_s: float) -> None:
    await asyncio.sleep(after_s)  # a random moment among the leader's writes
    await etcd.delete(f"{PREFIX}/leader".encode())


async def _take_over(clients: Clients, holder: str) -> pb.Leadership:
    for _ in range(100):
        leadership = await _acquire(clients, holder)
        if leadership.granted:
            return leadership
        await asyncio.sleep(0.02)  # the replica has not seen the key go yet
    raise AssertionError(f"{holder} never took the leadership")
