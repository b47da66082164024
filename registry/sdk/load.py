"""What an engine reports at every heartbeat: its status, its load and its GPU.

`heartbeat_request` builds the message from them; it is pure, so what goes on
the wire can be checked without a registry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from registry.sdk.gpu import GpuSample
from tidepool.registry.v1 import registry_pb2


class EngineStatus(enum.IntEnum):
    """What the engine says it is doing; values are the proto's `EngineStatus`."""

    SERVING = 1
    DRAINING = 2
    SWITCHING = 3


@dataclass(frozen=True)
class LoadReport:
    """Current load; `progress` counts finished work items and only ever grows."""

    in_flight: int
    queued: int
    slots: int
    progress: int


class LoadSource(Protocol):
    """The engine's own request accounting, read at every heartbeat (must not block)."""

    def load(self) -> LoadReport: ...


def heartbeat_request(
    instance_id: str, secret: str, status: EngineStatus, load: LoadReport, gpu: GpuSample
) -> Any:
    """The `HeartbeatRequest` that reports `status`, `load` and `gpu` for `instance_id`."""
    return registry_pb2.HeartbeatRequest(
        instance_id=instance_id,
        secret=secret,
        status=f"ENGINE_STATUS_{status.name}",
        load=registry_pb2.Load(
            in_flight=load.in_flight,
            queued=load.queued,
            slots=load.slots,
            progress=load.progress,
            gpu=registry_pb2.GpuStats(
                present=gpu.present,
                name=gpu.name,
                utilization_percent=gpu.utilization_percent,
                memory_used_bytes=gpu.memory_used_bytes,
                memory_total_bytes=gpu.memory_total_bytes,
            ),
        ),
    )
