"""Three etcd members under two registry replicas: losing the etcd leader (kill -9) stops
writes only briefly and expires no engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.etcd.conftest import Replicas, attached, beating, replica_clients, states
from tests.support.etcd_harness import EtcdCluster, etcd_cluster
from tests.support.registry_harness import registration, wait_for
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]

READY = pb.INSTANCE_STATE_READY
WRITES_RESUME_S = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path / "etcd", members=3) as running:
        yield running


async def _write(clients: object, n: int) -> bool:
    alias = pb.Alias(name=f"a-{n % 5}", selector=f"lang=zh,n={n}")
    try:
        await clients.admin.PutAlias(pb.PutAliasRequest(alias=alias), timeout=2)  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        return False
    return True


async def test_killing_the_etcd_leader_pauses_writes_briefly_and_expires_no_engine(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        for n in range(3):
            await ca.registry.Register(registration(9001 + n, instance_id=f"e-{n}"))
        async with (
            beating(await attached(ca, "e-0")),
            beating(await attached(ca, "e-1")),
            beating(await attached(ca, "e-2")),
        ):
            await wait_for(lambda: _all_ready(cb, 3), 5, "engines attached to A never ready on B")
            leader = cluster.leader()
            await asyncio.to_thread(cluster.kill, leader)
            killed_at = time.monotonic()
            views: list[dict[str, int]] = []
            n = 0
            while not await _write(cb, n):
                views.append(await states(cb))
                n += 1
                assert time.monotonic() - killed_at < WRITES_RESUME_S, (
                    f"no write through B succeeded within {WRITES_RESUME_S}s of the leader's death"
                )
            resumed_s = time.monotonic() - killed_at
            assert await _write(ca, n + 1), "writes through A did not resume"
            end = time.monotonic() + 2.0
            while time.monotonic() < end:  # watch for a late false expiry
                views.append(await states(cb))
                views.append(await states(ca))
                await asyncio.sleep(0.05)  # sampling both views over time
        falsely_expired = [v for v in views if any(s != READY for s in v.values())]
        assert not falsely_expired, falsely_expired[:3]
        print(f"writes resumed {resumed_s:.2f}s after the etcd leader was killed")


async def _all_ready(clients: object, count: int) -> bool:
    seen = await states(clients)  # type: ignore[arg-type]
    return len(seen) == count and all(s == READY for s in seen.values())


async def test_a_hung_etcd_member_does_not_hold_a_replicas_watch(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    """SIGSTOP of the member both replicas' watches use: no reset ever arrives, so only the
    watch's own progress check moves A to another member in time to see B's change."""
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    async with replica_clients(a) as ca, replica_clients(b) as cb:
        assert await _write(cb, 0)
        await wait_for(lambda: _alias_count(ca, 1), 5, "A never saw B's first alias")
        cluster.pause(cluster.members[0])
        try:
            n = 1
            while not await _write(cb, n):  # B's own requests move on after --etcd-timeout
                n += 1
            await wait_for(lambda: _alias_count(ca, 2), 8, "A's watch stayed on the hung member")
        finally:
            cluster.resume(cluster.members[0])


async def _alias_count(clients: object, count: int) -> bool:
    response = await clients.registry.ListAliases(pb.ListAliasesRequest())  # type: ignore[attr-defined]
    return len(response.aliases) >= count
