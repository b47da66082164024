"""The Consul view of the catalog: query parsing, instances, filters, JSON shapes, indexes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.catalog import Catalog, Change, EngineReport, EngineStatus, State
from registry.consul import (
    MAX_WAIT_S,
    METRICS_SERVICE,
    ConsulQuery,
    IndexBook,
    catalog_service,
    catalog_services,
    health_service,
    parse_duration,
    parse_query,
    prometheus_targets,
    select,
    service_instances,
    split_address,
)
from registry.errors import InvalidArgumentError
from registry.lease import LeaseConfig, LeaseTable
from registry.records import InstanceRecord, frozen_labels
from tidepool.runtime.status_http import parse_request_head


def _catalog(*records: InstanceRecord) -> Catalog:
    catalog = Catalog(LeaseTable(LeaseConfig(ttl_s=3.0, stall_after_s=5.0)))
    for record in records:
        catalog.leases.grant(record.id, 0.0)
        catalog.put(record, 0.0, 0.0)
    return catalog


def _record(instance_id: str, address: str, weight: int = 100, **labels: str) -> InstanceRecord:
    return InstanceRecord(
        id=instance_id,
        service="speech",
        address=address,
        weight=weight,
        capacity=4,
        engine_labels=frozen_labels(labels),
        registered_at=0.0,
    )


ZH = _record("zh-1", "10.0.0.1:9000", 60, lang="zh", tier="idc", pool="zh-a", metrics_port="9100")
EN = _record("en-1", "[fd00::2]:9000", lang="en", tier="cvm")


# ---- query parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("120000ms", 120.0),
        ("2h", 7200.0),
        ("10", 10.0),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10 s", "s", "5x", "-1s"])
def test_a_bad_duration_is_an_error_naming_wait(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^wait: must be a duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m"]))
def test_any_whole_duration_round_trips(amount: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    assert parse_duration(f"{amount}{unit}") == pytest.approx(amount * scale)


def test_query_reads_index_wait_passing_tags_dc_and_caps_wait() -> None:
    query = parse_query("index=7&wait=1h&passing&tag=lang%3Dzh&tag=tier%3Didc&dc=dc1", {})
    assert query == ConsulQuery(
        index=7, wait_s=MAX_WAIT_S, passing=True, tags=("lang=zh", "tier=idc"), dc="dc1"
    )
    assert parse_query("passing=false", {}).passing is False
    assert parse_query("", {}) == ConsulQuery()


def test_token_comes_from_header_then_bearer_then_query() -> None:
    assert parse_query("token=q", {"x-consul-token": "h"}).token == "h"
    assert parse_query("token=q", {"authorization": "Bearer b"}).token == "b"
    assert parse_query("token=q", {}).token == "q"
    assert parse_query("", {"authorization": "Basic xyz"}).token is None


def test_a_bad_index_is_an_error_naming_index() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^index: must be a whole number"):
        parse_query("index=-1", {})


@given(st.binary(max_size=300))
def test_request_head_parser_never_raises(head: bytes) -> None:
    parse_request_head(head)


def test_request_head_parser_reads_path_query_and_lowercased_headers() -> None:
    request = parse_request_head(
        b"GET /v1/catalog/services?index=3 HTTP/1.1\r\nX-Consul-Token: t\r\n\r\n", "10.0.0.9"
    )
    assert request is not None
    assert (request.method, request.path, request.query) == (
        "GET",
        "/v1/catalog/services",
        "index=3",
    )
    assert request.headers == {"x-consul-token": "t"}
    assert request.peer == "10.0.0.9"
    assert parse_request_head(b"GET /\r\n\r\n") is None
    assert parse_request_head(b"GET / HTTP/1.1\r\nno-colon\r\n\r\n") is None


# ---- instances, filters and shapes ----------------------------------------------------


def test_each_instance_is_a_service_and_its_metrics_port_a_second_one() -> None:
    instances = service_instances(_catalog(ZH, EN).views(), IndexBook())
    by_id = {i.id: i for i in instances}
    assert set(by_id) == {"zh-1", "zh-1-metrics", "en-1"}
    zh, metrics, en = by_id["zh-1"], by_id["zh-1-metrics"], by_id["en-1"]
    assert (zh.service, zh.node, zh.address, zh.port, zh.weight) == (
        "speech",
        "zh-1",
        "10.0.0.1",
        9000,
        60,
    )
    assert zh.tags == ("pool=zh-a", "lang=zh", "tier=idc")
    assert (metrics.service, metrics.port, metrics.node) == (METRICS_SERVICE, 9100, "zh-1")
    assert metrics.tags == (*zh.tags, "service=speech")
    assert (en.address, en.port) == ("fd00::2", 9000)


@pytest.mark.parametrize(
    ("status", "drained", "expected"),
    [
        (EngineStatus.SERVING, False, "passing"),
        (EngineStatus.DRAINING, False, "warning"),
        (EngineStatus.SWITCHING, False, "warning"),
        (EngineStatus.SERVING, True, "warning"),
    ],
)
def test_passing_only_while_ready(status: EngineStatus, drained: bool, expected: str) -> None:
    record = _record("e-1", "10.0.0.1:9000", lang="zh", tier="idc")
    catalog = _catalog(replace(record, admin_drained=drained))
    catalog.report("e-1", EngineReport(status))
    (instance,) = service_instances(catalog.views(), IndexBook())
    assert instance.status == expected
    assert instance.weight == (100 if expected == "passing" else 0)


def test_an_unhealthy_instance_is_critical_and_stays_listed() -> None:
    catalog = _catalog(ZH)
    catalog.leases.remove("zh-1")
    assert catalog.view("zh-1").state is State.UNHEALTHY
    instances = service_instances(catalog.views(), IndexBook())
    assert {i.status for i in instances} == {"critical"}
    assert select(instances, "speech", ConsulQuery(passing=True), health=True) == []
    assert len(select(instances, "speech", ConsulQuery(passing=True), health=False)) == 1


def test_tags_select_every_named_tag() -> None:
    instances = service_instances(_catalog(ZH, EN).views(), IndexBook())
    assert [i.id for i in select(instances, "speech", ConsulQuery(), health=True)] == [
        "en-1",
        "zh-1",
    ]
    zh_idc = ConsulQuery(tags=("lang=zh", "tier=idc"))
    assert [i.id for i in select(instances, "speech", zh_idc, health=True)] == ["zh-1"]
    zh_cvm = ConsulQuery(tags=("lang=zh", "tier=cvm"))
    assert select(instances, "speech", zh_cvm, health=True) == []


def test_json_shapes_use_consuls_field_names() -> None:
    instances = service_instances(_catalog(ZH).views(), IndexBook())
    speech = [i for i in instances if i.service == "speech"]
    assert catalog_services(instances) == {
        "speech": ["lang=zh", "pool=zh-a", "tier=idc"],
        METRICS_SERVICE: ["lang=zh", "pool=zh-a", "service=speech", "tier=idc"],
    }
    (entry,) = catalog_service(speech, "dc1")
    for key in ("Node", "Address", "Datacenter", "ServiceID", "ServiceName", "ServiceAddress"):
        assert key in entry
    assert entry["ServiceWeights"] == {"Passing": 60, "Warning": 0}
    assert entry["ServiceMeta"] == dict(ZH.engine_labels)
    (health,) = health_service(speech, "dc1")
    assert set(health) == {"Node", "Service", "Checks"}
    assert health["Service"]["Service"] == "speech"
    assert health["Service"]["Port"] == 9000
    assert health["Checks"][0]["Status"] == "passing"
    assert health["Checks"][0]["ServiceID"] == "zh-1"


def test_prometheus_targets_are_the_metrics_ports_with_plain_labels() -> None:
    instances = service_instances(_catalog(ZH, EN).views(), IndexBook())
    (group,) = prometheus_targets(instances)
    assert group["targets"] == ["10.0.0.1:9100"]
    labels = group["labels"]
    assert (labels["instance_id"], labels["service"], labels["lang"]) == ("zh-1", "speech", "zh")
    assert labels["__meta_tidepool_label_metrics_port"] == "9100"
    assert labels["__meta_tidepool_health"] == "passing"


@pytest.mark.parametrize("port", ["0", "65536", "http", ""])
def test_a_bad_metrics_port_publishes_no_metrics_service(port: str) -> None:
    record = _record("e-1", "10.0.0.1:9000", lang="zh", metrics_port=port)
    instances = service_instances(_catalog(record).views(), IndexBook())
    assert [i.service for i in instances] == ["speech"]


def test_split_address_handles_ipv4_and_bracketed_ipv6() -> None:
    assert split_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_address("[::1]:9000") == ("::1", 9000)


def test_index_book_keeps_create_and_modify_revisions_and_forgets_deletes() -> None:
    catalog = _catalog()
    book = IndexBook()
    catalog.leases.grant("zh-1", 0.0)
    book.observe(catalog.put(ZH, 0.0, 0.0))
    created = catalog.revision
    catalog.report("zh-1", EngineReport(EngineStatus.DRAINING))
    book.observe(catalog.refresh(["zh-1"], 0.0))
    assert book.of("zh-1") == (created, catalog.revision)
    assert catalog.revision > created
    book.observe(catalog.remove("zh-1", 0.0))
    assert book.of("zh-1") == (1, 1)
    book.observe([Change("routing", 99, 0.0)])
    assert book.of("zh-1") == (1, 1)
