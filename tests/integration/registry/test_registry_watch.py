"""Watch streams against a real registry: snapshot, deltas, alias scope, fan-out, slow watchers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.server import RegistryServer
from tests.support.registry_harness import (
    RawEngine,
    clients,
    registration,
    running_registry,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import open_channel

pytestmark = pytest.mark.timeout(30)

# A long TTL: these tests are about change delivery, not lapses.
STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}
SNAPSHOT = pb.WatchEvent.KIND_SNAPSHOT
UPSERT = pb.WatchEvent.KIND_UPSERT
DELETE = pb.WatchEvent.KIND_DELETE
ROUTING = pb.WatchEvent.KIND_ROUTING
FANOUT_LIMIT_S = 0.100


async def _read(call: Any, timeout_s: float = 2.0) -> pb.WatchEvent:
    event = await asyncio.wait_for(call.read(), timeout_s)
    assert event is not grpc.aio.EOF, "the watch stream ended"
    return event  # type: ignore[no-any-return]


def _ids(event: pb.WatchEvent) -> list[str]:
    return [i.id for i in event.instances]


def _only(event: pb.WatchEvent, kind: int, instance_id: str) -> pb.Instance:
    assert event.kind == kind, f"expected {kind}, got {event}"
    (instance,) = event.instances
    assert instance.id == instance_id
    return instance


async def test_watch_starts_with_a_snapshot_of_instances_aliases_and_tenants(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.registry.Register(registration(9002, instance_id="e-2", labels={"lang": "en"}))
        await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="lang=zh")))
        await c.admin.PutTenant(
            pb.PutTenantRequest(route=pb.TenantRoute(tenant="acme", lang="zh", aliases=["zh"]))
        )
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        call = c.registry.Watch(pb.WatchRequest(service="speech"))
        snapshot = await _read(call)
        assert snapshot.kind == SNAPSHOT
        assert snapshot.revision == listed.revision
        assert _ids(snapshot) == ["e-1", "e-2"]
        assert list(snapshot.instances) == list(listed.instances)
        assert [(a.name, a.selector, a.service) for a in snapshot.aliases] == [
            ("zh", "lang=zh", "speech")
        ]
        assert [(t.tenant, t.lang, list(t.aliases)) for t in snapshot.tenants] == [
            ("acme", "zh", ["zh"])
        ]
        call.cancel()


async def test_every_instance_change_is_pushed_with_increasing_revisions(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        call = c.registry.Watch(pb.WatchRequest(service="speech"))
        snapshot = await _read(call)
        assert (snapshot.kind, list(snapshot.instances)) == (SNAPSHOT, [])
        events = []

        async def expect(kind: int) -> pb.Instance:
            event = await _read(call)
            events.append(event)
            return _only(event, kind, "e-1")

        await c.registry.Register(registration(9001, instance_id="e-1"))
        registered = await expect(UPSERT)
        assert registered.state == pb.INSTANCE_STATE_READY
        assert registered.HasField("last_heartbeat_at"), "registration counts as a heartbeat"

        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=40))
        assert (await expect(UPSERT)).effective_weight == 40

        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-1", set={"pool": "zh-acme"}))
        assert (await expect(UPSERT)).labels["pool"] == "zh-acme"

        await c.admin.Drain(pb.DrainRequest(instance_id="e-1"))
        drained = await expect(UPSERT)
        assert (drained.state, drained.admin_drained, drained.effective_weight) == (
            pb.INSTANCE_STATE_DRAINING,
            True,
            0,
        )

        await c.admin.Restore(pb.RestoreRequest(instance_id="e-1"))
        assert (await expect(UPSERT)).state == pb.INSTANCE_STATE_READY

        engine = RawEngine(c, "e-1")
        await engine.attach()
        await engine.beat(status=pb.ENGINE_STATUS_SWITCHING)
        assert (await expect(UPSERT)).state == pb.INSTANCE_STATE_SWITCHING
        await engine.beat(status=pb.ENGINE_STATUS_SERVING)
        assert (await expect(UPSERT)).state == pb.INSTANCE_STATE_READY

        engine.break_stream()
        assert (await expect(UPSERT)).state == pb.INSTANCE_STATE_UNHEALTHY

        await c.registry.Deregister(pb.DeregisterRequest(instance_id="e-1"))
        await expect(DELETE)

        revisions = [snapshot.revision, *(e.revision for e in events)]
        assert revisions == sorted(set(revisions)), f"revisions must increase: {revisions}"
        call.cancel()


async def test_heartbeats_that_change_nothing_push_nothing(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        call = c.registry.Watch(pb.WatchRequest(service="speech"))
        await _read(call)
        engine = RawEngine(c, "e-1")
        await engine.attach()
        # Load moves every beat; routing does not care. (Eight: within a stream's burst
        # budget, so the registry processes every one of them.)
        for progress in range(8):
            await engine.beat(in_flight=1, progress=progress)
        await wait_for(
            lambda: _heartbeats(server) == 9, 2.0, "the registry should receive all 9 beats"
        )
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=7))
        # The next event is the weight change: none of the beats got in ahead of it.
        assert _only(await _read(call), UPSERT, "e-1").effective_weight == 7
        engine.break_stream()
        call.cancel()


async def test_alias_and_tenant_changes_are_pushed_as_routing_events(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        call = c.registry.Watch(pb.WatchRequest(service="speech"))
        revision = (await _read(call)).revision

        async def expect_routing() -> pb.WatchEvent:
            nonlocal revision
            event = await _read(call)
            assert event.kind == ROUTING
            assert event.revision > revision
            revision = event.revision
            return event

        await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="lang=zh")))
        event = await expect_routing()
        assert [a.name for a in event.aliases] == ["zh"]
        assert list(event.tenants) == []

        route = pb.TenantRoute(tenant="acme", lang="zh", aliases=["zh"])
        await c.admin.PutTenant(pb.PutTenantRequest(route=route))
        event = await expect_routing()
        assert [a.name for a in event.aliases] == ["zh"]
        assert [(t.tenant, list(t.aliases)) for t in event.tenants] == [("acme", ["zh"])]

        await c.admin.DeleteTenant(pb.DeleteTenantRequest(tenant="acme", lang="zh"))
        assert list((await expect_routing()).tenants) == []

        await c.admin.DeleteAlias(pb.DeleteAliasRequest(name="zh"))
        assert list((await expect_routing()).aliases) == []
        call.cancel()


async def test_alias_watch_sees_only_selected_instances_and_follows_relabelling(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="zh-1", labels={"lang": "zh"}))
        await c.registry.Register(registration(9002, instance_id="en-1", labels={"lang": "en"}))
        await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="lang=zh")))
        call = c.registry.Watch(pb.WatchRequest(alias="zh"))
        snapshot = await _read(call)
        assert (snapshot.kind, _ids(snapshot)) == (SNAPSHOT, ["zh-1"])

        # Changes outside the alias are not pushed: the next event is about zh-1.
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="en-1", weight=5))
        await c.registry.Register(registration(9003, instance_id="en-2", labels={"lang": "en"}))
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="zh-1", weight=6))
        assert _only(await _read(call), UPSERT, "zh-1").effective_weight == 6

        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="zh-1", set={"lang": "en"}))
        left = _only(await _read(call), DELETE, "zh-1")
        assert left.labels["lang"] == "en"

        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="en-1", set={"lang": "zh"}))
        joined = _only(await _read(call), UPSERT, "en-1")
        assert (joined.labels["lang"], joined.effective_weight) == ("zh", 5)
        call.cancel()


async def test_alias_watch_is_resynced_when_its_selector_changes(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="zh-1", labels={"lang": "zh"}))
        await c.registry.Register(registration(9002, instance_id="en-1", labels={"lang": "en"}))
        await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="pool", selector="lang=zh")))
        call = c.registry.Watch(pb.WatchRequest(alias="pool"))
        assert _ids(await _read(call)) == ["zh-1"]
        await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="pool", selector="lang=en")))
        snapshot = await _read(call)
        assert (snapshot.kind, _ids(snapshot)) == (SNAPSHOT, ["en-1"])
        call.cancel()


async def test_watching_an_unknown_alias_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        call = c.registry.Watch(pb.WatchRequest(alias="no-such-pool"))
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await asyncio.wait_for(call.read(), 2)
        assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-pool" in (excinfo.value.details() or "")


@dataclass
class _Watcher:
    """A watch stream on its own connection, as one router would hold it."""

    channel: grpc.aio.Channel
    call: Any
    received: asyncio.Queue[tuple[float, pb.WatchEvent]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        while True:
            event = await self.call.read()
            if event is grpc.aio.EOF:
                return
            self.received.put_nowait((time.monotonic(), event))

    def start(self) -> None:
        self.task = asyncio.create_task(self._pump())

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self.task
        await self.channel.close()


@contextlib.asynccontextmanager
async def _watchers(server: RegistryServer, count: int) -> AsyncIterator[list[_Watcher]]:
    opened: list[_Watcher] = []
    try:
        for _ in range(count):
            channel = open_channel(server.grpc_address)
            call = pb_grpc.RegistryStub(channel).Watch(pb.WatchRequest(service="speech"))
            opened.append(_Watcher(channel, call))
        for watcher in opened:
            assert (await _read(watcher.call)).kind == SNAPSHOT
            watcher.start()
        yield opened
    finally:
        for watcher in opened:
            await watcher.close()


async def test_every_change_reaches_twenty_watchers_within_100_ms(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        e1, e2 = "e-1", "e-2"
        changes: list[tuple[str, str, int, Callable[[], Awaitable[object]]]] = [
            (
                "register",
                e2,
                UPSERT,
                lambda: c.registry.Register(registration(9002, instance_id=e2)),
            ),
            (
                "weight",
                e1,
                UPSERT,
                lambda: c.admin.SetWeight(pb.SetWeightRequest(instance_id=e1, weight=9)),
            ),
            (
                "labels",
                e1,
                UPSERT,
                lambda: c.admin.SetLabels(pb.SetLabelsRequest(instance_id=e1, set={"a": "b"})),
            ),
            ("drain", e1, UPSERT, lambda: c.admin.Drain(pb.DrainRequest(instance_id=e1))),
            ("restore", e1, UPSERT, lambda: c.admin.Restore(pb.RestoreRequest(instance_id=e1))),
            ("health", e1, UPSERT, _as_coroutine(engine.break_stream)),
            (
                "deregister",
                e2,
                DELETE,
                lambda: c.registry.Deregister(pb.DeregisterRequest(instance_id=e2)),
            ),
        ]
        latencies: dict[str, float] = {}
        async with _watchers(server, 20) as watchers:
            for name, instance_id, kind, change in changes:
                started = time.monotonic()
                await change()
                for watcher in watchers:
                    received_at, event = await asyncio.wait_for(watcher.received.get(), 2)
                    _only(event, kind, instance_id)
                    latencies[name] = max(latencies.get(name, 0.0), received_at - started)
        worst = max(latencies.values())
        shown = {name: f"{seconds * 1000:.1f} ms" for name, seconds in latencies.items()}
        assert worst < FANOUT_LIMIT_S, f"slowest delivery per change: {shown}"


def _as_coroutine(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        action()

    return run


def _heartbeats(server: RegistryServer) -> float:
    value = server.core.metrics.registry.get_sample_value("tidepool_registry_heartbeats_total")
    assert value is not None
    return value


def _resyncs(server: RegistryServer) -> float:
    value = server.core.metrics.registry.get_sample_value("tidepool_registry_watch_resyncs_total")
    assert value is not None
    return value


def _view_of(instance: pb.Instance) -> tuple[object, ...]:
    return (instance.effective_weight, instance.state, tuple(sorted(instance.labels.items())))


async def test_slow_watcher_gets_a_fresh_snapshot_and_converges(tmp_path: Path) -> None:
    settings = {**STEADY, "watch_max_pending": 8}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        for n in range(3):
            await c.registry.Register(registration(9001 + n, instance_id=f"e-{n}"))
        # A small, fixed receive window: once it is full the registry cannot hand this
        # watcher anything more, just as with a router that stopped reading.
        slow_channel = grpc.aio.insecure_channel(
            server.grpc_address,
            options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
        )
        slow = pb_grpc.RegistryStub(slow_channel).Watch(pb.WatchRequest(service="speech"))
        view = {i.id: _view_of(i) for i in (await _read(slow)).instances}
        assert _resyncs(server) == 0

        changes = 0
        while _resyncs(server) == 0:
            assert changes < 2000, "2000 unread changes and the slow watcher never resynced"
            await c.admin.SetWeight(
                pb.SetWeightRequest(instance_id=f"e-{changes % 3}", weight=1 + changes % 1000)
            )
            changes += 1
            pending = [len(w.queue) for w in server.core.hub.watchers]
            assert max(pending) <= 8, f"a watcher queue grew past its bound: {pending}"
        # Keep changing after the resync: the snapshot must catch these too.
        for n in range(30):
            await c.admin.SetWeight(pb.SetWeightRequest(instance_id=f"e-{n % 3}", weight=500 + n))
        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-0", set={"pool": "last"}))
        truth = {
            i.id: _view_of(i)
            for i in (await c.registry.ListInstances(pb.ListInstancesRequest())).instances
        }

        kinds: list[int] = []

        async def caught_up() -> bool:
            event = await _read(slow)
            kinds.append(event.kind)
            if event.kind == SNAPSHOT:
                view.clear()
            for instance in event.instances:
                if event.kind == DELETE:
                    view.pop(instance.id, None)
                else:
                    view[instance.id] = _view_of(instance)
            return view == truth

        await wait_for(caught_up, 10.0, "the slow watcher's view never matched the registry")
        assert SNAPSHOT in kinds, "the slow watcher should have been sent a fresh snapshot"
        assert _resyncs(server) >= 1
        slow.cancel()
        await slow_channel.close()
