"""WatchHub: snapshot first, then deltas; alias membership; overflow becomes a resync."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest

from registry.catalog import Catalog
from registry.errors import NotFoundError
from registry.lease import LeaseConfig, LeaseTable
from registry.records import AliasRecord, InstanceRecord, TenantRecord, frozen_labels
from registry.watch import Watcher, WatchHub, WatchTarget
from tidepool.registry.v1 import registry_pb2 as pb

SNAPSHOT = pb.WatchEvent.KIND_SNAPSHOT
UPSERT = pb.WatchEvent.KIND_UPSERT
DELETE = pb.WatchEvent.KIND_DELETE
ROUTING = pb.WatchEvent.KIND_ROUTING


@dataclass
class Fleet:
    """A catalog and hub driven the way the core drives them: change, then publish."""

    catalog: Catalog = field(default_factory=lambda: Catalog(LeaseTable(LeaseConfig(ttl_s=3.0))))
    resyncs: int = 0
    hub: WatchHub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = WatchHub(self.catalog, max_pending=4, on_resync=self._count_resync)

    def _count_resync(self) -> None:
        self.resyncs += 1

    def register(self, instance_id: str, service: str = "speech", **labels: str) -> None:
        record = InstanceRecord(
            id=instance_id,
            service=service,
            address="10.0.0.1:9000",
            weight=100,
            capacity=4,
            engine_labels=frozen_labels(labels or {"lang": "zh"}),
            registered_at=0.0,
        )
        self.catalog.leases.grant(instance_id, 0.0)
        self.hub.publish(self.catalog.put(record, 0.0, 0.0))

    def set_weight(self, instance_id: str, weight: int) -> None:
        record = replace(self.catalog.get(instance_id), weight_override=weight)
        self.hub.publish(self.catalog.put(record, 0.0, 0.0))

    def relabel(self, instance_id: str, **labels: str) -> None:
        record = replace(self.catalog.get(instance_id), label_overrides=labels)
        self.hub.publish(self.catalog.put(record, 0.0, 0.0))

    def deregister(self, instance_id: str) -> None:
        self.hub.publish(self.catalog.remove(instance_id, 0.0))

    def put_alias(self, name: str, selector: str) -> None:
        self.hub.publish(self.catalog.put_alias(AliasRecord(name, selector, "speech"), 0.0))

    def put_tenant(self, tenant: str, lang: str, *aliases: str) -> None:
        self.hub.publish(self.catalog.put_tenant(TenantRecord(tenant, lang, aliases), 0.0))


async def _next(fleet: Fleet, watcher: Watcher) -> list[pb.WatchEvent]:
    # Events are ready synchronously after a publish; the timeout only guards a bug.
    return await asyncio.wait_for(fleet.hub.next_events(watcher), 1.0)


def _ids(event: pb.WatchEvent) -> list[str]:
    return [i.id for i in event.instances]


async def test_first_events_are_a_snapshot_of_instances_aliases_and_tenants() -> None:
    fleet = Fleet()
    fleet.register("e-1")
    fleet.register("e-2", lang="en")
    fleet.put_alias("zh-public", "lang=zh")
    fleet.put_tenant("acme", "zh", "zh-public")
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    (snapshot,) = await _next(fleet, watcher)
    assert snapshot.kind == SNAPSHOT
    assert snapshot.revision == fleet.catalog.revision
    assert _ids(snapshot) == ["e-1", "e-2"]
    assert [a.name for a in snapshot.aliases] == ["zh-public"]
    assert [(t.tenant, t.lang, list(t.aliases)) for t in snapshot.tenants] == [
        ("acme", "zh", ["zh-public"])
    ]


async def test_changes_after_the_snapshot_arrive_as_deltas() -> None:
    fleet = Fleet()
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    (snapshot,) = await _next(fleet, watcher)
    assert list(snapshot.instances) == []
    fleet.register("e-1")
    (upsert,) = await _next(fleet, watcher)
    assert (upsert.kind, _ids(upsert)) == (UPSERT, ["e-1"])
    assert upsert.revision > snapshot.revision
    fleet.deregister("e-1")
    (delete,) = await _next(fleet, watcher)
    assert (delete.kind, _ids(delete)) == (DELETE, ["e-1"])
    assert delete.revision > upsert.revision
    fleet.put_alias("zh-public", "lang=zh")
    (routing,) = await _next(fleet, watcher)
    assert routing.kind == ROUTING
    assert [a.name for a in routing.aliases] == ["zh-public"]
    assert routing.revision > delete.revision


async def test_changes_made_before_the_first_read_are_folded_into_the_snapshot() -> None:
    fleet = Fleet()
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    fleet.register("e-1")
    fleet.set_weight("e-1", 7)
    (snapshot,) = await _next(fleet, watcher)
    assert snapshot.kind == SNAPSHOT
    assert [(i.id, i.effective_weight) for i in snapshot.instances] == [("e-1", 7)]
    assert not watcher.queue


async def test_a_run_of_upserts_is_coalesced_into_one_event_at_the_last_revision() -> None:
    fleet = Fleet()
    fleet.register("e-1")
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    await _next(fleet, watcher)
    fleet.set_weight("e-1", 10)
    fleet.set_weight("e-1", 20)
    (event,) = await _next(fleet, watcher)
    assert event.kind == UPSERT
    assert [i.effective_weight for i in event.instances] == [10, 20]
    assert event.revision == fleet.catalog.revision


async def test_service_watch_ignores_other_services() -> None:
    fleet = Fleet()
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    await _next(fleet, watcher)
    fleet.register("x-1", service="other")
    fleet.register("e-1")
    (event,) = await _next(fleet, watcher)
    assert _ids(event) == ["e-1"]


async def test_alias_watch_sees_only_selected_instances() -> None:
    fleet = Fleet()
    fleet.register("zh-1", lang="zh")
    fleet.register("en-1", lang="en")
    fleet.put_alias("zh-public", "lang=zh")
    watcher = fleet.hub.subscribe(WatchTarget(alias="zh-public"))
    (snapshot,) = await _next(fleet, watcher)
    assert _ids(snapshot) == ["zh-1"]
    fleet.set_weight("en-1", 5)
    fleet.register("en-2", lang="en")
    fleet.set_weight("zh-1", 6)
    (event,) = await _next(fleet, watcher)
    assert (event.kind, _ids(event)) == (UPSERT, ["zh-1"])


async def test_relabelling_out_of_an_alias_is_a_delete_and_back_in_an_upsert() -> None:
    fleet = Fleet()
    fleet.register("e-1", lang="zh")
    fleet.put_alias("zh-public", "lang=zh")
    watcher = fleet.hub.subscribe(WatchTarget(alias="zh-public"))
    await _next(fleet, watcher)
    fleet.relabel("e-1", lang="en")
    (out,) = await _next(fleet, watcher)
    assert (out.kind, _ids(out)) == (DELETE, ["e-1"])
    assert watcher.members == set()
    fleet.set_weight("e-1", 9)  # no longer a member: nothing to say
    fleet.relabel("e-1", lang="zh")
    (back,) = await _next(fleet, watcher)
    assert (back.kind, _ids(back)) == (UPSERT, ["e-1"])
    assert back.instances[0].effective_weight == 9
    assert watcher.members == {"e-1"}


async def test_deregistering_a_non_member_says_nothing_to_an_alias_watch() -> None:
    fleet = Fleet()
    fleet.register("zh-1", lang="zh")
    fleet.register("en-1", lang="en")
    fleet.put_alias("zh-public", "lang=zh")
    watcher = fleet.hub.subscribe(WatchTarget(alias="zh-public"))
    await _next(fleet, watcher)
    fleet.deregister("en-1")
    fleet.deregister("zh-1")
    (event,) = await _next(fleet, watcher)
    assert (event.kind, _ids(event)) == (DELETE, ["zh-1"])


async def test_routing_change_resyncs_an_alias_watch_with_the_new_selector() -> None:
    fleet = Fleet()
    fleet.register("zh-1", lang="zh")
    fleet.register("en-1", lang="en")
    fleet.put_alias("pool", "lang=zh")
    watcher = fleet.hub.subscribe(WatchTarget(alias="pool"))
    await _next(fleet, watcher)
    fleet.put_alias("pool", "lang=en")
    (snapshot,) = await _next(fleet, watcher)
    assert snapshot.kind == SNAPSHOT
    assert _ids(snapshot) == ["en-1"]
    assert [a.selector for a in snapshot.aliases] == ["lang=en"]


async def test_subscribing_to_an_unknown_alias_is_not_found() -> None:
    fleet = Fleet()
    with pytest.raises(NotFoundError):
        fleet.hub.subscribe(WatchTarget(alias="nope"))
    assert fleet.hub.watchers == set()


async def test_watcher_that_falls_behind_gets_a_fresh_snapshot_not_a_longer_queue() -> None:
    fleet = Fleet()
    fleet.register("e-1")
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    await _next(fleet, watcher)
    for weight in range(1, 5):  # exactly max_pending: still queued
        fleet.set_weight("e-1", weight)
    assert len(watcher.queue) == 4
    assert fleet.resyncs == 0
    for weight in range(5, 50):
        fleet.set_weight("e-1", weight)
        assert len(watcher.queue) <= 4
    assert fleet.resyncs == 1  # one resync, not one per dropped change
    fleet.register("e-2")
    (snapshot,) = await _next(fleet, watcher)
    assert snapshot.kind == SNAPSHOT
    assert snapshot.revision == fleet.catalog.revision
    assert [(i.id, i.effective_weight) for i in snapshot.instances] == [("e-1", 49), ("e-2", 100)]
    fleet.set_weight("e-2", 3)
    (event,) = await _next(fleet, watcher)
    assert (event.kind, event.instances[0].effective_weight) == (UPSERT, 3)


async def test_one_slow_watcher_does_not_resync_the_others() -> None:
    fleet = Fleet()
    fleet.register("e-1")
    slow = fleet.hub.subscribe(WatchTarget(service="speech"))
    fast = fleet.hub.subscribe(WatchTarget(service="speech"))
    await _next(fleet, slow)
    await _next(fleet, fast)
    for weight in range(1, 10):
        fleet.set_weight("e-1", weight)
        (event,) = await _next(fleet, fast)
        assert event.kind == UPSERT
    assert slow.resync
    assert not fast.resync


async def test_unsubscribed_watcher_gets_no_more_events() -> None:
    fleet = Fleet()
    watcher = fleet.hub.subscribe(WatchTarget(service="speech"))
    await _next(fleet, watcher)
    fleet.hub.unsubscribe(watcher)
    fleet.register("e-1")
    assert await _next(fleet, watcher) == []
    assert watcher not in fleet.hub.watchers
