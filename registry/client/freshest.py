"""One fleet listing from several registry replicas, each engine as its owner reports it.

Replicas share records through etcd, but an engine's load travels only on its
heartbeat stream, to the one replica it is attached to (heartbeats are never
etcd writes): the other replicas hold its liveness, not its load. A client that
needs the fleet's load (the scheduler sizing pools, `ctl top`) lists every
replica it can reach and keeps, per instance, the entry with the latest
heartbeat.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidepool.registry.v1 import registry_pb2 as pb


def freshest(listings: Sequence[Sequence[pb.Instance]]) -> list[pb.Instance]:
    """Every instance any listing names (in first-seen order), from the listing whose
    `last_heartbeat_at` is latest for it; ties go to the earlier listing."""
    chosen: dict[str, pb.Instance] = {}
    for listing in listings:
        for instance in listing:
            held = chosen.get(instance.id)
            if held is None or _heard_at(instance) > _heard_at(held):
                chosen[instance.id] = instance
    return list(chosen.values())


def _heard_at(instance: pb.Instance) -> int:
    stamp = instance.last_heartbeat_at
    return stamp.seconds * 1_000_000_000 + stamp.nanos
