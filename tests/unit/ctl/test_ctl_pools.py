"""`ctl pools`: the JSON shape, the table and the notes for missing or old status."""

from __future__ import annotations

from tidepool.ctl.pools import NO_STATUS_NOTE, pool_json, pools_table, pools_text, stale_note
from tidepool.registry.v1 import registry_pb2 as pb

POOL_KEYS = [
    "name", "lang", "size", "ready", "moving_in", "moving_out",
    "utilization", "desired", "min", "max",
]  # fmt: skip


def _pool(name: str = "zh-public", **fields: object) -> pb.PoolStatus:
    values: dict[str, object] = {
        "name": name, "lang": "zh", "size": 3, "ready": 2, "moving_in": 1, "moving_out": 0,
        "utilization": 0.41666, "desired": 4, "min": 1, "max": 6,
    }  # fmt: skip
    values.update(fields)
    return pb.PoolStatus(**values)


def _response(
    *pools: pb.PoolStatus, age_s: float | None = 0.5, leader: str = "s-1"
) -> pb.ListPoolsResponse:
    response = pb.ListPoolsResponse(pools=pools, leader=leader)
    if age_s is not None:
        response.age.FromNanoseconds(int(age_s * 1e9))
    return response


def test_pool_json_has_every_documented_key_in_order() -> None:
    shape = pool_json(_pool())
    assert list(shape) == POOL_KEYS
    assert shape["utilization"] == 0.417
    assert shape["moving_in"] == 1
    assert shape["min"] == 1
    assert shape["max"] == 6


def test_pools_table_has_the_documented_columns_and_a_row_per_pool() -> None:
    text = pools_table([_pool(), _pool("en-public", lang="en", utilization=1.25)])
    lines = text.splitlines()
    assert lines[0].split() == [
        "POOL", "LANG", "SIZE", "READY", "IN", "OUT", "UTIL", "DESIRED", "MIN", "MAX",
    ]  # fmt: skip
    assert lines[1].split() == ["zh-public", "zh", "3", "2", "1", "0", "42%", "4", "1", "6"]
    assert lines[2].split()[6] == "125%"


def test_without_any_published_status_it_says_so_in_one_line() -> None:
    text = pools_text(_response(age_s=None, leader=""))
    assert text == NO_STATUS_NOTE + "\n"
    assert "tidepool scheduler run" in text


def test_fresh_status_has_no_note() -> None:
    response = _response(_pool(), age_s=10.0)
    assert stale_note(response) is None
    assert "note" not in pools_text(response)


def test_old_status_gets_a_note_with_its_age_and_the_leader() -> None:
    text = pools_text(_response(_pool(), age_s=42.0, leader="sched-7"))
    note = text.splitlines()[-1]
    assert "42s" in note
    assert "sched-7" in note
