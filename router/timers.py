"""Every timer a call runs, for all three data paths: deadlines, stream watchdogs, a wheel, a sweep.

The relay, the grpc.aio path and the in-process client all take their call
deadline (`Deadline`) and their stream timers (`StreamClock`, `StreamTimeouts`)
from here, so the three cannot drift. The decisions are pure (times passed in).

Why a wheel (`TimerWheel`) instead of one event-loop timer per call: arming and
cancelling an asyncio `call_at` cost 3 to 6 µs per call on uvloop and 8 to 20 µs
on asyncio's own loop (a heap of cancelled handles), against 0.3 to 0.5 µs for a
set insert and discard in a bucket of `tick_s` (measured on the development
machine, see the README). A call's timer lands in the bucket of its due time
rounded up; `LoopTimers` keeps one loop timer armed for the earliest live
bucket, so a router whose calls all finish in time wakes about once a deadline,
not once a call. The cost: a timer fires up to `tick_s` late. The grpc path's
and the client's attempt timeouts pay even less (`Sweeper`): a dict insert and
pop per call, the items looked at by one periodic pass.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

TICK_S: Final = 0.01
"""The wheel's granularity: a timer fires at most this late."""
NO_DEADLINE: Final = math.inf
# Final: in the compiled build a C static each, not a module attribute looked up per use.
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop


class Deadline:
    """When a call must be over; each attempt gets what is left of it."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, now: float, timeout_s: float | None) -> Deadline:
        """The deadline `timeout_s` from `now` (None: no deadline)."""
        return cls(NO_DEADLINE if timeout_s is None else now + timeout_s)

    @property
    def bounded(self) -> bool:
        return self.at != NO_DEADLINE

    def left(self, now: float) -> float:
        """Seconds left at `now` (inf when unbounded; negative once past)."""
        return self.at - now

    def attempt_timeout(self, now: float) -> float | None:
        """What a new attempt may take (None: unbounded), never below zero."""
        return max(self.at - now, 0.0) if self.bounded else None


# ---- stream timers -------------------------------------------------------------------

FIRST_RESPONSE: Final = "sent no response within"
IDLE: Final = "idle for"


@dataclass(frozen=True)
class StreamTimeouts:
    first_response_s: float = 30.0
    """Longest wait for the engine's first message after the caller's last one."""
    idle_s: float = 60.0
    """Longest silence in both directions otherwise (before the caller's first
    message, and once the engine has answered)."""


def stream_limit(spoke: bool, answered: bool, timeouts: StreamTimeouts) -> tuple[str, float]:
    """Which stream timer runs: waiting for a first answer to the caller, or idle; its limit."""
    if spoke and not answered:
        return FIRST_RESPONSE, timeouts.first_response_s
    return IDLE, timeouts.idle_s


def stream_expired(
    now: float, last_activity: float, spoke: bool, answered: bool, timeouts: StreamTimeouts
) -> tuple[str, float] | None:
    """(what, limit) when the running stream timer ran out at `now`, else None."""
    what, limit = stream_limit(spoke, answered, timeouts)
    return (what, limit) if now - last_activity >= limit else None


class StreamClock:
    """The two stream timers of one non-unary call (first response, idle), as plain state.

    A call's stream fails with DEADLINE_EXCEEDED when the engine sends nothing
    for `first_response_s` after the caller's last message (once the caller has
    sent something: a message or its half-close), or when nothing moves either
    way for `idle_s` otherwise. Traffic only moves `last_activity`; whoever runs
    the clock asks `due()` and `expired(now)`.
    """

    __slots__ = ("answered", "last_activity", "spoke", "timeouts")

    def __init__(self, timeouts: StreamTimeouts, now: float) -> None:
        self.timeouts = timeouts
        self.spoke = False
        self.answered = False
        self.last_activity = now

    def caller_sent(self, now: float) -> None:
        """A message, or the half-close, from the caller."""
        self.last_activity = now
        self.spoke = True

    def engine_sent(self, now: float) -> None:
        """A response message (or response bytes) from the engine."""
        self.last_activity = now
        self.answered = True

    def limit(self) -> tuple[str, float]:
        return stream_limit(self.spoke, self.answered, self.timeouts)

    def due(self) -> float:
        """When the running timer runs out if nothing moves."""
        return self.last_activity + self.limit()[1]

    def expired(self, now: float) -> tuple[str, float] | None:
        return stream_expired(now, self.last_activity, self.spoke, self.answered, self.timeouts)


# ---- the wheel -------------------------------------------------------------------------


class Timer:
    """One armed timer of a `TimerWheel`; `callback` runs once when it fires."""

    __slots__ = ("callback", "slot")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.slot: int | None = None
        """The bucket it sits in; None once fired or cancelled."""


class TimerWheel:
    """Timers in buckets of `tick_s` by due time, rounded up. Pure: `now` passed in."""

    def __init__(self, tick_s: float = TICK_S) -> None:
        if not tick_s > 0:
            raise ValueError(f"timer wheel tick_s must be above 0, got {tick_s}")
        self.tick_s = tick_s
        self._buckets: dict[int, set[Timer]] = {}
        self._slots: list[int] = []
        """A heap of bucket numbers (some maybe emptied since)."""

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, due: float, callback: Callable[[], None]) -> Timer:
        """Arm a timer that fires at `due` (up to `tick_s` later)."""
        timer = Timer(callback)
        self.move(timer, due)
        return timer

    def move(self, timer: Timer, due: float) -> None:
        """Re-arm `timer` for `due` (armed or not)."""
        self.cancel(timer)
        slot = math.ceil(due / self.tick_s)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            _heappush(self._slots, slot)
        bucket.add(timer)
        timer.slot = slot

    def cancel(self, timer: Timer) -> None:
        slot = timer.slot
        if slot is None:
            return
        timer.slot = None
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.discard(timer)
            if not bucket:
                del self._buckets[slot]

    def next_due(self) -> float | None:
        """When the earliest live bucket is due (None: nothing armed)."""
        slots = self._slots
        while slots and slots[0] not in self._buckets:
            _heappop(slots)
        return slots[0] * self.tick_s if slots else None

    def expire(self, now: float) -> list[Timer]:
        """Take out every timer due by `now`, earliest bucket first (callbacks not run)."""
        fired: list[Timer] = []
        slots = self._slots
        while slots and slots[0] * self.tick_s <= now:
            bucket = self._buckets.pop(_heappop(slots), None)
            if bucket:
                for timer in bucket:
                    timer.slot = None
                fired.extend(bucket)
        return fired


class LoopTimers:
    """A `TimerWheel` run on an event loop with one loop timer, for its earliest bucket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = TICK_S) -> None:
        self._loop = loop
        self.wheel = TimerWheel(tick_s)
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def call_at(self, due: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` at loop time `due` (up to one tick late); cancel with `cancel`."""
        timer = self.wheel.add(due, callback)
        self._arm(due)
        return timer

    def move(self, timer: Timer, due: float) -> None:
        self.wheel.move(timer, due)
        self._arm(due)

    def cancel(self, timer: Timer) -> None:
        self.wheel.cancel(timer)  # the loop timer stays: it finds nothing, or the next bucket

    def _arm(self, due: float) -> None:
        at = math.ceil(due / self.wheel.tick_s) * self.wheel.tick_s
        if at < self._armed_at:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = at
            self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        # The loop may run a timer a hair before its time (its clock resolution):
        # the bucket it was armed for counts as due.
        now = max(self._loop.time(), self._armed_at)
        self._handle = None
        self._armed_at = math.inf
        try:
            for timer in self.wheel.expire(now):
                timer.callback()
        finally:
            due = self.wheel.next_due()
            if due is not None:
                self._arm(due)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf


# ---- the sweep ---------------------------------------------------------------------------


class Swept(Protocol):
    """Something a `Sweeper` watches: its earliest due time, and what to do once past it."""

    @property
    def due(self) -> float: ...

    def swept(self, now: float) -> None:
        """`due` has passed (called from the loop; may `watch` or `unwatch` itself)."""


class Sweeper:
    """Items in flight, each asked `swept(now)` once past its `due`, by one loop timer.

    Why instead of a wheel timer per attempt (`LoopTimers`): nearly every attempt
    answers long before its attempt timeout, so all a call should pay is a dict
    insert and pop, never a timer object, a bucket or a heap entry. Items are kept in the
    order watched, which is the order of their `since`; an item is never due
    before `since + floor_s` (attempt timeouts have a floor), so one pass stops
    at the first item too young to be due, and the loop timer runs only while
    something is watched, about once per `floor_s` while every call answers in
    time. The cost: an item is swept up to `tick_s` late. `clock` is the one
    the items' times are read on.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        floor_s: float,
        tick_s: float = TICK_S,
    ) -> None:
        if not tick_s > 0:
            raise ValueError(f"sweeper tick_s must be above 0, got {tick_s}")
        self.loop = loop
        self._clock = clock
        self._floor_s = max(floor_s, 0.0)
        self._tick_s = tick_s
        self._items: dict[Swept, float] = {}
        """Item -> its `since`, in the order watched."""
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        return len(self._items)

    def watch(self, item: Swept, since: float) -> None:
        """Sweep `item` once past its `due` (not before `since + floor_s`); watching an
        item again moves it to the end, with its new `since`."""
        items = self._items
        if item in items:
            del items[item]
        items[item] = since
        at = since + self._floor_s
        if at < self._armed_at:
            self._arm(at, since)

    def unwatch(self, item: Swept) -> None:
        self._items.pop(item, None)  # the loop timer stays: it finds nothing, or the next

    def _arm(self, at: float, now: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = at
        self._handle = self.loop.call_later(max(at - now, 0.0), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self._clock()
        young = now - self._floor_s
        fired: list[Swept] = []
        after = math.inf
        for item, since in self._items.items():
            if since > young:  # this one and all later ones: too young to be due
                after = min(after, since + self._floor_s)
                break
            due = item.due
            if due <= now:
                fired.append(item)
            elif due < after:
                after = due
        try:
            for item in fired:
                try:
                    item.swept(now)
                except Exception as error:  # one item's failure must not stop the sweep
                    self.loop.call_exception_handler(
                        {"message": "attempt sweep failed", "exception": error, "item": item}
                    )
        finally:
            if self._items:
                # Items swept just now were watched again at `now` at the earliest.
                at = max(min(after, now + self._floor_s), now + self._tick_s)
                if at < self._armed_at:
                    self._arm(at, now)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf
        self._items.clear()
