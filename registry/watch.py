"""Change streams: each watcher gets a snapshot, then deltas, from a bounded queue.

A watcher that falls behind (its queue would exceed `max_pending`, or two events per
instance in a larger fleet) loses its queue and is marked for a fresh snapshot
instead: memory stays bounded and the watcher still converges on the current view.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.catalog import Catalog, Change, InstanceView
from registry.convert import alias_to_pb, instance_to_pb, tenant_to_pb
from tidepool.registry.v1 import registry_pb2 as pb

SNAPSHOT_CHUNK = 500
"""Instances per snapshot chunk at most (fewer when they are large: `max_chunk_bytes`)."""
DEFAULT_MAX_CHUNK_BYTES = 512 * 1024
"""Half the registry's default message limit: room for the aliases and tenants too."""

DEFAULT_MAX_PENDING = 1024
RESYNC_EVENTS_PER_INSTANCE = 2


def fit_pages(instances: list[pb.Instance], count: int, max_bytes: int) -> list[list[pb.Instance]]:
    """Split `instances` into runs of at most `count` and at most `max_bytes` on the
    wire (a single instance larger than that still gets a run of its own)."""
    pages: list[list[pb.Instance]] = []
    page: list[pb.Instance] = []
    size = 0
    for instance in instances:
        # A repeated field costs its tag and length prefix on top of the message.
        cost = instance.ByteSize() + 6
        if page and (len(page) == count or size + cost > max_bytes):
            pages.append(page)
            page, size = [], 0
        page.append(instance)
        size += cost
    if page:
        pages.append(page)
    return pages


@dataclass(frozen=True)
class WatchTarget:
    """Every instance of `service`, or only those `alias` selects."""

    service: str = ""
    alias: str = ""


@dataclass(frozen=True)
class _Pending:
    change: Change
    instance: pb.Instance | None


@dataclass(eq=False)
class Watcher:
    """One subscriber's queue, membership and resync flag."""

    target: WatchTarget
    max_pending: int
    queue: deque[_Pending] = field(default_factory=deque)
    members: set[str] = field(default_factory=set)
    resync: bool = True
    closed: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    unwritten: list[float] = field(default_factory=list)
    """When each change in the events last handed out was made; `written` times them."""

    def offer(self, batch: list[_Pending], limit: int | None = None) -> bool:
        """Queue a batch; False when the watcher fell behind (past `limit`, by default
        `max_pending`) and now needs a snapshot."""
        if self.resync:
            return True
        if len(self.queue) + len(batch) > (self.max_pending if limit is None else limit):
            self.queue.clear()
            self.resync = True
            self.wakeup.set()
            return False
        self.queue.extend(batch)
        self.wakeup.set()
        return True


