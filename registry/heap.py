"""Garbage collection for a registry process holding thousands of long-lived streams.

At 10,000 engines the heap holds millions of long-lived objects (a stream, task,
lease, record and report per engine). CPython's full collection walks all of
them: 300-600 ms with the event loop stopped, which was the whole watch fan-out
p99. The cure is the one Instagram documented for long-lived servers: move the
long-lived objects out of the collector's sight with `gc.freeze()` once they
exist (after start-up, and again each time the fleet has grown markedly).
Frozen objects are still freed when their reference count drops; only reference
cycles among them are not collected, a bounded leak of what existed at a freeze.

Young collections run on a clock (`CollectionPacer`), not on CPython's
allocation count. That count is allocations minus deallocations, and at steady
state each beat frees the previous beat's read (old objects) as it allocates the
next one, so the count hardly moves while the youngest generation fills with
every stream's pending read (about eight objects per engine). One collection
then walked 80,000-100,000 objects: 40-55 ms of CPU (up to 200 ms on a busy
machine) with the loop stopped, once a second or so at 10,000 engines, and a
fifth of the registry's CPU. Collected every 100 ms, the young generation holds
a tenth of that (3-9 ms); the middle generation (where every stream's pending
read then sits) is walked every 2 minutes, and the whole unfrozen heap every 10.
Cyclic garbage waits that long at most: memory, not correctness.

Only the process entry point calls `tune()` and runs the `FreezeRunner` and the
`CollectionPacer`: an in-process registry (tests) leaves its host's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

YOUNG_INTERVAL_S = 0.1
MIDDLE_EVERY = 1200
"""Young collections per collection of the middle generation (2 minutes): it holds every
stream's pending read, 80-90 ms to walk at 10,000 engines, so it is walked rarely."""
FULL_EVERY = 6000
"""Young collections per full collection of the unfrozen heap (10 minutes)."""
REFREEZE_GROWTH = 0.10
"""Freeze again once the streams outnumber those at the last freeze by this share..."""
REFREEZE_MIN_STREAMS = 200
"""...and by at least this many."""
CHECK_INTERVAL_S = 5.0


def tune(on_pause: Callable[[int, float], None] | None = None) -> None:
    """Leave collections to the `CollectionPacer`, freeze what start-up made, and report
    each collection's pause."""
    gc.disable()
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


@dataclass
class CollectionPacer:
    """Collects the young generation every `interval_s`, the older ones every so many
    young collections (called by the process entry point once `tune()` disabled
    CPython's own trigger)."""

    interval_s: float = YOUNG_INTERVAL_S
    middle_every: int = MIDDLE_EVERY
    full_every: int = FULL_EVERY
    collections: int = 0

    def generation(self) -> int:
        """Which generation the next collection takes (pure; counts from 1)."""
        n = self.collections + 1
        if n % self.full_every == 0:
            return 2
        return 1 if n % self.middle_every == 0 else 0

    def tick(self) -> int:
        """Run one collection; the generation it took."""
        generation = self.generation()
        self.collections += 1
        gc.collect(generation)
        return generation

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.tick()
