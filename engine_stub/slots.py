"""Admission and concurrency: at most `slots` requests score at once, the rest queue.

The pool is also the engine's `LoadSource`: it counts what is in flight, what
waits, and how much work has finished (`progress`, which the registry watches
to tell a busy engine from a stuck one).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from engine_stub.errors import NotAcceptingError
from registry.sdk import LoadReport


class SlotPool:
    """Admits work while accepting; runs `slots` jobs at once; queues the rest in FIFO order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots: must be 1 or more, got {slots}")
        self._slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self._in_flight = 0
        self._queued = 0
        self._progress = 0
        self._refusal: str | None = "loading the model"
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def accepting(self) -> bool:
        return self._refusal is None

    @property
    def refusal(self) -> str | None:
        """Why new work is refused ("draining"), or None while accepting."""
        return self._refusal

    def refuse(self, reason: str) -> None:
        """Refuse new work from now on; admitted work still runs."""
        self._refusal = reason

    def accept(self) -> None:
        self._refusal = None

    def admit(self) -> Job:
        """A job holding a place in the queue; NotAcceptingError when refusing."""
        if self._refusal is not None:
            raise NotAcceptingError(self._refusal)
        self._queued += 1
        self._idle.clear()
        return Job(self)

    def load(self) -> LoadReport:
        return LoadReport(
            in_flight=self._in_flight,
            queued=self._queued,
            slots=self._slots,
            progress=self._progress,
        )

    async def wait_idle(self) -> None:
        """Return once nothing is in flight or queued."""
        await self._idle.wait()

    # Called by Job only.

    async def _acquire(self) -> None:
        await self._semaphore.acquire()
        self._queued -= 1
        self._in_flight += 1

    def _release(self, started: bool) -> None:
        if started:
            self._in_flight -= 1
            self._progress += 1
            self._semaphore.release()
        else:
            self._queued -= 1
        if self._in_flight == 0 and self._queued == 0:
            self._idle.set()


class Job:
    """One admitted request; use as a context manager so its place is always given back."""

    def __init__(self, pool: SlotPool) -> None:
        self._pool = pool
        self._started = False
        self._done = False
        self._held = False

    async def start(self) -> None:
        """Wait for a free slot (FIFO)."""
        if self._started or self._done:
            raise RuntimeError("Job.start: already started or finished")
        await self._pool._acquire()
        self._started = True

    def hold(self) -> None:
        """Never give the slot back: a stuck GPU keeps it even when the client gives up."""
        self._held = True

    def finish(self) -> None:
        """Give the place back (idempotent); a started job counts as progress."""
        if self._done or self._held:
            return
        self._done = True
        self._pool._release(self._started)

    def __enter__(self) -> Job:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish()