@dataclass
class WatchHub:
    """Fans catalog changes out to every watcher."""

    catalog: Catalog
    max_pending: int = DEFAULT_MAX_PENDING
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    on_resync: Callable[[], None] = lambda: None
    on_delivered: Callable[[float], None] = lambda _created_at: None
    """Called with each change's `created_at` once its event is written to a watcher."""
    watchers: set[Watcher] = field(default_factory=set)
    listeners: list[Callable[[list[Change]], None]] = field(default_factory=list)
    """Called with every non-empty batch of changes (the Consul API's blocking queries)."""

    def subscribe(self, target: WatchTarget) -> Watcher:
        if target.alias:
            self.catalog.selector(target.alias)  # NotFoundError for an unknown alias
        watcher = Watcher(target, self.max_pending)
        watcher.wakeup.set()
        self.watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        watcher.closed = True
        watcher.wakeup.set()
        self.watchers.discard(watcher)

    def publish(self, changes: list[Change]) -> None:
        """Queue changes for every watcher; the wire form of an instance is built once."""
        if not changes:
            return
        for listener in self.listeners:
            listener(changes)
        if not self.watchers:
            return
        batch = [
            _Pending(c, instance_to_pb(c.view) if c.view is not None else None) for c in changes
        ]
        # A resync costs a snapshot of the whole fleet, so a watcher may fall behind by
        # two events per instance before it gets one: thousands of engines registering
        # at once (a registry restart) must not turn every watcher into a snapshot storm.
        # The queued items are shared by all watchers: one costs a slot per event.
        limit = max(self.max_pending, RESYNC_EVENTS_PER_INSTANCE * len(self.catalog.records))
        for watcher in self.watchers:
            if not watcher.offer(batch, limit):
                self.on_resync()

    def written(self, watcher: Watcher) -> None:
        """The events `next_events` last returned are written: time each change's trip.

        Timed after the write, not when the event is built, so a stream that is slow
        to take its events (or a loop too busy to write them) shows in the fan-out.
        """
        for created_at in watcher.unwritten:
            self.on_delivered(created_at)
        watcher.unwritten.clear()

    async def next_events(self, watcher: Watcher) -> list[pb.WatchEvent]:
        """Wait for the watcher's next events: a snapshot when due, else its deltas."""
        watcher.unwritten.clear()
        while True:
            await watcher.wakeup.wait()
            watcher.wakeup.clear()
            if watcher.closed:
                return []
            if watcher.resync:
                watcher.resync = False
                watcher.queue.clear()
                return self._snapshot(watcher)
            pending = list(watcher.queue)
            watcher.queue.clear()
            events = self._deltas(watcher, pending)
            if events:
                return events

    def _snapshot(self, watcher: Watcher) -> list[pb.WatchEvent]:
        """The whole view in chunks (SNAPSHOT_CHUNK instances, `max_chunk_bytes`), so that
        no message outgrows the size limit however large the fleet; one at the least."""
        views = self._scope(watcher.target)
        watcher.members = {v.id for v in views}
        revision = self.catalog.revision
        chunks = fit_pages([instance_to_pb(v) for v in views], SNAPSHOT_CHUNK, self.max_chunk_bytes)
        events = [
            pb.WatchEvent(
                kind=pb.WatchEvent.KIND_SNAPSHOT,
                revision=revision,
                instances=chunk,
                snapshot_more=True,
            )
            for chunk in chunks or [[]]
        ]
        events[0].aliases.extend(alias_to_pb(a) for _, a in sorted(self.catalog.aliases.items()))
        events[0].tenants.extend(tenant_to_pb(t) for _, t in sorted(self.catalog.tenants.items()))
        events[-1].snapshot_more = False
        return events

    def _scope(self, target: WatchTarget) -> list[InstanceView]:
        if target.alias:
            if target.alias not in self.catalog.aliases:
                return []
            return self.catalog.alias_members(target.alias)
        return self.catalog.views(target.service or None)

    def _deltas(self, watcher: Watcher, pending: list[_Pending]) -> list[pb.WatchEvent]:
        events: list[pb.WatchEvent] = []
        for item in pending:
            event = self._delta(watcher, item)
            if event is None:
                continue
            watcher.unwritten.append(item.change.created_at)
            last = events[-1] if events else None
            if last is not None and last.kind == event.kind and event.kind != event.KIND_ROUTING:
                last.instances.extend(event.instances)  # coalesce a run of the same kind
                last.revision = event.revision
            else:
                events.append(event)
        return events

    def _delta(self, watcher: Watcher, item: _Pending) -> pb.WatchEvent | None:
        change, target = item.change, watcher.target
        if change.kind == "routing":
            if target.alias:
                watcher.resync = True  # the selector may have changed: start over
                watcher.wakeup.set()
                return None
            return self._routing_event(change.revision)
        view = change.view
        assert view is not None
        assert item.instance is not None
        in_scope = self._in_scope(target, view) and change.kind == "upsert"
        was_member = view.id in watcher.members
        if in_scope:
            watcher.members.add(view.id)
            kind = pb.WatchEvent.KIND_UPSERT
        elif was_member:
            watcher.members.discard(view.id)
            kind = pb.WatchEvent.KIND_DELETE
        else:
            return None
        return pb.WatchEvent(kind=kind, revision=change.revision, instances=[item.instance])

    def _in_scope(self, target: WatchTarget, view: InstanceView) -> bool:
        if target.alias:
            alias = self.catalog.aliases.get(target.alias)
            return (
                alias is not None
                and view.record.service == alias.service
                and self.catalog.selector(target.alias).matches(view.labels)
            )
        return not target.service or view.record.service == target.service

    def _routing_event(self, revision: int) -> pb.WatchEvent:
        return pb.WatchEvent(
            kind=pb.WatchEvent.KIND_ROUTING,
            revision=revision,
            aliases=[alias_to_pb(a) for _, a in sorted(self.catalog.aliases.items())],
            tenants=[tenant_to_pb(t) for _, t in sorted(self.catalog.tenants.items())],
        )
