"""`ctl moves` and `ctl move`'s output: the JSON shape, the table, the progress lines."""

from __future__ import annotations

from tidepool.ctl.moves import finished, move_json, move_line, moves_table
from tidepool.registry.v1 import registry_pb2 as pb

NOW = 1_800_000_000.0
MOVE_KEYS = ["id", "instance", "from", "to", "state", "reason", "started_at", "updated_at"]


def _move(state: int = pb.Move.STATE_DRAINING, reason: str = "manual", **fields: str) -> pb.Move:
    move = pb.Move(
        id=fields.get("id", "m-0123456789ab"),
        instance_id=fields.get("instance_id", "vm-e1"),
        from_pool="en-public",
        to_pool="zh-public",
        state=state,
        reason=reason,
    )
    move.started_at.FromNanoseconds(int((NOW - 75) * 1e9))
    move.updated_at.FromNanoseconds(int((NOW - 5) * 1e9))
    return move


def test_move_json_has_every_documented_key_with_rfc3339_times() -> None:
    shape = move_json(_move())
    assert list(shape) == MOVE_KEYS
    assert shape["instance"] == "vm-e1"
    assert shape["from"] == "en-public"
    assert shape["to"] == "zh-public"
    assert shape["state"] == "draining"
    assert shape["started_at"] == "2027-01-15T07:58:45Z"
    assert shape["updated_at"] == "2027-01-15T07:59:55Z"


def test_move_json_without_times_says_null() -> None:
    shape = move_json(pb.Move(id="m-1", state=pb.Move.STATE_PENDING))
    assert shape["started_at"] is None
    assert shape["updated_at"] is None
    assert shape["state"] == "pending"


def test_every_move_state_has_its_word() -> None:
    words = {
        pb.Move.STATE_PENDING: "pending", pb.Move.STATE_DRAINING: "draining",
        pb.Move.STATE_SWITCHING: "switching", pb.Move.STATE_ADMITTING: "admitting",
        pb.Move.STATE_DONE: "done", pb.Move.STATE_ROLLING_BACK: "rolling_back",
        pb.Move.STATE_ROLLED_BACK: "rolled_back",
    }  # fmt: skip
    for state, word in words.items():
        assert move_json(_move(state))["state"] == word
    assert [w for s, w in words.items() if finished(_move(s))] == ["done", "rolled_back"]


def test_move_line_names_the_move_the_instance_and_both_pools() -> None:
    line = move_line(_move(pb.Move.STATE_PENDING))
    assert line == "move m-0123456789ab vm-e1 en-public -> zh-public pending"


def test_a_rolled_back_line_carries_its_reason() -> None:
    line = move_line(_move(pb.Move.STATE_ROLLED_BACK, "refused: it would leave en-public below"))
    assert line.endswith("rolled_back (refused: it would leave en-public below)")


def test_moves_table_columns_age_and_a_long_reason_cut_to_fit() -> None:
    moves = [_move(reason="x" * 300), _move(pb.Move.STATE_DONE, id="m-2", instance_id="vm-e2")]
    lines = moves_table(moves, NOW).splitlines()
    assert lines[0].split() == ["ID", "INSTANCE", "FROM", "TO", "STATE", "AGE", "REASON"]
    assert lines[1].split()[:6] == [
        "m-0123456789ab", "vm-e1", "en-public", "zh-public", "draining", "1m",
    ]  # fmt: skip
    assert lines[1].endswith("~")
    assert all(len(line) <= 100 for line in lines)
    assert lines[2].split()[4:] == ["done", "1m", "manual"]
