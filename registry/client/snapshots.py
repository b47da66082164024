"""Putting a chunked watch snapshot back together (the consumer side of a Watch).

A large snapshot arrives as several KIND_SNAPSHOT events of one revision, all but
the last with `snapshot_more`; a watcher must apply it once, whole, or a half
snapshot would make the instances not yet received look gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidepool.registry.v1 import registry_pb2 as pb


@dataclass
class SnapshotChunks:
    """Feed every watch event to `add`; apply what it returns (None: wait for more)."""

    _partial: pb.WatchEvent | None = None

    def add(self, event: pb.WatchEvent) -> pb.WatchEvent | None:
        if event.kind != pb.WatchEvent.KIND_SNAPSHOT:
            self._partial = None  # a snapshot cut short: the next resync sends it again
            return event
        partial = self._partial
        if partial is not None and partial.revision == event.revision:
            partial.instances.extend(event.instances)
        else:
            partial = pb.WatchEvent()
            partial.CopyFrom(event)
        if event.snapshot_more:
            self._partial = partial
            return None
        self._partial = None
        partial.snapshot_more = False
        return partial
