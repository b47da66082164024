"""Translation between the catalog's records and the wire messages (the only place that does it)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from registry.catalog import EngineStatus, InstanceView, LoadFigures, State
from registry.leadership import LeaderLease
from registry.moves import MoveRequest
from registry.records import MOVE_STATES, AliasRecord, MoveRecord, TenantRecord
from registry.validation import CAPACITY_MAX
from tidepool.registry.v1 import registry_pb2 as pb

STATE_TO_PB = {
    State.READY: pb.INSTANCE_STATE_READY,
    State.DRAINING: pb.INSTANCE_STATE_DRAINING,
    State.SWITCHING: pb.INSTANCE_STATE_SWITCHING,
    State.STALLED: pb.INSTANCE_STATE_STALLED,
    State.UNHEALTHY: pb.INSTANCE_STATE_UNHEALTHY,
    State.UNKNOWN: pb.INSTANCE_STATE_UNKNOWN,
    State.FLAPPING: pb.INSTANCE_STATE_FLAPPING,
}

ENGINE_STATUS_FROM_PB = {
    pb.ENGINE_STATUS_UNSPECIFIED: EngineStatus.SERVING,
    pb.ENGINE_STATUS_SERVING: EngineStatus.SERVING,
    pb.ENGINE_STATUS_DRAINING: EngineStatus.DRAINING,
    pb.ENGINE_STATUS_SWITCHING: EngineStatus.SWITCHING,
}


def _timestamp(wall: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(wall * 1e9))
    return stamp


LOAD_PER_SLOT_MAX = 64
"""In-flight and queued figures above this many per slot are clamped to it."""


def load_from_pb(load: pb.Load) -> LoadFigures:
    """The reported load, with figures no engine can mean clamped to sane bounds.

    Clamped, not refused: the heartbeat that carries the load is also the engine's
    liveness, so refusing it over an advisory figure would turn a counter bug into an
    outage. Slots are at most CAPACITY_MAX; in-flight and queued at most
    LOAD_PER_SLOT_MAX times the slots (one slot when none is reported), so one engine's
    uint32 garbage cannot dominate pool totals, scheduler decisions or `ctl top`.
    """
    return load_into(LoadFigures(), load)


def load_into(figures: LoadFigures, load: pb.Load) -> LoadFigures:
    """`load_from_pb`, rewriting `figures` in place (a heartbeat allocates nothing)."""
    gpu = load.gpu
    slots = min(load.slots, CAPACITY_MAX)
    bound = LOAD_PER_SLOT_MAX * max(slots, 1)
    figures.in_flight = min(load.in_flight, bound)
    figures.queued = min(load.queued, bound)
    figures.slots = slots
    figures.progress = load.progress
    figures.gpu_present = gpu.present
    figures.gpu_name = gpu.name[:128]
    figures.gpu_utilization_percent = min(gpu.utilization_percent, 100)
    figures.gpu_memory_used_bytes = gpu.memory_used_bytes
    figures.gpu_memory_total_bytes = gpu.memory_total_bytes
    return figures


def load_to_pb(load: LoadFigures) -> pb.Load:
    return pb.Load(
        in_flight=load.in_flight,
        queued=load.queued,
        slots=load.slots,
        progress=load.progress,
        gpu=pb.GpuStats(
            present=load.gpu_present,
            name=load.gpu_name,
            utilization_percent=load.gpu_utilization_percent,
            memory_used_bytes=load.gpu_memory_used_bytes,
            memory_total_bytes=load.gpu_memory_total_bytes,
        ),
    )


def instance_to_pb(view: InstanceView) -> pb.Instance:
    record = view.record
    message = pb.Instance(
        id=record.id,
        service=record.service,
        address=record.address,
        weight=record.weight,
        effective_weight=view.effective_weight,
        capacity=record.capacity,
        labels=dict(view.labels),
        state=STATE_TO_PB[view.state],
        load=load_to_pb(view.report.load),
        registered_at=_timestamp(record.registered_at),
        admin_drained=record.admin_drained,
        weight_overridden=record.weight_override is not None,
    )
    if view.report.heartbeat_wall is not None:
        message.last_heartbeat_at.CopyFrom(_timestamp(view.report.heartbeat_wall))
    return message


def alias_to_pb(alias: AliasRecord) -> pb.Alias:
    return pb.Alias(name=alias.name, selector=alias.selector, service=alias.service)


def tenant_to_pb(tenant: TenantRecord) -> pb.TenantRoute:
    return pb.TenantRoute(tenant=tenant.tenant, lang=tenant.lang, aliases=list(tenant.aliases))


MOVE_STATE_TO_PB: dict[str, Any] = {
    name: getattr(pb.Move, "STATE_" + name.upper()) for name in MOVE_STATES
}
MOVE_STATE_FROM_PB = {number: name for name, number in MOVE_STATE_TO_PB.items()}


def move_to_pb(move: MoveRecord) -> pb.Move:
    return pb.Move(
        id=move.id,
        instance_id=move.instance_id,
        from_pool=move.from_pool,
        to_pool=move.to_pool,
        state=MOVE_STATE_TO_PB[move.state],
        reason=move.reason,
        started_at=_timestamp(move.started_at),
        updated_at=_timestamp(move.updated_at),
        from_lang=move.from_lang,
        to_lang=move.to_lang,
    )


def move_request_from_pb(move: pb.Move) -> MoveRequest:
    """Decode a PutMove; an unset state is "" (pending for a new move, unchanged for an update)."""
    state = MOVE_STATE_FROM_PB.get(move.state, "" if not move.state else "?")
    return MoveRequest(
        id=move.id,
        instance_id=move.instance_id,
        to_pool=move.to_pool,
        state=state,
        reason=move.reason,
        from_pool=move.from_pool,
        from_lang=move.from_lang,
        to_lang=move.to_lang,
    )


def leadership_to_pb(
    lease: LeaderLease | None, fence: int, caller: str, now: float
) -> pb.Leadership:
    message = pb.Leadership(fence=fence)
    if lease is not None:
        message.holder = lease.holder
        message.fence = lease.fence
        message.granted = lease.holder == caller
        message.remaining.FromNanoseconds(int(lease.remaining_s(now) * 1e9))
    return message
