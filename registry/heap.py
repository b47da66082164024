"""Garbage collection for a registry process holding thousands of long-lived streams.

At 10,000 engines the heap holds millions of long-lived objects (a stream, task,
lease, record and report per engine). CPython's full collection walks all of
them: 300-600 ms with the event loop stopped, which was the whole watch fan-out
p99. The cure is the one Instagram documented for long-lived servers: move the
long-lived objects out of the collector's sight with `gc.freeze()` once they
exist (after start-up, and again each time the fleet has grown markedly), and
collect the young generation less often, so short-lived objects die by
reference count before they are promoted. Frozen objects are still freed when
their reference count drops; only reference cycles among them are not collected,
a bounded leak of what existed at a freeze.

Only the process entry point calls `tune()` and runs the `FreezeRunner`: an
in-process registry (tests) leaves its host's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

GEN0_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default is 700): ten thousand
beats a second then run ~20 young collections a second, not ~300, each still a
millisecond or so."""
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 10
REFREEZE_GROWTH = 0.10
"""Freeze again once the streams outnumber those at the last freeze by this share..."""
REFREEZE_MIN_STREAMS = 200
"""...and by at least this many."""
CHECK_INTERVAL_S = 5.0


def tune(on_pause: Callable[[int, float], None] | None = None) -> None:
    """Set the thresholds, freeze what start-up made, and report each collection's pause."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    gc.collect()
    gc.freeze()
    if on_pause is not None:
        gc.callbacks.append(_PauseTimer(on_pause))


@dataclass
class _PauseTimer:
    """A `gc.callbacks` entry that times each collection (generation, seconds)."""

    on_pause: Callable[[int, float], None]
    started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.on_pause(info["generation"], time.perf_counter() - self.started)


def should_freeze(streams: int, frozen_streams: int) -> bool:
    """Whether the fleet grew enough since the last freeze to freeze again (pure)."""
    grown = streams - frozen_streams
    return grown >= REFREEZE_MIN_STREAMS and grown >= REFREEZE_GROWTH * frozen_streams


@dataclass
class FreezeRunner:
    """Freezes the heap again whenever the number of open streams has grown markedly."""

    streams: Callable[[], int]
    interval_s: float = CHECK_INTERVAL_S
    frozen_streams: int = 0
    freezes: int = field(default=0)

    def check(self) -> bool:
        """Freeze if due; True when it froze."""
        streams = self.streams()
        if not should_freeze(streams, self.frozen_streams):
            return False
        gc.freeze()
        self.frozen_streams = streams
        self.freezes += 1
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()
