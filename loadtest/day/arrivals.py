"""Requests of a day drawn from a trace: Poisson arrivals and audio lengths, per language.

Per stream and minute the count is Poisson(rate * 60) and the times uniform in
the minute, which is a Poisson process at the minute's rate. Audio length is
log-normal (median `AUDIO_MEDIAN_S`, shape `AUDIO_SIGMA`, clipped to
`AUDIO_MIN_S`..`AUDIO_MAX_S`): read-aloud items are a few seconds, with a
tail of long passages. Every strategy replays the same requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadtest.day.queueing import FloatArray, work_s
from loadtest.day.traffic import LANGS, MINUTES, Trace

AUDIO_MEDIAN_S = 4.0
AUDIO_SIGMA = 0.5
AUDIO_MIN_S = 0.5
AUDIO_MAX_S = 60.0


def mean_audio_s() -> float:
    """The mean of the (unclipped) audio distribution; clipping moves it by < 0.1 %."""
    return AUDIO_MEDIAN_S * math.exp(AUDIO_SIGMA**2 / 2)


def mean_work_s() -> float:
    """Mean scoring seconds of a request on a speed-1.0 engine."""
    return float(work_s(np.array([mean_audio_s()]))[0])


@dataclass(frozen=True)
class Requests:
    """One language's requests of the day, in arrival order: time (s) and work (s at speed 1)."""

    arrival_s: FloatArray
    work_s: FloatArray

    def between(self, start_s: float, end_s: float) -> tuple[FloatArray, FloatArray]:
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return self.arrival_s[lo:hi], self.work_s[lo:hi]


def draw(trace: Trace, seed: int) -> dict[str, Requests]:
    """The day's requests per language; the same seed and trace give the same requests."""
    rng = np.random.default_rng(seed)
    minute_start = np.arange(MINUTES, dtype=np.float64) * 60.0
    parts: dict[str, list[FloatArray]] = {lang: [] for lang in LANGS}
    for key in sorted(trace.streams):
        rates = np.asarray(trace.streams[key], dtype=np.float64)
        counts = rng.poisson(rates * 60.0)
        times = np.repeat(minute_start, counts) + rng.uniform(0.0, 60.0, int(counts.sum()))
        parts[key[1]].append(times)
    result = {}
    for lang in LANGS:
        times = np.sort(np.concatenate(parts[lang])) if parts[lang] else np.zeros(0)
        audio = rng.lognormal(math.log(AUDIO_MEDIAN_S), AUDIO_SIGMA, times.size)
        result[lang] = Requests(times, work_s(np.clip(audio, AUDIO_MIN_S, AUDIO_MAX_S)))
    return result
