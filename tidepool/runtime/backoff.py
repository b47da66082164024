"""Exponential backoff with full jitter, for reconnecting to the registry.

Pure: no sleeping and no clock; the caller sleeps for `next_delay()` seconds.
Full jitter (each delay drawn uniformly from zero to the current ceiling) keeps a
fleet of engines that lost the same registry from reconnecting in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable

RandomSource = Callable[[], float]
"""Returns a float in [0, 1), like `random.random`."""


class Backoff:
    """Delays that grow by `factor` from `min_s` up to `max_s`, each fully jittered."""

    def __init__(
        self,
        min_s: float,
        max_s: float,
        factor: float = 2.0,
        rng: RandomSource | None = None,
    ) -> None:
        if not min_s > 0:
            raise ValueError(f"min_s: must be greater than 0, got {min_s}")
        if max_s < min_s:
            raise ValueError(f"max_s: must be at least min_s ({min_s}), got {max_s}")
        if factor < 1:
            raise ValueError(f"factor: must be 1 or more, got {factor}")
        self._min_s = min_s
        self._max_s = max_s
        self._factor = factor
        self._rng = rng if rng is not None else random.random
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last `reset()`."""
        return self._attempts

    def ceiling(self) -> float:
        """The largest delay the next call may return."""
        # Cap the exponent so a long outage cannot overflow the float.
        exponent = min(self._attempts, 64)
        return min(self._max_s, self._min_s * self._factor**exponent)

    def next_delay(self) -> float:
        """The next delay in seconds, uniform in [0, ceiling]."""
        delay = self.ceiling() * min(max(self._rng(), 0.0), 1.0)
        self._attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from `min_s` (call after a success)."""
        self._attempts = 0
