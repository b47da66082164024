"""Injected faults: which one, if any, hits the next request (pure, seeded)."""

from __future__ import annotations

import enum
import random

from engine_stub.config import FaultConfig


class Fault(enum.Enum):
    NONE = "none"
    ERROR = "error"
    HANG = "hang"
    CRASH = "crash"


class FaultPlan:
    """Counts requests and applies --fault-* in order of severity: crash, hang, error."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._requests = 0

    @property
    def requests(self) -> int:
        """Requests seen so far."""
        return self._requests

    @property
    def extra_latency_s(self) -> float:
        return self._config.latency_s

    def next(self) -> Fault:
        """The fault for the next request; requests 1..N are spared by --fault-*-after N."""
        self._requests += 1
        crash_after, hang_after = self._config.crash_after, self._config.hang_after
        if crash_after is not None and self._requests > crash_after:
            return Fault.CRASH
        if hang_after is not None and self._requests > hang_after:
            return Fault.HANG
        # Draw only when a rate is set, so a seed replays the same errors whatever else changes.
        if self._config.error_rate > 0 and self._rng.random() < self._config.error_rate:
            return Fault.ERROR
        return Fault.NONE
