"""The scheduler's leader lease on etcd: one holder across replicas, a higher fence for each new
holder, and a deposed leader's fenced writes refused by etcd's own transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from registry.errors import FailedPreconditionError
from registry.etcd_leader import EtcdLeadership
from registry.fencing import FENCE_HEADER, PRESENTED_FENCE
from registry.records import InstanceRecord, frozen_labels
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import EtcdSettings
from tests.integration.etcd.conftest import PREFIX, Replicas, etcd_revision, replica_clients
from tests.support.etcd_harness import EtcdCluster
from tests.support.registry_harness import Clients, registration, wait_for
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]


async def _acquire(clients: Clients, holder: str, ttl_s: float = 0.5) -> pb.Leadership:
    ttl = Duration()
    ttl.FromNanoseconds(int(ttl_s * 1e9))
    request = pb.AcquireLeadershipRequest(holder=holder, ttl=ttl)
    return await clients.scheduling.AcquireLeadership(request)


async def _fenced(call: Any, request: Any, fence: int) -> grpc.StatusCode:
    """The status of one call made as the holder of `fence`."""
    try:
        await call(request, metadata=((FENCE_HEADER, str(fence)),))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _fenced_weight(clients: Clients, fence: int, weight: int) -> grpc.StatusCode:
    request = pb.SetWeightRequest(instance_id="e-1", weight=weight)
    return await _fenced(clients.admin.SetWeight, request, fence)


async def test_one_leader_across_replicas_and_a_deposed_one_cannot_write(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    async with replica_clients(a) as ca, replica_clients(b) as cb:
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        first = await _acquire(ca, "sched-1")
        assert first.granted
        other = await _acquire(cb, "sched-2")
        assert not other.granted
        assert other.holder == "sched-1"
        assert await _fenced_weight(cb, first.fence, 200) == grpc.StatusCode.OK
        # sched-1 stops renewing: etcd deletes its key (2 s etcd TTL), then sched-2 leads.
        second = await wait_for(
            lambda: _granted(cb, "sched-2"), 10, "sched-2 never took over from a silent sched-1"
        )
        assert second.fence > first.fence
        for clients in (ca, cb):
            code = await wait_for(
                lambda c=clients: _refused(c, first.fence), 5, "a deposed fence was accepted"
            )
            assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert await _fenced_weight(ca, second.fence, 300) == grpc.StatusCode.OK


async def _granted(clients: Clients, holder: str) -> pb.Leadership | None:
    leadership = await _acquire(clients, holder)
    return leadership if leadership.granted else None


async def _refused(clients: Clients, fence: int) -> grpc.StatusCode | None:
    code = await _fenced_weight(clients, fence, 250)
    return code if code != grpc.StatusCode.OK else None


def _store(cluster: EtcdCluster) -> EtcdStore:
    return EtcdStore(EtcdSettings(tuple(cluster.endpoints.split(","))), PREFIX)


async def test_etcd_itself_refuses_a_deposed_fence_that_a_replica_still_trusts(
    cluster: EtcdCluster,
) -> None:
    """The replica that served sched-1 never heard of the new leader (no mirror here): only
    the transaction's compare on the leader key stands between sched-1 and the write."""
    stale_replica, other_replica = _store(cluster), _store(cluster)
    first = await EtcdLeadership(stale_replica).acquire("sched-1", 0.5)
    with pytest.raises(FailedPreconditionError, match="held by 'sched-1'"):
        await EtcdLeadership(other_replica).acquire("sched-2", 0.5)
    await EtcdLeadership(stale_replica).release("sched-1")
    second = await EtcdLeadership(other_replica).acquire("sched-2", 0.5)
    assert second.fence == first.fence + 1
    record = InstanceRecord("e-1", "speech", "127.0.0.1:1", 100, 1, frozen_labels({}), 0.0)
    token = PRESENTED_FENCE.set(first.fence)
    try:
        with pytest.raises(FailedPreconditionError, match="is stale"):
            await stale_replica.put_instance(record)
    finally:
        PRESENTED_FENCE.reset(token)
    assert (await other_replica.load()).instances == ()
    token = PRESENTED_FENCE.set(second.fence)
    try:
        await other_replica.put_instance(record)
    finally:
        PRESENTED_FENCE.reset(token)
    assert len((await stale_replica.load()).instances) == 1
    await asyncio.gather(stale_replica.close(), other_replica.close())


def _pools(*names: str) -> list[pb.PoolStatus]:
    return [pb.PoolStatus(name=name, lang=name[:2], size=3, ready=2, desired=4) for name in names]


async def _publish(clients: Clients, fence: int, pools: list[pb.PoolStatus]) -> grpc.StatusCode:
    return await _fenced(clients.scheduling.PutPools, pb.PutPoolsRequest(pools=pools), fence)


async def _listed(clients: Clients, pools: list[pb.PoolStatus], leader: str) -> bool:
    listed = await clients.scheduling.ListPools(pb.ListPoolsRequest())
    return list(listed.pools) == pools and listed.leader == leader


async def test_pool_status_published_through_one_replica_is_what_every_replica_lists(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    async with replica_clients(a) as ca, replica_clients(b) as cb:
        first = await _acquire(ca, "sched-1", ttl_s=5.0)
        morning = _pools("zh-public", "en-public")
        assert await _publish(ca, first.fence, morning) == grpc.StatusCode.OK
        await wait_for(
            lambda: _listed(cb, morning, "sched-1"), 5, "replica B never listed A's pool status"
        )
        age = (await cb.scheduling.ListPools(pb.ListPoolsRequest())).age.ToNanoseconds() / 1e9
        assert 0.0 <= age < 5.0, f"the age of a fresh status came out as {age}s on replica B"
        # Ticks that move only utilisation are not etcd writes (etcd keeps every revision).
        before = await etcd_revision(cluster.endpoints)
        for tick in range(5):
            busier = _pools("zh-public", "en-public")
            busier[0].utilization = 0.1 * (tick + 1)
            assert await _publish(ca, first.fence, busier) == grpc.StatusCode.OK
        assert await etcd_revision(cluster.endpoints) == before, "a utilisation tick was written"
        listed = await ca.scheduling.ListPools(pb.ListPoolsRequest())
        assert listed.pools[0].utilization == pytest.approx(0.5), "A answers its latest tick"

        late = await replicas.replica(cluster.endpoints)
        async with replica_clients(late) as clate:
            assert await _listed(clate, morning, "sched-1"), "a replica started later lists none"

        await ca.scheduling.ReleaseLeadership(pb.ReleaseLeadershipRequest(holder="sched-1"))
        second = await _acquire(cb, "sched-2", ttl_s=5.0)
        assert second.granted
        assert second.fence > first.fence
        evening = _pools("en-public", "zh-public", "zh-acme")
        assert await _publish(cb, second.fence, evening) == grpc.StatusCode.OK
        await wait_for(
            lambda: _listed(ca, evening, "sched-2"), 5, "replica A never listed B's pool status"
        )
        # The deposed leader, through the replica it knew, changes nothing anywhere.
        assert await _publish(ca, first.fence, morning) == grpc.StatusCode.FAILED_PRECONDITION
        for clients in (ca, cb):
            assert await _listed(clients, evening, "sched-2")
