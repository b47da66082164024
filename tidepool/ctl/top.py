"""`ctl top`'s frame: pools, moves in flight and engines in 80 columns (pure)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from registry.client import state_name
from tidepool.ctl.moves import finished, move_state
from tidepool.ctl.pools import NO_STATUS_NOTE, age_s, percent, published
from tidepool.ctl.render import age_text, clip, clip_middle
from tidepool.registry.v1 import registry_pb2 as pb

WIDTH = 80
CLEAR_SCREEN = "\x1b[H\x1b[2J"
BAR_CELLS = 10
POOL_ROW = "{:<16} {:<4} {:>4} {:>5} {:>5} {:<12} {:>7} {:>3} {:>3}"
ENGINE_ROW = "{:<22} {:<9} {:<14} {:<4} {:<10} {:>7} {:>6}"
MOVE_ROW = "{:<14} {:<20} {:<25} {:<12} {:>4}"


@dataclass(frozen=True)
class TopView:
    """What one frame shows, as the registry answered."""

    pools: pb.ListPoolsResponse
    instances: Sequence[pb.Instance]
    moves: Sequence[pb.Move]


def bar(utilization: float) -> str:
    """`[####------]`: utilisation in ten cells, full from 100 % up."""
    filled = min(BAR_CELLS, max(0, round(utilization * BAR_CELLS)))
    return "[" + "#" * filled + "-" * (BAR_CELLS - filled) + "]"


def header(pools: pb.ListPoolsResponse, now: float) -> str:
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    if not published(pools):
        return f"tidepool top  {clock}  no leader"
    leader = pools.leader or "no leader"
    # The age before the leader: a long scheduler id is what gets cut.
    return f"tidepool top  {clock}  status {age_text(age_s(pools))} old  leader {leader}"


def pool_lines(pools: pb.ListPoolsResponse) -> list[str]:
    if not published(pools):
        return [NO_STATUS_NOTE]
    lines = [POOL_ROW.format("POOL", "LANG", "SIZE", "READY", "UTIL", "", "DESIRED", "IN", "OUT")]
    for p in pools.pools:
        lines.append(
            POOL_ROW.format(
                clip(p.name, 16),
                clip(p.lang, 4),
                p.size,
                p.ready,
                percent(p.utilization),
                bar(p.utilization),
                p.desired,
                p.moving_in,
                p.moving_out,
            )
        )
    return lines


def move_lines(moves: Sequence[pb.Move], now: float) -> list[str]:
    active = [m for m in moves if not finished(m)]
    if not active:
        return []
    lines = [MOVE_ROW.format("MOVE", "INSTANCE", "FROM -> TO", "STATE", "AGE")]
    for m in active:
        started = m.started_at.ToNanoseconds() / 1e9 if m.HasField("started_at") else now
        lines.append(
            MOVE_ROW.format(
                clip_middle(m.id, 14),
                clip_middle(m.instance_id, 20),
                clip(f"{m.from_pool} -> {m.to_pool}", 25),
                clip(move_state(m), 12),
                age_text(now - started),
            )
        )
    return lines


def _engine_state(instance: pb.Instance) -> str:
    return "drained" if instance.admin_drained else state_name(instance.state)


def engine_lines(instances: Sequence[pb.Instance]) -> list[str]:
    lines = [ENGINE_ROW.format("ENGINE", "STATE", "POOL", "LANG", "TIER", "BUSY", "QUEUED")]
    ordered = sorted(instances, key=lambda i: (i.labels.get("pool", "~"), i.id))
    for i in ordered:
        slots = i.load.slots or i.capacity
        lines.append(
            ENGINE_ROW.format(
                clip_middle(i.id, 22),
                _engine_state(i),
                clip(i.labels.get("pool", "-"), 14),
                clip(i.labels.get("lang", "-"), 4),
                clip(i.labels.get("tier", "-"), 10),
                clip(f"{i.load.in_flight}/{slots}", 7),
                clip(str(i.load.queued), 6),
            )
        )
    return lines


def frame(view: TopView, now: float, width: int = WIDTH) -> list[str]:
    """One screen: header, pools, moves in flight, engines; no line longer than `width`."""
    lines = [header(view.pools, now), "", *pool_lines(view.pools)]
    moves = move_lines(view.moves, now)
    if moves:
        lines += ["", *moves]
    lines += ["", *engine_lines(view.instances)]
    return [clip(line.rstrip(), width) for line in lines]


def error_frame(message: str, now: float, width: int = WIDTH) -> list[str]:
    """The frame shown while the registry does not answer; `top` keeps trying."""
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return [clip(f"tidepool top  {clock}", width), "", clip(message, width)]


def frame_text(lines: Sequence[str], *, tty: bool, first: bool) -> str:
    """What to write for a frame: on a terminal, clear and redraw; else a blank line between."""
    body = "\n".join(lines) + "\n"
    if tty:
        return CLEAR_SCREEN + body
    return body if first else "\n" + body
