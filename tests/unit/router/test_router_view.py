"""The registry view folded from watch events: departures, routing weights, JSON, members."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.outlier import Departure
from router.view import AliasRule, InstanceInfo, RegistryView
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.selector import parse_selector

READY = pb.INSTANCE_STATE_READY
DRAINING = pb.INSTANCE_STATE_DRAINING
SWITCHING = pb.INSTANCE_STATE_SWITCHING
STALLED = pb.INSTANCE_STATE_STALLED
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY
STATES = (READY, DRAINING, SWITCHING, STALLED, UNHEALTHY)
ZH = ("zh", "speech", "lang=zh")


def _instance(
    instance_id: str,
    *,
    state: int = READY,
    weight: int = 100,
    effective: int | None = None,
    labels: Mapping[str, str] | None = None,
    service: str = "speech",
    admin_drained: bool = False,
    weight_overridden: bool = False,
) -> pb.Instance:
    """An instance as the registry sends it: effective weight 0 unless READY."""
    if effective is None:
        effective = weight if state == READY and not admin_drained else 0
    return pb.Instance(
        id=instance_id,
        service=service,
        address=f"{instance_id}.test:7000",
        weight=weight,
        effective_weight=effective,
        labels=dict(labels if labels is not None else {"lang": "zh"}),
        state=state,  # type: ignore[arg-type]
        admin_drained=admin_drained,
        weight_overridden=weight_overridden,
    )


def _event(
    kind: int,
    *instances: pb.Instance,
    revision: int = 1,
    aliases: tuple[tuple[str, str, str], ...] = (),
    tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
) -> pb.WatchEvent:
    return pb.WatchEvent(
        kind=kind,  # type: ignore[arg-type]
        revision=revision,
        instances=list(instances),
        aliases=[pb.Alias(name=n, service=s, selector=sel) for n, s, sel in aliases],
        tenants=[pb.TenantRoute(tenant=t, lang=lang, aliases=list(a)) for t, lang, a in tenants],
    )


def _snapshot(
    *instances: pb.Instance,
    revision: int = 1,
    aliases: tuple[tuple[str, str, str], ...] = (ZH,),
    tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
) -> pb.WatchEvent:
    kind = pb.WatchEvent.KIND_SNAPSHOT
    return _event(kind, *instances, revision=revision, aliases=aliases, tenants=tenants)


def _upsert(*instances: pb.Instance, revision: int = 2) -> pb.WatchEvent:
    return _event(pb.WatchEvent.KIND_UPSERT, *instances, revision=revision)


def _delete(*instances: pb.Instance, revision: int = 3) -> pb.WatchEvent:
    return _event(pb.WatchEvent.KIND_DELETE, *instances, revision=revision)


def _view(
    *instances: pb.Instance,
    revision: int = 1,
    aliases: tuple[tuple[str, str, str], ...] = (ZH,),
    tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
) -> RegistryView:
    view = RegistryView()
    event = _snapshot(*instances, revision=revision, aliases=aliases, tenants=tenants)
    assert view.apply(event) == {}
    return view


# --- folding events -----------------------------------------------------------------


def test_snapshot_replaces_everything_and_reports_vanished_instances_as_expired() -> None:
    view = _view(
        _instance("a"),
        _instance("b", state=UNHEALTHY),
        _instance("c", state=DRAINING),
        tenants=(("acme", "zh", ("zh",)),),
    )
    departures = view.apply(
        _snapshot(
            _instance("c"), _instance("d"), revision=9, aliases=(("en", "speech", "lang=en"),)
        )
    )
    # A snapshot cannot say why an instance is gone (a registry restart): expired, even
    # for one last seen READY.
    assert departures == {"a": Departure.EXPIRED, "b": Departure.EXPIRED}
    assert sorted(view.instances) == ["c", "d"]
    assert view.instances["c"].state == READY
    assert list(view.aliases) == ["en"]
    assert view.tenants == {}
    assert view.revision == 9


def test_upsert_adds_and_replaces_instances_without_departures() -> None:
    view = _view(_instance("a"))
    assert view.apply(_upsert(_instance("a", weight=300), _instance("b"), revision=4)) == {}
    assert view.instances["a"].weight == 300
    assert view.instances["b"].address == "b.test:7000"
    assert view.revision == 4
    assert list(view.aliases) == ["zh"]  # routing untouched


@pytest.mark.parametrize(
    ("last_seen", "departure"),
    [
        (READY, Departure.DEREGISTERED),
        (DRAINING, Departure.DEREGISTERED),
        (SWITCHING, Departure.DEREGISTERED),
        (UNHEALTHY, Departure.EXPIRED),
        (STALLED, Departure.EXPIRED),
    ],
)
def test_delete_is_a_deregistration_unless_the_instance_was_last_seen_failed(
    last_seen: int, departure: Departure
) -> None:
    view = _view(_instance("a", state=last_seen), _instance("b"))
    # The registry sends the removed record as UNHEALTHY whatever the reason: the last
    # state the router saw is what tells the two apart.
    departures = view.apply(_delete(_instance("a", state=UNHEALTHY), revision=7))
    assert departures == {"a": departure}
    assert sorted(view.instances) == ["b"]
    assert view.revision == 7


def test_delete_of_an_unknown_instance_judges_by_the_event() -> None:
    view = _view()
    assert view.apply(_delete(_instance("x", state=UNHEALTHY))) == {"x": Departure.EXPIRED}
    assert view.apply(_delete(_instance("y", state=READY))) == {"y": Departure.DEREGISTERED}
    assert view.instances == {}


def test_routing_event_replaces_aliases_and_tenants_and_keeps_instances() -> None:
    view = _view(_instance("a"), tenants=(("acme", "zh", ("zh",)),))
    event = _event(
        pb.WatchEvent.KIND_ROUTING,
        revision=5,
        aliases=(("zh-acme", "speech", "pool=zh-acme"), ("en", "speech", "lang=en")),
        tenants=(("acme", "zh", ("zh-acme", "zh")), ("beta", "en", ("en",))),
    )
    assert view.apply(event) == {}
    assert sorted(view.aliases) == ["en", "zh-acme"]
    assert view.aliases["zh-acme"].selector == "pool=zh-acme"
    assert view.tenants == {("acme", "zh"): ("zh-acme", "zh"), ("beta", "en"): ("en",)}
    assert list(view.instances) == ["a"]
    assert view.revision == 5


# --- routing weight -----------------------------------------------------------------


@pytest.mark.parametrize("failed", [UNHEALTHY, STALLED])
def test_a_failed_instance_keeps_its_registered_weight(failed: int) -> None:
    view = _view(_instance("a", weight=250))
    view.apply(_upsert(_instance("a", state=failed, weight=250)))  # effective 0 from registry
    assert view.instances["a"].weight == 250


def test_a_failed_instance_keeps_the_override_it_was_last_seen_with() -> None:
    view = _view(_instance("a", weight=100, effective=400, weight_overridden=True))
    assert view.instances["a"].weight == 400
    view.apply(_upsert(_instance("a", state=UNHEALTHY, weight=100, weight_overridden=True)))
    assert view.instances["a"].weight == 400
    view.apply(_upsert(_instance("a", state=STALLED, weight=100, weight_overridden=True)))
    assert view.instances["a"].weight == 400  # still the last override seen while READY


def test_a_failed_overridden_instance_never_seen_ready_gets_its_registered_weight() -> None:
    view = _view(_instance("a", state=UNHEALTHY, weight=70, weight_overridden=True))
    assert view.instances["a"].weight == 70


@pytest.mark.parametrize("state", STATES)
def test_an_admin_drain_is_weight_zero_in_every_state(state: int) -> None:
    view = _view(_instance("a", weight=100))
    view.apply(_upsert(_instance("a", state=state, weight=100, admin_drained=True)))
    assert view.instances["a"].weight == 0
    assert view.instances["a"].endpoint(0.0).weight == 0


def test_a_ready_instance_routes_with_the_registry_effective_weight() -> None:
    view = _view(_instance("a", weight=100, effective=600, weight_overridden=True))
    assert view.instances["a"].weight == 600


@pytest.mark.parametrize(
    ("state", "weight", "healthy"),
    [
        (READY, 100, True),
        (DRAINING, 0, False),
        (SWITCHING, 0, False),
        (UNHEALTHY, 100, False),
        (STALLED, 100, False),
    ],
)
def test_endpoint_takes_no_new_work_while_draining_or_switching(
    state: int, weight: int, healthy: bool
) -> None:
    info = InstanceInfo.from_pb(_instance("a", state=state, weight=100))
    endpoint = info.endpoint(42.0)
    assert (endpoint.weight, endpoint.healthy) == (weight, healthy)
    assert (endpoint.id, endpoint.address, endpoint.joined_at) == ("a", "a.test:7000", 42.0)
    assert dict(endpoint.labels) == {"lang": "zh"}
    assert info.failed is (state in (UNHEALTHY, STALLED))


# --- JSON round trip ----------------------------------------------------------------


def test_json_round_trip_is_equal() -> None:
    view = _view(
        _instance("a", labels={"lang": "zh", "tier": "idc"}),
        _instance("b", state=DRAINING),
        _instance("c", state=SWITCHING),
        _instance("d", state=STALLED, weight=30),
        _instance("e", state=UNHEALTHY, weight=1000),
        _instance("f", admin_drained=True),
        _instance("g", state=pb.INSTANCE_STATE_UNSPECIFIED),
        revision=77,
        aliases=(ZH, ("zh-acme", "speech", "pool=zh-acme,tier=idc|cvm")),
        tenants=(("acme", "zh", ("zh-acme", "zh")),),
    )
    text = json.dumps(view.to_json())
    restored = RegistryView.from_json(json.loads(text))
    assert restored == view
    assert restored.members("zh") == view.members("zh")
    assert json.dumps(restored.to_json()) == text


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("instances"),
        lambda d: d["instances"][0].pop("address"),
        lambda d: d["instances"][0].update(weight="heavy"),
        lambda d: d["instances"][0].update(labels=5),
        lambda d: d["aliases"][0].pop("selector"),
        lambda d: d.update(revision=None),
    ],
)
def test_from_json_raises_a_documented_error_on_a_malformed_document(damage: object) -> None:
    document = _view(_instance("a")).to_json()
    damage(document)  # type: ignore[operator]
    with pytest.raises((KeyError, TypeError, ValueError)):
        RegistryView.from_json(document)


label_values = st.sampled_from(["zh", "en", "idc", "cvm", "serverless", "a b", "é"])
infos = st.builds(
    InstanceInfo,
    id=st.text(min_size=1, max_size=8),
    service=st.sampled_from(["speech", "other"]),
    address=st.text(max_size=20),
    weight=st.integers(min_value=0, max_value=1000),
    labels=st.dictionaries(st.sampled_from(["lang", "tier", "pool"]), label_values),
    state=st.sampled_from(STATES),
)


@given(
    st.lists(infos, max_size=6),
    st.dictionaries(
        st.tuples(st.text(min_size=1, max_size=5), st.sampled_from(["zh", "en"])),
        st.lists(st.sampled_from(["zh", "en", "zh-acme"]), min_size=1, max_size=3).map(tuple),
        max_size=3,
    ),
    st.integers(min_value=0, max_value=2**62),
)
def test_any_view_survives_the_json_round_trip(
    instances: list[InstanceInfo],
    tenants: dict[tuple[str, str], tuple[str, ...]],
    revision: int,
) -> None:
    view = RegistryView(
        instances={i.id: i for i in instances},
        aliases={"zh": AliasRule.of("zh", "speech", "lang=zh|en,tier=idc")},
        tenants=tenants,
        revision=revision,
    )
    assert RegistryView.from_json(json.loads(json.dumps(view.to_json()))) == view


# --- members ------------------------------------------------------------------------


def test_members_filters_by_service_and_selector_in_id_order() -> None:
    view = _view(
        _instance("z1", labels={"lang": "zh", "tier": "idc"}),
        _instance("e1", labels={"lang": "en", "tier": "idc"}),
        _instance("f1", labels={"lang": "fr", "tier": "idc"}),
        _instance("c1", labels={"lang": "zh", "tier": "cvm"}),
        _instance("n1", labels={"lang": "zh"}),
        _instance("o1", labels={"lang": "zh", "tier": "idc"}, service="other"),
        _instance("a1", state=UNHEALTHY, labels={"lang": "en", "tier": "idc"}),
        aliases=(("idc", "speech", "lang=zh|en,tier=idc"), ("other", "other", "lang=zh")),
    )
    # State does not decide membership: the table decides what is routable.
    assert [i.id for i in view.members("idc")] == ["a1", "e1", "z1"]
    assert [i.id for i in view.members("other")] == ["o1"]
    assert view.members("nope") == []


def test_an_unreadable_selector_selects_nothing() -> None:
    view = _view(_instance("a"), aliases=(("bad", "speech", "lang"),))
    assert view.members("bad") == []


@given(
    st.dictionaries(st.sampled_from(["k", "k2", "x"]), st.sampled_from(["a", "b", "c", "v"])),
)
def test_selector_matches_iff_every_term_holds(labels: dict[str, str]) -> None:
    expected = labels.get("k") in {"a", "b"} and labels.get("k2") == "v"
    assert parse_selector("k=a|b,k2=v").matches(labels) is expected
    assert parse_selector("k = a | b , k2 = v").matches(labels) is expected


def test_a_router_that_knew_an_instance_keeps_it_while_a_restarted_registry_says_unknown() -> None:
    view = RegistryView()
    view.apply(_snapshot(_instance("a"), revision=5))
    # The registry restarted: its snapshot restores `a` as unknown until it re-attaches.
    view.apply(_snapshot(_instance("a", state=pb.INSTANCE_STATE_UNKNOWN), revision=1))
    kept = view.instances["a"]
    assert kept.state == READY
    assert kept.endpoint(joined_at=0.0).weight == 100


def test_a_router_that_never_knew_an_unknown_instance_does_not_route_to_it() -> None:
    view = RegistryView()
    view.apply(_snapshot(_instance("a", state=pb.INSTANCE_STATE_UNKNOWN)))
    endpoint = view.instances["a"].endpoint(joined_at=0.0)
    assert (endpoint.weight, endpoint.healthy) == (0, False)
    assert not view.instances["a"].failed, "unknown is not a failure: no last-resort routing"


def test_a_chunked_snapshot_is_applied_once_whole() -> None:
    view = RegistryView()
    view.apply(_snapshot(_instance("old"), revision=3))
    first = _snapshot(_instance("a"), revision=7)
    first.snapshot_more = True
    assert view.apply(first) == {}
    # Nothing changes until the last chunk: a half snapshot must not drop "old".
    assert set(view.instances) == {"old"}
    middle = _event(pb.WatchEvent.KIND_SNAPSHOT, _instance("b"), revision=7)
    middle.snapshot_more = True
    view.apply(middle)
    departures = view.apply(_event(pb.WatchEvent.KIND_SNAPSHOT, _instance("c"), revision=7))
    assert set(view.instances) == {"a", "b", "c"}
    assert set(departures) == {"old"}
    assert view.revision == 7
    assert [i.id for i in view.members("zh")] == ["a", "b", "c"]


def test_a_snapshot_cut_short_by_a_new_one_starts_over() -> None:
    view = RegistryView()
    stale = _snapshot(_instance("a"), revision=7)
    stale.snapshot_more = True
    view.apply(stale)
    view.apply(_snapshot(_instance("z"), revision=9))
    assert set(view.instances) == {"z"}
