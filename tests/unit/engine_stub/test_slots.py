"""SlotPool: admission, FIFO queueing beyond the slots, progress and idleness."""

from __future__ import annotations

import asyncio

import pytest

from engine_stub.errors import NotAcceptingError
from engine_stub.slots import SlotPool
from registry.sdk import LoadReport


def open_pool(slots: int) -> SlotPool:
    pool = SlotPool(slots)
    pool.accept()
    return pool


def test_refuses_until_the_model_is_loaded() -> None:
    pool = SlotPool(2)
    with pytest.raises(NotAcceptingError, match="engine is loading the model"):
        pool.admit()


async def test_runs_at_most_slots_at_once_and_queues_the_rest() -> None:
    pool = open_pool(2)
    jobs = [pool.admit() for _ in range(3)]
    assert pool.load() == LoadReport(in_flight=0, queued=3, slots=2, progress=0)
    await jobs[0].start()
    await jobs[1].start()
    third = asyncio.create_task(jobs[2].start())
    await asyncio.sleep(0)
    assert not third.done()
    assert pool.load() == LoadReport(in_flight=2, queued=1, slots=2, progress=0)
    jobs[0].finish()
    await third
    assert pool.load() == LoadReport(in_flight=2, queued=0, slots=2, progress=1)


async def test_queue_is_first_come_first_served() -> None:
    pool = open_pool(1)
    first = pool.admit()
    await first.start()
    order: list[int] = []

    async def run(n: int) -> None:
        job = pool.admit()
        with job:
            await job.start()
            order.append(n)

    waiters = [asyncio.create_task(run(n)) for n in range(4)]
    await asyncio.sleep(0)
    first.finish()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3]
    assert pool.load().progress == 5


async def test_a_job_abandoned_in_the_queue_gives_its_place_back() -> None:
    pool = open_pool(1)
    running = pool.admit()
    await running.start()
    waiting = pool.admit()
    task = asyncio.create_task(waiting.start())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waiting.finish()
    assert pool.load() == LoadReport(in_flight=1, queued=0, slots=1, progress=0)


async def test_refusing_keeps_admitted_work_and_wait_idle_returns_when_done() -> None:
    pool = open_pool(1)
    job = pool.admit()
    await job.start()
    pool.refuse("draining")
    assert not pool.accepting
    with pytest.raises(NotAcceptingError, match="engine is draining"):
        pool.admit()
    idle = asyncio.create_task(pool.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    job.finish()
    await asyncio.wait_for(idle, 1)
    assert pool.load().progress == 1


async def test_a_held_job_never_gives_its_slot_back() -> None:
    pool = open_pool(1)
    job = pool.admit()
    with job:
        await job.start()
        job.hold()
    assert pool.load() == LoadReport(in_flight=1, queued=0, slots=1, progress=0)


def test_finish_is_idempotent() -> None:
    pool = open_pool(1)
    job = pool.admit()
    job.finish()
    job.finish()
    assert pool.load() == LoadReport(in_flight=0, queued=0, slots=1, progress=0)


def test_rejects_zero_slots() -> None:
    with pytest.raises(ValueError, match="slots"):
        SlotPool(0)
