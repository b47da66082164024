"""A registry replica on etcd: its lease, its mirror of etcd, and its engines' attachments.

Any number of replicas serve the same state. Durable changes go through etcd (the
store) and reach every replica through its mirror. Heartbeats never become etcd
writes: an engine heartbeats to one replica (its owner), which writes the engine's
`attached` key, under the replica's own etcd lease, only when its liveness changes
(attached, unhealthy, stalled, flapping, draining/switching). The other replicas
hold that word; when the owner dies its lease lapses, etcd deletes the keys, and
the engines get `--handover-grace` to re-attach to another replica before they can
expire. See the README's "Registry replicas on etcd" for the write rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass, field

from registry.catalog import Change
from registry.config import RegistryConfig
from registry.core import RegistryCore
from registry.etcd_lease import LeaseKeeper
from registry.etcd_liveness import Liveness, hand_over, hold_remote, observe, remote_report
from registry.etcd_metrics import EtcdCollector, EtcdFigures
from registry.etcd_mirror import EtcdMirror
from registry.store import EmbeddedStore, Store
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import EtcdClient, EtcdError, EtcdSettings
from tidepool.etcd.v3 import rpc_pb2 as etcd

log = logging.getLogger("tidepool.registry.etcd")
RECONCILE_S = 0.05
"""How often new heartbeat streams are looked for (a claim waits at most this long)."""
BATCH = 64
"""Attachment writes per etcd transaction (etcd allows 128 operations in one)."""
RETRY_S = 0.2


def open_store(config: RegistryConfig) -> Store:
    """The store `--store` names."""
    if config.store == "etcd":
        settings = EtcdSettings(
            config.etcd_endpoint_list,
            config.etcd_ca,
            config.etcd_cert,
            config.etcd_key,
            config.etcd_timeout_s,
        )
        return EtcdStore(settings, config.etcd_prefix)
    return EmbeddedStore(config.data_dir, allow_empty=config.allow_empty_store)


@dataclass
class Attachments:
    """Which engines this replica owns, what it last wrote for each, and others' word."""

    owned: set[str] = field(default_factory=set)
    written: dict[str, bytes] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    remote: dict[str, Liveness] = field(default_factory=dict)


