"""What keeps one registry core serving 10,000 engines: pages that build only their own
views, beats that rewrite reports in place, a sweep that only compares deadlines between
housekeeping passes, byte-bounded chunks, fan-out timed after the write, heap freezing."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace

import pytest

from registry import heap
from registry.catalog import Catalog, EngineReport, EngineStatus, LoadFigures, State
from registry.convert import load_into
from registry.errors import NotFoundError
from registry.lease import LeaseConfig, LeaseTable
from registry.records import AliasRecord, InstanceRecord, TenantRecord, frozen_labels
from registry.selector import parse_selector
from registry.watch import WatchHub, WatchTarget, fit_pages
from tidepool.registry.v1 import registry_pb2 as pb

TTL = 3.0


def _catalog(**config: float) -> Catalog:
    return Catalog(LeaseTable(LeaseConfig(ttl_s=TTL, **config)))  # type: ignore[arg-type]


def _record(instance_id: str, lang: str = "zh", service: str = "speech") -> InstanceRecord:
    return InstanceRecord(
        id=instance_id,
        service=service,
        address="10.0.0.1:9000",
        weight=100,
        capacity=4,
        engine_labels=frozen_labels({"lang": lang, "tier": "idc"}),
        registered_at=0.0,
    )


def _fleet(count: int, **config: float) -> Catalog:
    catalog = _catalog(**config)
    for index in range(count):
        record = _record(f"e-{index:03d}", "zh" if index % 2 == 0 else "en")
        catalog.leases.grant(record.id, 0.0)
        catalog.put(record, 0.0, 0.0)
    return catalog


# --- pages ------------------------------------------------------------------------------


def test_pages_cover_every_instance_once_in_id_order() -> None:
    catalog = _fleet(25)
    seen: list[str] = []
    after = ""
    while True:
        page, more = catalog.page(after, 10)
        seen.extend(v.id for v in page)
        if not more:
            break
        after = page[-1].id
    assert seen == sorted(catalog.records)


def test_a_page_resumes_after_its_token_even_when_that_instance_is_gone() -> None:
    catalog = _fleet(6)
    first, _ = catalog.page("", 3)
    catalog.remove(first[-1].id, 1.0)
    rest, more = catalog.page(first[-1].id, 10)
    assert [v.id for v in rest] == ["e-003", "e-004", "e-005"]
    assert not more


def test_a_page_filters_by_service_selector_and_routability() -> None:
    catalog = _fleet(10)
    catalog.put(replace(catalog.get("e-002"), admin_drained=True), 0.0, 0.0)
    other = _record("x-000", service="other")
    catalog.leases.grant(other.id, 0.0)
    catalog.put(other, 0.0, 0.0)
    zh = parse_selector("lang=zh")
    page, more = catalog.page("", 100, service="speech", selector=zh, routable=True)
    assert [v.id for v in page] == ["e-000", "e-004", "e-006", "e-008"]
    assert not more


def test_resolve_pages_add_up_to_resolve_alias() -> None:
    catalog = _fleet(30)
    catalog.put_alias(AliasRecord("zh-pool", "lang=zh", "speech"), 0.0)
    paged: list[str] = []
    after = ""
    while True:
        page, more = catalog.resolve_page("zh-pool", after, 4)
        paged.extend(v.id for v in page)
        if not more:
            break
        after = page[-1].id
    assert paged == [v.id for v in catalog.resolve_alias("zh-pool")]


def test_tenant_alias_is_the_first_with_a_routable_instance() -> None:
    catalog = _fleet(4)
    catalog.put_alias(AliasRecord("fr-pool", "lang=fr", "speech"), 0.0)
    catalog.put_alias(AliasRecord("en-pool", "lang=en", "speech"), 0.0)
    catalog.put_tenant(TenantRecord("acme", "zh", ("fr-pool", "en-pool")), 0.0)
    assert catalog.tenant_alias("acme", "zh") == "en-pool"
    assert catalog.tenant_alias("acme", "zh") == catalog.resolve_tenant("acme", "zh")[0]


def test_state_counts_follow_what_was_published() -> None:
    catalog = _fleet(4)
    catalog.leases.detach("e-001", 1.0, broken=True)
    catalog.refresh(["e-001"], 1.0)
    catalog.remove("e-003", 1.0)
    assert catalog.state_counts() == {(State.READY, "idc"): 2, (State.UNHEALTHY, "idc"): 1}


# --- reports rewritten in place ---------------------------------------------------------


def test_a_beat_rewrites_the_instance_report_in_place() -> None:
    catalog = _fleet(1)
    live = catalog.live_report("e-000")
    load_into(live.load, pb.Load(in_flight=2, slots=4, progress=7))
    again = catalog.live_report("e-000")
    load_into(again.load, pb.Load(in_flight=1, slots=4, progress=9))
    assert again is live
    assert again.load is live.load
    assert catalog.view("e-000").report.load == LoadFigures(in_flight=1, slots=4, progress=9)


def test_a_view_keeps_the_load_it_was_built_with() -> None:
    catalog = _fleet(1)
    view = catalog.view("e-000")
    load_into(catalog.live_report("e-000").load, pb.Load(in_flight=3, slots=4))
    assert view.report.load.in_flight == 0
    assert catalog.last_report("e-000").load.in_flight == 3


def test_a_report_set_from_outside_is_copied_not_shared() -> None:
    catalog = _fleet(1)
    given = EngineReport(EngineStatus.DRAINING, LoadFigures(in_flight=1))
    catalog.report("e-000", given)
    catalog.live_report("e-000").load.in_flight = 5
    assert given.load.in_flight == 1


def test_the_live_report_of_an_unknown_instance_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        _catalog().live_report("nobody")


def test_record_labels_are_worked_out_once_and_read_only() -> None:
    record = replace(_record("e-1"), label_overrides={"pool": "zh-acme", "tier": None})
    assert record.labels == {"lang": "zh", "pool": "zh-acme"}
    assert record.labels is record.labels
    with pytest.raises(TypeError):
        record.labels["pool"] = "x"  # type: ignore[index]


# --- the sweep --------------------------------------------------------------------------


def test_a_sweep_without_housekeeping_still_expires_lapsed_leases() -> None:
    table = LeaseTable(LeaseConfig(ttl_s=TTL, self_preservation_min_instances=100))
    table.grant("e-1", 0.0)
    table.heartbeat("e-1", 0.0, in_flight=1, progress=1)
    result = table.sweep(TTL, housekeeping=False)
    assert result.changed == ("e-1",)
    assert not table.leases["e-1"].healthy


def test_stalls_wait_for_a_housekeeping_sweep() -> None:
    table = LeaseTable(LeaseConfig(ttl_s=100.0, stall_after_s=5.0))
    table.grant("e-1", 0.0)
    table.heartbeat("e-1", 0.0, in_flight=1, progress=1)
    assert table.sweep(6.0, housekeeping=False).changed == ()
    assert table.sweep(6.0).changed == ("e-1",)
    assert table.leases["e-1"].stalled


def test_housekeeping_runs_at_least_every_second_and_a_tenth_of_a_stall() -> None:
    assert LeaseConfig().housekeeping_interval_s == 1.0
    assert LeaseConfig(stall_after_s=2.0).housekeeping_interval_s == pytest.approx(0.2)
    assert LeaseConfig(flap_hold_s=1.0).housekeeping_interval_s == pytest.approx(0.1)


# --- chunks and fan-out -----------------------------------------------------------------


def _instance(index: int, label_bytes: int = 0) -> pb.Instance:
    return pb.Instance(id=f"e-{index:03d}", labels={"note": "x" * label_bytes})


def test_pages_are_bounded_by_count_and_by_bytes() -> None:
    small = [_instance(i) for i in range(10)]
    assert [len(p) for p in fit_pages(small, 4, 1 << 20)] == [4, 4, 2]
    large = [_instance(i, 1000) for i in range(10)]
    pages = fit_pages(large, 100, 3000)
    assert all(sum(i.ByteSize() for i in p) <= 3000 for p in pages)
    assert [i.id for p in pages for i in p] == [i.id for i in large]
    # One instance larger than the budget still goes, alone.
    assert [len(p) for p in fit_pages([_instance(0, 5000)], 100, 3000)] == [1]
    assert fit_pages([], 10, 100) == []


async def test_a_snapshot_of_large_instances_comes_in_more_chunks() -> None:
    catalog = _fleet(40)
    hub = WatchHub(catalog, max_chunk_bytes=1000)
    events = await hub.next_events(hub.subscribe(WatchTarget(service="speech")))
    assert len(events) > 1
    assert all(e.ByteSize() <= 1000 + 200 for e in events[1:])
    assert [e.snapshot_more for e in events] == [True] * (len(events) - 1) + [False]
    assert sum(len(e.instances) for e in events) == 40


async def test_fan_out_is_timed_when_the_events_are_written_not_when_built() -> None:
    catalog = _fleet(1)
    timed: list[float] = []
    hub = WatchHub(catalog, on_delivered=timed.append)
    watcher = hub.subscribe(WatchTarget(service="speech"))
    await hub.next_events(watcher)  # the snapshot
    hub.publish(catalog.put(replace(catalog.get("e-000"), weight=7), 0.0, 12.5))
    events = await asyncio.wait_for(hub.next_events(watcher), 1.0)
    assert len(events) == 1
    assert timed == []
    hub.written(watcher)
    assert timed == [12.5]
    hub.written(watcher)
    assert timed == [12.5], "a change is timed once"


# --- the heap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("streams", "frozen", "expected"),
    [
        (0, 0, False),
        (heap.REFREEZE_MIN_STREAMS - 1, 0, False),
        (heap.REFREEZE_MIN_STREAMS, 0, True),
        (10_500, 10_000, False),
        (11_000, 10_000, True),
        (9_000, 10_000, False),
    ],
)
def test_the_heap_is_frozen_again_only_after_marked_growth(
    streams: int, frozen: int, expected: bool
) -> None:
    assert heap.should_freeze(streams, frozen) is expected


def test_the_freeze_runner_freezes_once_per_growth() -> None:
    streams = [0]
    runner = heap.FreezeRunner(lambda: streams[0])
    try:
        assert not runner.check()
        streams[0] = 5_000
        assert runner.check()
        assert gc.get_freeze_count() > 0
        assert not runner.check()
        assert runner.frozen_streams == 5_000
        assert runner.freezes == 1
    finally:
        gc.unfreeze()


async def test_a_watcher_of_a_large_fleet_may_fall_behind_by_two_events_per_instance() -> None:
    catalog = _fleet(50)
    resyncs: list[None] = []
    hub = WatchHub(catalog, max_pending=4, on_resync=lambda: resyncs.append(None))
    watcher = hub.subscribe(WatchTarget(service="speech"))
    await hub.next_events(watcher)
    for weight in range(1, 101):  # 100 changes: twice the fleet, far past max_pending
        record = catalog.get(f"e-{weight % 50:03d}")
        hub.publish(catalog.put(replace(record, weight=weight), 0.0, 0.0))
    assert resyncs == []
    assert len(watcher.queue) == 100
    hub.publish(catalog.put(replace(catalog.get("e-000"), weight=7), 0.0, 0.0))
    assert resyncs == [None], "past two events per instance it resyncs"
