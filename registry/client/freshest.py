"""One fleet listing from several registry replicas, each engine as its owner reports it.

Replicas share records through etcd, but an engine's load travels only on its
heartbeat stream, to the one replica it is attached to (heartbeats are never
etcd writes): the other replicas hold its liveness, not its load. A client that
needs the fleet's load (the scheduler sizing pools, `ctl top`) lists every
replica it can reach and takes each engine's load from the one that heard its
latest heartbeat.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidepool.registry.v1 import registry_pb2 as pb


def freshest(listings: Sequence[Sequence[pb.Instance]]) -> list[pb.Instance]:
    """The first listing (the replica the client uses for everything else), with each
    instance's load and last heartbeat taken from whichever listing heard it last.

    Only the load moves between listings: the records (labels, weight, drain, state) are
    the first replica's, so an admin change made through it shows at once, and an instance
    another replica still lists after it left is not brought back."""
    heard: dict[str, pb.Instance] = {}
    for listing in listings[1:]:
        for instance in listing:
            held = heard.get(instance.id)
            if held is None or _heard_at(instance) > _heard_at(held):
                heard[instance.id] = instance
    merged: list[pb.Instance] = []
    for instance in listings[0] if listings else ():
        other = heard.get(instance.id)
        if other is not None and _heard_at(other) > _heard_at(instance):
            instance = pb.Instance.FromString(instance.SerializeToString())
            instance.load.CopyFrom(other.load)
            instance.last_heartbeat_at.CopyFrom(other.last_heartbeat_at)
        merged.append(instance)
    return merged


def _heard_at(instance: pb.Instance) -> int:
    stamp = instance.last_heartbeat_at
    return stamp.seconds * 1_000_000_000 + stamp.nanos
