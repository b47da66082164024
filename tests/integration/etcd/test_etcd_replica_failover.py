"""Three etcd members, two registry replicas, engines attached to replica A and a router
watching replica B, traffic through the router: kill -9 of A costs no client error, no
engine is ever unhealthy in B's view, and every engine re-attaches (to B) within 3 s."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.etcd.conftest import (
    LEASE_TTL_S,
    PREFIX,
    Replicas,
    replica_clients,
    states,
)
from tests.support.etcd_harness import EtcdCluster, etcd_cluster
from tests.support.fleet_harness import (
    ENGINE_READY,
    READ_TOKEN,
    ROUTER_READY,
    START_S,
    EngineSpec,
    RouterCaller,
    Traffic,
    tidepool_args,
)
from tests.support.processes import ProcessSet
from tests.support.registry_harness import wait_for
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]

READY = pb.INSTANCE_STATE_READY
ENGINES = ("zh-0", "zh-1", "zh-2")
REATTACH_LIMIT_S = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path / "etcd", members=3) as running:
        yield running


@pytest.fixture
def others() -> Iterator[ProcessSet]:
    with ProcessSet() as started:
        yield started


def _attachment_leases(cluster: EtcdCluster) -> dict[str, int]:
    out = cluster.etcdctl("get", "--prefix", f"{PREFIX}/attached/", "-w", "json")
    kvs = json.loads(out).get("kvs") or []
    return {_decode(kv["key"]).rsplit("/", 1)[1]: int(kv["lease"]) for kv in kvs}


def _decode(text: str) -> str:
    return base64.b64decode(text).decode()


async def test_killing_the_replica_engines_are_attached_to_costs_nothing(
    cluster: EtcdCluster, replicas: Replicas, others: ProcessSet, tmp_path: Path
) -> None:
    a = await replicas.replica(cluster.endpoints)
    b = await replicas.replica(cluster.endpoints)
    async with replica_clients(a) as ca, replica_clients(b) as cb:
        alias = pb.Alias(name="zh-public", selector="lang=zh", service="speech")
        await ca.admin.PutAlias(pb.PutAliasRequest(alias=alias))
        for engine in ENGINES:
            # Engines try A first; the router watches B.
            others.start(EngineSpec(engine).args(f"{a.grpc},{b.grpc}"), ENGINE_READY, START_S)
        router = others.start(
            tidepool_args(
                "router", "serve",
                *("--registry", f"{b.grpc},{a.grpc}", "--token", READ_TOKEN),
                *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
                *("--state-file", str(tmp_path / "router" / "view.json")),
            ),
            ROUTER_READY,
            START_S,
        )  # fmt: skip
        await wait_for(lambda: _all_ready(cb), 10, "engines never ready on B")
        before = await asyncio.to_thread(_attachment_leases, cluster)
        assert sorted(before) == list(ENGINES)
        async with (
            RouterCaller(router.grpc, alias="zh-public") as call,
            Traffic(call, concurrency=4, rate_per_s=100.0) as traffic,
        ):
            await traffic.wait_answers(50, since=time.monotonic())
            a.kill()
            killed_at = time.monotonic()
            views: list[dict[str, int]] = []
            moved_after = None
            # Past A's etcd lease TTL, so its keys' deletion is seen too.
            while time.monotonic() - killed_at < LEASE_TTL_S + 1.0:
                views.append(await states(cb))
                leases = await asyncio.to_thread(_attachment_leases, cluster)
                moved = sorted(leases) == list(ENGINES) and not (
                    set(leases.values()) & set(before.values())
                )
                if moved and moved_after is None:
                    moved_after = time.monotonic() - killed_at
                await asyncio.sleep(0.05)  # sampling B's view and the attachments
            await traffic.wait_answers(50, since=time.monotonic())
        traffic.assert_no_errors()
        assert all(v == dict.fromkeys(ENGINES, READY) for v in views), [
            v for v in views if v != dict.fromkeys(ENGINES, READY)
        ][:3]
        assert moved_after is not None, "the engines never re-attached to B"
        assert moved_after <= REATTACH_LIMIT_S, f"engines re-attached {moved_after:.2f}s after"
        print(f"engines attached to B {moved_after:.2f}s after A was killed")


async def _all_ready(clients: object) -> bool:
    seen = await states(clients)  # type: ignore[arg-type]
    return seen == dict.fromkeys(ENGINES, READY)
