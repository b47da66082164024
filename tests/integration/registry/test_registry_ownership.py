"""An instance belongs to the process that registered it: the engine token alone cannot
take over, heartbeat for or deregister another engine's id while its lease is live."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from registry.server import RegistryServer
from tests.support.registry_harness import (
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
    state_of,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

READY = pb.INSTANCE_STATE_READY
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY
DENIED = grpc.StatusCode.PERMISSION_DENIED
# A long TTL: only a stream break (a dead owner) frees the id within a test.
SETTINGS = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}


async def _listed(c: Clients, instance_id: str) -> pb.Instance:
    response = await c.registry.ListInstances(pb.ListInstancesRequest())
    return next(i for i in response.instances if i.id == instance_id)


async def _owner(c: Clients) -> RawEngine:
    """e-1 registered at port 9001 and attached by its owner."""
    await c.registry.Register(registration(9001, instance_id="e-1"))
    owner = RawEngine(c, "e-1")
    await owner.attach()
    return owner


async def test_a_live_id_cannot_be_registered_again_without_its_secret(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.raw_registry.Register(registration(9002, instance_id="e-1", weight=1000))
        assert refused.value.code() == DENIED
        assert "secret" in (refused.value.details() or "")
        instance = await _listed(c, "e-1")
        assert (instance.address, instance.weight) == ("127.0.0.1:9001", 100)
        assert await state_of(c, "e-1") == READY
        owner.break_stream()


async def test_the_owner_re_registers_with_its_secret_and_keeps_it(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        secret = c.secrets["e-1"]
        again = registration(9001, instance_id="e-1", weight=200)
        again.secret = secret
        response = await c.raw_registry.Register(again)
        assert response.secret == secret
        assert (await _listed(c, "e-1")).weight == 200
        owner.break_stream()


async def test_a_heartbeat_stream_without_the_secret_is_refused_and_the_owner_keeps_beating(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        for presented in ("", "not-the-secret"):
            call = c.raw_registry.Heartbeat()
            await call.write(pb.HeartbeatRequest(instance_id="e-1", secret=presented))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(call.read(), 5)
            assert refused.value.code() == DENIED
        _still_attached(server, owner)
        await owner.beat()
        assert await state_of(c, "e-1") == READY
        owner.break_stream()


async def test_an_invalid_first_heartbeat_does_not_touch_the_owners_stream(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        call = c.raw_registry.Heartbeat()
        bad = pb.HeartbeatRequest(instance_id="e-1", secret=c.secrets["e-1"])
        bad.status = 99  # type: ignore[assignment]
        await call.write(bad)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(call.read(), 5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _still_attached(server, owner)
        assert await state_of(c, "e-1") == READY
        owner.break_stream()


async def test_deregister_needs_the_secret(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.raw_registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
        assert refused.value.code() == DENIED
        assert await state_of(c, "e-1") == READY
        await c.registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
        assert await state_of(c, "e-1") is None
        owner.break_stream()


async def test_once_the_owner_is_dead_a_restarted_engine_claims_the_id_afresh(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        old_secret = c.secrets["e-1"]
        owner.break_stream()  # as kill -9 would: the stream breaks, the lease is no longer live

        async def dead() -> bool:
            return await state_of(c, "e-1") == UNHEALTHY

        await wait_for(dead, 5.0, "a broken stream should mark e-1 unhealthy")
        response = await c.raw_registry.Register(registration(9003, instance_id="e-1"))
        assert response.secret
        assert response.secret != old_secret
        assert (await _listed(c, "e-1")).address == "127.0.0.1:9003"
        # The old secret no longer opens a stream for the id.
        call = c.raw_registry.Heartbeat()
        await call.write(pb.HeartbeatRequest(instance_id="e-1", secret=old_secret))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(call.read(), 5)
        assert refused.value.code() == DENIED


def _still_attached(server: RegistryServer, owner: RawEngine) -> None:
    attachment = server.core.attachments.get(owner.instance_id)
    assert attachment is not None, "the owner's stream was dropped"
    assert not attachment.superseded.is_set(), "a refused stream superseded the owner's"


async def test_a_dead_instance_may_be_deregistered_without_its_secret(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        owner.break_stream()

        async def dead() -> bool:
            return await state_of(c, "e-1") == UNHEALTHY

        await wait_for(dead, 5.0, "a broken stream should mark e-1 unhealthy")
        await c.raw_registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
        assert await state_of(c, "e-1") is None


async def test_a_stream_that_floods_heartbeats_is_held_to_its_budget(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        owner = await _owner(c)
        before = _dropped(server)
        sent = 2000
        for _ in range(sent):
            await owner.beat()
        await wait_for(
            lambda: _dropped(server) - before > sent / 2,
            10.0,
            "a flood of heartbeats on one stream was not held to its budget",
        )
        # The flooder's own lease is still fine: beats within the budget count.
        assert await state_of(c, "e-1") == READY
        owner.break_stream()


async def test_malformed_registrations_do_not_use_up_a_hosts_quota(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        for _ in range(100):  # far beyond the burst of 40
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await c.raw_registry.Register(registration(9001, instance_id="bad id!"))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await c.raw_registry.Register(registration(9001, instance_id="good"))


def _dropped(server: RegistryServer) -> float:
    registry = server.core.metrics.registry
    return registry.get_sample_value("tidepool_registry_heartbeats_dropped_total") or 0.0
