"""The router's view of one engine instance, independent of protobuf.

A separate adapter converts `tidepool.v1.Instance` messages into `Endpoint`s;
everything pure in the router (balancer, slow start, outlier) works on this type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tidepool.runtime.rules import WEIGHT_MAX


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance as the router routes to it.

    The adapter from the watch fills the fields as follows:

    - `weight`: the instance's *effective* weight (the admin override if any). An
      instance that must take no new work (state DRAINING or SWITCHING, or drained
      by an admin) gets weight 0: weight 0 is never picked, not even in panic.
    - `healthy`: the registry says READY. False for failure states (UNHEALTHY,
      STALLED): excluded normally, but panic mode and last resort may still use them.
    - `joined_at`: monotonic seconds at which the endpoint last became routable
      (joined, or came back from unhealthy/weight 0); slow start ramps from it.
      Endpoints known when the router starts (or loaded from its on-disk view)
      should get `float("-inf")` so a restarted router does not ramp a warm fleet.
    """

    id: str
    address: str
    weight: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    healthy: bool = True
    joined_at: float = float("-inf")

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("router endpoint: id must not be empty")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int):
            raise ValueError(
                f"router endpoint {self.id}: weight must be an int, got {self.weight!r}"
            )
        if not 0 <= self.weight <= WEIGHT_MAX:
            raise ValueError(
                f"router endpoint {self.id}: weight must be within 0..{WEIGHT_MAX}, "
                f"got {self.weight}"
            )
        if not isinstance(self.labels, MappingProxyType):
            # A private read-only copy: the caller's dict may change under us.
            object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    @property
    def routable(self) -> bool:
        """Takes new requests in normal operation: healthy and weight above 0."""
        return self.healthy and self.weight > 0
