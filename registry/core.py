"""The registry's engine: validates, persists, applies and publishes every change.

Durable changes take one lock, are written to the store, and only then applied
to the catalog, so a failed write changes nothing. Heartbeats touch memory only.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address

from registry import ownership
from registry.address import AddressPolicy, canonical_address, check_claim, parse_address
from registry.catalog import Catalog, EngineStatus, InstanceView
from registry.convert import load_into
from registry.errors import FailedPreconditionError, RateLimitedError
from registry.fencing import PRESENTED_FENCE
from registry.leadership import LeadershipTable
from registry.lease import LeaseTable
from registry.metrics import RegistryMetrics
from registry.moves import MoveBook
from registry.published_pools import PublishedPools
from registry.ratelimit import KeyedRateLimiter
from registry.records import InstanceRecord, RetiredOverrides, frozen_labels
from registry.store import Store
from registry.validation import (
    validate_capacity,
    validate_instance_id,
    validate_labels,
    validate_name,
    validate_weight,
)
from registry.watch import WatchHub
from tidepool.registry.v1 import registry_pb2 as pb

DIRECTIVE_QUEUE = 64
IDLE_STREAM_TTLS = 2.0
"""A heartbeat stream silent for this many TTLs is closed: its lease lapsed long ago."""
IDLE_CLOSE_MAX_SHARE = 0.1
"""...unless more than this share of the streams (of IDLE_CLOSE_MIN_STREAMS or more) is
silent at once: that is the registry falling behind its reads (or cut off), not engines
dying one by one, and closing them all would turn an overload into a mass disconnect."""
IDLE_CLOSE_MIN_STREAMS = 20


@dataclass(frozen=True)
class Registration:
    """A registration request, before validation."""

    service: str
    instance_id: str
    address: str
    weight: int
    capacity: int
    labels: Mapping[str, str]
    secret: str = ""
    """The secret an earlier registration of this id returned ("" for none)."""


@dataclass(frozen=True)
class Registered:
    """A stored registration and the secret that proves its ownership."""

    view: InstanceView
    secret: str


@dataclass(eq=False)
class Attachment:
    """One open heartbeat stream; a newer stream for the same instance supersedes it."""

    instance_id: str
    directives: asyncio.Queue[pb.Directive] = field(
        default_factory=lambda: asyncio.Queue(DIRECTIVE_QUEUE)
    )
    superseded: asyncio.Event = field(default_factory=asyncio.Event)
    last_beat_at: float = 0.0
    """When the stream last carried a heartbeat (the sweep's idle check reads it)."""
    idle: bool = False
    """Set (with `superseded`) when the stream stayed silent for IDLE_STREAM_TTLS."""


@dataclass
class RegistryCore:
    """Owns the catalog, leases, store and watch hub, and every operation on them."""

    catalog: Catalog
    store: Store
    hub: WatchHub
    metrics: RegistryMetrics
    address_policy: AddressPolicy
    register_limiter: KeyedRateLimiter
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    attachments: dict[str, Attachment] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    leadership: LeadershipTable = field(default_factory=LeadershipTable)
    moves: MoveBook = field(default_factory=MoveBook)
    retired: dict[str, RetiredOverrides] = field(default_factory=dict)
    """Decisions on ids that deregistered gracefully, by id (wall-clock `retired_at`)."""
    pools: PublishedPools = field(default_factory=PublishedPools)
    """The pool status the scheduler leader last published."""
    forget_after_s: float = 300.0
    housekept_at: float = -math.inf

    @property
    def leases(self) -> LeaseTable:
        return self.catalog.leases

    async def start(self, restart_grace_s: float) -> None:
        """Load durable state; instances known from before get a grace period to re-attach."""
        snapshot = await self.store.load()
        self.catalog.load(snapshot, self.clock(), restart_grace_s)
        self.moves.load(snapshot.moves)
        self.retired = {r.id: r for r in snapshot.retired}
        self.leadership.fence = snapshot.fence

    def check_fence(self) -> None:
        """Refuse the current call if it presents a fencing number that is not the leader's.

        Called under the lock right before a write (calls without a number are
        operators' own changes and pass).
        """
        presented = PRESENTED_FENCE.get()
        if presented is not None:
            self.leadership.check(presented, self.clock())

    def _publish(self, changes: list) -> None:  # type: ignore[type-arg]
        self.hub.publish(changes)

    # --- engine side -----------------------------------------------------------------

    async def register(
        self, request: Registration, peer: IPv4Address | IPv6Address | None
    ) -> Registered:
        """Validate and store a registration; a known id keeps its overrides."""
        service = validate_name(request.service, "service")
        instance_id = (
            validate_instance_id(request.instance_id)
            if request.instance_id
            else f"i-{uuid.uuid4().hex[:16]}"
        )
        address = canonical_address(request.address)
        ip, _port = parse_address(address)
        check_claim(ip, peer, self.address_policy)
        weight = validate_weight(request.weight)
        capacity = validate_capacity(request.capacity)
        labels = validate_labels(request.labels)
        # Charged only for well-formed registrations: junk from a host must not use up
        # the quota its real engines need.
        peer_key = str(peer) if peer is not None else "unknown"
        if not self.register_limiter.allow(peer_key, self.clock()):
            raise RateLimitedError(f"too many registrations from {peer_key}; retry later")
        async with self.lock:
            existing = self.catalog.records.get(instance_id)
            if existing is not None and existing.service != service:
                raise FailedPreconditionError(
                    f"instance_id: {instance_id!r} is registered in service "
                    f"{existing.service!r}, not {service!r}"
                )
            secret = self._claim(existing, request.secret, instance_id)
            replaced = self._displaced_by(address, instance_id)
            if existing is None:
                record = InstanceRecord(
                    instance_id,
                    service,
                    address,
                    weight,
                    capacity,
                    frozen_labels(labels),
                    self.wall(),
                    owner_digest=ownership.digest(secret),
                )
                record = await self._reapply(record)
            else:
                record = existing.reregistered(address, weight, capacity, labels)
                record = replace(record, owner_digest=ownership.digest(secret))
            await self.store.put_instance(record)
            for old in replaced:
                await self.store.delete_instance(old)
                self._publish(self.catalog.remove(old, self.clock()))
            self.leases.grant(instance_id, self.clock())
            self.catalog.report(
                instance_id,
                replace(self.catalog.last_report(instance_id), heartbeat_wall=self.wall()),
            )
            self._publish(self.catalog.put(record, self.clock(), self.clock()))
        self.metrics.registrations.inc()
        return Registered(self.catalog.view(instance_id), secret)

    def _claim(self, existing: InstanceRecord | None, presented: str, instance_id: str) -> str:
        """The secret this registration gets; refuses taking over a live id without it.

        The owner re-registering (its secret presented) keeps its secret; an id whose
        lease lapsed is free for a restarted engine to claim with a new one.
        """
        if existing is not None:
            lease = self.leases.leases.get(instance_id)
            live = lease is not None and lease.healthy
            if ownership.proves(existing.owner_digest, presented) and presented:
                return presented
            if live:
                ownership.require(existing.owner_digest, presented, instance_id, "registering")
        return ownership.new_secret()

    def _displaced_by(self, address: str, instance_id: str) -> list[str]:
        """Dead instances at the same address are replaced; a healthy one is a conflict."""
        displaced = []
        for other in self.catalog.records.values():
            if other.address != address or other.id == instance_id:
                continue
            lease = self.leases.leases.get(other.id)
            if lease is not None and lease.healthy:
                raise FailedPreconditionError(
                    f"address: {address} is already served by healthy instance {other.id!r}"
                )
            displaced.append(other.id)
        return displaced

    def attach(self, instance_id: str, secret: str) -> Attachment:
        """Open a heartbeat stream for a registered instance (superseding an older one).

        Only its owner may: a stream opened by anyone else would supersede the real
        engine's, and its breaking would mark the real engine dead.
        """
        record = self.catalog.get(instance_id)
        ownership.require(record.owner_digest, secret, instance_id, "a heartbeat stream")
        previous = self.attachments.get(instance_id)
        if previous is not None:
            previous.superseded.set()
        attachment = Attachment(instance_id, last_beat_at=self.clock())
        self.attachments[instance_id] = attachment
        self.leases.attach(instance_id, self.clock())
        self._touch(instance_id)
        self.metrics.attached.set(len(self.attachments))
        return attachment

    def heartbeat(self, instance_id: str, status: EngineStatus, load: pb.Load) -> None:
        """The hot path (10,000 a second at fleet scale): the instance's report is
        rewritten in place, and most beats change nothing a router sees, so no view
        is rebuilt and nothing is published."""
        report = self.catalog.live_report(instance_id)  # NotFoundError once it is gone
        self.metrics.heartbeats.inc()
        status_changed = report.status is not status
        report.status = status
        report.heartbeat_wall = self.wall()
        figures = load_into(report.load, load)
        liveness_changed = self.leases.heartbeat(
            instance_id, self.clock(), figures.in_flight, figures.progress
        )
        if status_changed or liveness_changed:
            self._touch(instance_id)

    def detach(self, attachment: Attachment, *, broken: bool) -> None:
        """A stream ended. Only the current stream's end counts: a superseded one is moot."""
        if self.attachments.get(attachment.instance_id) is not attachment:
            return
        del self.attachments[attachment.instance_id]
        self.metrics.attached.set(len(self.attachments))
        if self.leases.detach(attachment.instance_id, self.clock(), broken=broken):
            self.metrics.expirations.labels("stream_broken").inc()
            self._touch(attachment.instance_id)

    async def deregister(self, instance_id: str, secret: str) -> None:
        async with self.lock:
            record = self.catalog.get(instance_id)
            lease = self.leases.leases.get(instance_id)
            if lease is not None and lease.healthy:
                # A dead instance may be cleaned up by anyone with the engine token.
                ownership.require(record.owner_digest, secret, instance_id, "deregistering")
            keep = RetiredOverrides.of(record, self.wall())
            if keep is not None:
                await self.store.put_retired(keep)
                self.retired[instance_id] = keep
            await self.store.delete_instance(instance_id)
            attachment = self.attachments.pop(instance_id, None)
            if attachment is not None:
                attachment.superseded.set()
            self._publish(self.catalog.remove(instance_id, self.clock()))

    async def _reapply(self, record: InstanceRecord) -> InstanceRecord:
        """A new registration of an id that left gracefully gets its old decisions back."""
        kept = self.retired.pop(record.id, None)
        if kept is None:
            return record
        await self.store.delete_retired(record.id)
        if self.wall() - kept.retired_at >= self.forget_after_s:
            return record
        return kept.apply(record)

    def _touch(self, instance_id: str) -> None:
        self._publish(self.catalog.refresh([instance_id], self.clock()))

    # --- liveness sweep --------------------------------------------------------------

    async def sweep(self) -> None:
        """Expire lapsed leases; every housekeeping interval also flag stalls, close idle
        streams and forget the long dead."""
        now = self.clock()
        housekeeping = now - self.housekept_at >= self.leases.config.housekeeping_interval_s
        if housekeeping:
            self.housekept_at = now
            self._close_idle_streams(now)
        result = self.leases.sweep(now, housekeeping=housekeeping)
        self.metrics.self_preservation.set(1 if result.self_preservation else 0)
        for instance_id in result.changed:
            lease = self.leases.leases.get(instance_id)
            if lease is not None and not lease.healthy:
                self.metrics.expirations.labels("ttl").inc()
        self._publish(self.catalog.refresh(result.changed, now))
        for instance_id in result.forget:
            async with self.lock:
                lease = self.leases.leases.get(instance_id)
                if lease is None or lease.healthy:
                    continue
                await self.store.delete_instance(instance_id)
                self._publish(self.catalog.remove(instance_id, self.clock()))
        await self._forget_retired()

    def _close_idle_streams(self, now: float) -> None:
        """One coarse check over every stream instead of a timer per beat per stream.

        Silence is not a break: the stream ends as if superseded and the lease decides.
        Only streams whose lease has expired are closed, and none while self-preservation
        holds or when many are silent at once (IDLE_CLOSE_MAX_SHARE): a registry too
        busy to read its streams, or cut off, sees them fall silent together. Closing
        a stream only frees its resources; the lease alone decides routing.
        """
        if self.leases.self_preservation:
            return
        idle_before = now - IDLE_STREAM_TTLS * self.leases.config.ttl_s
        leases = self.leases.leases
        idle = [
            attachment
            for instance_id, attachment in self.attachments.items()
            if attachment.last_beat_at <= idle_before
            and not attachment.idle
            and not (instance_id in leases and leases[instance_id].healthy)
        ]
        streams = len(self.attachments)
        if streams >= IDLE_CLOSE_MIN_STREAMS and len(idle) > IDLE_CLOSE_MAX_SHARE * streams:
            return
        for attachment in idle:
            attachment.idle = True
            attachment.superseded.set()

    async def _forget_retired(self) -> None:
        now = self.wall()
        expired = [r.id for r in self.retired.values() if now - r.retired_at >= self.forget_after_s]
        for instance_id in expired:
            async with self.lock:
                if self.retired.pop(instance_id, None) is not None:
                    await self.store.delete_retired(instance_id)

    # --- admin ------------------------------------------------------------------------

    async def update_instance(
        self, instance_id: str, change: Callable[[InstanceRecord], InstanceRecord]
    ) -> InstanceView:
        """Apply an admin change to an instance record: store first, then memory."""
        async with self.lock:
            self.check_fence()
            record = change(self.catalog.get(instance_id))
            await self.store.put_instance(record)
            self._publish(self.catalog.put(record, self.clock(), self.clock()))
        return self.catalog.view(instance_id)

    def send_directive(self, instance_id: str, directive: pb.Directive) -> InstanceView:
        self.check_fence()
        self.catalog.get(instance_id)
        attachment = self.attachments.get(instance_id)
        if attachment is None:
            raise FailedPreconditionError(
                f"instance_id: {instance_id!r} has no open heartbeat stream to carry a directive"
            )
        if not directive.id:
            directive.id = uuid.uuid4().hex
        try:
            attachment.directives.put_nowait(directive)
        except asyncio.QueueFull:
            raise FailedPreconditionError(
                f"instance_id: {instance_id!r} has {DIRECTIVE_QUEUE} directives pending"
            ) from None
        return self.catalog.view(instance_id)

    def offer_directive(self, instance_id: str, directive: pb.Directive) -> None:
        """Best-effort directive that goes with an admin change (drain, restore)."""
        if instance_id in self.attachments:
            self.send_directive(instance_id, directive)
