"""`ctl instances` as a table: the legend, effective/registered weight, AGE and SEEN."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from tidepool.ctl.render import INSTANCES_LEGEND, instances_table
from tidepool.registry.v1 import registry_pb2 as pb

NOW = 1_800_000_000.0


def _instance(registered_ago_s: float, seen_ago_s: float | None) -> pb.Instance:
    instance = pb.Instance(
        id="e-1",
        service="speech",
        address="127.0.0.1:5000",
        weight=100,
        effective_weight=60,
        capacity=8,
        labels={"pool": "zh-public", "lang": "zh", "tier": "idc", "gpu": "l4"},
        state=pb.INSTANCE_STATE_READY,
        registered_at=Timestamp(seconds=int(NOW - registered_ago_s)),
    )
    if seen_ago_s is not None:
        instance.last_heartbeat_at.CopyFrom(Timestamp(seconds=int(NOW - seen_ago_s)))
    return instance


def _rows(text: str) -> list[dict[str, str]]:
    lines = text.splitlines()
    assert lines[0] == INSTANCES_LEGEND
    headers = lines[1].split()
    return [dict(zip(headers, line.split(), strict=False)) for line in lines[2:]]


def test_the_legend_explains_weight_as_effective_over_registered() -> None:
    assert "WEIGHT effective/registered" in INSTANCES_LEGEND
    [row] = _rows(instances_table([_instance(10, 1)], NOW))
    assert row["WEIGHT"] == "60/100"


def test_age_is_since_registration_and_seen_since_the_last_heartbeat() -> None:
    [row] = _rows(instances_table([_instance(7200, 3)], NOW))
    assert (row["AGE"], row["SEEN"]) == ("2h", "3s")


def test_never_seen_is_a_dash() -> None:
    [row] = _rows(instances_table([_instance(90, None)], NOW))
    assert (row["AGE"], row["SEEN"]) == ("1m", "-")


def test_wide_adds_service_address_and_the_other_labels() -> None:
    text = instances_table([_instance(10, 1)], NOW, wide=True)
    [row] = _rows(text)
    assert (row["SERVICE"], row["ADDRESS"], row["LABELS"]) == ("speech", "127.0.0.1:5000", "gpu=l4")
    assert "ADDRESS" not in instances_table([_instance(10, 1)], NOW)


def test_an_admin_answer_is_the_header_and_one_row_without_the_legend() -> None:
    lines = instances_table([_instance(10, 1)], NOW, legend=False).splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "WEIGHT"]
    assert len(lines) == 2
