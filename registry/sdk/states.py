"""Instance states as the words operators see, in ctl listings and the router's view file."""

from __future__ import annotations

from tidepool.registry.v1 import registry_pb2 as pb

STATE_NAMES: dict[int, str] = {
    pb.INSTANCE_STATE_UNSPECIFIED: "unknown",
    pb.INSTANCE_STATE_READY: "ready",
    pb.INSTANCE_STATE_DRAINING: "draining",
    pb.INSTANCE_STATE_SWITCHING: "switching",
    pb.INSTANCE_STATE_STALLED: "stalled",
    pb.INSTANCE_STATE_UNHEALTHY: "unhealthy",
}
STATES_BY_NAME: dict[str, int] = {name: state for state, name in STATE_NAMES.items()}


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, "unknown")
