"""Two registry processes on one etcd serve one catalog: changes cross, heartbeats stay in
memory, a dead replica's engines get a hand-over grace, and an etcd outage refuses writes."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from scheduler.registry_client import SchedulerRegistry
from tests.integration.etcd.conftest import (
    LEASE_TTL_S,
    PREFIX,
    Replicas,
    attached,
    beating,
    etcd_revision,
    replica_clients,
    states,
)
from tests.support.etcd_harness import EtcdCluster
from tests.support.registry_harness import registration, wait_for
from tidepool.ctl.client import RegistryClient
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

READY = pb.INSTANCE_STATE_READY
UNKNOWN = pb.INSTANCE_STATE_UNKNOWN
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY
DRAINING = pb.INSTANCE_STATE_DRAINING


async def test_changes_through_one_replica_reach_the_other(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        async with beating(await attached(ca, "e-1")):
            await wait_for(
                lambda: _is(cb, "e-1", READY), 5, "e-1 attached to A is never ready on B"
            )
            await cb.admin.Drain(pb.DrainRequest(instance_id="e-1"))
            await wait_for(lambda: _is(ca, "e-1", DRAINING), 5, "B's drain never reaches A")
            alias = pb.Alias(name="zh", selector="lang=zh")
            await ca.admin.PutAlias(pb.PutAliasRequest(alias=alias))
            aliases = await wait_for(
                lambda: _aliases(cb), 5, "an alias made through A never shows on B"
            )
            assert aliases == ["zh"]
            await cb.registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
            await wait_for(lambda: _gone(ca, "e-1"), 5, "a deregistration through B stays on A")


async def test_the_scheduler_and_ctl_see_each_engines_load_whichever_replica_holds_it(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    """Load travels only to the replica holding the heartbeat stream (no etcd write per
    beat), so a client of several replicas lists each and keeps the freshest report."""
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        for n, clients in ((1, ca), (2, cb)):
            await clients.registry.Register(registration(9000 + n, instance_id=f"e-{n}"))
        async with (
            beating(await attached(ca, "e-1"), in_flight=5, slots=8),
            beating(await attached(cb, "e-2"), in_flight=7, slots=8),
        ):
            await wait_for(lambda: _is(cb, "e-1", READY), 5, "e-1 is never ready on B")
            await wait_for(lambda: _is(ca, "e-2", READY), 5, "e-2 is never ready on A")
            scheduler = SchedulerRegistry(f"{b.grpc},{a.grpc}", None)
            try:
                engines = {e.id: e.in_flight for e in await scheduler.engines()}
            finally:
                await scheduler.close()
            ctl = RegistryClient(f"{a.grpc},{b.grpc}", None)
            try:
                listed = await asyncio.to_thread(ctl.list_instances)
            finally:
                ctl.close()
    assert engines == {"e-1": 5, "e-2": 7}, "the scheduler lost the load of one replica's engine"
    assert {i.id: i.load.in_flight for i in listed} == {"e-1": 5, "e-2": 7}


async def test_heartbeats_never_become_etcd_writes(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    await replicas.replica(cluster.endpoints)
    async with replica_clients(a) as ca:
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        engine = await attached(ca, "e-1")
        await wait_for(lambda: _is(ca, "e-1", READY), 5, "e-1 never ready")
        # Once the attachment is written, count every etcd write during 50 beats.
        await wait_for(
            lambda: _has_key(cluster, "attached/e-1"), 5, "A never wrote e-1's attachment"
        )
        before = await etcd_revision(cluster.endpoints)
        for n in range(50):
            await engine.beat(in_flight=n % 3, progress=n)
            await asyncio.sleep(0.01)  # beat pacing, not synchronisation
        after = await etcd_revision(cluster.endpoints)
        engine.break_stream()
    assert after == before, f"{after - before} etcd writes from 50 heartbeats"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_stopped_replicas_engines_stay_ready_through_the_hand_over(
    cluster: EtcdCluster, replicas: Replicas, how: signal.Signals
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        for n, instance_id in enumerate(("e-1", "e-2")):
            await ca.registry.Register(registration(9001 + n, instance_id=instance_id))
        async with beating(await attached(ca, "e-1")), beating(await attached(ca, "e-2")):
            await wait_for(lambda: _all(cb, READY, 2), 5, "engines on A never ready on B")
            if how is signal.SIGKILL:
                a.kill()
            else:
                a.terminate()
            seen: list[dict[str, int]] = []
            # e-1 re-attaches to B after A's lease lapsed; e-2 never does.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LEASE_TTL_S + 1.0
            while loop.time() < deadline:
                seen.append(await states(cb))
                await asyncio.sleep(0.05)  # sampling B's view over time
        assert all(s.get("e-1") == READY and s.get("e-2") == READY for s in seen), seen
        async with beating(await attached(cb, "e-1")):
            await wait_for(
                lambda: _is(cb, "e-2", UNHEALTHY), 8, "e-2 never re-attached, yet never expired"
            )
            assert (await states(cb))["e-1"] == READY


@pytest.mark.parametrize(
    "outage_s", [2.0, pytest.param(10.0, marks=[pytest.mark.slow, pytest.mark.timeout(90)])]
)
async def test_an_etcd_outage_keeps_reads_and_heartbeats_and_refuses_writes(
    cluster: EtcdCluster, replicas: Replicas, outage_s: float
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        await ca.registry.Register(registration(9002, instance_id="e-2"))
        acknowledged = pb.Alias(name="before", selector="lang=zh")
        await ca.admin.PutAlias(pb.PutAliasRequest(alias=acknowledged))
        dying = await attached(ca, "e-2")
        async with beating(await attached(ca, "e-1")), beating(dying):
            await wait_for(lambda: _all(cb, READY, 2), 5, "engines never ready on B")
            cluster.stop()
            dying.break_stream()  # e-2 dies during the outage: A knows, etcd cannot be told
            await asyncio.sleep(outage_s)  # the outage, with e-1 beating to A all along
            assert await states(ca) == {"e-1": READY, "e-2": UNHEALTHY}
            assert await states(cb) == {"e-1": READY, "e-2": READY}  # as last heard
            alias = pb.Alias(name="zh", selector="lang=zh")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await cb.admin.PutAlias(pb.PutAliasRequest(alias=alias))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "etcd" in (refused.value.details() or "")
            for member in cluster.members:
                await asyncio.to_thread(cluster.restart, member)
            await wait_for(
                lambda: _put_alias(cb), 10, "writes through B never resume after etcd returns"
            )
            assert await wait_for(lambda: _aliases(ca, 2), 5, "B's alias never reaches A") == [
                "before",
                "zh",
            ]
            await wait_for(
                lambda: _is(cb, "e-2", UNHEALTHY), 5, "B never heard that e-2 died in the outage"
            )
            assert (await states(cb))["e-1"] == READY


async def _is(clients: object, instance_id: str, state: int) -> bool:
    return (await states(clients)).get(instance_id) == state  # type: ignore[arg-type]


async def _all(clients: object, state: int, count: int) -> bool:
    seen = await states(clients)  # type: ignore[arg-type]
    return len(seen) == count and all(s == state for s in seen.values())


async def _gone(clients: object, instance_id: str) -> bool:
    return instance_id not in await states(clients)  # type: ignore[arg-type]


async def _aliases(clients: object, count: int = 1) -> list[str]:
    """The alias names, once there are `count` of them (else an empty list)."""
    response = await clients.registry.ListAliases(pb.ListAliasesRequest())  # type: ignore[attr-defined]
    names = sorted(a.name for a in response.aliases)
    return names if len(names) >= count else []


async def _put_alias(clients: object) -> bool:
    try:
        alias = pb.Alias(name="zh", selector="lang=zh")
        await clients.admin.PutAlias(pb.PutAliasRequest(alias=alias))  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False
    return True


async def _has_key(cluster: EtcdCluster, name: str) -> bool:
    out = await asyncio.to_thread(cluster.etcdctl, "get", "--keys-only", f"{PREFIX}/{name}")
    return bool(out.strip())
