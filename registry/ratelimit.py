"""Per-caller token buckets with bounded memory, driven by a caller-supplied clock."""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["KeyedRateLimiter"]


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class KeyedRateLimiter:
    """Allow each key `burst` requests at once and `rate_per_s` sustained.

    At most `max_keys` buckets are kept; past that the least recently used one is
    dropped. A dropped key comes back with a full bucket, so `max_keys` should
    comfortably exceed the number of callers active at once.
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 10_000) -> None:
        if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, int | float):
            raise ValueError(f"rate_per_s must be a number, got {rate_per_s!r}")
        if not math.isfinite(rate_per_s) or rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self._rate_per_s = float(rate_per_s)
        self._burst = burst
        self._max_keys = max_keys
        # Insertion order doubles as recency order: every use moves a key to the end.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Spend one token from `key`'s bucket at time `now` (seconds); False when empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self._burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            # A clock that steps backwards must not mint tokens (nor take them away).
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._rate_per_s)
            bucket.stamp = max(bucket.stamp, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def __len__(self) -> int:
        """How many keys currently hold a bucket."""
        return len(self._buckets)
