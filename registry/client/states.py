"""Instance and move states as the words operators see: ctl listings, the router's view
file, the scheduler's registry adapter."""

from __future__ import annotations

from typing import Any

from tidepool.registry.v1 import registry_pb2 as pb

STATE_NAMES: dict[int, str] = {
    pb.INSTANCE_STATE_UNSPECIFIED: "unspecified",
    pb.INSTANCE_STATE_READY: "ready",
    pb.INSTANCE_STATE_DRAINING: "draining",
    pb.INSTANCE_STATE_SWITCHING: "switching",
    pb.INSTANCE_STATE_STALLED: "stalled",
    pb.INSTANCE_STATE_UNHEALTHY: "unhealthy",
    pb.INSTANCE_STATE_UNKNOWN: "unknown",
    pb.INSTANCE_STATE_FLAPPING: "flapping",
}
STATES_BY_NAME: dict[str, int] = {name: state for state, name in STATE_NAMES.items()}


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, "unknown")


MOVE_STATE_NAMES: dict[int, str] = {
    pb.Move.STATE_UNSPECIFIED: "unknown",
    pb.Move.STATE_PENDING: "pending",
    pb.Move.STATE_DRAINING: "draining",
    pb.Move.STATE_SWITCHING: "switching",
    pb.Move.STATE_ADMITTING: "admitting",
    pb.Move.STATE_DONE: "done",
    pb.Move.STATE_ROLLING_BACK: "rolling_back",
    pb.Move.STATE_ROLLED_BACK: "rolled_back",
}
MOVE_STATES_BY_NAME: dict[str, Any] = {name: state for state, name in MOVE_STATE_NAMES.items()}
