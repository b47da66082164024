"""`ctl move`'s pure checks: which engines it picks, and when it refuses a pool's bounds."""

from __future__ import annotations

import pytest

from tidepool.ctl.main import main
from tidepool.ctl.moves import (
    NO_PUBLISHER,
    bounds_refusal,
    choose_instances,
    moving_instances,
    unavailable_reason,
)
from tidepool.registry.v1 import registry_pb2 as pb


def _engine(
    id: str,
    pool: str = "en-public",
    in_flight: int = 0,
    queued: int = 0,
    state: int = pb.INSTANCE_STATE_READY,
    drained: bool = False,
) -> pb.Instance:
    return pb.Instance(
        id=id,
        labels={"pool": pool, "lang": "en"},
        state=state,
        admin_drained=drained,
        load=pb.Load(in_flight=in_flight, queued=queued, slots=4),
    )


def _pool(
    name: str, size: int, ready: int, min: int, max: int, moving_in: int = 0
) -> pb.PoolStatus:
    return pb.PoolStatus(name=name, size=size, ready=ready, min=min, max=max, moving_in=moving_in)


POOLS = [
    _pool("en-public", 3, 3, 1, 6),
    _pool("zh-public", 4, 4, 1, 6, moving_in=1),
    _pool("zh-spare", 0, 0, 0, 10),
]


def test_prefers_the_least_in_flight_then_the_id() -> None:
    engines = [
        _engine("e-c", in_flight=0), _engine("e-a", in_flight=2), _engine("e-b", in_flight=0),
        _engine("e-d", in_flight=1),
    ]  # fmt: skip
    chosen = choose_instances(engines, "en-public", 3, set())
    assert [i.id for i in chosen] == ["e-b", "e-c", "e-d"]


def test_skips_other_pools_drained_unready_and_moving_engines() -> None:
    engines = [
        _engine("e-other", pool="zh-public"),
        _engine("e-drained", drained=True),
        _engine("e-switching", state=pb.INSTANCE_STATE_SWITCHING),
        _engine("e-unhealthy", state=pb.INSTANCE_STATE_UNHEALTHY),
        _engine("e-moving"),
        _engine("e-ok", in_flight=3),
    ]
    chosen = choose_instances(engines, "en-public", 5, {"e-moving"})
    assert [i.id for i in chosen] == ["e-ok"]


def test_only_unfinished_moves_count_as_moving() -> None:
    moves = [
        pb.Move(instance_id="e-1", state=pb.Move.STATE_PENDING),
        pb.Move(instance_id="e-2", state=pb.Move.STATE_DONE),
        pb.Move(instance_id="e-3", state=pb.Move.STATE_ROLLING_BACK),
        pb.Move(instance_id="e-4", state=pb.Move.STATE_ROLLED_BACK),
    ]
    assert moving_instances(moves) == {"e-1", "e-3"}


def test_says_why_an_engine_cannot_move() -> None:
    assert unavailable_reason(_engine("e-1"), set()) is None
    assert "already moving" in str(unavailable_reason(_engine("e-1"), {"e-1"}))
    assert "drained" in str(unavailable_reason(_engine("e-1", drained=True), set()))
    stalled = _engine("e-1", state=pb.INSTANCE_STATE_STALLED)
    assert "stalled" in str(unavailable_reason(stalled, set()))


def test_allows_a_move_within_both_bounds() -> None:
    assert bounds_refusal(POOLS, "en-public", "zh-public", 1) is None
    assert bounds_refusal(POOLS, "en-public", "zh-spare", 2) is None


def test_refuses_what_would_leave_the_source_below_its_min() -> None:
    assert bounds_refusal(POOLS, "en-public", "zh-spare", 2) is None
    why = bounds_refusal(POOLS, "en-public", "zh-spare", 3)
    assert why is not None
    assert "below its min of 1" in why
    assert "en-public" in why


def test_refuses_what_would_take_the_target_above_its_max() -> None:
    # zh-public: size 4 + 1 moving in; max 6 leaves room for one more.
    pools = [_pool("en-public", 5, 5, 1, 6), POOLS[1]]
    assert bounds_refusal(pools, "en-public", "zh-public", 1) is None
    why = bounds_refusal(pools, "en-public", "zh-public", 2)
    assert why is not None
    assert "above its max of 6" in why


def test_refuses_a_target_that_is_not_a_published_pool() -> None:
    why = bounds_refusal(POOLS, "en-public", "fr-public", 1)
    assert why is not None
    assert "'fr-public' is not a pool" in why


def test_refuses_when_no_scheduler_publishes_pool_status() -> None:
    assert bounds_refusal(None, "en-public", "zh-public", 1) == NO_PUBLISHER
    assert "no scheduler is publishing pool status" in NO_PUBLISHER


def test_refuses_a_move_into_the_same_pool() -> None:
    assert bounds_refusal(POOLS, "zh-public", "zh-public", 1) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["move", "--from", "a", "--to", "b", "--count", "0"],
        ["move", "--from", "a", "--to", "b", "--count", "-2"],
        ["move", "--from", "a", "--to", "b"],
        ["move", "--instance", "e-1", "--to", "b", "--count", "1"],
        ["move", "--from", "a", "--instance", "e-1", "--to", "b", "--count", "1"],
        ["move", "--to", "b"],
        ["move", "--instance", "e-1", "--to", "b", "--wait", "--timeout", "0"],
        ["top", "--interval", "0"],
    ],
)
def test_bad_move_and_top_flags_exit_2_before_any_call(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", "127.0.0.1:1", *argv], environ={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tidepool ctl: ")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["pools", "moves", "move", "top"])
def test_every_new_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"], environ={})
    assert exit_info.value.code == 0
    assert f"usage: tidepool ctl {command}" in capsys.readouterr().out
