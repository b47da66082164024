"""`ctl top`'s frame: what it shows, and that it fits an 80-column terminal."""

from __future__ import annotations

from tidepool.ctl.top import CLEAR_SCREEN, TopView, bar, error_frame, frame, frame_text
from tidepool.registry.v1 import registry_pb2 as pb

NOW = 1_800_000_000.0
LONG = "engine-" + "x" * 70 + "-tail"


def _pools(
    *pools: pb.PoolStatus, leader: str = "sched-1", age_s: float | None = 0.4
) -> pb.ListPoolsResponse:
    response = pb.ListPoolsResponse(pools=pools, leader=leader)
    if age_s is not None:
        response.age.FromNanoseconds(int(age_s * 1e9))
    return response


def _pool(name: str, lang: str, utilization: float = 0.5, **counts: int) -> pb.PoolStatus:
    return pb.PoolStatus(
        name=name, lang=lang, size=counts.get("size", 2), ready=counts.get("ready", 2),
        moving_in=counts.get("moving_in", 0), moving_out=counts.get("moving_out", 0),
        utilization=utilization, desired=counts.get("desired", 2), min=1, max=6,
    )  # fmt: skip


def _engine(id: str, pool: str, lang: str = "zh", tier: str = "idc", **load: int) -> pb.Instance:
    return pb.Instance(
        id=id,
        capacity=4,
        labels={"pool": pool, "lang": lang, "tier": tier},
        state=pb.INSTANCE_STATE_READY,
        load=pb.Load(in_flight=load.get("in_flight", 0), queued=load.get("queued", 0), slots=4),
    )


def _move(instance: str, state: int = pb.Move.STATE_SWITCHING, id: str = "m-1") -> pb.Move:
    move = pb.Move(
        id=id, instance_id=instance, from_pool="en-public", to_pool="zh-public", state=state
    )
    move.started_at.FromNanoseconds(int((NOW - 3) * 1e9))
    return move


def _view() -> TopView:
    return TopView(
        pools=_pools(
            _pool("zh-public", "zh", 0.83, moving_in=1, desired=3),
            _pool("en-public", "en", 0.1, moving_out=1),
        ),
        instances=[
            _engine("e-zh-1", "zh-public", in_flight=3, queued=2),
            _engine("e-en-1", "en-public", "en", "serverless"),
        ],
        moves=[_move("e-en-2"), _move("e-en-0", pb.Move.STATE_DONE, id="m-0")],
    )


def test_frame_shows_leader_pools_moves_in_flight_and_engines() -> None:
    lines = frame(_view(), NOW)
    text = "\n".join(lines)
    assert lines[0].startswith("tidepool top  ")
    assert "leader sched-1" in lines[0]
    zh = next(line for line in lines if line.startswith("zh-public"))
    assert zh.split()[1:5] == ["zh", "2", "2", "83%"]
    assert "[########--]" in zh
    assert zh.split()[-3:] == ["3", "1", "0"]
    assert "e-en-2" in text  # the move in flight
    assert "e-en-0" not in text  # a finished move is not shown
    engine = next(line for line in lines if line.startswith("e-zh-1"))
    assert engine.split() == ["e-zh-1", "ready", "zh-public", "zh", "idc", "3/4", "2"]


def test_no_line_exceeds_80_columns_even_with_long_names() -> None:
    view = TopView(
        pools=_pools(
            _pool("pool-" + "p" * 60, "zh", 7.5, size=1000, ready=999, desired=100000),
            leader="scheduler-" + "l" * 90,
            age_s=123456.0,
        ),
        instances=[
            _engine(LONG, "pool-" + "p" * 60, "zh" * 10, "t" * 40, in_flight=123456, queued=9**9)
        ],
        moves=[_move(LONG, id="m-" + "9" * 40)],
    )
    lines = frame(view, NOW)
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("engine-x") and line.split()[0].endswith("-tail") for line in lines)


def test_without_pool_status_the_frame_says_so() -> None:
    view = TopView(pools=_pools(leader="", age_s=None), instances=[], moves=[])
    text = "\n".join(frame(view, NOW))
    assert "no pool status" in text
    assert "tidepool scheduler run" in text


def test_error_frame_fits_too() -> None:
    lines = error_frame("tidepool ctl: UNAVAILABLE: " + "x" * 200, NOW)
    assert max(len(line) for line in lines) <= 80


def test_bar_fills_with_utilisation_and_stops_at_full() -> None:
    assert bar(0.0) == "[----------]"
    assert bar(0.5) == "[#####-----]"
    assert bar(3.0) == "[##########]"


def test_terminal_frames_clear_the_screen_and_others_are_separated_by_a_blank_line() -> None:
    lines = ["a", "b"]
    assert frame_text(lines, tty=True, first=True) == CLEAR_SCREEN + "a\nb\n"
    assert frame_text(lines, tty=True, first=False) == CLEAR_SCREEN + "a\nb\n"
    assert frame_text(lines, tty=False, first=True) == "a\nb\n"
    assert frame_text(lines, tty=False, first=False) == "\na\nb\n"
