"""A replica's mirror that falls behind a compaction lists the prefix again and converges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from registry.config import RegistryConfig
from registry.records import AliasRecord
from registry.server import RegistryServer, build_server
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import EtcdClient, EtcdSettings
from tests.integration.etcd.conftest import PREFIX
from tests.support.etcd_harness import EtcdCluster
from tests.support.registry_harness import wait_for
from tidepool.etcd.v3 import rpc_pb2 as etcd
from tidepool.etcd.v3 import rpc_pb2_grpc as etcd_grpc

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]


@asynccontextmanager
async def _replica(cluster: EtcdCluster) -> AsyncIterator[RegistryServer]:
    config = RegistryConfig(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        store="etcd",
        etcd_endpoints=cluster.endpoints,
        etcd_prefix=PREFIX,
    )
    server = build_server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _compact(cluster: EtcdCluster) -> int:
    client = EtcdClient(EtcdSettings(tuple(cluster.endpoints.split(","))))
    try:
        revision = (await client.range(b"/")).header.revision
        stub = etcd_grpc.KVStub(client.channel())
        await stub.Compact(etcd.CompactionRequest(revision=revision, physical=True))
        return int(revision)
    finally:
        await client.close()


async def test_a_mirror_behind_a_compaction_relists_and_converges(cluster: EtcdCluster) -> None:
    async with _replica(cluster) as server:
        replica = server.replica
        assert replica is not None
        mirror_task = next(t for t in replica._tasks if t.get_name() == "etcd-mirror")
        mirror_task.cancel()
        await asyncio.gather(mirror_task, return_exceptions=True)
        behind = replica.mirror.revision
        other = EtcdStore(EtcdSettings(tuple(cluster.endpoints.split(","))), PREFIX)
        await other.put_alias(AliasRecord("zh", "lang=zh", "speech"))
        await other.put_alias(AliasRecord("en", "lang=en", "speech"))
        await other.delete_alias("en")
        await other.close()
        assert await _compact(cluster) > behind
        replica._tasks.add(asyncio.create_task(replica.mirror.run(), name="etcd-mirror"))
        await wait_for(
            lambda: list(server.core.catalog.aliases) == ["zh"],
            5,
            "the mirror never converged after the compaction",
        )
        assert replica.mirror.stats.relists == 1
