"""Counts per endpoint over the last minute, and configured against received shares.

Pure: `now` (monotonic seconds) is always passed in; nothing here reads a clock.

Why a ring of buckets: the routing table counts every pick (both data paths pick
through it), so counting must cost a few list operations and no allocation per
call. Each endpoint gets two fixed lists (counts and the bucket each slot last
held); a pick overwrites a slot left over from an earlier turn of the ring instead
of expiring anything. Summing a window costs one pass over the slots, done only
when someone reads the view or scrapes the gap gauge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

WINDOW_S: Final = 60
"""The window the received shares and recent errors cover, in seconds."""
BUCKET_S: Final = 1.0
"""Width of one slot of the ring: a window reads as 59 to 60 seconds long."""


class _Ring:
    """One endpoint's counts: slot i holds the count of bucket `stamps[i]`."""

    __slots__ = ("counts", "stamps")

    def __init__(self, slots: int) -> None:
        self.counts = [0] * slots
        self.stamps = [-1] * slots


class RecentCounts:
    """Events per id (picks, errors) over the last `window_s` seconds.

    Counts are kept per `bucket_s` bucket; `counts(now)` sums the buckets of the
    window that ends at `now` (the current bucket included, partly filled).
    """

    __slots__ = ("_bucket_s", "_rings", "_slots")

    def __init__(self, window_s: float = WINDOW_S, bucket_s: float = BUCKET_S) -> None:
        if not window_s >= bucket_s > 0 or math.isinf(window_s):
            raise ValueError(
                f"router shares: need window_s >= bucket_s > 0, got {window_s}, {bucket_s}"
            )
        self._bucket_s = bucket_s
        self._slots = max(1, round(window_s / bucket_s))
        self._rings: dict[str, _Ring] = {}

    @property
    def window_s(self) -> float:
        return self._slots * self._bucket_s

    def add(self, key: str, now: float) -> None:
        """Count one event for `key` at `now`."""
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = _Ring(self._slots)
        bucket = int(now // self._bucket_s)
        index = bucket % self._slots
        if ring.stamps[index] == bucket:
            ring.counts[index] += 1
        else:  # a slot from an earlier turn of the ring: its count is out of the window
            ring.stamps[index] = bucket
            ring.counts[index] = 1

    def counts(self, now: float) -> dict[str, int]:
        """Events per key within the window ending at `now` (keys with none left out)."""
        newest = int(now // self._bucket_s)
        oldest = newest - self._slots + 1
        out: dict[str, int] = {}
        for key, ring in self._rings.items():
            total = sum(
                c for c, s in zip(ring.counts, ring.stamps, strict=True) if oldest <= s <= newest
            )
            if total:
                out[key] = total
        return out

    def retain(self, keys: Iterable[str]) -> None:
        """Forget every key not in `keys` (endpoints that left the pool)."""
        kept = set(keys)
        for key in [k for k in self._rings if k not in kept]:
            del self._rings[key]


def configured_shares(weights: Mapping[str, float]) -> dict[str, float]:
    """Each id's weight over the sum of them all (the share weights promise).

    Pass the pickable endpoints only; an empty or all-zero mapping gives all zeros.
    """
    total = sum(weights.values())
    if total <= 0:
        return dict.fromkeys(weights, 0.0)
    return {key: weight / total for key, weight in weights.items()}


def received_shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Each id's count over the sum of all counts (the share it actually got)."""
    total = sum(counts.values())
    if total <= 0:
        return dict.fromkeys(counts, 0.0)
    return {key: count / total for key, count in counts.items()}


def largest_gap(configured: Mapping[str, float], received: Mapping[str, float]) -> float:
    """max |configured - received| over every id of either mapping; 0 when there were
    no picks at all (no evidence either way, rather than a gap of the whole share)."""
    if not any(received.values()):
        return 0.0
    keys = configured.keys() | received.keys()
    return max((abs(configured.get(k, 0.0) - received.get(k, 0.0)) for k in keys), default=0.0)
