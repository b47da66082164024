"""unless_signalled: work finishes, or a shutdown signal cancels it (no real signals sent)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tidepool.runtime.signals import ShutdownSignals, unless_signalled


async def test_finished_work_returns_true() -> None:
    done = []

    async def work() -> None:
        done.append(True)

    assert await unless_signalled(work(), ShutdownSignals())
    assert done == [True]


async def test_a_signal_first_cancels_the_work() -> None:
    signals = ShutdownSignals()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def signal_once_started() -> None:
        await started.wait()
        signals.received.set()

    helper = asyncio.create_task(signal_once_started())
    assert not await unless_signalled(work(), signals)
    await helper
    assert cancelled.is_set()


async def test_errors_of_the_work_propagate() -> None:
    async def work() -> None:
        raise LookupError("bad")

    with pytest.raises(LookupError, match="bad"):
        await unless_signalled(work(), ShutdownSignals())


async def test_installed_handlers_turn_sigterm_into_an_event() -> None:
    with ShutdownSignals([signal.SIGUSR1]) as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(signals.wait(), 5)
    assert signals.name == "SIGUSR1"
