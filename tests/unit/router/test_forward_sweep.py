"""The attempt sweep (`timers.Sweeper`) the grpc path and the in-process client run their
attempt timeouts on: swept once past due, never before; young items not even looked at;
one loop timer, armed only while something is watched. A fake loop and clock: no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from router.timers import Sweeper

FLOOR = 0.1
TICK = 0.01


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeHandle:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at = at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """`call_later` and `call_exception_handler`, run by hand on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.handles: list[FakeHandle] = []
        self.errors: list[dict[str, Any]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(self.clock.now + delay, callback)
        self.handles.append(handle)
        return handle

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def armed(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled and h.callback is not None]

    def advance(self, seconds: float) -> None:
        """Move the clock, running each loop timer due on the way at its time."""
        end = self.clock.now + seconds
        while True:
            due = [h for h in self.armed() if h.at <= end]
            if not due:
                break
            handle = min(due, key=lambda h: h.at)
            self.clock.now = max(self.clock.now, handle.at)
            callback, handle.callback = handle.callback, None  # type: ignore[assignment]
            callback()
        self.clock.now = end


class Item:
    """A watched attempt: its due time, when it was swept, how often `due` was read."""

    def __init__(self, due: float) -> None:
        self._due = due
        self.reads = 0
        self.swept_at: list[float] = []

    @property
    def due(self) -> float:
        self.reads += 1
        return self._due

    def swept(self, now: float) -> None:
        self.swept_at.append(now)
        self._due = float("inf")


def _sweeper() -> tuple[Sweeper, FakeLoop, FakeClock]:
    clock = FakeClock()
    loop = FakeLoop(clock)
    sweeper = Sweeper(loop, clock, FLOOR, TICK)  # type: ignore[arg-type]
    return sweeper, loop, clock


def test_an_item_is_swept_once_past_its_due_and_never_before() -> None:
    sweeper, loop, clock = _sweeper()
    start = clock.now
    item = Item(due=start + 0.25)
    sweeper.watch(item, start)
    loop.advance(0.2)
    assert item.swept_at == []
    loop.advance(0.1)
    assert len(item.swept_at) == 1
    assert start + 0.25 <= item.swept_at[0] <= start + 0.25 + TICK
    loop.advance(1.0)
    assert len(item.swept_at) == 1


def test_items_too_young_to_be_due_are_not_even_looked_at() -> None:
    sweeper, loop, clock = _sweeper()
    old = Item(due=clock.now + FLOOR)
    sweeper.watch(old, clock.now)
    loop.advance(FLOOR / 2)
    young = [Item(due=clock.now + 5.0) for _ in range(100)]
    for item in young:
        sweeper.watch(item, clock.now)
    loop.advance(FLOOR / 2 + TICK)
    assert len(old.swept_at) == 1
    assert sum(item.reads for item in young) == 0


def test_the_loop_timer_runs_only_while_something_is_watched() -> None:
    sweeper, loop, clock = _sweeper()
    item = Item(due=clock.now + 5.0)
    sweeper.watch(item, clock.now)
    assert len(loop.armed()) == 1
    sweeper.unwatch(item)
    loop.advance(FLOOR + TICK)  # the timer finds nothing and is not armed again
    assert loop.armed() == []
    assert len(sweeper) == 0


def test_calls_that_end_in_time_arm_the_loop_timer_about_once_per_floor() -> None:
    sweeper, loop, clock = _sweeper()
    calls = 2000
    for _ in range(calls):  # 2000 calls of 1 ms each, one after the other: 2 s
        item = Item(due=clock.now + 0.5)
        sweeper.watch(item, clock.now)
        loop.advance(0.001)
        sweeper.unwatch(item)
    assert len(loop.handles) <= 2.0 / FLOOR + 2


def test_a_young_item_is_swept_in_time_beside_an_old_one_due_much_later() -> None:
    sweeper, loop, clock = _sweeper()
    slow = Item(due=clock.now + 10.0)  # no latency known yet: the ceiling
    sweeper.watch(slow, clock.now)
    loop.advance(FLOOR + TICK)  # `slow` looked at once, not yet due
    fast = Item(due=clock.now + FLOOR)
    sweeper.watch(fast, clock.now)
    loop.advance(FLOOR + TICK)
    assert len(fast.swept_at) == 1
    assert slow.swept_at == []


def test_an_item_that_fails_is_reported_and_the_others_are_still_swept() -> None:
    sweeper, loop, clock = _sweeper()

    class Broken(Item):
        def swept(self, now: float) -> None:
            raise RuntimeError("boom")

    broken, fine = Broken(due=clock.now + FLOOR), Item(due=clock.now + FLOOR)
    sweeper.watch(broken, clock.now)
    sweeper.watch(fine, clock.now)
    loop.advance(FLOOR + TICK)
    assert len(fine.swept_at) == 1
    assert [type(e["exception"]) for e in loop.errors] == [RuntimeError]


def test_a_tick_of_zero_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="tick_s"):
        Sweeper(FakeLoop(clock), clock, FLOOR, 0.0)  # type: ignore[arg-type]
