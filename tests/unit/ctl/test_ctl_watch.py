"""`ctl instances --watch`: which events become lines, and how a line reads."""

from __future__ import annotations

import json

from tidepool.ctl.watch import HEADER, LEGEND, WatchView, clock_text, watch_line
from tidepool.registry.v1 import registry_pb2 as pb

NOW = 1_800_000_000.0
SNAPSHOT, UPSERT, DELETE, ROUTING = (
    pb.WatchEvent.KIND_SNAPSHOT,
    pb.WatchEvent.KIND_UPSERT,
    pb.WatchEvent.KIND_DELETE,
    pb.WatchEvent.KIND_ROUTING,
)


def _instance(
    id: str,
    state: int = pb.INSTANCE_STATE_READY,
    weight: int = 100,
    effective: int = 100,
    pool: str = "zh-public",
    in_flight: int = 0,
) -> pb.Instance:
    return pb.Instance(
        id=id,
        service="speech",
        address="127.0.0.1:5000",
        weight=weight,
        effective_weight=effective,
        labels={"pool": pool, "lang": "zh"},
        state=state,
        load=pb.Load(in_flight=in_flight, slots=4),
    )


def _event(kind: int, revision: int, *instances: pb.Instance, **routing: object) -> pb.WatchEvent:
    return pb.WatchEvent(kind=kind, revision=revision, instances=instances, **routing)  # type: ignore[arg-type]


def _all(instance: pb.Instance) -> bool:
    return True


def _fields(line: str) -> list[str]:
    return line.split()


def test_a_line_has_time_kind_instance_state_weight_pool_and_revision() -> None:
    line = watch_line(NOW, "UPSERT", _instance("e-1", pb.INSTANCE_STATE_DRAINING, 100, 0), 42)
    assert _fields(line) == [
        clock_text(NOW),
        "UPSERT",
        "e-1",
        "draining",
        "0/100",
        "zh-public",
        "42",
    ]
    assert line.endswith("\n")


def test_the_header_names_the_same_columns_and_the_legend_explains_weight() -> None:
    assert _fields(HEADER) == ["TIME", "KIND", "INSTANCE", "STATE", "WEIGHT", "POOL", "REV"]
    assert "WEIGHT is effective/registered" in LEGEND


def test_the_first_snapshot_lists_every_instance() -> None:
    view = WatchView(_all)
    lines = view.apply(_event(SNAPSHOT, 7, _instance("e-1"), _instance("e-2")), NOW)
    assert [_fields(line)[1:3] for line in lines] == [["SNAPSHOT", "e-1"], ["SNAPSHOT", "e-2"]]


def test_a_drain_is_one_line() -> None:
    view = WatchView(_all)
    view.apply(_event(SNAPSHOT, 7, _instance("e-1")), NOW)
    drained = _instance("e-1", pb.INSTANCE_STATE_DRAINING, effective=0)
    [line] = view.apply(_event(UPSERT, 8, drained), NOW)
    assert _fields(line)[1:] == ["UPSERT", "e-1", "draining", "0/100", "zh-public", "8"]


def test_load_only_upserts_print_nothing() -> None:
    view = WatchView(_all)
    view.apply(_event(SNAPSHOT, 7, _instance("e-1")), NOW)
    assert view.apply(_event(UPSERT, 8, _instance("e-1", in_flight=3)), NOW) == []


def test_a_delete_shows_what_was_last_known_when_it_carries_only_the_id() -> None:
    view = WatchView(_all)
    view.apply(_event(SNAPSHOT, 7, _instance("e-1", pool="en-public")), NOW)
    [line] = view.apply(_event(DELETE, 9, pb.Instance(id="e-1")), NOW)
    assert _fields(line)[1:] == ["DELETE", "e-1", "ready", "100/100", "en-public", "9"]


def test_a_snapshot_after_a_reconnect_prints_only_the_differences() -> None:
    view = WatchView(_all)
    view.apply(_event(SNAPSHOT, 7, _instance("e-1"), _instance("e-2")), NOW)
    again = _event(SNAPSHOT, 12, _instance("e-1"), _instance("e-3"))
    kinds = sorted(_fields(line)[1] + " " + _fields(line)[2] for line in view.apply(again, NOW))
    assert kinds == ["DELETE e-2", "UPSERT e-3"]


def test_filters_hide_other_instances_but_show_one_leaving_the_filter() -> None:
    view = WatchView(lambda i: i.labels.get("pool") == "zh-public")
    lines = view.apply(_event(SNAPSHOT, 7, _instance("e-1"), _instance("e-2", pool="en")), NOW)
    assert [_fields(line)[2] for line in lines] == ["e-1"]
    assert (
        view.apply(_event(UPSERT, 8, _instance("e-2", weight=5, effective=5, pool="en")), NOW) == []
    )
    [moved] = view.apply(_event(UPSERT, 9, _instance("e-1", pool="en")), NOW)
    assert _fields(moved)[2:] == ["e-1", "ready", "100/100", "en", "9"]


def test_a_routing_change_is_one_line_and_an_unchanged_table_none() -> None:
    view = WatchView(_all)
    alias = pb.Alias(name="zh-public", selector="pool=zh-public", service="speech")
    view.apply(_event(SNAPSHOT, 7, aliases=[alias]), NOW)
    assert view.apply(_event(ROUTING, 8, aliases=[alias]), NOW) == []
    other = pb.Alias(name="en-public", selector="pool=en-public", service="speech")
    [line] = view.apply(_event(ROUTING, 9, aliases=[alias, other]), NOW)
    assert "ROUTING" in line
    assert "aliases zh-public,en-public" in line


def test_json_lines_carry_the_instance_shape() -> None:
    view = WatchView(_all, as_json=True)
    [line] = view.apply(_event(SNAPSHOT, 7, _instance("e-1")), NOW)
    value = json.loads(line)
    assert (value["kind"], value["revision"], value["instance"]["id"]) == ("snapshot", 7, "e-1")
    assert value["time"] == "2027-01-15T08:00:00Z"
