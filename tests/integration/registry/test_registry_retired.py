"""Admin and scheduler decisions on an id (drain, weight override, pool label) survive the
engine's graceful restart: kept after it deregisters, applied again when the id returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.registry_harness import (
    Clients,
    clients,
    registration,
    running_registry,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

SETTINGS = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}


async def _decide(c: Clients) -> None:
    """e-1 registers; an operator and the scheduler make decisions about it; it leaves."""
    await c.registry.Register(registration(9001, instance_id="e-1"))
    await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-1", set={"pool": "zh-acme"}))
    await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=250))
    await c.admin.Drain(pb.DrainRequest(instance_id="e-1"))
    await c.registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))


def _decisions(instance: pb.Instance) -> tuple[str, int, bool, bool]:
    return (
        instance.labels.get("pool", ""),
        instance.effective_weight,
        instance.admin_drained,
        instance.weight_overridden,
    )


async def test_decisions_come_back_when_the_same_id_registers_again(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        await _decide(c)
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        assert list(listed.instances) == []
        again = await c.raw_registry.Register(registration(9001, instance_id="e-1"))
        assert _decisions(again.instance) == ("zh-acme", 0, True, True)
        await c.admin.Restore(pb.RestoreRequest(instance_id="e-1"))
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        assert listed.instances[0].weight == 100  # as registered; the override stays on top


async def test_decisions_survive_a_registry_restart_between_leaving_and_returning(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        await _decide(c)
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        again = await c.raw_registry.Register(registration(9001, instance_id="e-1"))
        assert _decisions(again.instance) == ("zh-acme", 0, True, True)


async def test_decisions_are_forgotten_after_forget_after(tmp_path: Path) -> None:
    settings = {**SETTINGS, "forget_after_s": 0.5}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        await _decide(c)
        left_at = time.time()
        await wait_for(
            lambda: "e-1" not in server.core.retired,
            5.0,
            "the decisions on e-1 were kept past --forget-after",
        )
        assert time.time() - left_at >= 0.5
        again = await c.raw_registry.Register(registration(9001, instance_id="e-1"))
        assert _decisions(again.instance) == ("", 100, False, False)


async def test_an_id_nobody_decided_anything_about_leaves_no_trace(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **SETTINGS) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-2"))
        await c.registry.Deregister(pb.DeregisterRequest(instance_id="e-2"))
        assert server.core.retired == {}
