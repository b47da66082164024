"""Utilisation smoothed over a window, with its trend, per pool (pure; `now` is passed in).

The control loop samples every interval; deciding on the mean of the window
ignores a single noisy second, and the least-squares slope tells a surge that
is still rising from one that is already passing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Series:
    window_s: float
    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now: float, value: float) -> None:
        self.samples.append((now, value))
        while self.samples and self.samples[0][0] < now - self.window_s:
            self.samples.popleft()

    def mean(self) -> float:
        if not self.samples:
            return 0.0
        return sum(v for _, v in self.samples) / len(self.samples)

    def slope_per_s(self) -> float:
        """Least-squares slope of the samples; 0 with fewer than 3 or no spread in time."""
        if len(self.samples) < 3:
            return 0.0
        n = len(self.samples)
        mean_t = sum(t for t, _ in self.samples) / n
        mean_v = self.mean()
        spread = sum((t - mean_t) ** 2 for t, _ in self.samples)
        if spread <= 0:
            return 0.0
        return sum((t - mean_t) * (v - mean_v) for t, v in self.samples) / spread

    def span_s(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0


@dataclass
class UtilizationWindow:
    """One `Series` per pool."""

    window_s: float
    series: dict[str, Series] = field(default_factory=dict)

    def add(self, pool: str, now: float, value: float) -> None:
        self.series.setdefault(pool, Series(self.window_s)).add(now, value)

    def mean(self, pool: str) -> float:
        series = self.series.get(pool)
        return series.mean() if series else 0.0

    def slope_per_s(self, pool: str) -> float:
        series = self.series.get(pool)
        return series.slope_per_s() if series else 0.0

    def warm(self, pool: str) -> bool:
        """True once the window holds half a window of samples (no decisions on one sample)."""
        series = self.series.get(pool)
        return series is not None and series.span_s() >= self.window_s / 2
