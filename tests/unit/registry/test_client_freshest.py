"""Merging several replicas' listings: each instance from the replica that heard it last."""

from __future__ import annotations

from registry.client import freshest
from tidepool.registry.v1 import registry_pb2 as pb


def _instance(instance_id: str, heard_s: int, in_flight: int, nanos: int = 0) -> pb.Instance:
    instance = pb.Instance(id=instance_id, load=pb.Load(in_flight=in_flight))
    instance.last_heartbeat_at.seconds = heard_s
    instance.last_heartbeat_at.nanos = nanos
    return instance


def test_each_instance_comes_from_the_listing_that_heard_it_last() -> None:
    owner_a = [_instance("e-1", 100, 5), _instance("e-2", 10, 0)]
    owner_b = [_instance("e-1", 10, 0), _instance("e-2", 100, 0, nanos=1), _instance("e-3", 0, 1)]
    merged = freshest([owner_a, owner_b])
    assert [(i.id, i.load.in_flight, i.last_heartbeat_at.seconds) for i in merged] == [
        ("e-1", 5, 100),
        ("e-2", 0, 100),
        ("e-3", 1, 0),
    ]


def test_a_tie_keeps_the_earlier_listing() -> None:
    merged = freshest([[_instance("e-1", 7, 1)], [_instance("e-1", 7, 2)]])
    assert [i.load.in_flight for i in merged] == [1]
