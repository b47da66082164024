"""The stream watchdog of a relayed call: the same two timers as the grpc.aio path.

See `router.streams`: a non-unary call fails with DEADLINE_EXCEEDED when the
engine sends nothing for `first_response_s` after the caller's last message
(once the caller has sent something: a message or its half-close), or when
nothing moves either way for `idle_s` otherwise. Why one lazily re-armed timer
instead of one per message: traffic only moves a timestamp; the timer, when it
fires early, re-arms itself for the new due time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from router.streams import StreamTimeouts

FIRST_RESPONSE = "sent no response within"
IDLE = "idle for"


def limit_for(spoke: bool, answered: bool, timeouts: StreamTimeouts) -> tuple[str, float]:
    """Which timer runs: waiting for a first answer to the caller, or idle; and its limit."""
    if spoke and not answered:
        return FIRST_RESPONSE, timeouts.first_response_s
    return IDLE, timeouts.idle_s


def expired(
    now: float, last_activity: float, spoke: bool, answered: bool, timeouts: StreamTimeouts
) -> tuple[str, float] | None:
    """(what, limit) when the running timer ran out at `now`, else None."""
    what, limit = limit_for(spoke, answered, timeouts)
    return (what, limit) if now - last_activity >= limit else None


class StreamWatchdog:
    """Watches one call; `on_expired(what, limit)` runs once when a timer runs out."""

    __slots__ = ("_at", "_handle", "_loop", "_on_expired", "answered", "last_activity", "spoke",
                 "timeouts")  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeouts: StreamTimeouts,
        on_expired: Callable[[str, float], None],
    ) -> None:
        self._loop = loop
        self._on_expired = on_expired
        self.timeouts = timeouts
        self.spoke = False
        self.answered = False
        self.last_activity = loop.time()
        self._at = self.last_activity + timeouts.idle_s
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._at, self._check)

    def caller_sent(self) -> None:
        """A message, or the half-close, from the caller."""
        self.last_activity = self._loop.time()
        if not self.spoke:
            self.spoke = True
            if not self.answered:  # the first-response limit may be the shorter one
                self._arm()

    def engine_sent(self) -> None:
        """Response bytes from the engine."""
        self.last_activity = self._loop.time()
        self.answered = True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        due = self.last_activity + limit_for(self.spoke, self.answered, self.timeouts)[1]
        if self._handle is not None and due >= self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = due
        self._handle = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        self._handle = None
        verdict = expired(
            self._loop.time(), self.last_activity, self.spoke, self.answered, self.timeouts
        )
        if verdict is not None:
            self._on_expired(*verdict)
        else:
            self._arm()
