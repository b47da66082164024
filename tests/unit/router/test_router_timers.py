"""The one timer module of the three data paths: deadlines, stream timers, the wheel.

The wheel is pure (times passed in) and checked with hypothesis: a timer never
fires before its due time nor more than one tick after it, a cancelled one
never fires. `LoopTimers` is then run on a real event loop, with no sleeps
standing in for it: the test awaits the callbacks themselves.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.timers import (
    FIRST_RESPONSE,
    IDLE,
    NO_DEADLINE,
    Deadline,
    LoopTimers,
    StreamClock,
    StreamTimeouts,
    TimerWheel,
)

TICK = 0.01


def test_a_deadline_gives_each_attempt_what_is_left_and_none_when_unbounded() -> None:
    deadline = Deadline.after(100.0, 2.0)
    assert deadline.bounded
    assert deadline.left(101.5) == pytest.approx(0.5)
    assert deadline.attempt_timeout(103.0) == 0.0  # never negative for grpc
    unbounded = Deadline.after(100.0, None)
    assert (unbounded.bounded, unbounded.at, unbounded.attempt_timeout(1e9)) == (
        False, NO_DEADLINE, None
    )  # fmt: skip
    assert unbounded.left(1e9) == math.inf


def test_a_stream_clock_runs_the_first_response_timer_only_while_the_engine_owes_an_answer() -> (
    None
):
    clock = StreamClock(StreamTimeouts(first_response_s=2.0, idle_s=5.0), now=0.0)
    assert (clock.limit(), clock.due()) == ((IDLE, 5.0), 5.0)
    clock.caller_sent(1.0)
    assert (clock.limit(), clock.due()) == ((FIRST_RESPONSE, 2.0), 3.0)
    assert clock.expired(2.9) is None
    assert clock.expired(3.0) == (FIRST_RESPONSE, 2.0)
    clock.engine_sent(2.5)
    assert (clock.due(), clock.expired(7.4), clock.expired(7.5)) == (7.5, None, (IDLE, 5.0))


@given(
    st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans()), max_size=60),
    st.lists(st.floats(0.0, 6.0), min_size=1, max_size=10),
)
def test_a_wheel_timer_fires_once_never_early_at_most_a_tick_late_and_never_once_cancelled(
    timers: list[tuple[float, bool]], checks: list[float]
) -> None:
    wheel = TimerWheel(TICK)
    fired: dict[int, float] = {}
    armed = []
    for index, (due, cancel) in enumerate(timers):
        timer = wheel.add(due, lambda i=index: fired.setdefault(i, -1.0))
        armed.append((index, due, cancel, timer))
    for _, _, cancel, timer in armed:
        if cancel:
            wheel.cancel(timer)
    for now in sorted(checks):
        for timer in wheel.expire(now):
            before = len(fired)
            timer.callback()
            assert len(fired) == before + 1, "a timer fired twice"
            fired[next(i for i, _, _, t in armed if t is timer)] = now
    last = max(checks)
    for index, due, cancel, _ in armed:
        if cancel:
            assert index not in fired, "a cancelled timer fired"
        elif index in fired:
            assert fired[index] >= due - 1e-9, "fired before its due time"
        else:
            assert last < math.ceil(due / TICK) * TICK, "due by the last check, yet not fired"


def test_next_due_skips_buckets_that_emptied() -> None:
    wheel = TimerWheel(TICK)
    early = wheel.add(1.0, lambda: None)
    wheel.add(2.0, lambda: None)
    assert wheel.next_due() == pytest.approx(1.0)
    wheel.cancel(early)
    assert wheel.next_due() == pytest.approx(2.0)
    assert len(wheel) == 1
    wheel.move(early, 0.5)
    assert wheel.next_due() == pytest.approx(0.5)


def test_a_wheel_needs_a_positive_tick() -> None:
    with pytest.raises(ValueError, match="tick_s must be above 0"):
        TimerWheel(0.0)


async def test_loop_timers_run_callbacks_in_time_with_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = LoopTimers(loop, tick_s=TICK)
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()
    start = loop.time()

    def note(name: str) -> None:
        fired.append((name, loop.time()))
        if len(fired) == 2:
            done.set()

    timers.call_at(start + 0.05, lambda: note("second"))
    timers.call_at(start + 0.02, lambda: note("first"))
    cancelled = timers.call_at(start + 0.03, lambda: note("cancelled"))
    timers.cancel(cancelled)
    many = [timers.call_at(start + 30.0, lambda: None) for _ in range(1000)]
    async with asyncio.timeout(2.0):
        await done.wait()
    assert [name for name, _ in fired] == ["first", "second"]
    resolution = 1e-3  # the loop runs a timer up to its clock resolution early
    assert fired[0][1] >= start + 0.02 - resolution
    assert fired[1][1] >= start + 0.05 - resolution
    assert fired[1][1] - (start + 0.05) < 0.5, "far later than one tick"
    assert len(timers.wheel) == len(many)
    timers.close()
