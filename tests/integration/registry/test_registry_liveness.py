"""Registration, heartbeats, stream breaks, TTL lapses and stalls against a real registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.registry_harness import (
    FAST,
    RawEngine,
    clients,
    registration,
    running_registry,
    state_of,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

READY = pb.INSTANCE_STATE_READY
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY


async def test_registered_instance_is_listed_ready_with_its_labels(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        response = await c.registry.Register(registration(9001, instance_id="e-1"))
        assert response.instance.id == "e-1"
        assert response.heartbeat_interval.ToMilliseconds() == 100
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        (instance,) = listed.instances
        assert instance.state == READY
        assert instance.effective_weight == 100
        assert dict(instance.labels) == {"lang": "zh", "tier": "idc"}


async def test_broken_heartbeat_stream_marks_unhealthy_at_once(tmp_path: Path) -> None:
    # A long TTL proves the break, not the lapse, is what marks it unhealthy.
    settings = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        engine.break_stream()
        await wait_for(
            lambda: _is(c, "e-1", UNHEALTHY), 2.0, "a broken stream should mark it unhealthy"
        )


async def test_silent_instance_lapses_within_its_ttl(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        assert await state_of(c, "e-1") == READY
        # No more beats: the stream stays open but silent, as with a SIGSTOPped engine.
        await wait_for(lambda: _is(c, "e-1", UNHEALTHY), 2.0, "silent instance should lapse")
        engine.break_stream()


async def test_heartbeats_keep_an_instance_ready_past_its_ttl(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        for _ in range(15):  # 1.5 s of beats against a 0.5 s TTL
            await engine.beat()
            await _pause(0.1)
            assert await state_of(c, "e-1") == READY
        engine.break_stream()


async def test_unhealthy_instance_recovers_identity_and_labels(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-1", set={"pool": "zh-acme"}))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        engine.break_stream()
        await wait_for(lambda: _is(c, "e-1", UNHEALTHY), 2.0, "break should mark unhealthy")
        await c.registry.Register(registration(9001, instance_id="e-1"))
        again = RawEngine(c, "e-1")
        await again.attach()
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        (instance,) = listed.instances
        assert instance.state == READY
        assert instance.labels["pool"] == "zh-acme"
        again.break_stream()


async def test_instance_with_work_and_no_progress_is_stalled_then_recovers(tmp_path: Path) -> None:
    settings = {**FAST, "stall_after_s": 0.3}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach(in_flight=2, progress=5)

        async def beating_without_progress() -> bool:
            await engine.beat(in_flight=2, progress=5)
            return await state_of(c, "e-1") == pb.INSTANCE_STATE_STALLED

        await wait_for(beating_without_progress, 3.0, "no progress should mean stalled", 0.05)
        await engine.beat(in_flight=2, progress=6)
        await wait_for(lambda: _is(c, "e-1", READY), 2.0, "progress should clear the stall")
        engine.break_stream()


async def test_draining_status_zeroes_effective_weight(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        await engine.beat(status=pb.ENGINE_STATUS_DRAINING)
        await wait_for(
            lambda: _is(c, "e-1", pb.INSTANCE_STATE_DRAINING), 2.0, "drain status should show"
        )
        resolved = await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=50))
        assert resolved.effective_weight == 0
        engine.break_stream()


async def test_deregistered_instance_is_gone(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
        assert await state_of(c, "e-1") is None


async def test_silent_mass_lapse_engages_self_preservation(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **FAST) as server, clients(server) as c:
        engines = []
        for n in range(4):
            await c.registry.Register(registration(9001 + n, instance_id=f"e-{n}"))
            engine = RawEngine(c, f"e-{n}")
            await engine.attach()
            engines.append(engine)
        # All four fall silent together, as if the registry's own network dropped.
        # Past the 0.5 s TTL, short of the 1 s after which a silent stream is closed.
        await _pause(0.8)
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        assert {i.state for i in listed.instances} == {READY}
        assert server.core.leases.self_preservation
        # A broken stream is real evidence and is never held back.
        engines[0].break_stream()
        await wait_for(lambda: _is(c, "e-0", UNHEALTHY), 2.0, "break must not be held back")
        for engine in engines[1:]:
            engine.break_stream()


async def _is(c: object, instance_id: str, state: int) -> bool:
    return await state_of(c, instance_id) == state  # type: ignore[arg-type]


async def _pause(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


pytestmark = pytest.mark.timeout(30)
