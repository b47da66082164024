"""The routing table fed by watch events: routing keys, tenant fallback, shares, slow start,
active and passive ejection, last resort and panic, on a fake clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import grpc
import pytest

from router.endpoint import Endpoint
from router.outlier import OutlierConfig
from router.table import ALIAS_KEY, LANG_KEY, TENANT_KEY, RouteError, RoutingTable, TableConfig
from router.view import RegistryView
from tidepool.registry.v1 import registry_pb2 as pb

READY = pb.INSTANCE_STATE_READY
DRAINING = pb.INSTANCE_STATE_DRAINING
SWITCHING = pb.INSTANCE_STATE_SWITCHING
STALLED = pb.INSTANCE_STATE_STALLED
UNHEALTHY = pb.INSTANCE_STATE_UNHEALTHY

ALIASES = (
    ("zh", "speech", "lang=zh,pool=zh"),
    ("en", "speech", "lang=en"),
    ("zh-acme", "speech", "pool=zh-acme"),
)
TENANTS = (("acme", "zh", ("zh-acme", "zh")), ("beta", "zh", ("gone", "zh")))
START = 1000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingEvents:
    """A TableEvents that remembers what it was told."""

    def __init__(self) -> None:
        self.ejections: list[tuple[str, str, str]] = []
        self.panics: list[tuple[str, bool]] = []
        self.last_resorts: list[tuple[str, bool]] = []

    def ejected(self, alias: str, instance_id: str, kind: str) -> None:
        self.ejections.append((alias, instance_id, kind))

    def panic_changed(self, alias: str, panic: bool) -> None:
        self.panics.append((alias, panic))

    def last_resort_changed(self, alias: str, last_resort: bool) -> None:
        self.last_resorts.append((alias, last_resort))


def _instance(
    instance_id: str,
    *,
    state: int = READY,
    weight: int = 100,
    pool: str = "zh",
    lang: str = "zh",
    admin_drained: bool = False,
) -> pb.Instance:
    """An instance as the registry sends it: effective weight 0 unless READY."""
    effective = weight if state == READY and not admin_drained else 0
    return pb.Instance(
        id=instance_id,
        service="speech",
        address=f"{instance_id}.test:7000",
        weight=weight,
        effective_weight=effective,
        labels={"lang": lang, "pool": pool},
        state=state,  # type: ignore[arg-type]
        admin_drained=admin_drained,
    )


class Harness:
    """A view and a table fed the way the watcher feeds them."""

    def __init__(self, config: TableConfig | None = None) -> None:
        self.clock = FakeClock()
        self.events = RecordingEvents()
        self.view = RegistryView()
        self.table = RoutingTable(config, events=self.events, clock=self.clock)
        self.revision = 0

    def _send(
        self,
        kind: int,
        instances: tuple[pb.Instance, ...] = (),
        aliases: tuple[tuple[str, str, str], ...] = (),
        tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
    ) -> None:
        self.revision += 1
        event = pb.WatchEvent(
            kind=kind,  # type: ignore[arg-type]
            revision=self.revision,
            instances=list(instances),
            aliases=[pb.Alias(name=n, service=s, selector=sel) for n, s, sel in aliases],
            tenants=[pb.TenantRoute(tenant=t, lang=g, aliases=list(a)) for t, g, a in tenants],
        )
        self.table.update(self.view, self.view.apply(event))

    def snapshot(
        self,
        *instances: pb.Instance,
        aliases: tuple[tuple[str, str, str], ...] = ALIASES,
        tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = TENANTS,
    ) -> None:
        self._send(pb.WatchEvent.KIND_SNAPSHOT, instances, aliases, tenants)

    def upsert(self, *instances: pb.Instance) -> None:
        self._send(pb.WatchEvent.KIND_UPSERT, instances)

    def delete(self, *instances: pb.Instance) -> None:
        self._send(pb.WatchEvent.KIND_DELETE, instances)

    def routing(
        self,
        aliases: tuple[tuple[str, str, str], ...],
        tenants: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
    ) -> None:
        self._send(pb.WatchEvent.KIND_ROUTING, (), aliases, tenants)

    def pick(self, *aliases: str, exclude: frozenset[str] = frozenset()) -> tuple[str, Endpoint]:
        picked = self.table.pick(aliases, exclude)
        assert picked is not None
        return picked

    def picks(self, *aliases: str, count: int) -> Counter[str]:
        """How often each instance id was picked (alias-qualified when several aliases)."""
        counts: Counter[str] = Counter()
        for _ in range(count):
            alias, endpoint = self.pick(*aliases)
            counts[endpoint.id if len(aliases) == 1 else f"{alias}/{endpoint.id}"] += 1
        return counts

    def status(self, alias: str) -> Mapping[str, object]:
        (found,) = [p for p in self.table.pools() if p.alias == alias]
        return {
            "endpoints": found.endpoints,
            "routable": found.routable,
            "ejected": found.ejected,
            "panic": found.panic,
            "last_resort": found.last_resort,
        }


def _four() -> Harness:
    harness = Harness()
    harness.snapshot(*(_instance(i) for i in "abcd"))
    return harness


# --- routing keys -------------------------------------------------------------------


def test_route_is_unavailable_until_the_first_view() -> None:
    harness = Harness()
    assert not harness.table.has_view
    with pytest.raises(RouteError) as caught:
        harness.table.route("zh", None, None)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert harness.table.pick(("zh",)) is None


@pytest.mark.parametrize(
    ("alias", "tenant", "lang", "code", "named"),
    [
        (None, None, None, grpc.StatusCode.INVALID_ARGUMENT, ALIAS_KEY),
        ("", "", "", grpc.StatusCode.INVALID_ARGUMENT, ALIAS_KEY),
        (None, None, "zh", grpc.StatusCode.INVALID_ARGUMENT, ALIAS_KEY),
        (None, "acme", None, grpc.StatusCode.INVALID_ARGUMENT, LANG_KEY),
        (None, "acme", "", grpc.StatusCode.INVALID_ARGUMENT, LANG_KEY),
        ("nope", None, None, grpc.StatusCode.NOT_FOUND, "'nope'"),
        ("nope", "acme", "zh", grpc.StatusCode.NOT_FOUND, ALIAS_KEY),
        (None, "acme", "fr", grpc.StatusCode.NOT_FOUND, TENANT_KEY),
        (None, "nobody", "zh", grpc.StatusCode.NOT_FOUND, "'nobody'"),
    ],
)
def test_route_errors_carry_a_meaningful_code_and_name_the_key(
    alias: str | None, tenant: str | None, lang: str | None, code: grpc.StatusCode, named: str
) -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    with pytest.raises(RouteError) as caught:
        harness.table.route(alias, tenant, lang)
    assert caught.value.code is code
    assert named in caught.value.message
    assert str(caught.value) == caught.value.message


def test_route_answers_the_alias_or_the_tenant_list_alias_first() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    assert harness.table.route("en", None, None) == ("en",)
    assert harness.table.route(None, "acme", "zh") == ("zh-acme", "zh")
    assert harness.table.route("en", "acme", "zh") == ("en",)


def test_an_error_shows_only_a_bounded_part_of_a_huge_key() -> None:
    harness = Harness()
    harness.snapshot()
    with pytest.raises(RouteError) as caught:
        harness.table.route("x" * 100_000, None, None)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert len(caught.value.message) < 200


def test_a_routing_event_changes_routes_and_retires_removed_pools() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    harness.routing((("en", "speech", "lang=en"),), (("acme", "zh", ("en",)),))
    assert harness.table.route(None, "acme", "zh") == ("en",)
    with pytest.raises(RouteError) as caught:
        harness.table.route("zh", None, None)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    for gone in ("zh", "zh-acme"):
        assert (gone, False) in harness.events.panics
        assert (gone, False) in harness.events.last_resorts
    assert [p.alias for p in harness.table.pools()] == ["en"]


# --- tenant fallback ----------------------------------------------------------------


def test_a_tenant_is_served_by_its_first_alias_while_it_has_a_healthy_instance() -> None:
    harness = Harness()
    harness.snapshot(_instance("d1", pool="zh-acme"), _instance("p1"))
    assert harness.picks("zh-acme", "zh", count=50) == {"zh-acme/d1": 50}


@pytest.mark.parametrize(
    "dedicated",
    [
        (),
        (_instance("d1", pool="zh-acme", state=DRAINING),),
        (_instance("d1", pool="zh-acme", admin_drained=True),),
    ],
    ids=["empty", "draining", "admin-drained"],
)
def test_a_tenant_falls_back_when_its_first_alias_cannot_take_work(
    dedicated: tuple[pb.Instance, ...],
) -> None:
    harness = Harness()
    harness.snapshot(*dedicated, _instance("p1"))
    assert harness.picks("zh-acme", "zh", count=50) == {"zh/p1": 50}


def test_a_tenant_falls_back_when_its_first_alias_is_in_panic() -> None:
    harness = Harness()
    dedicated = [_instance(f"d{i}", pool="zh-acme") for i in range(4)]
    harness.snapshot(*dedicated, _instance("p1"))
    harness.upsert(*(_instance(f"d{i}", pool="zh-acme", state=UNHEALTHY) for i in range(3)))
    assert harness.status("zh-acme")["panic"] is True
    assert harness.picks("zh-acme", "zh", count=50) == {"zh/p1": 50}


def test_a_tenant_falls_back_when_every_instance_of_its_first_alias_failed() -> None:
    # The dedicated engines were killed and the registry marked them UNHEALTHY: the
    # first alias has no healthy instance, so the healthy fallback must serve, not
    # the dead engines kept there as a last resort.
    harness = Harness()
    harness.snapshot(_instance("d1", pool="zh-acme"), _instance("d2", pool="zh-acme"))
    harness.upsert(_instance("p1"))
    harness.upsert(*(_instance(i, pool="zh-acme", state=UNHEALTHY) for i in ("d1", "d2")))
    assert harness.picks("zh-acme", "zh", count=50) == {"zh/p1": 50}


def test_the_last_alias_is_used_whatever_its_health() -> None:
    harness = Harness()
    harness.snapshot(*(_instance(i) for i in "abcd"))
    harness.upsert(*(_instance(i, state=UNHEALTHY) for i in "abc"))
    assert harness.status("zh")["panic"] is True
    counts = harness.picks("zh-acme", "zh", count=400)
    assert set(counts) == {"zh/a", "zh/b", "zh/c", "zh/d"}  # panic: the whole pool


def test_unknown_aliases_in_a_tenant_list_are_skipped_and_nothing_left_is_none() -> None:
    harness = Harness()
    harness.snapshot(_instance("p1"))
    aliases = harness.table.route(None, "beta", "zh")
    assert aliases == ("gone", "zh")
    assert harness.picks(*aliases, count=10) == {"zh/p1": 10}
    assert harness.table.pick(("gone",)) is None
    assert harness.table.pick(("zh-acme", "en")) is None  # both pools empty


def test_exclude_moves_a_retry_on_to_the_next_alias() -> None:
    harness = Harness()
    harness.snapshot(_instance("d1", pool="zh-acme"), _instance("p1"))
    assert harness.pick("zh-acme", "zh", exclude=frozenset({"d1"}))[0] == "zh"


# --- balancing through the table ----------------------------------------------------


def test_wrr_shares_follow_static_weights_through_the_table() -> None:
    harness = Harness()
    harness.snapshot(_instance("a", weight=100), _instance("b", weight=50), _instance("c"))
    harness.upsert(_instance("c", weight=50))  # a weight change is not a join: no ramp
    counts = harness.picks("zh", count=10_000)
    for instance_id, share in (("a", 0.5), ("b", 0.25), ("c", 0.25)):
        assert abs(counts[instance_id] - share * 10_000) <= 100, counts


def test_least_loaded_through_the_table_reads_in_flight_counts() -> None:
    harness = Harness(TableConfig(balancer="least-loaded"))
    harness.snapshot(_instance("a"), _instance("b"))
    harness.table.in_flight["a"] = 10
    assert harness.picks("zh", count=50) == {"b": 50}
    harness.table.in_flight["a"] = 0
    harness.table.in_flight["b"] = 10
    assert harness.picks("zh", count=50) == {"a": 50}


def test_slow_start_ramps_a_later_joiner_but_not_the_first_view() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    harness.upsert(_instance("n"))  # joins at START: 10 % of its weight at first
    counts = harness.picks("zh", count=1100)
    assert abs(counts["n"] - 100) <= 2, counts  # a at 100 (warm), n at 10
    harness.clock.advance(5.0)  # half way: 55
    counts = harness.picks("zh", count=1550)
    assert abs(counts["n"] - 550) <= 5, counts
    harness.clock.advance(5.0)  # the window is over: equal shares
    counts = harness.picks("zh", count=1000)
    assert abs(counts["n"] - 500) <= 2, counts


def test_an_instance_that_recovers_from_unhealthy_ramps_again() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b", state=UNHEALTHY))
    harness.clock.advance(60.0)
    harness.upsert(_instance("b"))
    counts = harness.picks("zh", count=1100)
    assert abs(counts["b"] - 100) <= 2, counts


def test_without_slow_start_a_joiner_gets_its_full_share_at_once() -> None:
    harness = Harness(TableConfig(slow_start=None))
    harness.snapshot(_instance("a"))
    harness.upsert(_instance("n"))
    assert harness.picks("zh", count=1000) == {"a": 500, "n": 500}


@pytest.mark.parametrize(
    "drained",
    [
        _instance("x", admin_drained=True),
        _instance("x", state=DRAINING),
        _instance("x", state=SWITCHING),
        _instance("x", weight=0),
    ],
    ids=["admin-drained", "draining", "switching", "weight-0"],
)
def test_a_drained_instance_is_never_picked_and_never_causes_panic(drained: pb.Instance) -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b"))
    harness.upsert(drained, _instance("y", admin_drained=True), _instance("z", state=DRAINING))
    harness.upsert(_instance("b", state=UNHEALTHY))
    assert harness.status("zh")["panic"] is False  # a is 1 of the 2 with weight
    assert harness.picks("zh", count=500) == {"a": 500}
    assert not [e for e in harness.events.ejections if e[1] in "xyz"]


def test_a_pool_of_only_drained_instances_picks_nothing() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    harness.upsert(_instance("a", state=DRAINING))
    assert harness.table.pick(("zh",)) is None
    assert harness.status("zh")["last_resort"] is False


# --- active ejection ----------------------------------------------------------------


@pytest.mark.parametrize("failed", [UNHEALTHY, STALLED])
def test_an_instance_the_registry_gives_up_on_is_ejected_actively(failed: int) -> None:
    harness = _four()
    harness.upsert(_instance("a", state=failed))
    assert harness.events.ejections == [("zh", "a", "active")]
    assert "a" not in harness.picks("zh", count=300)
    harness.delete(_instance("a", state=UNHEALTHY))  # later reaped: reported once only
    assert harness.events.ejections == [("zh", "a", "active")]


def test_an_instance_vanished_from_a_snapshot_is_ejected_actively() -> None:
    harness = _four()
    harness.snapshot(*(_instance(i) for i in "bcd"))
    assert harness.events.ejections == [("zh", "a", "active")]
    assert "a" not in harness.picks("zh", count=300)


@pytest.mark.parametrize("last_seen", [READY, DRAINING])
def test_a_deregistration_is_not_an_ejection(last_seen: int) -> None:
    harness = _four()
    harness.upsert(_instance("a", state=last_seen))
    harness.delete(_instance("a", state=UNHEALTHY))
    assert harness.events.ejections == []
    assert harness.status("zh")["endpoints"] == 3


def test_draining_and_moving_are_not_ejections() -> None:
    harness = _four()
    harness.upsert(_instance("a", state=DRAINING), _instance("b", admin_drained=True))
    harness.upsert(_instance("c", pool="zh-acme"))
    assert harness.events.ejections == []
    assert harness.table.endpoints("zh-acme")[0].id == "c"


# --- last resort --------------------------------------------------------------------


def test_when_every_instance_fails_the_pool_keeps_them_as_last_resort() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b"))
    harness.upsert(_instance("a", state=UNHEALTHY), _instance("b", state=UNHEALTHY))
    assert harness.events.last_resorts == [("zh", True)]
    assert harness.status("zh")["last_resort"] is True
    assert set(harness.picks("zh", count=20)) == {"a", "b"}
    # Then reaped by the registry: still expired, still kept.
    harness.delete(_instance("a", state=UNHEALTHY), _instance("b", state=UNHEALTHY))
    assert harness.status("zh") == {
        "endpoints": 2,
        "routable": 2,
        "ejected": frozenset(),
        "panic": False,
        "last_resort": True,
    }
    assert set(harness.picks("zh", count=20)) == {"a", "b"}
    assert harness.events.last_resorts == [("zh", True)]


def test_a_registry_restart_that_forgets_a_pool_keeps_it_as_last_resort() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b"))
    harness.snapshot()
    assert harness.status("zh")["last_resort"] is True
    assert set(harness.picks("zh", count=20)) == {"a", "b"}
    assert harness.table.addresses() == {"a.test:7000", "b.test:7000"}


def test_last_resort_ends_when_a_healthy_instance_joins() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"))
    harness.upsert(_instance("a", state=UNHEALTHY))
    harness.upsert(_instance("n"))
    assert harness.events.last_resorts == [("zh", True), ("zh", False)]
    assert harness.picks("zh", count=20) == {"n": 20}


def test_a_deregistration_empties_the_pool() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b"))
    harness.delete(_instance("a", state=UNHEALTHY), _instance("b", state=UNHEALTHY))
    assert harness.table.endpoints("zh") == ()
    assert harness.table.pick(("zh",)) is None
    assert harness.events.last_resorts == []
    assert harness.table.addresses() == set()


# --- passive ejection ---------------------------------------------------------------


def test_a_reported_failure_ejects_at_once() -> None:
    harness = _four()
    assert harness.table.report_failure("zh", "a") is True
    assert harness.events.ejections == [("zh", "a", "passive")]
    assert harness.status("zh")["ejected"] == frozenset({"a"})
    assert set(harness.picks("zh", count=300)) == {"b", "c", "d"}


def test_passive_ejection_respects_max_ejection_percent() -> None:
    harness = _four()  # 50 % of 4: two at most
    assert harness.table.report_failure("zh", "a") is True
    assert harness.table.report_failure("zh", "a") is False  # already out
    assert harness.table.report_failure("zh", "b") is True
    assert harness.table.report_failure("zh", "c") is False
    assert harness.events.ejections == [("zh", "a", "passive"), ("zh", "b", "passive")]
    assert set(harness.picks("zh", count=100)) == {"c", "d"}


def test_report_failure_for_an_unknown_pool_or_instance_ejects_nothing() -> None:
    harness = _four()
    assert harness.table.report_failure("nope", "a") is False
    assert harness.table.report_failure("zh", "nope") is False
    assert harness.table.report_failure("en", "a") is False
    assert harness.events.ejections == []


def test_an_ejected_instance_comes_back_after_the_backoff_and_ramps() -> None:
    harness = _four()
    harness.table.report_failure("zh", "a")
    harness.clock.advance(1.9)
    assert "a" not in harness.picks("zh", count=300)
    harness.clock.advance(0.1)  # the 2 s first ejection is over
    assert harness.status("zh")["ejected"] == frozenset()
    counts = harness.picks("zh", count=3100)  # a at 10 of its 100, the others 100
    assert abs(counts["a"] - 100) <= 3, counts
    harness.clock.advance(10.0)
    counts = harness.picks("zh", count=4000)
    assert abs(counts["a"] - 1000) <= 3, counts


def test_a_second_ejection_lasts_longer_unless_successes_decay_it() -> None:
    harness = _four()
    harness.table.report_failure("zh", "a")
    harness.clock.advance(2.0)
    harness.table.report_failure("zh", "a")  # second in a row: 4 s
    harness.clock.advance(3.9)
    assert "a" in harness.status("zh")["ejected"]  # type: ignore[operator]
    harness.clock.advance(0.1)
    assert harness.status("zh")["ejected"] == frozenset()
    harness.clock.advance(20.0)
    harness.table.report_success("zh", "a")  # two quiet decay intervals: forgotten
    harness.table.report_failure("zh", "a")
    harness.clock.advance(2.0)
    assert harness.status("zh")["ejected"] == frozenset()


# --- panic --------------------------------------------------------------------------


def test_panic_below_the_threshold_leaves_out_passively_ejected_instances() -> None:
    harness = _four()
    harness.table.report_failure("zh", "a")
    harness.upsert(_instance("b", state=UNHEALTHY))
    assert harness.events.panics == []  # c and d: exactly half is not panic
    harness.upsert(_instance("c", state=UNHEALTHY))
    assert harness.events.panics == [("zh", True)]
    assert harness.status("zh")["panic"] is True
    counts = harness.picks("zh", count=300)
    assert set(counts) == {"b", "c", "d"}  # the registry's word is not first-hand
    harness.upsert(_instance("b"), _instance("c"))
    assert harness.events.panics == [("zh", True), ("zh", False)]
    assert harness.status("zh")["panic"] is False


def test_a_zero_panic_threshold_never_panics() -> None:
    harness = Harness(TableConfig(outlier=OutlierConfig(panic_threshold_percent=0)))
    harness.snapshot(*(_instance(i) for i in "abcd"))
    harness.upsert(*(_instance(i, state=UNHEALTHY) for i in "abc"))
    assert harness.events.panics == []
    assert harness.picks("zh", count=30) == {"d": 30}


# --- inspection ---------------------------------------------------------------------


def test_addresses_are_every_endpoint_of_every_pool() -> None:
    harness = Harness()
    harness.snapshot(
        _instance("a"),
        _instance("b", state=UNHEALTHY),
        _instance("c", state=DRAINING),
        _instance("e", lang="en", pool="en"),
        _instance("o", lang="fr", pool="fr"),  # in no pool
    )
    assert harness.table.addresses() == {
        "a.test:7000",
        "b.test:7000",
        "c.test:7000",
        "e.test:7000",
    }
    harness.delete(_instance("a"))
    assert "a.test:7000" not in harness.table.addresses()


def test_pools_report_each_alias_in_order() -> None:
    harness = Harness()
    harness.snapshot(_instance("a"), _instance("b", state=UNHEALTHY), _instance("c", weight=0))
    statuses = harness.table.pools()
    assert [p.alias for p in statuses] == ["en", "zh", "zh-acme"]
    zh = statuses[1]
    assert (zh.endpoints, zh.routable, zh.panic, zh.last_resort) == (3, 1, False, False)
    assert statuses[0].endpoints == 0
