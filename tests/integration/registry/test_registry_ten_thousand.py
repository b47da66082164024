"""10,000 instances in a real registry process: nothing that lists them is limited by the
size of one message.

A new watcher gets the whole snapshot in chunks of one revision, `ListInstances`
and `Resolve` (by alias and by tenant) page through every instance, and
`tidepool ctl instances` lists them all. The instances are registered over real
gRPC, many calls in flight at once, with the store on tmpfs where there is one
(each registration is an fsync'd write, and the disk is not what this tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.fleet_harness import (
    ADMIN_TOKEN,
    ENGINE_TOKEN,
    READ_TOKEN,
    REGISTRY_READY,
    START_S,
    tidepool_args,
)
from tests.support.processes import REPO_ROOT, ProcessSet, RunningProcess, child_env
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

FLEET = 10_000
IN_FLIGHT = 64
CALL_S = 30.0
LANGS = ("zh", "en")


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _instance_id(index: int) -> str:
    return f"e-{index:05d}"


@pytest.fixture
def store_dir() -> Iterator[Path]:
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="tidepool-10k-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def registry(store_dir: Path) -> Iterator[RunningProcess]:
    """A registry process whose leases outlast the test (nothing here heartbeats) and
    whose per-address registration limit does not throttle one host registering all."""
    with ProcessSet() as processes:
        yield processes.start(
            tidepool_args(
                "registry", "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                "--data-dir", str(store_dir),
                "--engine-token", ENGINE_TOKEN, "--read-token", READ_TOKEN,
                "--admin-token", ADMIN_TOKEN,
                "--heartbeat-interval", "60", "--ttl", "600", "--restart-grace", "600",
                "--register-rate", "1000000", "--register-burst", "1000000",
            ),
            REGISTRY_READY,
            START_S,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def _channel(address: str) -> AsyncIterator[grpc.aio.Channel]:
    # The client takes messages up to the registry's own default limit (1 MiB), no more:
    # every answer must fit it however large the fleet.
    options = [("grpc.max_receive_message_length", 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        yield channel


async def _register_fleet(registry: pb_grpc.RegistryStub) -> None:
    """Register FLEET instances, IN_FLIGHT calls at a time (half zh, half en)."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int) -> None:
        request = pb.RegisterRequest(
            service="speech",
            instance_id=_instance_id(index),
            address=f"127.0.0.1:{10000 + index}",
            weight=100,
            capacity=4,
            labels={"lang": LANGS[index % 2], "tier": "idc", "region": "sh", "gpu": "a10"},
        )
        async with slots:
            await registry.Register(request, metadata=_md(ENGINE_TOKEN), timeout=CALL_S)

    await asyncio.gather(*(one(i) for i in range(FLEET)))


async def _snapshot(registry: pb_grpc.RegistryStub) -> list[pb.WatchEvent]:
    call = registry.Watch(pb.WatchRequest(service="speech"), metadata=_md(READ_TOKEN))
    chunks: list[pb.WatchEvent] = []
    try:
        while True:
            event = await asyncio.wait_for(call.read(), CALL_S)
            assert event is not grpc.aio.EOF, "the watch ended inside its snapshot"
            chunks.append(event)
            if not event.snapshot_more:
                return chunks
    finally:
        call.cancel()


async def _list_all(registry: pb_grpc.RegistryStub) -> tuple[list[str], int]:
    ids: list[str] = []
    token, pages = "", 0
    while True:
        page = await registry.ListInstances(
            pb.ListInstancesRequest(page_token=token), metadata=_md(READ_TOKEN), timeout=CALL_S
        )
        ids.extend(i.id for i in page.instances)
        pages += 1
        token = page.next_page_token
        if not token:
            return ids, pages


async def _resolve_all(registry: pb_grpc.RegistryStub, **target: str) -> tuple[set[str], int]:
    """Every page of one Resolve: (ids, pages); each page names the same alias."""
    ids: list[str] = []
    token, pages, aliases = "", 0, set()
    while True:
        page = await registry.Resolve(
            pb.ResolveRequest(page_token=token, **target), metadata=_md(READ_TOKEN), timeout=CALL_S
        )
        ids.extend(i.id for i in page.instances)
        assert all(i.state == pb.INSTANCE_STATE_READY for i in page.instances)
        aliases.add(page.alias)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert len(aliases) == 1, f"one Resolve's pages named several aliases: {aliases}"
    assert len(ids) == len(set(ids)), "a page repeated an instance"
    return set(ids), pages


def _ctl_instances(address: str) -> list[dict[str, object]]:
    done = subprocess.run(
        tidepool_args("ctl", "--registry", address, "--token", READ_TOKEN, "instances", "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, f"ctl instances exited {done.returncode}: {done.stderr[-2000:]}"
    listed = json.loads(done.stdout)
    assert isinstance(listed, list)
    return listed


async def _routing(admin: pb_grpc.AdminStub) -> None:
    aliases = (("every", "lang=zh|en"), ("zh-pool", "lang=zh"), ("empty", "lang=fr"))
    for name, selector in aliases:
        await admin.PutAlias(
            pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector, service="speech")),
            metadata=_md(ADMIN_TOKEN),
            timeout=CALL_S,
        )
    route = pb.TenantRoute(tenant="acme", lang="zh", aliases=["empty", "zh-pool"])
    await admin.PutTenant(pb.PutTenantRequest(route=route), metadata=_md(ADMIN_TOKEN))


async def test_ten_thousand_instances_are_seen_whole_by_watch_list_resolve_and_ctl(
    registry: RunningProcess,
) -> None:
    everyone = {_instance_id(i) for i in range(FLEET)}
    async with _channel(registry.grpc) as channel:
        stub = pb_grpc.RegistryStub(channel)
        await _register_fleet(stub)
        await _routing(pb_grpc.AdminStub(channel))

        chunks = await _snapshot(stub)
        assert len(chunks) >= FLEET // 500, "the snapshot did not come in chunks"
        assert {e.kind for e in chunks} == {pb.WatchEvent.KIND_SNAPSHOT}
        assert len({e.revision for e in chunks}) == 1, "chunks of different revisions"
        assert {a.name for a in chunks[0].aliases} == {"every", "zh-pool", "empty"}
        watched = [i.id for e in chunks for i in e.instances]
        assert len(watched) == FLEET
        assert set(watched) == everyone

        listed, pages = await _list_all(stub)
        assert pages >= FLEET // 1000
        assert listed == sorted(everyone), "ListInstances skipped or repeated instances"

        resolved, pages = await _resolve_all(stub, alias="every")
        assert pages >= FLEET // 1000
        assert resolved == everyone
        zh = {_instance_id(i) for i in range(0, FLEET, 2)}
        assert await _resolve_all(stub, tenant="acme", lang="zh") == (zh, len(zh) // 1000)

    by_ctl = await asyncio.to_thread(_ctl_instances, registry.grpc)
    assert {str(i["id"]) for i in by_ctl} == everyone


async def test_a_resolve_page_token_of_another_alias_is_refused(registry: RunningProcess) -> None:
    async with _channel(registry.grpc) as channel:
        await _routing(pb_grpc.AdminStub(channel))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.RegistryStub(channel).Resolve(
                pb.ResolveRequest(alias="every", page_token="zh-pool/e-00001"),
                metadata=_md(READ_TOKEN),
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (refused.value.details() or "")
