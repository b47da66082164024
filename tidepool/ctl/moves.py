"""Moves as ctl sees them: state words, the JSON shape and table, and `ctl move`'s checks (pure).

`ctl move` asks for pending moves; the scheduler leader carries them out and has
the last word. The checks here only refuse early, with a clearer message, what
the scheduler would refuse anyway (a broken `min` or `max`, an unknown pool, an
engine that is not ready or already moving).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from registry.client import MOVE_STATE_NAMES, state_name
from tidepool.ctl.render import age_text, clip, table
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.rules import POOL_LABEL

FINAL_STATES = frozenset({"done", "rolled_back"})
TABLE_WIDTH = 100
MIN_REASON_WIDTH = 16
NO_PUBLISHER = (
    "no scheduler is publishing pool status (is `tidepool scheduler run` running against "
    "this registry?), so nothing would carry the move out"
)


def move_state(move: pb.Move) -> str:
    return MOVE_STATE_NAMES.get(move.state, "unknown")


def finished(move: pb.Move) -> bool:
    return move_state(move) in FINAL_STATES


def _timestamp(move: pb.Move, name: str) -> str | None:
    return getattr(move, name).ToJsonString() if move.HasField(name) else None


def move_json(move: pb.Move) -> dict[str, Any]:
    """One move in the `ctl moves --json` shape documented in the README."""
    return {
        "id": move.id,
        "instance": move.instance_id,
        "from": move.from_pool,
        "to": move.to_pool,
        "state": move_state(move),
        "reason": move.reason,
        "started_at": _timestamp(move, "started_at"),
        "updated_at": _timestamp(move, "updated_at"),
    }


def move_line(move: pb.Move) -> str:
    """`move m-… INSTANCE A -> B STATE`, with the reason once it rolled back."""
    line = f"move {move.id} {move.instance_id} {move.from_pool} -> {move.to_pool} "
    line += move_state(move)
    if move_state(move) in ("rolling_back", "rolled_back") and move.reason:
        line += f" ({move.reason})"
    return line


def moves_table(moves: Sequence[pb.Move], now: float) -> str:
    """ID INSTANCE FROM TO STATE AGE REASON, the reason cut so a row fits ~100 columns."""
    headers = ("ID", "INSTANCE", "FROM", "TO", "STATE", "AGE", "REASON")
    rows = [
        [
            m.id,
            m.instance_id,
            m.from_pool,
            m.to_pool,
            move_state(m),
            age_text(now - m.started_at.ToNanoseconds() / 1e9) if m.HasField("started_at") else "-",
            m.reason,
        ]
        for m in moves
    ]
    widths = [max(len(str(row[i])) for row in [list(headers), *rows]) for i in range(6)]
    reason_width = max(MIN_REASON_WIDTH, TABLE_WIDTH - sum(w + 2 for w in widths))
    for row in rows:
        row[6] = clip(row[6], reason_width)
    return table(headers, rows)


# ---- choosing engines and checking the pools' bounds ------------------------------------


def moving_instances(moves: Iterable[pb.Move]) -> set[str]:
    """Ids of instances with an unfinished move."""
    return {m.instance_id for m in moves if not finished(m)}


def unavailable_reason(instance: pb.Instance, moving: set[str]) -> str | None:
    """Why an instance may not be moved now, or None."""
    if instance.id in moving:
        return f"{instance.id} is already moving"
    if instance.admin_drained:
        return f"{instance.id} is drained by an admin"
    if instance.state != pb.INSTANCE_STATE_READY:
        return f"{instance.id} is {state_name(instance.state)}, not ready"
    return None


def choose_instances(
    instances: Iterable[pb.Instance], pool: str, count: int, moving: set[str]
) -> list[pb.Instance]:
    """Up to `count` movable instances of `pool`, the least busy first, then by id."""
    candidates = [
        i
        for i in instances
        if i.labels.get(POOL_LABEL) == pool and unavailable_reason(i, moving) is None
    ]
    candidates.sort(key=lambda i: (i.load.in_flight, i.load.queued, i.id))
    return candidates[:count]


def bounds_refusal(
    pools: Sequence[pb.PoolStatus] | None, source: str, target: str, count: int
) -> str | None:
    """Why moving `count` engines from `source` to `target` must be refused, or None.

    `pools` is the published pool status, None when no scheduler ever published.
    The source's `min` holds when `ready - count >= min`; the target's `max` when
    `size + moving_in + count <= max`.
    """
    if pools is None:
        return NO_PUBLISHER
    if source == target:
        return f"the engines are already in {target}"
    by_name = {p.name: p for p in pools}
    to = by_name.get(target)
    if to is None:
        known = ", ".join(sorted(by_name)) or "none"
        return f"{target!r} is not a pool the scheduler publishes (pools: {known})"
    origin = by_name.get(source)
    if origin is not None and origin.ready < origin.min + count:
        left = origin.ready - count
        return (
            f"moving {count} out of {source} would leave it {max(0, left)} ready, "
            f"below its min of {origin.min}"
        )
    after = to.size + to.moving_in + count
    if after > to.max:
        return (
            f"moving {count} into {target} would make it {after} "
            f"(size {to.size}, {to.moving_in} moving in), above its max of {to.max}"
        )
    return None
