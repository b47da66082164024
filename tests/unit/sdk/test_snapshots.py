"""Chunked watch snapshots are handed on once, whole, and only then."""

from __future__ import annotations

from registry.client import SnapshotChunks
from tidepool.registry.v1 import registry_pb2 as pb

SNAPSHOT = pb.WatchEvent.KIND_SNAPSHOT


def _chunk(revision: int, *ids: str, more: bool) -> pb.WatchEvent:
    return pb.WatchEvent(
        kind=SNAPSHOT,
        revision=revision,
        instances=[pb.Instance(id=i) for i in ids],
        snapshot_more=more,
    )


def test_chunks_are_held_until_the_last_and_then_given_whole() -> None:
    chunks = SnapshotChunks()
    assert chunks.add(_chunk(4, "a", "b", more=True)) is None
    assert chunks.add(_chunk(4, "c", more=True)) is None
    whole = chunks.add(_chunk(4, "d", more=False))
    assert whole is not None
    assert [i.id for i in whole.instances] == ["a", "b", "c", "d"]
    assert not whole.snapshot_more


def test_an_unchunked_snapshot_and_other_events_pass_straight_through() -> None:
    chunks = SnapshotChunks()
    single = _chunk(2, "a", more=False)
    assert chunks.add(single) == single
    upsert = pb.WatchEvent(kind=pb.WatchEvent.KIND_UPSERT, revision=3)
    assert chunks.add(upsert) is upsert


def test_a_new_revision_drops_an_unfinished_snapshot() -> None:
    chunks = SnapshotChunks()
    chunks.add(_chunk(4, "a", more=True))
    whole = chunks.add(_chunk(9, "z", more=False))
    assert whole is not None
    assert [i.id for i in whole.instances] == ["z"]
