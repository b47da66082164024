"""A latency histogram with bounded relative error, cheap enough to record every request.

Keeping every sample would cost memory proportional to the run and make merging
the results of several generator processes expensive; averaging per second would
hide the tail we are trying to measure. This is the HdrHistogram layout instead:
values are integer nanoseconds; each power-of-two range is cut into 128 linear
sub-buckets, so any value of 128 ns or more lands in a bucket less than 1/128
(0.8 %) of its value wide. Recording is a `bit_length`, a shift and a list
increment: O(1), well under a microsecond. Percentiles report a bucket's midpoint
(clamped to the exact min and max), so their error is at most half a bucket
(0.4 %) plus the nanosecond truncation. `to_dict` is plain JSON (sparse bucket
list), so worker processes can ship histograms to the parent, which merges them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SUB_BUCKET_BITS = 7
"""log2 of the sub-buckets per half power of two: 128 gives < 1/128 relative bucket width."""
_SUB_BUCKET_MASK_BITS = SUB_BUCKET_BITS + 1
NS_PER_S = 1_000_000_000
MAX_TRACKABLE_S = 3600.0
"""Longer values are recorded as this (no deadline in this project comes near an hour)."""
_MAX_NS = int(MAX_TRACKABLE_S * NS_PER_S)


def bucket_index(ns: int) -> int:
    """The bucket of a value in nanoseconds (>= 0): HdrHistogram's counts index."""
    shift = ns.bit_length() - _SUB_BUCKET_MASK_BITS
    if shift < 0:
        return ns  # below 256 ns every nanosecond has its own bucket
    return (shift << SUB_BUCKET_BITS) + (ns >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) in nanoseconds of the values that land in bucket `index`."""
    shift = max(0, (index >> SUB_BUCKET_BITS) - 1)
    low = (index - (shift << SUB_BUCKET_BITS)) << shift
    return low, low + (1 << shift)


_BUCKETS = bucket_index(_MAX_NS) + 1


class Histogram:
    """Counts of durations in seconds, with exact count, min, max and sum."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        """Sum of the recorded values, in seconds."""
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        """Add one value; negatives (a clock step) count as 0, huge ones as MAX_TRACKABLE_S."""
        if seconds < 0.0:
            seconds = 0.0
        elif seconds > MAX_TRACKABLE_S:
            seconds = MAX_TRACKABLE_S
        ns = int(seconds * NS_PER_S)
        shift = ns.bit_length() - _SUB_BUCKET_MASK_BITS
        # bucket_index, inlined: record runs once per request per histogram.
        self._counts[ns if shift < 0 else (shift << SUB_BUCKET_BITS) + (ns >> shift)] += 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        """Add every value of `other` to this histogram."""
        if not other.count:
            return
        counts = self._counts
        for index, n in enumerate(other._counts):
            if n:
                counts[index] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        """Mean in seconds; NaN when empty."""
        return self.total / self.count if self.count else math.nan

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile (0..100) in seconds; NaN when empty.

        0 is the exact minimum and 100 the exact maximum; in between, the
        midpoint of the bucket holding the value of rank ceil(p/100 * count).
        """
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be 0..100, got {p}")
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(p / 100.0 * self.count))
        if p == 0.0:
            return self.min
        if rank >= self.count:
            return self.max
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                low, high = bucket_bounds(index)
                middle = (low + high - 1) / 2 / NS_PER_S
                return min(max(middle, self.min), self.max)
        return self.max  # unreachable: the counts add up to self.count

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: exact stats plus the non-empty buckets as [index, count] pairs."""
        return {
            "sub_bucket_bits": SUB_BUCKET_BITS,
            "count": self.count,
            "sum_s": self.total,
            "min_s": self.min if self.count else None,
            "max_s": self.max if self.count else None,
            "buckets": [[i, n] for i, n in enumerate(self._counts) if n],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Rebuild a histogram from `to_dict` output; ValueError on a foreign layout."""
        if data.get("sub_bucket_bits") != SUB_BUCKET_BITS:
            raise ValueError(f"histogram layout {data.get('sub_bucket_bits')!r} is not ours")
        histogram = cls()
        for index, n in data["buckets"]:
            if not 0 <= index < _BUCKETS or n < 0:
                raise ValueError(f"histogram bucket {index}={n} is out of range")
            histogram._counts[index] += n
        histogram.count = int(data["count"])
        if sum(histogram._counts) != histogram.count:
            raise ValueError("histogram buckets do not add up to its count")
        histogram.total = float(data["sum_s"])
        if histogram.count:
            histogram.min = float(data["min_s"])
            histogram.max = float(data["max_s"])
        return histogram

    def summary_ms(self) -> dict[str, float | int | None]:
        """Count, mean and the usual percentiles in milliseconds (None when empty)."""

        def ms(seconds: float) -> float | None:
            return None if math.isnan(seconds) else round(seconds * 1000.0, 3)

        return {
            "count": self.count,
            "min": ms(self.percentile(0)),
            "mean": ms(self.mean),
            "p50": ms(self.percentile(50)),
            "p90": ms(self.percentile(90)),
            "p99": ms(self.percentile(99)),
            "p99.9": ms(self.percentile(99.9)),
            "max": ms(self.percentile(100)),
        }

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, p50={self.percentile(50) if self.count else None})"
