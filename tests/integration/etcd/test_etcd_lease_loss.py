"""A replica whose etcd lease is lost takes a new one and writes its attachments again;
the other replica keeps the engine ready through the gap (hand-over grace)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.integration.etcd.conftest import (
    PREFIX,
    Replicas,
    attached,
    beating,
    replica_clients,
    states,
)
from tests.support.etcd_harness import EtcdCluster
from tests.support.registry_harness import registration, wait_for
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

READY = pb.INSTANCE_STATE_READY


def _attachment_lease(cluster: EtcdCluster, instance_id: str) -> int | None:
    out = cluster.etcdctl("get", f"{PREFIX}/attached/{instance_id}", "-w", "json")
    kvs = json.loads(out).get("kvs") or []
    return int(kvs[0]["lease"]) if kvs else None


async def test_a_revoked_replica_lease_is_granted_again_and_the_engine_stays_ready(
    cluster: EtcdCluster, replicas: Replicas
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    secrets: dict[str, str] = {}
    async with replica_clients(a, secrets) as ca, replica_clients(b, secrets) as cb:
        await ca.registry.Register(registration(9001, instance_id="e-1"))
        async with beating(await attached(ca, "e-1")):
            lease = await wait_for(
                lambda: _attachment_lease(cluster, "e-1"), 5, "A never wrote e-1's attachment"
            )
            cluster.etcdctl("lease", "revoke", format(lease, "x"))
            views: list[int] = []
            new = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while new is None or new == lease:
                assert loop.time() < deadline, "A never wrote e-1's attachment again"
                views.append((await states(cb))["e-1"])
                new = _attachment_lease(cluster, "e-1")
                await asyncio.sleep(0.05)  # sampling B's view while A recovers
            assert set(views) == {READY}, views
            assert (await states(cb))["e-1"] == READY
    metrics = await asyncio.to_thread(_metrics, a.http)
    assert "tidepool_registry_etcd_lease_grants_total 2.0" in metrics
    assert 'tidepool_registry_etcd_attached_instances{owner="self"} 1.0' in metrics


def _metrics(address: str) -> str:
    return httpx.get(f"http://{address}/metrics", timeout=5).text
