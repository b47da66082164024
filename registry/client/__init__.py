"""What every client of the registry that is not an engine shares: the router, `ctl`
and the scheduler read instance and move states as words, put chunked watch
snapshots back together, and merge several replicas' listings the same way.

Everything is importable from here; the submodules are an implementation detail.
"""

from __future__ import annotations

from registry.client.freshest import freshest
from registry.client.snapshots import SnapshotChunks
from registry.client.states import (
    MOVE_STATE_NAMES,
    MOVE_STATES_BY_NAME,
    STATE_NAMES,
    STATES_BY_NAME,
    state_name,
)

__all__ = [
    "MOVE_STATES_BY_NAME",
    "MOVE_STATE_NAMES",
    "STATES_BY_NAME",
    "STATE_NAMES",
    "SnapshotChunks",
    "freshest",
    "state_name",
]
