"""A replica's in-memory catalog kept in step with etcd through one watch on the prefix.

The watch starts at the revision the replica loaded; each event is applied under
the core's lock (so it never interleaves with a local write in flight) and only
when it is newer than what this replica already knows for that key (its own
writes are applied locally before their echo arrives). After a compaction, or
when etcd's revision went backwards (restored from a backup), the mirror lists
the whole prefix again and applies the difference. A broken watch moves to the
next etcd member and resumes from the last revision seen, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from registry import published_pools
from registry.core import RegistryCore
from registry.etcd_leader import LeaderRecord
from registry.etcd_liveness import Liveness
from registry.published_pools import PublishedPools
from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    StoreSnapshot,
    TenantRecord,
)
from registry.store.etcd import DECODERS, EtcdStore
from registry.store.etcd_client import EtcdClient, EtcdError, WatchStream, prefix_end
from tidepool.etcd.v3 import rpc_pb2 as etcd

log = logging.getLogger("tidepool.registry.etcd")
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
QUIET_S = 2.0
SILENT_S = 2.0

AttachedHook = Callable[[str, Liveness | None], None]
"""Called (under the core lock) with an engine id and its owner's word, None when deleted."""


@dataclass
class MirrorStats:
    events: int = 0
    relists: int = 0
    reconnects: int = 0