class Replica:
    """Runs the etcd side of one registry process next to its core."""

    def __init__(
        self, core: RegistryCore, store: EtcdStore, *, lease_ttl_s: int, grace_s: float
    ) -> None:
        self.core = core
        self.store = store
        self.grace_s = grace_s
        self.replica_id = f"r-{uuid.uuid4().hex[:12]}"
        self.state = Attachments()
        self.writes = 0
        """etcd requests made for attachments (each a put, delete or a batch transaction)."""
        self._wake = asyncio.Event()
        self._client = EtcdClient(store.settings)
        self.keeper = LeaseKeeper(EtcdClient(store.settings), lease_ttl_s, self._new_lease)
        self.mirror = EtcdMirror(
            core, store, EtcdClient(store.settings), self._attached, self._instance, grace_s
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: EtcdCollector | None = None

    def figures(self) -> EtcdFigures:
        stats = self.mirror.stats
        return EtcdFigures(
            self.writes,
            stats.events,
            stats.reconnects,
            stats.relists,
            self.keeper.grants,
            len(self.state.owned),
            len(self.state.remote),
        )

    async def start(self) -> None:
        """Take a lease, apply others' attachments as loaded, then follow etcd."""
        await self.keeper.grant()
        async with self.core.lock:
            for instance_id, (value, _revision) in self.store.loaded.attached.items():
                self._attached(instance_id, Liveness.decode(value))
            self.mirror.apply_leader(self.store.loaded.leader)
            self.mirror.apply_pools(self.store.loaded.pools)
        self.core.hub.listeners.append(self._observe)
        self._collector = EtcdCollector(self.figures)
        self.core.metrics.registry.register(self._collector)
        for name, work in (
            ("etcd-lease", self.keeper.run()),
            ("etcd-mirror", self.mirror.run()),
            ("etcd-attachments", self._write_forever()),
        ):
            self._tasks.add(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        """Stop following etcd and give the lease back (others start the hand-over at once)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._collector is not None:
            self.core.metrics.registry.unregister(self._collector)
            self._collector = None
        await self.keeper.revoke()
        for client in (self._client, self.mirror.client, self.keeper.client):
            await client.close()

    # --- what others say (called by the mirror under the core lock) ------------------------

    def _attached(self, instance_id: str, liveness: Liveness | None) -> None:
        state = self.state
        if liveness is None:
            if state.remote.pop(instance_id, None) is not None:
                lease = self.core.leases.leases.get(instance_id)
                if lease is not None:
                    hand_over(lease, self.core.clock(), self.grace_s)
            elif instance_id in state.owned:
                state.written.pop(instance_id, None)  # our key went (lease lapsed): write again
                self._mark(instance_id)
            return
        if liveness.replica == self.replica_id:
            return
        if instance_id in state.owned:
            self._disown(instance_id)
        state.remote[instance_id] = liveness
        self._instance(instance_id)

    def _instance(self, instance_id: str) -> None:
        """Apply the owner's word to an instance this replica does not own."""
        liveness = self.state.remote.get(instance_id)
        lease = self.core.leases.leases.get(instance_id)
        if liveness is None or lease is None or instance_id not in self.core.catalog.records:
            return
        core, now = self.core, self.core.clock()
        hold_remote(lease, liveness, now)
        core.catalog.report(
            instance_id, remote_report(core.catalog.last_report(instance_id), liveness)
        )
        core.hub.publish(core.catalog.refresh([instance_id], now))

    def _disown(self, instance_id: str) -> None:
        """Another replica holds the engine's stream now: end ours if it is still open."""
        self.state.owned.discard(instance_id)
        self.state.written.pop(instance_id, None)
        attachment = self.core.attachments.pop(instance_id, None)
        if attachment is not None:
            attachment.superseded.set()

    # --- what we say -----------------------------------------------------------------------

    def _observe(self, changes: list[Change]) -> None:
        for change in changes:
            if change.view is not None and change.view.id in self.state.owned:
                self._mark(change.view.id)

    def _mark(self, instance_id: str) -> None:
        self.state.dirty.add(instance_id)
        self._wake.set()

    def _new_lease(self, _lease_id: int) -> None:
        self.state.written.clear()
        for instance_id in self.state.owned:
            self._mark(instance_id)

    def _claim_new(self) -> None:
        """Engines that opened a heartbeat stream here since the last look are ours now."""
        for instance_id in self.core.attachments.keys() - self.state.owned:
            self.state.owned.add(instance_id)
            self.state.remote.pop(instance_id, None)
            lease = self.core.leases.leases.get(instance_id)
            if lease is not None:
                # Undo what we kept for the old owner (registry/etcd_liveness.py): our own
                # heartbeats decide from here.
                if lease.held_until == math.inf:
                    lease.held_until = None
                if lease.progress_at == -math.inf:
                    lease.progress_at = self.core.clock()
            self._mark(instance_id)

    async def _write_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECONCILE_S)
            self._wake.clear()
            self._claim_new()
            try:
                await self._flush()
            except EtcdError as exc:
                log.warning("etcd: attachments not written yet: %s", exc)
                await asyncio.sleep(RETRY_S)

    async def _flush(self) -> None:
        while self.state.dirty:
            batch = [self.state.dirty.pop() for _ in range(min(BATCH, len(self.state.dirty)))]
            try:
                await self._write(batch)
            except EtcdError:
                self.state.dirty.update(batch)
                raise

    async def _write(self, batch: list[str]) -> None:
        """One transaction: the changed attachments of `batch` put, the released ones deleted."""
        state, core = self.state, self.core
        ops: list[etcd.RequestOp] = []
        values: dict[str, bytes | None] = {}
        lease_id = self.keeper.lease_id
        for instance_id in batch:
            if instance_id not in state.owned:
                continue
            key = self.store.key("attached", instance_id)
            lease = core.leases.leases.get(instance_id)
            if lease is None or instance_id not in core.catalog.records:
                ops.append(etcd.RequestOp(request_delete_range=etcd.DeleteRangeRequest(key=key)))
                values[instance_id] = None
                continue
            value = observe(self.replica_id, lease, core.catalog.last_report(instance_id)).encode()
            if state.written.get(instance_id) != value:
                put = etcd.PutRequest(key=key, value=value, lease=lease_id)
                ops.append(etcd.RequestOp(request_put=put))
                values[instance_id] = value
        if not ops:
            return
        response = await self._client.txn(etcd.TxnRequest(success=ops))
        self.writes += 1
        for instance_id, written in values.items():
            self.store.known.note(self.store.key("attached", instance_id), response.header.revision)
            if written is None:
                state.owned.discard(instance_id)
                state.written.pop(instance_id, None)
            else:
                state.written[instance_id] = written


async def start_replica(core: RegistryCore, config: RegistryConfig) -> Replica | None:
    """Start the etcd side when the store is etcd (after `core.start` loaded it)."""
    if not isinstance(core.store, EtcdStore):
        return None
    replica = Replica(
        core, core.store, lease_ttl_s=config.etcd_lease_ttl_s, grace_s=config.handover_grace_s
    )
    await replica.start()
    return replica
