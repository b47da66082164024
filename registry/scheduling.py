"""Scheduler coordination in the registry: the leader lease, moves and published pool status.

Moves and the fencing number are durable (store first, then memory); on the
embedded store the lease and the pool status are memory only: after a registry
restart the scheduler takes the leadership again (with a higher fence) and
republishes its pools. On etcd the lease is etcd's leader key
(registry/etcd_leader.py) and the pool status etcd's `pools` key
(registry/published_pools.py), the same for every replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry import published_pools
from registry.core import RegistryCore
from registry.errors import FailedPreconditionError, InvalidArgumentError
from registry.etcd_leader import EtcdLeadership
from registry.fencing import PRESENTED_FENCE
from registry.leadership import MAX_TTL_S, MIN_TTL_S, LeaderLease
from registry.moves import MoveRequest
from registry.published_pools import PublishedPools
from registry.records import MoveRecord
from registry.store.etcd import EtcdStore
from registry.validation import validate_instance_id
from tidepool.registry.v1 import registry_pb2 as pb

POOLS_REFRESH_S = 10.0
"""On etcd the pool status is written when its shape changes (pools, sizes, bounds, the
leader) and otherwise at most this often: utilisation moves every tick, and etcd keeps
every revision until it is compacted. Other replicas' figures lag by up to this long."""


@dataclass
class SchedulingOps:
    core: RegistryCore
    written: tuple[object, float] | None = None
    """The shape of the pool status this replica last wrote to etcd, and when."""

    async def acquire(self, holder: str, ttl_s: float) -> LeaderLease:
        holder = validate_instance_id(holder, "holder")
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise InvalidArgumentError(
                "ttl", f"must be {MIN_TTL_S}s to {MAX_TTL_S:g}s, got {ttl_s}s"
            )
        core = self.core
        async with core.lock:
            if isinstance(core.store, EtcdStore):
                record = await EtcdLeadership(core.store).acquire(holder, ttl_s)
                lease = record.lease(core.clock())
                core.leadership.hold_from_etcd(lease)
                return lease
            table = core.leadership
            fence = table.fence
            if table.needs_new_fence(holder, core.clock()):
                fence = await core.store.next_fence()
            else:
                current = table.current(core.clock())
                fence = current.fence if current is not None else fence
            return table.grant(holder, fence, ttl_s, core.clock())

    async def release(self, holder: str) -> None:
        holder = validate_instance_id(holder, "holder")
        async with self.core.lock:
            if isinstance(self.core.store, EtcdStore):
                await EtcdLeadership(self.core.store).release(holder)
            self.core.leadership.release(holder, self.core.clock())

    def leader(self) -> LeaderLease | None:
        return self.core.leadership.current(self.core.clock())

    async def put_move(self, request: MoveRequest) -> MoveRecord:
        core = self.core
        fenced = PRESENTED_FENCE.get() is not None
        async with core.lock:
            core.check_fence()
            record = core.catalog.records.get(request.instance_id)
            labels = record.labels if record is not None else None
            move = core.moves.prepare(request, labels, fenced=fenced, now=core.wall())
            await core.store.put_move(move)
            evicted = core.moves.put(move)
            for move_id in evicted:
                await core.store.delete_move(move_id)
                core.moves.drop(move_id)
        return move

    def list_moves(self) -> list[MoveRecord]:
        return self.core.moves.listing()

    async def put_pools(self, pools: list[pb.PoolStatus]) -> None:
        published_pools.validate_pools(pools)
        if PRESENTED_FENCE.get() is None:
            raise FailedPreconditionError(
                "x-tidepool-fence: only the scheduler leader publishes pool status"
            )
        core = self.core
        async with core.lock:
            core.check_fence()
            leader = core.leadership.current(core.clock())
            now = core.clock()
            published = PublishedPools(tuple(pools), leader.holder if leader else "", now)
            shape = published_pools.shape(published)
            if isinstance(core.store, EtcdStore) and self._due_in_etcd(shape, now):
                await core.store.put_pools(published_pools.encode(published, core.wall(), now))
                self.written = (shape, now)
            core.pools = published

    def _due_in_etcd(self, shape: tuple[object, ...], now: float) -> bool:
        if self.written is None:
            return True
        written, at = self.written
        return written != shape or now - at >= POOLS_REFRESH_S
