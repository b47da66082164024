"""Engine liveness shared between replicas: what the owning replica says, and how others hold it.

Pure: no I/O. An engine heartbeats to one replica (its owner), which keeps the
lease in memory as on one machine and writes to etcd only when the liveness a
router cares about changes (healthy, stalled, held out for flapping, the engine's
own status). Other replicas hold that word in their lease table as a lease that
never lapses by itself; when the owner's etcd lease lapses, the engine gets a
hand-over grace to re-attach somewhere before it can expire.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

from registry.catalog import EngineReport, EngineStatus
from registry.lease import Lease


@dataclass(frozen=True)
class Liveness:
    """The owner's word on one engine, as kept in its `attached` key."""

    replica: str
    healthy: bool = True
    stalled: bool = False
    held: bool = False
    status: EngineStatus = EngineStatus.SERVING

    def encode(self) -> bytes:
        return json.dumps(
            {
                "replica": self.replica,
                "healthy": self.healthy,
                "stalled": self.stalled,
                "held": self.held,
                "status": self.status.value,
            },
            sort_keys=True,
        ).encode()

    @staticmethod
    def decode(body: bytes) -> Liveness:
        """Parse an `attached` value; ValueError when it is not one."""
        try:
            data = json.loads(body)
            return Liveness(
                str(data["replica"]),
                bool(data["healthy"]),
                bool(data["stalled"]),
                bool(data["held"]),
                EngineStatus(data["status"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an attachment record: {exc!r}") from None


def observe(replica: str, lease: Lease, report: EngineReport) -> Liveness:
    """What the owner says about an engine it holds the heartbeat stream of."""
    return Liveness(
        replica,
        healthy=lease.healthy,
        stalled=lease.healthy and lease.stalled,
        held=lease.held_until is not None,
        status=report.status,
    )


def hold_remote(lease: Lease, liveness: Liveness, now: float) -> None:
    """Make `lease` say what the owner said, in terms the pure lease rules keep as they are.

    The deadline is infinite (the owner expires it, not us); a stalled engine is
    one with work in flight and no progress since ever, so the sweep's own stall
    test agrees; a held one is held until the owner says otherwise.
    """
    lease.restored = False
    lease.deadline = math.inf
    if liveness.healthy:
        lease.healthy, lease.unhealthy_since = True, None
    elif lease.healthy or lease.unhealthy_since is None:
        lease.healthy, lease.unhealthy_since = False, now
    lease.stalled = liveness.healthy and liveness.stalled
    lease.in_flight = 1 if lease.stalled else 0
    lease.progress_at = -math.inf if lease.stalled else now
    lease.held_until = math.inf if liveness.held else None


def hand_over(lease: Lease, now: float, grace_s: float) -> None:
    """The owner is gone: keep what it last said, but expire unless re-attached within grace."""
    lease.deadline = now + grace_s
    lease.stalled, lease.in_flight, lease.progress_at = False, 0, now
    lease.held_until = None
    lease.attached = False


def remote_report(report: EngineReport, liveness: Liveness) -> EngineReport:
    """The engine's status as the owner heard it (load stays with the owner)."""
    return replace(report, status=liveness.status)
