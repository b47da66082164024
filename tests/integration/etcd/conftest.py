"""Registry replicas on real etcd members: start, talk to, and kill them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.store.etcd_client import EtcdClient, EtcdSettings, prefix_end
from tests.support.etcd_harness import EtcdCluster, etcd_cluster
from tests.support.processes import ProcessSet, RunningProcess, python_args
from tests.support.registry_harness import Clients, RawEngine
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.channel import open_channel

READY_LINE = "tidepool registry ready"
PREFIX = "/tidepool-test"
LEASE_TTL_S = 2
HANDOVER_GRACE_S = 3.0
LIVENESS = (
    "--heartbeat-interval-s", "0.1",
    "--ttl-s", "0.5",
    "--restart-grace-s", "2",
    "--handover-grace-s", str(HANDOVER_GRACE_S),
    "--etcd-lease-ttl-s", str(LEASE_TTL_S),
)  # fmt: skip


class Replicas(ProcessSet):
    """Registry processes of one test; their output pipes are closed with them."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[RunningProcess] = []

    def spawn(self, args: Sequence[str], **options: Any) -> RunningProcess:
        process = super().spawn(args, **options)
        self.started.append(process)
        return process

    def close(self) -> None:
        super().close()
        for process in self.started:
            for pipe in (process.popen.stdout, process.popen.stderr):
                if pipe is not None:
                    pipe.close()

    async def replica(self, endpoints: str, *extra: str) -> RunningProcess:
        """Start one registry replica on the etcd at `endpoints`."""
        args = python_args(
            "registry.server",
            "--listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0",
            "--store", "etcd",
            "--etcd-endpoints", endpoints,
            "--etcd-prefix", PREFIX,
            *LIVENESS,
            *extra,
        )  # fmt: skip
        return await asyncio.to_thread(self.start, args, READY_LINE, 30.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """One etcd member (test files that need a quorum to lose define their own)."""
    with etcd_cluster(tmp_path / "etcd", members=1) as running:
        yield running


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    started = Replicas()
    try:
        yield started
    finally:
        started.close()


@contextlib.asynccontextmanager
async def replica_clients(
    process: RunningProcess, secrets: dict[str, str] | None = None
) -> AsyncIterator[Clients]:
    """Clients of one replica; share `secrets` between replicas as one engine would."""
    channel = open_channel(process.grpc)
    try:
        yield Clients(channel, secrets=secrets if secrets is not None else {})
    finally:
        await channel.close()


async def states(clients: Clients) -> dict[str, int]:
    response = await clients.registry.ListInstances(pb.ListInstancesRequest())
    return {i.id: int(i.state) for i in response.instances}


async def etcd_revision(endpoints: str) -> int:
    """The cluster's current revision (one more for every etcd write anywhere)."""
    client = EtcdClient(EtcdSettings(tuple(endpoints.split(","))))
    try:
        root = (PREFIX + "/").encode()
        response = await client.range(root, prefix_end(root))
        return int(response.header.revision)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def beating(
    engine: RawEngine, interval_s: float = 0.1, **load: int
) -> AsyncIterator[RawEngine]:
    """Keep `engine` beating (as the SDK does, with `load`) while the block runs; a dead
    stream stops it."""

    async def beat_forever() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            while True:
                await engine.beat(**load)
                await asyncio.sleep(interval_s)  # the heartbeat interval

    task = asyncio.create_task(beat_forever())
    try:
        yield engine
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        engine.break_stream()


async def attached(clients: Clients, instance_id: str) -> RawEngine:
    engine = RawEngine(clients, instance_id)
    await engine.attach()
    return engine
