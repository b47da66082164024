"""A fleet larger than one message: the watch snapshot comes in chunks and listings in
pages, so a new router and `ctl instances` still see every instance."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from registry.watch import SNAPSHOT_CHUNK
from tests.support.registry_harness import clients, registration, running_registry
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(60)

FLEET = 2 * SNAPSHOT_CHUNK + 37
SETTINGS = {
    "heartbeat_interval_s": 5.0,
    "ttl_s": 30.0,
    "restart_grace_s": 30.0,
    "register_rate": 100000.0,
    "register_burst": 100000,
}


async def test_snapshot_chunks_and_list_pages_cover_every_instance(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        for index in range(FLEET):
            await c.registry.Register(registration(10000 + index, instance_id=f"e-{index:04d}"))
        call = c.registry.Watch(pb.WatchRequest(service="speech"))
        chunks = []
        while True:
            event = await asyncio.wait_for(call.read(), 10)
            chunks.append(event)
            if not event.snapshot_more:
                break
        call.cancel()
        assert len(chunks) == 3
        assert {e.kind for e in chunks} == {pb.WatchEvent.KIND_SNAPSHOT}
        assert len({e.revision for e in chunks}) == 1
        assert sum(len(e.instances) for e in chunks) == FLEET

        seen, token, pages = [], "", 0
        while True:
            page = await c.registry.ListInstances(
                pb.ListInstancesRequest(page_size=400, page_token=token)
            )
            seen.extend(i.id for i in page.instances)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert pages == 3
        assert seen == sorted(f"e-{i:04d}" for i in range(FLEET))


async def test_a_page_size_above_the_cap_is_refused(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.registry.ListInstances(pb.ListInstancesRequest(page_size=100000))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_size" in (refused.value.details() or "")
