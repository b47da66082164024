"""A real registry process restarted (SIGTERM and kill -9): durable state and re-attach grace."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ProcessSet, RunningProcess, python_args
from tests.support.registry_harness import Clients, RawEngine, registration, state_of, wait_for
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.channel import open_channel

pytestmark = pytest.mark.timeout(45)

READY_LINE = "tidepool registry ready"
READY = pb.INSTANCE_STATE_READY
UNKNOWN = pb.INSTANCE_STATE_UNKNOWN
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY
GRACE_S = 2.0
LIVENESS = (
    "--heartbeat-interval-s", "0.1",
    "--ttl-s", "0.5",
    "--restart-grace-s", str(GRACE_S),
    # Two instances: below this, one lapsing alone is never mistaken for a partition.
    "--self-preservation-min-instances", "3",
)  # fmt: skip


class _Registries(ProcessSet):
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
        # RunningProcess leaves its pipes to the garbage collector, and an unclosed
        # file is a ResourceWarning, which this suite treats as an error.
        for process in self.started:
            for pipe in (process.popen.stdout, process.popen.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def processes() -> Iterator[_Registries]:
    started = _Registries()
    try:
        yield started
    finally:
        started.close()


async def _start(processes: _Registries, data_dir: Path) -> RunningProcess:
    args = python_args(
        "registry.server",
        "--listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0",
        "--data-dir", str(data_dir),
        *LIVENESS,
    )  # fmt: skip
    return await asyncio.to_thread(processes.start, args, READY_LINE, 30.0)


async def _stop(process: RunningProcess, how: signal.Signals) -> None:
    if how is signal.SIGKILL:
        await asyncio.to_thread(process.kill)
        assert process.returncode == -signal.SIGKILL
    else:
        process.terminate()
        code = await asyncio.to_thread(process.wait, 10.0)
        assert code == 0, process.describe("graceful stop should exit 0")


@contextlib.asynccontextmanager
async def _clients(
    process: RunningProcess, secrets: dict[str, str] | None = None
) -> AsyncIterator[Clients]:
    """Clients of one registry process; pass the same `secrets` to a restarted one, as an
    engine keeps its secret across a registry restart."""
    channel = open_channel(process.grpc)
    try:
        yield Clients(channel, secrets=secrets if secrets is not None else {})
    finally:
        await channel.close()


async def _durable_view(c: Clients) -> tuple[list[tuple[object, ...]], ...]:
    instances = await c.registry.ListInstances(pb.ListInstancesRequest())
    aliases = await c.registry.ListAliases(pb.ListAliasesRequest())
    tenants = await c.registry.ListTenants(pb.ListTenantsRequest())
    return (
        [
            (
                i.id,
                i.address,
                i.weight,
                i.capacity,
                dict(i.labels),
                i.weight_overridden,
                i.admin_drained,
                i.registered_at.ToNanoseconds(),
            )
            for i in instances.instances
        ],
        [(a.name, a.selector, a.service) for a in aliases.aliases],
        [(t.tenant, t.lang, list(t.aliases)) for t in tenants.tenants],
    )


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_aliases_routes_and_overrides_survive_a_restart(
    tmp_path: Path, processes: _Registries, how: signal.Signals
) -> None:
    first = await _start(processes, tmp_path)
    secrets: dict[str, str] = {}
    async with _clients(first, secrets) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.registry.Register(registration(9002, instance_id="e-2"))
        await c.admin.SetLabels(
            pb.SetLabelsRequest(instance_id="e-1", set={"pool": "zh-acme"}, remove=["tier"])
        )
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=250))
        await c.admin.Drain(pb.DrainRequest(instance_id="e-2"))
        for name, selector in (("zh-acme", "pool=zh-acme"), ("zh-public", "lang=zh|en")):
            request = pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector))
            await c.admin.PutAlias(request)
        route = pb.TenantRoute(tenant="acme", lang="zh", aliases=["zh-acme", "zh-public"])
        await c.admin.PutTenant(pb.PutTenantRequest(route=route))
        before = await _durable_view(c)
    await _stop(first, how)

    second = await _start(processes, tmp_path)
    async with _clients(second, secrets) as c:
        after = await _durable_view(c)
        assert after == before
        instances = after[0]
        assert instances[0][4] == {"lang": "zh", "pool": "zh-acme"}  # the override, not "tier"
        # Restored but not heard from: nothing is resolved until an engine re-attaches.
        resolved = await c.registry.Resolve(pb.ResolveRequest(tenant="acme", lang="zh"))
        assert list(resolved.instances) == []
        # Re-attached, the overrides apply as before the restart.
        engine = RawEngine(c, "e-1")
        await engine.attach()
        try:
            resolved = await c.registry.Resolve(pb.ResolveRequest(tenant="acme", lang="zh"))
            assert resolved.alias == "zh-acme"
            assert [(i.id, i.effective_weight) for i in resolved.instances] == [("e-1", 250)]
        finally:
            engine.break_stream()


async def _beat_forever(engine: RawEngine) -> None:
    while True:
        await engine.beat()
        await asyncio.sleep(0.1)  # the heartbeat interval the registry asked for


async def test_known_instances_get_a_grace_period_to_reattach_after_a_crash(
    tmp_path: Path, processes: _Registries
) -> None:
    first = await _start(processes, tmp_path)
    secrets: dict[str, str] = {}
    async with _clients(first, secrets) as c:
        await c.registry.Register(registration(9001, instance_id="back"))
        await c.registry.Register(registration(9002, instance_id="gone"))
    await _stop(first, signal.SIGKILL)

    second = await _start(processes, tmp_path)
    restarted_at = time.monotonic()
    async with _clients(second, secrets) as c:
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        # Restored from the store, neither heard from yet: "unknown", not "ready".
        assert {i.id: i.state for i in listed.instances} == {"back": UNKNOWN, "gone": UNKNOWN}

        # "back" re-attaches as a restarted engine agent would: same id, then heartbeats.
        await c.registry.Register(registration(9001, instance_id="back"))
        engine = RawEngine(c, "back")
        await engine.attach()
        beating = asyncio.create_task(_beat_forever(engine))
        try:
            # Twice the TTL has passed without a word from "gone": only the grace holds it.
            await asyncio.sleep(max(0.0, restarted_at + 1.0 - time.monotonic()))
            assert await state_of(c, "gone") == UNKNOWN

            async def gone_lapsed() -> bool:
                return await state_of(c, "gone") == UNHEALTHY

            await wait_for(gone_lapsed, GRACE_S + 3.0, "an instance that never re-attached")
            lapsed_after = time.monotonic() - restarted_at
            assert lapsed_after >= GRACE_S - 0.5, f"lapsed {lapsed_after:.2f}s after restart"
            assert await state_of(c, "back") == READY
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            engine.break_stream()
