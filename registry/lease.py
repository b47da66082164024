"""Liveness of instances: heartbeat deadlines, stream breaks, stalls and self-preservation.

Pure: every method takes `now` (monotonic seconds) and nothing here sleeps or
does I/O. The registry's sweep runner calls `sweep(now)` a few times per TTL.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LeaseConfig:
    """Liveness settings; see registry/config.py for the flags that set them."""

    ttl_s: float = 3.0
    stall_after_s: float = 10.0
    forget_after_s: float = 300.0
    self_preservation_threshold: float = 0.5
    self_preservation_min_instances: int = 3
    flap_threshold: int = 3
    """More unhealthy-and-back cycles than this within `flap_window_s` hold it out."""
    flap_window_s: float = 60.0
    flap_hold_s: float = 10.0
    """The first hold; each further one in a row doubles, up to `flap_hold_max_s`."""
    flap_hold_max_s: float = 300.0

    @property
    def housekeeping_interval_s(self) -> float:
        """How often a sweep also looks for stalls, ended holds and leases to forget
        (lapses are looked for at every sweep): a tenth of the shortest of those
        periods, at most a second. Stalls are flagged at most this late."""
        return min(1.0, self.stall_after_s / 10, self.flap_hold_s / 10)


@dataclass
class Lease:
    """The in-memory liveness record of one instance."""

    deadline: float
    healthy: bool = True
    attached: bool = False
    unhealthy_since: float | None = None
    last_heartbeat_at: float | None = None
    in_flight: int = 0
    progress: int = 0
    progress_at: float = 0.0
    stalled: bool = False
    # Restored from the store at start-up and not heard from since.
    restored: bool = False
    # Times it went unhealthy lately, and the flap-damping hold it is under (if any).
    lapses: deque[float] = field(default_factory=deque)
    held_until: float | None = None
    holds: int = 0

    def routable_liveness(self) -> bool:
        return self.healthy and not self.stalled and self.held_until is None


@dataclass(frozen=True)
class SweepResult:
    """What a sweep changed: ids whose health or stall flag moved, ids to forget."""

    changed: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    self_preservation: bool = False


@dataclass
class LeaseTable:
    """Deadlines and health of every known instance."""

    config: LeaseConfig
    leases: dict[str, Lease] = field(default_factory=dict)
    self_preservation: bool = False
    # Times of recent silent expiries: a burst of them points at our own network.
    _silent_expiries: deque[float] = field(default_factory=deque)

    def grant(self, instance_id: str, now: float, grace_s: float | None = None) -> bool:
        """(Re-)register: healthy with a fresh deadline. True when health changed."""
        lease = self.leases.get(instance_id)
        deadline = now + (self.config.ttl_s if grace_s is None else grace_s)
        if lease is None:
            restored = grace_s is not None
            self.leases[instance_id] = Lease(deadline=deadline, progress_at=now, restored=restored)
            return True
        lease.restored = False
        changed = not lease.healthy or lease.stalled
        if not lease.healthy:
            self._damp(lease, now)
        lease.deadline = max(lease.deadline, deadline)
        lease.healthy, lease.unhealthy_since, lease.stalled = True, None, False
        lease.progress_at = now
        return changed

    def attach(self, instance_id: str, now: float) -> bool:
        """A heartbeat stream opened for the instance; counts as a heartbeat."""
        lease = self.leases[instance_id]
        lease.attached = True
        return self.heartbeat(instance_id, now, lease.in_flight, lease.progress)

    def heartbeat(self, instance_id: str, now: float, in_flight: int, progress: int) -> bool:
        """Renew the deadline and update stall tracking. True when health or stall changed."""
        lease = self.leases[instance_id]
        before = (lease.healthy, lease.stalled, lease.held_until is None)
        if not lease.healthy:
            self._damp(lease, now)
        lease.deadline = now + self.config.ttl_s
        lease.last_heartbeat_at = now
        lease.restored = False
        lease.healthy, lease.unhealthy_since = True, None
        if progress > lease.progress or in_flight == 0:
            # Idle is not stuck; and finished work restarts the stall clock (a counter
            # that went backwards is not work done: a re-registration resets it).
            lease.progress_at = now
        lease.progress, lease.in_flight = progress, in_flight
        lease.stalled = self._is_stalled(lease, now)
        return (lease.healthy, lease.stalled, lease.held_until is None) != before

    def detach(self, instance_id: str, now: float, *, broken: bool) -> bool:
        """The heartbeat stream ended. A break is evidence of death: unhealthy at once."""
        lease = self.leases.get(instance_id)
        if lease is None:
            return False
        lease.attached = False
        if broken and lease.healthy:
            self._expire(lease, now)
            return True
        return False

    def remove(self, instance_id: str) -> None:
        self.leases.pop(instance_id, None)

    def sweep(self, now: float, *, housekeeping: bool = True) -> SweepResult:
        """Expire lapsed leases (unless self-preservation holds), flag stalls, list the reaped.

        It runs ten times a second over 10,000 leases, so it is one pass over the
        table, and without `housekeeping` (stalls, holds, forgetting) a pass that
        only compares deadlines; the self-preservation count takes a second pass
        only when something lapsed.
        """
        changed: list[str] = []
        forget: list[str] = []
        if housekeeping:
            lapsed = self._housekeep(now, changed, forget)
        else:
            lapsed = [
                i for i, lease in self.leases.items() if lease.healthy and lease.deadline <= now
            ]
        self._forget_old_expiries(now)
        self.self_preservation = bool(lapsed) and self._suspect_own_network(now)
        if not self.self_preservation:
            for instance_id in lapsed:
                self._expire(self.leases[instance_id], now)
                self._silent_expiries.append(now)
                if instance_id not in changed:
                    changed.append(instance_id)
        return SweepResult(tuple(changed), tuple(forget), self.self_preservation)

    def _housekeep(self, now: float, changed: list[str], forget: list[str]) -> list[str]:
        """The full pass: flag stalls and ended holds into `changed`, the long dead into
        `forget`; returns the lapsed."""
        lapsed: list[str] = []
        config = self.config
        for instance_id, lease in self.leases.items():
            if lease.healthy:
                stalled = lease.in_flight > 0 and now - lease.progress_at >= config.stall_after_s
                if stalled is not lease.stalled:
                    lease.stalled = stalled
                    changed.append(instance_id)
                if lease.deadline <= now:
                    lapsed.append(instance_id)
            elif (
                lease.unhealthy_since is not None
                and now - lease.unhealthy_since >= config.forget_after_s
            ):
                forget.append(instance_id)
            if (lease.held_until is not None or lease.holds) and self._release(lease, now):
                changed.append(instance_id)
        return lapsed

    def _suspect_own_network(self, now: float) -> bool:
        """Eureka's rule: many silent lapses at once mean we, not the fleet, lost the network.

        Engines beat at least twice per TTL, so one silent for over half a TTL has
        missed a beat: counting those too catches a partition at its first lapse.
        Only leases heard from since this start count: instances restored from the
        store that never re-attach must expire after the grace, not hold each other up.
        """
        total = silent = 0
        half_ttl = self.config.ttl_s / 2
        for lease in self.leases.values():
            if lease.restored:
                continue
            total += 1
            if lease.healthy and lease.deadline - now < half_ttl:
                silent += 1
        if total < self.config.self_preservation_min_instances:
            return False
        silent_share = (silent + len(self._silent_expiries)) / total
        return silent_share > self.config.self_preservation_threshold

    def _forget_old_expiries(self, now: float) -> None:
        while self._silent_expiries and now - self._silent_expiries[0] > self.config.ttl_s:
            self._silent_expiries.popleft()

    def _is_stalled(self, lease: Lease, now: float) -> bool:
        return lease.in_flight > 0 and now - lease.progress_at >= self.config.stall_after_s

    def _expire(self, lease: Lease, now: float) -> None:
        lease.healthy, lease.unhealthy_since, lease.stalled = False, now, False
        lease.lapses.append(now)
        while len(lease.lapses) > self.config.flap_threshold + 1:
            lease.lapses.popleft()

    def _damp(self, lease: Lease, now: float) -> None:
        """Coming back: hold it out if it flapped more than the threshold in the window."""
        window_start = now - self.config.flap_window_s
        while lease.lapses and lease.lapses[0] < window_start:
            lease.lapses.popleft()
        if len(lease.lapses) <= self.config.flap_threshold:
            return
        hold_s = min(self.config.flap_hold_max_s, self.config.flap_hold_s * 2**lease.holds)
        lease.held_until = now + hold_s
        lease.holds += 1
        lease.lapses.clear()

    def _release(self, lease: Lease, now: float) -> bool:
        """End a hold that ran out (True); forget past holds after a quiet window."""
        if lease.held_until is not None and now >= lease.held_until:
            lease.held_until = None
            return True
        quiet = not lease.lapses or now - lease.lapses[-1] > self.config.flap_window_s
        if lease.held_until is None and lease.holds and quiet:
            lease.holds = 0
        return False