class EtcdMirror:
    """Applies other replicas' changes to this replica's catalog."""

    def __init__(
        self,
        core: RegistryCore,
        store: EtcdStore,
        client: EtcdClient,
        on_attached: AttachedHook,
        on_instance: Callable[[str], None],
        grace_s: float,
    ) -> None:
        self.core = core
        self.store = store
        self.client = client
        """The mirror's own connection: moving its watch to another member must not cancel
        writes in flight on the store's."""
        self.on_attached = on_attached
        self.on_instance = on_instance
        """Called after an instance record arrived, so remote liveness can be applied to it."""
        self.grace_s = grace_s
        self.revision = store.loaded.revision
        self.stats = MirrorStats()
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        loop = asyncio.get_running_loop()
        while True:
            opened_at = loop.time()
            try:
                await self._follow()
            except EtcdError as exc:
                log.warning("etcd watch from revision %d broke: %s", self.revision + 1, exc)
            self.stats.reconnects += 1
            await self.client.rotate()
            if loop.time() - opened_at > QUIET_S + SILENT_S:
                backoff = BACKOFF_MIN_S  # it served a while: this is a new failure, not a run
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _follow(self) -> None:
        root = self.store.root
        stream = await self.client.watch(root, prefix_end(root), self.revision + 1)
        try:
            while True:
                response = await self._next(stream)
                if response.compact_revision or (
                    response.created and response.header.revision < self.revision
                ):
                    await self.relist()
                    return  # watch again from the listed revision
                if response.canceled:
                    raise EtcdError(f"etcd canceled the watch: {response.cancel_reason}")
                if response.events:
                    await self.apply(response.events)
                    self.revision = max(self.revision, response.events[-1].kv.mod_revision)
                elif not response.created:
                    # A progress notification: every event up to here was delivered.
                    self.revision = max(self.revision, response.header.revision)
                self.caught_up.set()
        finally:
            stream.cancel()

    @staticmethod
    async def _next(stream: WatchStream) -> etcd.WatchResponse:
        """The next response; after `QUIET_S` of none, ask for progress, and give the member
        `SILENT_S` to answer before taking the stream for broken (a hung member, or a
        connection that died without a reset, would otherwise hold the watch forever)."""
        try:
            return await stream.next(QUIET_S)
        except TimeoutError:
            await stream.request_progress()
        try:
            return await stream.next(SILENT_S)
        except TimeoutError:
            raise EtcdError(f"etcd watch: no answer within {SILENT_S:g}s") from None

    async def apply(self, events: Sequence[etcd.Event]) -> None:
        async with self.core.lock:
            for event in events:
                kv = event.kv
                deleted = event.type == etcd.Event.DELETE
                if not self.store.known.is_new(kv.key, kv.mod_revision, deleted=deleted):
                    continue
                self.stats.events += 1
                try:
                    self._apply_one(kv, deleted=deleted)
                except ValueError as exc:
                    log.error("etcd key %r: ignored, damaged: %s", kv.key, exc)

    def _apply_one(self, kv: etcd.KeyValue, *, deleted: bool) -> None:
        place = self.store.split(kv.key)
        if place is None:
            return
        kind, parts = place
        value = None if deleted else kv.value
        if kind == "leader":
            self.apply_leader(None if value is None else (value, kv.create_revision))
        elif kind == "pools":
            self.apply_pools(value)
        elif kind == "fence":
            if value is not None:
                leadership = self.core.leadership
                leadership.fence = max(leadership.fence, int(value))
        elif kind == "attached":
            self.on_attached(parts[0], None if value is None else Liveness.decode(value))
        elif value is None:
            self._delete(kind, parts)
        else:
            self._put(kind, DECODERS[kind](value))

    def apply_leader(self, leader: tuple[bytes, int] | None) -> None:
        """The scheduler's leader key changed: every replica now checks fences against it."""
        if leader is None:
            self.core.leadership.hold_from_etcd(None)
            return
        record = LeaderRecord.decode(leader[0])
        self.store.leader_created[record.fence] = leader[1]
        self.core.leadership.hold_from_etcd(record.lease(self.core.clock()))

    def apply_pools(self, body: bytes | None) -> None:
        """The leader published its pool status through some replica: answer with it here too."""
        core = self.core
        if body is None:
            core.pools = PublishedPools()
            return
        try:
            core.pools = published_pools.decode(body, core.wall(), core.clock())
        except ValueError as exc:
            log.error("etcd key %s: ignored, damaged: %s", self.store.pools_key.decode(), exc)

    def _put(self, kind: str, record: object) -> None:
        core, now = self.core, self.core.clock()
        if isinstance(record, InstanceRecord):
            self._put_instance(record)
        elif isinstance(record, AliasRecord):
            core.hub.publish(core.catalog.put_alias(record, now))
        elif isinstance(record, TenantRecord):
            core.hub.publish(core.catalog.put_tenant(record, now))
        elif isinstance(record, RetiredOverrides):
            core.retired[record.id] = record
        elif isinstance(record, MoveRecord):
            core.moves.put(record)

    def _put_instance(self, record: InstanceRecord) -> None:
        core, now = self.core, self.core.clock()
        if record.id not in core.leases.leases:
            # Not heard from here yet: unknown until its owner's `attached` key says more.
            core.leases.grant(record.id, now, self.grace_s)
        core.hub.publish(core.catalog.put(record, now, now))
        self.on_instance(record.id)

    def _delete(self, kind: str, parts: list[str]) -> None:
        core, now = self.core, self.core.clock()
        name = parts[0]
        if kind == "instances":
            attachment = core.attachments.pop(name, None)
            if attachment is not None:
                attachment.superseded.set()
            core.hub.publish(core.catalog.remove(name, now))
        elif kind == "aliases" and name in core.catalog.aliases:
            core.hub.publish(core.catalog.delete_alias(name, now))
        elif kind == "tenants" and (name, parts[1]) in core.catalog.tenants:
            core.hub.publish(core.catalog.delete_tenant(name, parts[1], now))
        elif kind == "retired":
            core.retired.pop(name, None)
        elif kind == "moves":
            core.moves.drop(name)

    async def relist(self) -> None:
        """List the whole prefix and apply the difference (after compaction or a restore)."""
        response = await self.client.range(self.store.root, prefix_end(self.store.root))
        self.stats.relists += 1
        snapshot = self.store.decode(list(response.kvs), response.header.revision)
        async with self.core.lock:
            self._converge(snapshot)
        self.revision = response.header.revision
        log.info("etcd mirror re-listed at revision %d", self.revision)

    def _converge(self, snapshot: StoreSnapshot) -> None:
        core = self.core
        catalog = core.catalog
        listed = {r.id for r in snapshot.instances}
        for gone in [i for i in catalog.records if i not in listed]:
            self._delete("instances", [gone])
        for record in snapshot.instances:
            if catalog.records.get(record.id) != record:
                self._put_instance(record)
        self._converge_routing(snapshot)
        core.retired = {r.id: r for r in snapshot.retired}
        core.moves.moves.clear()
        core.moves.load(snapshot.moves)
        core.leadership.fence = max(core.leadership.fence, snapshot.fence)
        self.apply_leader(self.store.loaded.leader)
        self.apply_pools(self.store.loaded.pools)
        attached = self.store.loaded.attached
        for instance_id in list(catalog.records):
            value = attached.get(instance_id)
            self.on_attached(instance_id, None if value is None else Liveness.decode(value[0]))

    def _converge_routing(self, snapshot: StoreSnapshot) -> None:
        catalog, now = self.core.catalog, self.core.clock()
        aliases = {a.name for a in snapshot.aliases}
        for gone in [a for a in catalog.aliases if a not in aliases]:
            self._delete("aliases", [gone])
        for alias in snapshot.aliases:
            if catalog.aliases.get(alias.name) != alias:
                self.core.hub.publish(catalog.put_alias(alias, now))
        tenants = {(t.tenant, t.lang) for t in snapshot.tenants}
        for tenant, lang in [k for k in catalog.tenants if k not in tenants]:
            self._delete("tenants", [tenant, lang])
        for route in snapshot.tenants:
            if catalog.tenants.get((route.tenant, route.lang)) != route:
                self.core.hub.publish(catalog.put_tenant(route, now))
