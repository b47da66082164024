"""Catalog: derived state and weight, change publication, revisions and resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest

from registry.catalog import Catalog, EngineReport, EngineStatus, LoadFigures, State
from registry.errors import NotFoundError
from registry.lease import LeaseConfig, LeaseTable
from registry.records import (
    AliasRecord,
    InstanceRecord,
    StoreSnapshot,
    TenantRecord,
    frozen_labels,
)

TTL = 3.0


def _catalog() -> Catalog:
    return Catalog(LeaseTable(LeaseConfig(ttl_s=TTL, stall_after_s=5.0)))


def _record(instance_id: str, weight: int = 100, **labels: str) -> InstanceRecord:
    return InstanceRecord(
        id=instance_id,
        service="speech",
        address=f"10.0.0.{len(instance_id)}:9000",
        weight=weight,
        capacity=4,
        engine_labels=frozen_labels(labels or {"lang": "zh"}),
        registered_at=0.0,
    )


def _add(catalog: Catalog, record: InstanceRecord, now: float = 0.0) -> None:
    """Register the way the core does: lease first, then the record."""
    catalog.leases.grant(record.id, now)
    catalog.put(record, now, now)


@pytest.mark.parametrize(
    ("unhealthy", "stalled", "status", "drained", "weight", "expected"),
    [
        (True, True, EngineStatus.SWITCHING, True, 0, State.UNHEALTHY),
        (True, False, EngineStatus.SERVING, False, 100, State.UNHEALTHY),
        (False, True, EngineStatus.SWITCHING, True, 0, State.STALLED),
        (False, True, EngineStatus.SERVING, False, 100, State.STALLED),
        (False, False, EngineStatus.SWITCHING, True, 0, State.SWITCHING),
        (False, False, EngineStatus.SERVING, True, 100, State.DRAINING),
        (False, False, EngineStatus.DRAINING, False, 100, State.DRAINING),
        (False, False, EngineStatus.SERVING, False, 0, State.DRAINING),
        (False, False, EngineStatus.SERVING, False, 100, State.READY),
    ],
)
def test_state_precedence_is_unhealthy_stalled_switching_draining_ready(
    unhealthy: bool,
    stalled: bool,
    status: EngineStatus,
    drained: bool,
    weight: int,
    expected: State,
) -> None:
    catalog = _catalog()
    _add(catalog, replace(_record("e-1", weight=weight), admin_drained=drained))
    catalog.report("e-1", EngineReport(status=status))
    lease = catalog.leases.leases["e-1"]
    lease.stalled = stalled
    if unhealthy:
        catalog.leases.detach("e-1", 1.0, broken=True)
    view = catalog.view("e-1")
    assert view.state is expected
    assert view.routable is (expected is State.READY)


@pytest.mark.parametrize(
    "make_not_ready",
    [
        lambda c: c.leases.detach("e-1", 1.0, broken=True),
        lambda c: setattr(c.leases.leases["e-1"], "stalled", True),
        lambda c: c.report("e-1", EngineReport(status=EngineStatus.SWITCHING)),
        lambda c: c.report("e-1", EngineReport(status=EngineStatus.DRAINING)),
        lambda c: c.put(replace(c.get("e-1"), admin_drained=True), 1.0, 1.0),
    ],
    ids=["unhealthy", "stalled", "switching", "engine-draining", "admin-drained"],
)
def test_effective_weight_is_zero_unless_ready(make_not_ready: object) -> None:
    catalog = _catalog()
    _add(catalog, replace(_record("e-1", weight=100), weight_override=70))
    assert catalog.view("e-1").effective_weight == 70
    make_not_ready(catalog)  # type: ignore[operator]
    assert catalog.view("e-1").effective_weight == 0


def test_weight_override_replaces_the_registered_weight_and_zero_drains() -> None:
    catalog = _catalog()
    _add(catalog, _record("e-1", weight=100))
    catalog.put(replace(catalog.get("e-1"), weight_override=250), 1.0, 1.0)
    assert catalog.view("e-1").effective_weight == 250
    assert catalog.view("e-1").record.weight == 100
    catalog.put(replace(catalog.get("e-1"), weight_override=0), 2.0, 2.0)
    assert catalog.view("e-1").state is State.DRAINING
    assert catalog.view("e-1").effective_weight == 0


def test_label_overrides_replace_and_remove_engine_labels() -> None:
    catalog = _catalog()
    _add(catalog, _record("e-1", lang="zh", tier="idc"))
    record = replace(catalog.get("e-1"), label_overrides={"pool": "zh-acme", "tier": None})
    catalog.put(record, 1.0, 1.0)
    assert dict(catalog.view("e-1").labels) == {"lang": "zh", "pool": "zh-acme"}


def test_put_publishes_an_upsert_and_an_unchanged_refresh_publishes_nothing() -> None:
    catalog = _catalog()
    catalog.leases.grant("e-1", 0.0)
    (change,) = catalog.put(_record("e-1"), 0.0, 0.0)
    assert change.kind == "upsert"
    assert change.view is not None
    assert change.view.id == "e-1"
    assert catalog.refresh(["e-1"], 0.5) == []
    assert catalog.put(_record("e-1"), 0.6, 0.6) == []  # the same record again


def test_load_alone_is_not_a_change_but_a_status_change_is() -> None:
    catalog = _catalog()
    _add(catalog, _record("e-1"))
    catalog.report("e-1", EngineReport(load=LoadFigures(in_flight=3, progress=9)))
    assert catalog.refresh(["e-1"], 1.0) == []
    catalog.report("e-1", EngineReport(status=EngineStatus.DRAINING))
    (change,) = catalog.refresh(["e-1"], 1.1)
    assert change.view is not None
    assert change.view.state is State.DRAINING


def test_health_change_is_published_once() -> None:
    catalog = _catalog()
    _add(catalog, _record("e-1"))
    catalog.leases.detach("e-1", 1.0, broken=True)
    (change,) = catalog.refresh(["e-1"], 1.0)
    assert change.view is not None
    assert change.view.state is State.UNHEALTHY
    assert catalog.refresh(["e-1"], 1.1) == []


def test_refresh_skips_unknown_instances() -> None:
    assert _catalog().refresh(["nobody"], 0.0) == []


def test_every_change_gets_a_higher_revision() -> None:
    catalog = _catalog()
    catalog.leases.grant("e-1", 0.0)
    changes = [
        *catalog.put(_record("e-1"), 0.0, 0.0),
        *catalog.put(replace(_record("e-1"), weight_override=5), 0.0, 0.0),
        *catalog.put_alias(AliasRecord("zh-public", "lang=zh", "speech"), 0.0),
        *catalog.put_tenant(TenantRecord("acme", "zh", ("zh-public",)), 0.0),
        *catalog.delete_tenant("acme", "zh", 0.0),
        *catalog.delete_alias("zh-public", 0.0),
        *catalog.remove("e-1", 0.0),
    ]
    kinds = [c.kind for c in changes]
    assert kinds == ["upsert", "upsert", "routing", "routing", "routing", "routing", "delete"]
    revisions = [c.revision for c in changes]
    assert revisions == sorted(set(revisions))
    assert catalog.revision == revisions[-1]


def test_remove_publishes_a_delete_and_forgets_everything() -> None:
    catalog = _catalog()
    _add(catalog, _record("e-1"))
    (change,) = catalog.remove("e-1", 1.0)
    assert change.kind == "delete"
    assert change.view is not None
    assert change.view.id == "e-1"
    assert "e-1" not in catalog.records
    assert "e-1" not in catalog.leases.leases
    assert catalog.remove("e-1", 1.0) == []
    with pytest.raises(NotFoundError):
        catalog.view("e-1")


def test_report_given_before_the_first_put_is_kept() -> None:
    # The core stamps the registration time as a heartbeat before it stores the record.
    catalog = _catalog()
    catalog.leases.grant("e-1", 0.0)
    catalog.report("e-1", EngineReport(heartbeat_wall=1234.5))
    catalog.put(_record("e-1"), 0.0, 0.0)
    assert catalog.view("e-1").report.heartbeat_wall == 1234.5


def test_alias_members_and_resolution_follow_the_selector() -> None:
    catalog = _catalog()
    _add(catalog, _record("zh-1", lang="zh", tier="idc"))
    _add(catalog, _record("zh-2", lang="zh", tier="cvm"))
    _add(catalog, _record("zh-3", lang="zh", tier="serverless"))
    _add(catalog, _record("en-1", lang="en", tier="idc"))
    catalog.put_alias(AliasRecord("zh-cheap", "lang=zh,tier=idc|cvm", "speech"), 0.0)
    catalog.put(replace(catalog.get("zh-2"), admin_drained=True), 0.0, 0.0)
    assert [v.id for v in catalog.alias_members("zh-cheap")] == ["zh-1", "zh-2"]
    assert [v.id for v in catalog.resolve_alias("zh-cheap")] == ["zh-1"]


def test_alias_selects_only_its_own_service() -> None:
    catalog = _catalog()
    _add(catalog, _record("zh-1"))
    _add(catalog, replace(_record("zh-9"), service="other"))
    catalog.put_alias(AliasRecord("zh-public", "lang=zh", "speech"), 0.0)
    assert [v.id for v in catalog.resolve_alias("zh-public")] == ["zh-1"]


def test_unknown_alias_is_not_found() -> None:
    catalog = _catalog()
    with pytest.raises(NotFoundError):
        catalog.resolve_alias("nope")
    with pytest.raises(NotFoundError):
        catalog.selector("nope")
    with pytest.raises(NotFoundError):
        catalog.delete_alias("nope", 0.0)


def _tenant_catalog() -> Catalog:
    catalog = _catalog()
    _add(catalog, _record("acme-1", lang="zh", pool="zh-acme"))
    _add(catalog, _record("pub-1", lang="zh", pool="zh-public"))
    catalog.put_alias(AliasRecord("zh-acme", "pool=zh-acme", "speech"), 0.0)
    catalog.put_alias(AliasRecord("zh-public", "pool=zh-public", "speech"), 0.0)
    catalog.put_tenant(TenantRecord("acme", "zh", ("zh-acme", "zh-public")), 0.0)
    return catalog


def test_tenant_resolves_to_its_first_alias_with_a_routable_instance() -> None:
    catalog = _tenant_catalog()
    alias, views = catalog.resolve_tenant("acme", "zh")
    assert (alias, [v.id for v in views]) == ("zh-acme", ["acme-1"])


def test_tenant_falls_through_to_the_next_alias_when_the_first_has_none_routable() -> None:
    catalog = _tenant_catalog()
    catalog.leases.detach("acme-1", 1.0, broken=True)
    alias, views = catalog.resolve_tenant("acme", "zh")
    assert (alias, [v.id for v in views]) == ("zh-public", ["pub-1"])


def test_tenant_with_nothing_routable_answers_its_first_alias_empty() -> None:
    catalog = _tenant_catalog()
    catalog.leases.detach("acme-1", 1.0, broken=True)
    catalog.put(replace(catalog.get("pub-1"), admin_drained=True), 1.0, 1.0)
    assert catalog.resolve_tenant("acme", "zh") == ("zh-acme", [])


def test_unknown_tenant_route_is_not_found() -> None:
    catalog = _tenant_catalog()
    with pytest.raises(NotFoundError):
        catalog.resolve_tenant("acme", "en")
    with pytest.raises(NotFoundError):
        catalog.delete_tenant("acme", "en", 0.0)


def test_load_restores_state_and_gives_known_instances_grace() -> None:
    catalog = _catalog()
    snapshot = StoreSnapshot(
        instances=(_record("e-1"),),
        aliases=(AliasRecord("zh-public", "lang=zh", "speech"),),
        tenants=(TenantRecord("acme", "zh", ("zh-public",)),),
    )
    catalog.load(snapshot, now=100.0, grace_s=10.0)
    # Restored, not heard from: neither dead nor ready, and never resolved.
    assert catalog.view("e-1").state is State.UNKNOWN
    assert catalog.view("e-1").effective_weight == 0
    assert catalog.resolve_alias("zh-public") == []
    assert catalog.resolve_tenant("acme", "zh") == ("zh-public", [])
    # Well past the TTL but inside the grace: not expired.
    assert catalog.leases.sweep(100.0 + TTL + 1.0).changed == ()
    assert catalog.view("e-1").state is State.UNKNOWN
    assert catalog.leases.sweep(110.0).changed == ("e-1",)
    # The loaded view counts as already published: only the lapse is news.
    (change,) = catalog.refresh(["e-1"], 110.0)
    assert change.view is not None
    assert change.view.state is State.UNHEALTHY


def test_a_restored_instance_is_ready_once_it_re_attaches() -> None:
    catalog = _catalog()
    catalog.load(
        StoreSnapshot(
            instances=(_record("e-1"),),
            aliases=(AliasRecord("zh-public", "lang=zh", "speech"),),
        ),
        now=100.0,
        grace_s=10.0,
    )
    catalog.leases.attach("e-1", 101.0)
    (change,) = catalog.refresh(["e-1"], 101.0)
    assert change.view is not None
    assert change.view.state is State.READY
    assert [v.id for v in catalog.resolve_alias("zh-public")] == ["e-1"]


def test_a_flapping_instance_is_listed_as_flapping_and_not_resolved() -> None:
    catalog = Catalog(LeaseTable(LeaseConfig(ttl_s=TTL, flap_threshold=1, flap_hold_s=10.0)))
    catalog.leases.grant("e-1", 0.0)
    catalog.put(_record("e-1"), 0.0, 0.0)
    catalog.put_alias(AliasRecord("zh-public", "lang=zh", "speech"), 0.0)
    for now in (1.0, 3.0):
        catalog.leases.detach("e-1", now, broken=True)
        catalog.leases.attach("e-1", now + 1.0)
    view = catalog.view("e-1")
    assert (view.state, view.effective_weight) == (State.FLAPPING, 0)
    assert catalog.resolve_alias("zh-public") == []
    catalog.leases.heartbeat("e-1", 14.0, 0, 0)
    catalog.leases.sweep(14.0)
    assert catalog.view("e-1").state is State.READY
