"""Merging several replicas' listings: the first one's records, each engine's load from the
replica that heard it last."""

from __future__ import annotations

from registry.client import freshest
from tidepool.registry.v1 import registry_pb2 as pb


def _instance(instance_id: str, heard_s: int, in_flight: int, nanos: int = 0) -> pb.Instance:
    instance = pb.Instance(id=instance_id, load=pb.Load(in_flight=in_flight))
    instance.last_heartbeat_at.seconds = heard_s
    instance.last_heartbeat_at.nanos = nanos
    return instance


def test_each_instance_takes_its_load_from_the_listing_that_heard_it_last() -> None:
    first = [_instance("e-1", 100, 5), _instance("e-2", 10, 0)]
    first[1].weight = 300  # an admin change made through the first replica
    other = [_instance("e-1", 10, 0), _instance("e-2", 100, 7, nanos=1), _instance("e-3", 0, 1)]
    merged = freshest([first, other])
    assert [(i.id, i.load.in_flight, i.last_heartbeat_at.seconds) for i in merged] == [
        ("e-1", 5, 100),
        ("e-2", 7, 100),
    ], "e-3 is not in the first listing (it left, or has not reached it): not brought back"
    assert merged[1].weight == 300, "the record stays the first replica's"
    assert first[1].load.in_flight == 0, "the listings given are not changed"


def test_a_tie_keeps_the_first_listing() -> None:
    merged = freshest([[_instance("e-1", 7, 1)], [_instance("e-1", 7, 2)]])
    assert [i.load.in_flight for i in merged] == [1]
