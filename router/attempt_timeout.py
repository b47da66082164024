"""How long one attempt may wait before another engine is tried: learned, not fixed.

A GPU engine that hangs (a stuck kernel, a paused VM, SIGSTOP) raises no error: its
connections stay up and its calls just never answer. The router sees every engine's
normal latency, so it can tell a hung attempt from a slow one: an attempt that has
waited `margin` times the engine's recent high percentile (within a floor and a
ceiling) is taken to be stuck, and the call is tried on another engine.

Pure: the caller passes `now` and the observed latencies. Latencies are kept per
engine in log-scale buckets over two rotating windows (no per-call allocation); the
percentile is recomputed at most every `refresh_s`, so asking costs a dict lookup.
An engine with too few samples (new, or idle) uses the figure of all engines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

BUCKETS_PER_DOUBLING: Final = 4
SMALLEST_S: Final = 0.000_5
BUCKETS: Final = 4 * 18
"""0.5 ms to about 131 s in steps of 2**(1/4) (19 % apart)."""
_log2: Final = math.log2
"""A C static in the compiled build, not a module attribute looked up per use."""


@dataclass(frozen=True)
class AttemptTimeoutConfig:
    """The rule: timeout = clamp(percentile(recent latencies) * margin, min_s, max_s)."""

    percentile: float = 99.0
    margin: float = 2.0
    """Why 2: a hedge past twice the p99 costs the caller little (issue 14's target is a
    p99 at most 3 times the usual while an engine is frozen), and the retry budget
    bounds what spurious ones cost the fleet."""
    min_s: float = 0.1
    max_s: float = 10.0
    min_samples: int = 20
    """Fewer samples than this in the windows: use the figure of all engines."""
    window_s: float = 10.0
    """Samples older than two windows are forgotten."""
    refresh_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise ValueError(f"percentile: must be within (0, 100), got {self.percentile}")
        if self.margin < 1:
            raise ValueError(f"margin: must be 1 or more, got {self.margin}")
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(
                f"min_s, max_s: need 0 < min_s <= max_s, got {self.min_s} and {self.max_s}"
            )

    def clamp(self, latency_s: float) -> float:
        return min(max(latency_s * self.margin, self.min_s), self.max_s)


def bucket_of(latency_s: float) -> int:
    if latency_s <= SMALLEST_S:
        return 0
    index = int(_log2(latency_s / SMALLEST_S) * BUCKETS_PER_DOUBLING) + 1
    return min(index, BUCKETS - 1)


def bucket_top_s(index: int) -> float:
    """The upper edge of a bucket: a percentile reads as this (never an underestimate)."""
    return SMALLEST_S * 2 ** (index / BUCKETS_PER_DOUBLING)


@dataclass
class LatencyWindows:
    """Counts per bucket in the current and the previous window."""

    started: float
    current: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    previous: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    samples: int = 0
    """In both windows."""

    def rotate(self, now: float, window_s: float) -> None:
        elapsed = now - self.started
        if elapsed < window_s:
            return
        if elapsed >= 2 * window_s:
            self.previous = [0] * BUCKETS
        else:
            self.previous = self.current
        self.current = [0] * BUCKETS
        self.samples = sum(self.previous)
        self.started = now

    def add(self, latency_s: float) -> None:
        self.current[bucket_of(latency_s)] += 1
        self.samples += 1

    def percentile_s(self, percentile: float) -> float | None:
        if self.samples == 0:
            return None
        wanted = math.ceil(self.samples * percentile / 100)
        seen = 0
        for index in range(BUCKETS):
            seen += self.current[index] + self.previous[index]
            if seen >= wanted:
                return bucket_top_s(index)
        return bucket_top_s(BUCKETS - 1)


@dataclass
class _Cached:
    timeout_s: float
    until: float


class AttemptTimeouts:
    """Per-engine attempt timeouts from the latencies the router observed."""

    def __init__(self, config: AttemptTimeoutConfig | None = None) -> None:
        self.config = config or AttemptTimeoutConfig()
        self._engines: dict[str, LatencyWindows] = {}
        self._all: LatencyWindows | None = None
        self._cached: dict[str, _Cached] = {}

    def observe(self, engine_id: str, latency_s: float, now: float) -> None:
        """An attempt on `engine_id` answered after `latency_s` (errors from the engine
        count too: they are answers)."""
        # On every answered attempt of both data paths: no calls into the windows
        # unless one must rotate, and `bucket_of` inline.
        if latency_s <= SMALLEST_S:
            index = 0
        else:
            index = int(_log2(latency_s / SMALLEST_S) * BUCKETS_PER_DOUBLING) + 1
            if index >= BUCKETS:
                index = BUCKETS - 1
        window_s = self.config.window_s
        windows = self._engines.get(engine_id)
        if windows is None:
            windows = self._engines[engine_id] = LatencyWindows(started=now)
        if now - windows.started >= window_s:
            windows.rotate(now, window_s)
        windows.current[index] += 1
        windows.samples += 1
        every = self._all
        if every is None:
            every = self._all = LatencyWindows(started=now)
        if now - every.started >= window_s:
            every.rotate(now, window_s)
        every.current[index] += 1
        every.samples += 1

    def timeout_s(self, engine_id: str, now: float) -> float:
        """How long an attempt on `engine_id` may wait for its first answer."""
        cached = self._cached.get(engine_id)
        if cached is not None and now < cached.until:
            return cached.timeout_s
        value = self._compute(engine_id, now)
        self._cached[engine_id] = _Cached(value, now + self.config.refresh_s)
        return value

    def _compute(self, engine_id: str, now: float) -> float:
        config = self.config
        for windows in (self._engines.get(engine_id), self._all):
            if windows is None:
                continue
            windows.rotate(now, config.window_s)
            if windows.samples >= config.min_samples:
                high = windows.percentile_s(config.percentile)
                if high is not None:
                    return config.clamp(high)
        return config.max_s

    def forget(self, engine_id: str) -> None:
        """The engine left the view."""
        self._engines.pop(engine_id, None)
        self._cached.pop(engine_id, None)
