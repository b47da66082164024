"""When a failed attempt may be tried again elsewhere, and how many retries we can afford.

Why a budget: retries multiply load exactly when the fleet can least take it. The
budget lets retries add at most `ratio` of the request rate (plus a small floor
per second so a quiet router can still retry), the scheme Finagle and gRPC's
retry throttling use; when it is spent, the failure goes back to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from typing import Final

import grpc

# Transport failures, as grpc core words them: the engine never produced an answer.
_CONNECT_MARKERS: Final[tuple[str, ...]] = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "no route to host",
)
_TRANSPORT_MARKERS: Final[tuple[str, ...]] = (
    "socket closed",
    "connection reset",
    "broken pipe",
    "goaway",
    "endpoint closing",
    "keepalive watchdog timeout",
    "ping timeout",
    "transport closed",
    "recvmsg",
    "sendmsg",
)


class Failure(Enum):
    """How far an attempt got before it failed."""

    CONNECT = "connect"
    """No connection to the engine: the request surely did not reach it."""
    RESET = "reset"
    """The connection broke before any answer from the engine."""
    ANSWERED = "answered"
    """The engine answered with an error status."""
    REFUSED = "refused"
    """The engine refused the stream unprocessed (REFUSED_STREAM, or past its GOAWAY):
    not a fault of the engine, and it cost the engine nothing."""


def classify(code: grpc.StatusCode, details: str | None, answered: bool) -> Failure:
    """Classify a failed attempt; `answered` is whether any response bytes arrived."""
    if answered:
        return Failure.ANSWERED
    if code is grpc.StatusCode.CANCELLED:
        # The engine gave up on a call it never answered: a server shutting down
        # cancels what it accepted but had not started. (A caller's own cancel
        # never gets here: its call is gone.)
        return Failure.RESET
    if code is not grpc.StatusCode.UNAVAILABLE:
        return Failure.ANSWERED
    text = (details or "").lower()
    if any(marker in text for marker in _CONNECT_MARKERS):
        return Failure.CONNECT
    if any(marker in text for marker in _TRANSPORT_MARKERS):
        return Failure.RESET
    return Failure.ANSWERED


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and how many attempts a call may make."""

    max_attempts: int = 3
    idempotent_methods: Collection[str] = ("/tidepool.engine.v1.Evaluator/Evaluate",)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, got {self.max_attempts}")
        object.__setattr__(self, "idempotent_methods", frozenset(self.idempotent_methods))

    def retryable(self, method: str, failure: Failure, code: grpc.StatusCode) -> bool:
        """Connect failures and resets before an answer are always safe to retry;
        UNAVAILABLE from the engine itself only for idempotent methods."""
        if failure is not Failure.ANSWERED:
            return True
        return code is grpc.StatusCode.UNAVAILABLE and method in self.idempotent_methods

    def ejects(self, failure: Failure, code: grpc.StatusCode) -> bool:
        """Passive ejection: a connect failure, a reset, or UNAVAILABLE from the engine
        (never a refused stream: an engine draining says so before it stops)."""
        if failure is Failure.REFUSED:
            return False
        return failure is not Failure.ANSWERED or code is grpc.StatusCode.UNAVAILABLE


class Verdict(Enum):
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt (`decide`)."""

    verdict: Verdict
    eject: bool
    """Report the engine to passive ejection."""
    budgeted: bool
    """A retry that must draw on the retry budget (one that may have reached an engine)."""


_FREE: Final = frozenset({Failure.CONNECT, Failure.REFUSED})
"""Failures that cost no engine anything: their retries are not budgeted."""
MIN_ATTEMPT_S: Final = 0.001
"""Less of the caller's deadline than this left: no new attempt."""


def decide(
    policy: RetryPolicy,
    method: str,
    failure: Failure,
    code: grpc.StatusCode,
    attempts: int,
    time_left_s: float,
    replayable: bool,
) -> Decision:
    """The one retry decision every data path uses: retry, eject, or give up. Pure.

    `replayable`: the router still holds everything the attempt was sent and the
    caller has seen nothing of its answer. Why a connect failure or a refused
    stream is not budgeted: it cost no engine anything, so retrying it cannot
    amplify an outage.
    """
    eject = policy.ejects(failure, code)
    if (
        not replayable
        or not policy.retryable(method, failure, code)
        or attempts >= policy.max_attempts
        or time_left_s < MIN_ATTEMPT_S
    ):
        return Decision(Verdict.GIVE_UP, eject, budgeted=False)
    return Decision(Verdict.RETRY, eject, budgeted=failure not in _FREE)


def may_hedge(
    policy: RetryPolicy, method: str, attempts: int, time_left_s: float, replayable: bool
) -> bool:
    """Whether an attempt that ran past its attempt timeout may be joined (or replaced) by
    another attempt elsewhere. Pure; the budget is asked after this says yes.

    Only idempotent methods (the engine may be working on it after all) whose request
    the router still holds in full, and only while the call has attempts and time
    left: a frozen engine costs the caller one attempt timeout, never an error.
    """
    return (
        replayable
        and method in policy.idempotent_methods
        and attempts < policy.max_attempts
        and time_left_s >= MIN_ATTEMPT_S
    )


class RetryBudget:
    """Retries allowed: `ratio` of the calls of the last `window_s`, plus a reserve.

    Calls and retries are counted in sliding sums that decay linearly over the
    window; a retry is allowed while reserve + ratio * calls - retries >= 1,
    where the reserve is `min_per_s * window_s`.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"retry budget ratio must be 0..1, got {ratio}")
        if min_per_s < 0:
            raise ValueError(f"retry budget min_per_s must be 0 or more, got {min_per_s}")
        if not window_s > 0:
            raise ValueError(f"retry budget window_s must be above 0, got {window_s}")
        self._ratio = ratio
        self._reserve = min_per_s * window_s
        self._window_s = window_s
        self._clock = clock
        self._stamp = clock()
        self._calls = 0.0
        self._retries = 0.0

    def _decay(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._stamp = now
            keep = max(0.0, 1.0 - elapsed / self._window_s)
            self._calls *= keep
            self._retries *= keep

    def deposit(self) -> None:
        """One call was made (once per call, not per attempt)."""
        self._decay()
        self._calls += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        self._decay()
        if self.tokens >= 1:
            self._retries += 1
            return True
        return False

    @property
    def tokens(self) -> float:
        """Retries the budget would allow now."""
        return self._reserve + self._ratio * self._calls - self._retries
