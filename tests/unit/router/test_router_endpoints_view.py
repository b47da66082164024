"""The JSON of GET /v1/endpoints (pure), its query, and the router metrics behind it:
recent errors per engine and the share-gap gauge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from router.endpoint import Endpoint
from router.endpoints_view import EndpointsQueryError, endpoints_view, parse_query
from router.metrics import RouterMetrics
from router.table import PoolDetail, PoolStatus
from router.view import InstanceInfo
from tidepool.registry.v1 import registry_pb2 as pb

NOW = 500.0
WALL_NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ALIAS = "zh-public"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _endpoint(engine: str, weight: int = 100, *, healthy: bool = True) -> Endpoint:
    return Endpoint(engine, f"127.0.0.1:{7000 + ord(engine[-1])}", weight, healthy=healthy)


def _info(
    engine: str, weight: int = 100, state: int = pb.INSTANCE_STATE_READY, registered: int = 100
) -> InstanceInfo:
    return InstanceInfo(
        id=engine,
        service="speech",
        address=f"127.0.0.1:{7000 + ord(engine[-1])}",
        weight=weight,
        labels={},
        state=state,
        registered_weight=registered,
    )


def _detail(
    endpoints: tuple[Endpoint, ...],
    pickable: Mapping[str, float],
    picks: Mapping[str, int],
    **rest: Any,
) -> PoolDetail:
    fields: dict[str, Any] = {
        "alias": ALIAS,
        "endpoints": endpoints,
        "pickable": pickable,
        "ejected_until": {},
        "ejections": {},
        "picks": picks,
        "window_s": 60.0,
        "panic": False,
        "last_resort": False,
    }
    fields.update(rest)
    return PoolDetail(**fields)


def _view(
    detail: PoolDetail,
    instances: Mapping[str, InstanceInfo],
    *,
    in_flight: Mapping[str, int] | None = None,
    errors: Mapping[str, int] | None = None,
    last_errors: Mapping[str, tuple[str, float]] | None = None,
) -> dict[str, Any]:
    return endpoints_view(
        [detail],
        instances,
        in_flight or {},
        {ALIAS: errors or {}},
        last_errors or {},
        now=NOW,
        wall_now=WALL_NOW,
    )


def test_every_endpoint_shows_weights_state_and_configured_next_to_received_share() -> None:
    endpoints = (_endpoint("e1", 100), _endpoint("e2", 200), _endpoint("e3", 300))
    detail = _detail(endpoints, {"e1": 100, "e2": 200, "e3": 30.5}, {"e1": 20, "e2": 40, "e3": 5})
    instances = {e.id: _info(e.id, e.weight, registered=e.weight) for e in endpoints}
    document = _view(detail, instances, in_flight={"e2": 3}, errors={"e3": 2})

    assert document["window_s"] == 60.0
    (pool,) = document["aliases"]
    assert {k: pool[k] for k in ("alias", "panic", "last_resort", "picks")} == {
        "alias": ALIAS,
        "panic": False,
        "last_resort": False,
        "picks": 65,
    }
    e1, e2, e3 = pool["endpoints"]
    assert e2 == {
        "engine": "e2",
        "address": endpoints[1].address,
        "state": "ready",
        "registered_weight": 200,
        "effective_weight": 200,
        "slow_start_weight": 200,
        "pickable": True,
        "ejected": False,
        "ejection": None,
        "last_error": None,
        "in_flight": 3,
        "errors": 0,
        "picks": 40,
        "configured_share": round(200 / 600, 4),
        "received_share": round(40 / 65, 4),
    }
    assert (e3["slow_start_weight"], e3["errors"]) == (30.5, 2)
    assert e1["configured_share"] == round(1 / 6, 4)
    gap = max(abs(w / 600 - p / 65) for w, p in ((100, 20), (200, 40), (300, 5)))
    assert pool["share_gap"] == round(gap, 4)


def test_a_passive_ejection_says_what_was_seen_and_until_when() -> None:
    endpoints = (_endpoint("e1"), _endpoint("e2"))
    detail = _detail(
        endpoints,
        {"e1": 100},
        {"e1": 9, "e2": 1},
        ejected_until={"e2": NOW + 4},
        ejections={"e2": 2},
    )
    instances = {e.id: _info(e.id) for e in endpoints}
    document = _view(detail, instances, last_errors={"e2": ("UNAVAILABLE", NOW - 0.5)})
    e2 = document["aliases"][0]["endpoints"][1]
    assert (e2["ejected"], e2["pickable"], e2["configured_share"]) == (True, False, 0.0)
    assert e2["ejection"] == {
        "kind": "passive",
        "reason": "this router saw UNAVAILABLE 0.5 s ago",
        "until": "2027-01-15T08:00:04.000Z",
        "remaining_s": 4.0,
        "ejections": 2,
    }
    assert e2["last_error"] == {"code": "UNAVAILABLE", "age_s": 0.5}


def test_the_registry_saying_unhealthy_is_an_active_ejection_unless_panic_routes_to_it() -> None:
    endpoints = (_endpoint("e1"), _endpoint("e2", healthy=False))
    instances = {
        "e1": _info("e1"),
        "e2": _info("e2", state=pb.INSTANCE_STATE_UNHEALTHY),
    }
    out = _view(_detail(endpoints, {"e1": 100}, {}), instances)["aliases"][0]
    assert out["endpoints"][1]["ejection"] == {
        "kind": "active",
        "reason": "the registry says unhealthy",
    }
    assert out["share_gap"] == 0.0  # no picks: no evidence of a gap
    panic = _detail(endpoints, {"e1": 100, "e2": 100}, {}, panic=True)
    row = _view(panic, instances)["aliases"][0]["endpoints"][1]
    assert (row["ejected"], row["pickable"], row["state"]) == (False, True, "unhealthy")


def test_a_draining_engine_is_not_ejected_and_a_gone_one_has_no_registered_weight() -> None:
    endpoints = (_endpoint("e1", 0), _endpoint("e2"))
    instances = {"e1": _info("e1", 0, state=pb.INSTANCE_STATE_DRAINING)}
    rows = _view(_detail(endpoints, {"e2": 100}, {"e2": 1}), instances)["aliases"][0]["endpoints"]
    assert (rows[0]["state"], rows[0]["ejected"], rows[0]["slow_start_weight"]) == (
        "draining",
        False,
        None,
    )
    assert (rows[1]["state"], rows[1]["registered_weight"]) == ("gone", None)


@pytest.mark.parametrize(
    ("query", "alias"), [("", None), ("alias=zh-public", "zh-public"), ("alias=a%20b", "a b")]
)
def test_the_query_names_at_most_one_alias(query: str, alias: str | None) -> None:
    assert parse_query(query) == alias


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool=zh", "unknown parameter 'pool': only alias is accepted"),
        ("alias=", "alias: give one non-empty alias name"),
        ("alias=a&alias=b", "alias: give one non-empty alias name"),
        ("alias", "malformed query string 'alias': expected alias=NAME"),
    ],
)
def test_a_bad_query_names_the_parameter_and_the_rule(query: str, message: str) -> None:
    with pytest.raises(EndpointsQueryError) as caught:
        parse_query(query)
    assert str(caught.value) == message


# ---- metrics --------------------------------------------------------------------------------


def test_only_engine_side_errors_count_as_recent_errors_and_they_age_out() -> None:
    clock = FakeClock()
    metrics = RouterMetrics(CollectorRegistry(), clock=clock)
    for code in ("OK", "INVALID_ARGUMENT", "CANCELLED", "UNAVAILABLE", "INTERNAL"):
        metrics.answered(ALIAS, "e1", code, 0.01)
    metrics.answered("other", "e1", "DEADLINE_EXCEEDED", 0.01)
    assert metrics.recent_errors(ALIAS) == {"e1": 2}
    assert metrics.last_errors() == {"e1": ("DEADLINE_EXCEEDED", NOW)}
    clock.now += 61
    assert metrics.recent_errors(ALIAS) == {}
    metrics.retain(set())
    assert metrics.last_errors() == {}


def test_the_share_gap_gauge_is_read_from_the_pools_when_scraped() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    gaps = {"zh": 0.0}

    def pools() -> list[PoolStatus]:
        return [
            PoolStatus(alias, 1, 1, frozenset(), False, False, share_gap=gap)
            for alias, gap in gaps.items()
        ]

    metrics.watch(lambda: 0.0, lambda: True, pools)
    assert registry.get_sample_value("tidepool_router_share_gap", {"alias": "zh"}) == 0.0
    gaps["zh"] = 0.25
    assert registry.get_sample_value("tidepool_router_share_gap", {"alias": "zh"}) == 0.25
