"""The scheduler's leader lease: one holder at a time, each new holder with a higher fence.

Pure: no I/O and no awaits; `now` comes from the caller's monotonic clock. The
fencing number is made durable by the core (the store increments it) before a
new holder is granted, so a registry restart never hands out a number twice and
a deposed leader's writes, which carry its old number, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import FailedPreconditionError

MIN_TTL_S = 0.5
MAX_TTL_S = 60.0


@dataclass(frozen=True)
class LeaderLease:
    holder: str
    fence: int
    expires_at: float
    held_in_etcd: bool = False
    """On etcd the leader key's own lease is the clock: this copy ends when a replica sees
    the key deleted (`expires_at` is then only what `remaining` reports)."""

    def remaining_s(self, now: float) -> float:
        return max(0.0, self.expires_at - now)


@dataclass
class LeadershipTable:
    """Who leads, until when, and the last fencing number handed out."""

    fence: int = 0
    lease: LeaderLease | None = None

    def current(self, now: float) -> LeaderLease | None:
        """The live lease, or None when nobody holds it or it lapsed."""
        lease = self.lease
        if lease is not None and not lease.held_in_etcd and lease.expires_at <= now:
            self.lease = None
        return self.lease

    def needs_new_fence(self, holder: str, now: float) -> bool:
        """True when `holder` may take over (free or lapsed); False when it already holds it."""
        current = self.current(now)
        if current is None:
            return True
        if current.holder == holder:
            return False
        raise FailedPreconditionError(
            f"holder: leadership is held by {current.holder!r} "
            f"for {current.remaining_s(now):.1f}s more"
        )

    def grant(self, holder: str, fence: int, ttl_s: float, now: float) -> LeaderLease:
        """Give (or extend) the lease; `fence` is the durable number for a new holder."""
        self.fence = max(self.fence, fence)
        self.lease = LeaderLease(holder, fence, now + ttl_s)
        return self.lease

    def hold_from_etcd(self, lease: LeaderLease | None) -> None:
        """What a replica saw in etcd's leader key: the holder, or None once it was deleted."""
        if lease is not None:
            self.fence = max(self.fence, lease.fence)
        self.lease = lease

    def release(self, holder: str, now: float) -> None:
        current = self.current(now)
        if current is not None and current.holder == holder:
            self.lease = None

    def check(self, presented: int, now: float) -> None:
        """Refuse a write that carries a fencing number other than the live leader's."""
        current = self.current(now)
        if current is None:
            raise FailedPreconditionError(
                f"x-tidepool-fence: {presented} is stale; no scheduler holds the leadership"
            )
        if presented != current.fence:
            raise FailedPreconditionError(
                f"x-tidepool-fence: {presented} is stale; the leader {current.holder!r} "
                f"holds fence {current.fence}"
            )
