"""One pool as a first-come-first-served multi-server queue: one entry per slot (pure).

Each slot holds the time it is next free in a min-heap; each arrival, in time
order, takes the slot that frees first: start = max(arrival, free), finish =
start + work / speed of that slot's engine. That is the Kiefer-Wolfowitz
recursion of a FCFS G/G/c queue, O(log c) per request, so a day of millions
of requests runs in seconds. It models a pool as one shared queue, which is
what least-loaded balancing approaches; the router's weighted round robin
spreads a little worse, so latencies here are a slight underestimate, for
every strategy alike.

Engines join and leave as the scheduler acts: a leaving engine's slots take no
new requests (what it holds still finishes: stale heap entries are skipped
lazily by a per-engine generation), a joining engine's slots are free at once.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine_stub.load_model import BASE_LATENCY_MS, LATENCY_MS_PER_AUDIO_S

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def work_s(audio_s: FloatArray) -> FloatArray:
    """Seconds of scoring on a speed-1.0 engine: the engine stub's latency model, vectorised."""
    return (BASE_LATENCY_MS + LATENCY_MS_PER_AUDIO_S * audio_s) / 1000.0


@dataclass
class Served:
    """Requests the queue placed: finish times, the engine (number) of each, and latency."""

    finish: FloatArray
    engine: IntArray
    latency_s: FloatArray


@dataclass
class SlotQueue:
    """A pool's slots; engines are small integers (their index in the simulated fleet)."""

    heap: list[tuple[float, int, int]] = field(default_factory=list)
    members: dict[int, int] = field(default_factory=dict)
    """Engine number → the generation its live heap entries carry."""
    speed: dict[int, float] = field(default_factory=dict)
    backlog: deque[tuple[float, float]] = field(default_factory=deque)
    """Requests that arrived while the pool had no slot at all: (arrival, work)."""
    _generation: int = 0

    def join(self, engine: int, slots: int, speed: float, now: float) -> None:
        """The engine's slots take requests from `now`."""
        self._generation += 1
        self.members[engine] = self._generation
        self.speed[engine] = speed
        for _ in range(slots):
            heapq.heappush(self.heap, (now, engine, self._generation))

    def leave(self, engine: int) -> None:
        """No new requests for the engine; what it holds still finishes."""
        self.members.pop(engine, None)

    @property
    def size(self) -> int:
        return len(self.members)

    def serve(self, arrivals: Sequence[float], work: Sequence[float]) -> Served:
        """Place requests arriving in time order (after any backlog); those that find no slot
        at all wait in the backlog for the next call."""
        times, loads = list(arrivals), list(work)
        if self.backlog:
            times = [t for t, _ in self.backlog] + times
            loads = [w for _, w in self.backlog] + loads
            self.backlog.clear()
        heap, members, speed = self.heap, self.members, self.speed
        finish: list[float] = []
        engines: list[int] = []
        for index, (arrival, load) in enumerate(zip(times, loads, strict=True)):
            while heap and members.get(heap[0][1]) != heap[0][2]:
                heapq.heappop(heap)  # a slot of an engine that left
            if not heap:
                self.backlog.extend(zip(times[index:], loads[index:], strict=True))
                times = times[:index]
                break
            free, engine, generation = heap[0]
            done = (free if free > arrival else arrival) + load / speed[engine]
            heapq.heapreplace(heap, (done, engine, generation))
            finish.append(done)
            engines.append(engine)
        done_at = np.asarray(finish, dtype=np.float64)
        return Served(
            done_at,
            np.asarray(engines, dtype=np.int64),
            done_at - np.asarray(times, dtype=np.float64),
        )


@dataclass
class InSystem:
    """Finish times of recent requests per engine, to report in-flight plus queued work."""

    batches: deque[tuple[FloatArray, IntArray]] = field(default_factory=deque)

    def add(self, served: Served) -> None:
        if served.finish.size:
            self.batches.append((served.finish, served.engine))

    def counts(self, now: float, engines: int) -> IntArray:
        """Requests that arrived before `now` and finish after it, per engine number."""
        while self.batches and float(self.batches[0][0].max()) <= now:
            self.batches.popleft()
        total = np.zeros(engines, dtype=np.int64)
        for finish, engine in self.batches:
            busy = engine[finish > now]
            if busy.size:
                total += np.bincount(busy, minlength=engines)[:engines]
        return total
