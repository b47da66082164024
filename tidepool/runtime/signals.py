"""Shutdown signals as an event: every tidepool process stops gracefully on SIGTERM/SIGINT.

Install `ShutdownSignals` first thing in `main()` (a signal during start-up must not
kill the process mid-way), run start-up work under `unless_signalled`, then wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """While installed (a context manager), the given signals set `received` instead of killing."""

    def __init__(self, signals: Sequence[signal.Signals] = DEFAULT_SIGNALS) -> None:
        self._signals = tuple(signals)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = asyncio.Event()
        self.name: str | None = None
        """The first signal that arrived, e.g. "SIGTERM"."""

    def __enter__(self) -> ShutdownSignals:
        self._loop = asyncio.get_running_loop()
        for sig in self._signals:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            for sig in self._signals:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.name is None:
            self.name = sig.name
            log.info("%s received: shutting down gracefully", sig.name)
        self.received.set()

    async def wait(self) -> None:
        await self.received.wait()


async def unless_signalled(work: Coroutine[Any, Any, None], signals: ShutdownSignals) -> bool:
    """Run `work` unless a signal comes first (then cancel it); True when it finished."""
    task = asyncio.create_task(work)
    waiter = asyncio.create_task(signals.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, waiter):
            pending.cancel()  # a no-op for the one that finished
        await asyncio.gather(task, waiter, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # re-raise its error, if any
    return True
