"""Send one unary call to a picked engine, retrying elsewhere when that is safe.

Shared by the proxy and the in-process client, so both balance, eject and retry
the same way, by `retry.decide` and a `timers.Deadline` (which the relay uses
too). Bytes in, bytes out: nothing here decodes a message.

Frozen engines (a stuck kernel, a paused VM, SIGSTOP) raise no error: their
calls just never answer. Each attempt of an idempotent method therefore has an
attempt timeout learnt from the engine's own recent latency
(`router.attempt_timeout`); past it, a second attempt is *hedged* on another
engine (both run, the first answer wins, the loser is cancelled), if the retry
budget allows; otherwise the call keeps waiting, so a slow fleet never turns
into errors or a retry storm. Timeouts with no answer from the engine in
between eject it (`OutlierDetector.report_timeout`). The relay asks the same
questions through the methods here (`attempt_timeout_s`, `observe`,
`attempt_timed_out`, `may_hedge`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

import grpc

from router.attempt_timeout import AttemptTimeouts
from router.channels import ChannelPool
from router.endpoint import Endpoint
from router.metadata import Metadata, answer_metadata
from router.retry import (
    Failure,
    RetryBudget,
    RetryPolicy,
    Verdict,
    classify,
    decide,
    may_hedge,
)
from router.table import RoutingTable
from router.timers import Deadline, Sweeper

_NONE: Final[frozenset[str]] = frozenset()
PROBE_INTERVAL_S: Final = 0.25
"""Between probes of an engine ejected as silent (each waits up to the PING timeout)."""


class ForwardMetrics(Protocol):
    def answered(self, alias: str, instance: str, code: str, seconds: float) -> None: ...

    def retried(self, alias: str, reason: str) -> None: ...

    def budget_exhausted(self, alias: str) -> None: ...

    def failed(self, code: str) -> None: ...

    def called(self, method: str, seconds: float) -> None: ...

    def attempt_timed_out(self, alias: str, instance: str) -> None: ...

    def hedged(self, alias: str) -> None: ...

    def hedge_won(self, alias: str) -> None: ...

    def ping_failed(self) -> None: ...


class _NoMetrics:
    def answered(self, alias: str, instance: str, code: str, seconds: float) -> None:
        pass

    def retried(self, alias: str, reason: str) -> None:
        pass

    def budget_exhausted(self, alias: str) -> None:
        pass

    def failed(self, code: str) -> None:
        pass

    def called(self, method: str, seconds: float) -> None:
        pass

    def attempt_timed_out(self, alias: str, instance: str) -> None:
        pass

    def hedged(self, alias: str) -> None:
        pass

    def hedge_won(self, alias: str) -> None:
        pass

    def ping_failed(self) -> None:
        pass


class ForwardError(Exception):
    """The call failed: the status, details and trailers to give the caller."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing: Metadata = (),
        instance: str | None = None,
        initial: Metadata = (),
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing
        self.instance = instance
        self.initial = initial
        """The engine's initial metadata, when it sent some but no message."""


@dataclass(slots=True)
class AttemptCounts:
    """One engine's attempt timeouts and hedges, for `GET /v1/endpoints`."""

    attempt_timeouts: int = 0
    hedges: int = 0
    """Hedges started because an attempt on this engine ran past its timeout."""
    hedge_wins: int = 0
    """Hedges sent to this engine that answered first."""


@dataclass(frozen=True, slots=True)
class UnaryAnswer:
    response: bytes
    initial: Metadata
    trailing: Metadata
    alias: str
    endpoint: Endpoint


class Forwarder:
    """Pick, call, classify, eject, retry, hedge: the request path of the router."""

    def __init__(
        self,
        table: RoutingTable,
        channels: ChannelPool,
        policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        metrics: ForwardMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeouts: AttemptTimeouts | None = None,
    ) -> None:
        self.table = table
        self.channels = channels
        self.policy = policy or RetryPolicy()
        self.budget = budget or RetryBudget()
        self.metrics: ForwardMetrics = metrics or _NoMetrics()
        self.clock = clock
        self.timeouts = timeouts or AttemptTimeouts()
        self.answered_at: dict[str, float] = {}
        """When each engine last answered an attempt (anything, errors included)."""
        self.answered_begun: dict[str, float] = {}
        """The latest start among the attempts each engine answered."""
        self.counts: dict[str, AttemptCounts] = {}
        self.ping_failures: dict[str, int] = {}
        """Engine connections failed for want of a PING ACK, by engine address (relay)."""
        self._sweeper: Sweeper | None = None
        self.prober: Callable[[str], Awaitable[bool]] | None = None
        """Asks an engine at an address whether it answers (`router.relay.upstream.probe`)."""
        self.probe_interval_s = PROBE_INTERVAL_S
        self._probes: dict[str, asyncio.Task[None]] = {}

    def pick(self, aliases: tuple[str, ...], exclude: frozenset[str]) -> tuple[str, Endpoint]:
        picked = self.table.pick(aliases, exclude)
        if picked is None:
            names = ", ".join(repr(a) for a in aliases)
            more = " left to try" if exclude else ""
            raise ForwardError(
                grpc.StatusCode.UNAVAILABLE, f"no healthy instance{more} in alias {names}"
            )
        return picked

    def after_failure(
        self,
        method: str,
        alias: str,
        endpoint: Endpoint,
        failure: Failure,
        code: grpc.StatusCode,
        attempts: int,
        time_left: float,
        replayable: bool = True,
    ) -> bool:
        """Act on `retry.decide`: eject if it says so; True when the call may be tried
        again elsewhere (and the budget allows it)."""
        decision = decide(self.policy, method, failure, code, attempts, time_left, replayable)
        if decision.eject:
            self.table.report_failure(alias, endpoint.id)
        if decision.verdict is Verdict.GIVE_UP:
            return False
        if decision.budgeted and not self.budget.try_spend():
            self.metrics.budget_exhausted(alias)
            return False
        self.metrics.retried(alias, failure.value)
        return True

    # ---- attempt timeouts and hedges (both data paths) ---------------------------------

    def attempt_timeout_s(self, method: str, engine_id: str, now: float) -> float | None:
        """How long an attempt of `method` on the engine may wait for its first answer
        before another engine is tried; None: no attempt timeout (not idempotent)."""
        if method not in self.policy.idempotent_methods:
            return None
        return self.timeouts.timeout_s(engine_id, now)

    def observe(self, engine_id: str, latency_s: float, now: float) -> None:
        """The engine answered an attempt (its first response) after `latency_s`."""
        self.timeouts.observe(engine_id, latency_s, now)
        self.answered_at[engine_id] = now
        begun = now - latency_s
        if begun > self.answered_begun.get(engine_id, -math.inf):
            self.answered_begun[engine_id] = begun

    def attempt_timed_out(
        self, alias: str, engine_id: str, started: float, address: str = ""
    ) -> None:
        """An attempt begun at `started` ran past its timeout: count it, and eject the
        engine after consecutive ones if it answered nothing at all meanwhile while
        other engines answered attempts begun after this one. Why the second half:
        when the whole fleet slows down at once (a heavier model, a burst), its
        answers are to calls older than the timed-out attempt, and ejecting anyone
        would only crowd the rest; a frozen engine is overtaken by its peers."""
        self.metrics.attempt_timed_out(alias, engine_id)
        self._counts(engine_id).attempt_timeouts += 1
        answered = self.answered_at.get(engine_id, -math.inf)
        if (
            answered < started
            and self.overtaken(engine_id, started)
            and self.table.report_timeout(alias, engine_id, answered)
        ):
            self.watch_silent(address, alias, engine_id)

    def overtaken(self, engine_id: str, started: float) -> bool:
        """Whether another engine answered an attempt begun after `started` (asked once
        per attempt timeout: a pass over the engines is cheap enough)."""
        return any(b > started for other, b in self.answered_begun.items() if other != engine_id)

    def may_hedge(
        self,
        method: str,
        alias: str,
        slow_id: str,
        attempts: int,
        time_left: float,
        replayable: bool,
    ) -> bool:
        """Whether another attempt may start beside (relay: instead of) one on `slow_id`
        that ran past its timeout; it is taken from the retry budget. False: keep waiting."""
        if not may_hedge(self.policy, method, attempts, time_left, replayable):
            return False
        if not self.budget.try_spend():
            self.metrics.budget_exhausted(alias)
            return False
        self.metrics.hedged(alias)
        self._counts(slow_id).hedges += 1
        return True

    def hedge_won(self, alias: str, engine_id: str) -> None:
        self.metrics.hedge_won(alias)
        self._counts(engine_id).hedge_wins += 1

    def ping_failed(self, address: str) -> None:
        """An engine connection was failed: no PING ACK in time (the relay's keepalive)."""
        self.metrics.ping_failed()
        self.ping_failures[address] = self.ping_failures.get(address, 0) + 1
        for alias, engine_id in self.table.report_silent(address):
            self.watch_silent(address, alias, engine_id)

    def watch_silent(self, address: str, alias: str, engine_id: str) -> None:
        """Probe an engine ejected as silent until it answers, then let it back in."""
        if self.prober is None or not address or address in self._probes:
            return
        task = asyncio.get_running_loop().create_task(self._probe(address, alias, engine_id))
        self._probes[address] = task
        task.add_done_callback(lambda _: self._probes.pop(address, None))

    async def _probe(self, address: str, alias: str, engine_id: str) -> None:
        assert self.prober is not None
        while self.table.is_silent(alias, engine_id):
            if await self.prober(address):
                self.table.report_alive(address)
                return
            await asyncio.sleep(self.probe_interval_s)  # a period between probes

    async def close(self) -> None:
        """Stop the probes and the attempt sweep (shutdown)."""
        if self._sweeper is not None:
            self._sweeper.close()
            self._sweeper = None
        probes = list(self._probes.values())
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)

    def _counts(self, engine_id: str) -> AttemptCounts:
        counts = self.counts.get(engine_id)
        if counts is None:
            counts = self.counts[engine_id] = AttemptCounts()
        return counts

    def attempt_view(self, endpoints: Collection[Endpoint]) -> dict[str, dict[str, Any]]:
        """Per engine id: its attempt timeout now and its counts (`GET /v1/endpoints`)."""
        now = self.clock()
        view: dict[str, dict[str, Any]] = {}
        for endpoint in endpoints:
            counts = self.counts.get(endpoint.id) or AttemptCounts()
            view[endpoint.id] = {
                "attempt_timeout_s": round(self.timeouts.timeout_s(endpoint.id, now), 3),
                "attempt_timeouts": counts.attempt_timeouts,
                "hedges": counts.hedges,
                "hedge_wins": counts.hedge_wins,
                "ping_failures": self.ping_failures.get(endpoint.address, 0),
            }
        return view

    def retain(self, instance_ids: Collection[str], addresses: Collection[str]) -> None:
        """Forget engines that left the view (a churning fleet must not grow memory)."""
        for engine_id in [i for i in self.counts if i not in instance_ids]:
            del self.counts[engine_id]
        for engine_id in [i for i in self.answered_at if i not in instance_ids]:
            del self.answered_at[engine_id]
            self.answered_begun.pop(engine_id, None)
            self.timeouts.forget(engine_id)
        for address in [a for a in self.ping_failures if a not in addresses]:
            del self.ping_failures[address]

    def sweeper(self) -> Sweeper:
        """The sweep the grpc path's attempt timeouts run on (made in the running loop).

        Why `is_running` and not `get_running_loop`: on Python 3.11 the latter costs
        a getpid system call, and a forwarder serves one loop at a time. A sweep of a
        loop that stopped is dropped, not closed: its loop may be closed too."""
        sweeper = self._sweeper
        if sweeper is None or not sweeper.loop.is_running():
            loop = asyncio.get_running_loop()
            sweeper = self._sweeper = Sweeper(loop, self.clock, self.timeouts.config.min_s)
        return sweeper

    def unary(
        self,
        method: str,
        request: bytes,
        aliases: tuple[str, ...],
        metadata: Metadata,
        timeout: float,
        *,
        with_metadata: bool = True,
    ) -> Coroutine[Any, Any, UnaryAnswer]:
        """Forward one unary call (await the result); raises ForwardError with the status
        to return. The call's deadline runs from now.

        `with_metadata=False` skips collecting the engine's initial and trailing
        metadata (the in-process client returns the message alone). Why not `async
        def`: a coroutine frame more per call, for nothing.
        """
        self.budget.deposit()
        deadline = Deadline(self.clock() + timeout)
        return _UnaryRace(self, method, request, aliases, metadata, deadline).run(with_metadata)


class _Try:
    """One attempt of a unary call on the grpc path."""

    __slots__ = ("alias", "call", "due", "endpoint", "hedge", "started")

    def __init__(
        self, alias: str, endpoint: Endpoint, call: Any, started: float, due: float, hedge: bool
    ) -> None:
        self.alias = alias
        self.endpoint = endpoint
        self.call = call
        self.started = started
        self.due = due
        """When it runs past its attempt timeout (inf: no timeout, or already past)."""
        self.hedge = hedge


class _UnaryRace:
    """The attempts of one unary call: one at a time, two while a hedge runs.

    Why this shape: every call pays for the waiting, and almost none needs more
    than one attempt. An attempt whose timeout can run out before the call's
    deadline is watched by the forwarder's `Sweeper` (a dict insert and pop per
    call, no timer); the sweep counts the timeout and starts the hedge itself.
    While nothing is watched the call is awaited directly, as a plain grpc.aio
    call would be; once something is, the race waits on one future that the
    attempts' done callbacks resolve (a task per attempt and `asyncio.wait`
    would cost several times that).
    """

    __slots__ = (
        "aliases",
        "attempts",
        "deadline",
        "due",
        "fwd",
        "hedged",
        "live",
        "metadata",
        "method",
        "request",
        "sweeper",
        "tried",
        "wake",
    )

    def __init__(
        self,
        fwd: Forwarder,
        method: str,
        request: bytes,
        aliases: tuple[str, ...],
        metadata: Metadata,
        deadline: Deadline,
    ) -> None:
        self.fwd = fwd
        self.method = method
        self.request = request
        self.aliases = aliases
        self.metadata = metadata
        self.deadline = deadline
        self.live: list[_Try] = []
        self.tried: list[str] = []
        """Engine ids of every attempt so far (a new pick excludes them)."""
        self.attempts = 0
        self.hedged = False
        """Once per call: a hedge that times out too waits (no cascade of attempts)."""
        self.due = math.inf
        """The earliest attempt timeout of the live attempts (`Sweeper` reads it)."""
        self.sweeper: Sweeper | None = None
        """Set once an attempt of this call was watched: from then on, wait on `wake`."""
        self.wake: asyncio.Future[None] | None = None

    async def run(self, with_metadata: bool) -> UnaryAnswer:
        self.launch(*self.fwd.pick(self.aliases, _NONE), hedge=False)
        live = self.live
        try:
            while True:
                sweeper = self.sweeper
                if sweeper is None:
                    done = live[0]  # the only attempt, and nothing else can start one
                else:
                    for done in live:  # the loop finds `done`
                        if done.call.done():
                            break
                    else:
                        # Inline, not a method: this wait is on every watched call.
                        wake = self.wake = sweeper.loop.create_future()
                        await wake
                        self.wake = None
                        continue
                answer = await self.settle(done, with_metadata)
                if answer is not None:
                    return answer
        finally:
            if self.due != math.inf:  # watched until now (the caller went away)
                self.due = math.inf
                assert self.sweeper is not None
                self.sweeper.unwatch(self)
            if live:
                self.cancel_live()

    def cancel_live(self) -> None:
        """Cancel the attempts still running: a hedge lost, or the caller went away."""
        fwd = self.fwd
        for loser in self.live:
            loser.call.cancel()
            fwd.table.in_flight[loser.endpoint.id] -= 1
            elapsed = fwd.clock() - loser.started
            fwd.metrics.answered(loser.alias, loser.endpoint.id, "CANCELLED", elapsed)
        self.live.clear()

    def launch(self, alias: str, endpoint: Endpoint, hedge: bool) -> None:
        fwd = self.fwd
        self.attempts += 1
        self.tried.append(endpoint.id)
        now = fwd.clock()
        deadline_at = self.deadline.at
        call: Any = fwd.channels.unary(endpoint.address, self.method)(
            self.request, timeout=deadline_at - now, metadata=self.metadata
        )
        in_flight = fwd.table.in_flight
        in_flight[endpoint.id] = in_flight.get(endpoint.id, 0) + 1
        due = math.inf
        if self.method in fwd.policy.idempotent_methods:  # as `attempt_timeout_s`, inline
            due = now + fwd.timeouts.timeout_s(endpoint.id, now)
        if due >= deadline_at:
            due = math.inf  # the call's own deadline comes first: nothing to watch
        self.live.append(_Try(alias, endpoint, call, now, due, hedge))
        sweeper = self.sweeper
        if due != math.inf:
            if sweeper is None:
                sweeper = fwd._sweeper  # as `fwd.sweeper()`, inline: on every watched call
                if sweeper is None or not sweeper.loop.is_running():
                    sweeper = fwd.sweeper()
                self.sweeper = sweeper
                for other in self.live:  # a retry's earlier attempts have all ended
                    if other.call is not call:
                        other.call.add_done_callback(self.wake_up)
            if due < self.due:  # else it keeps its place: an earlier attempt is due first
                self.due = due
                sweeper.watch(self, now)
        if sweeper is not None:
            call.add_done_callback(self.wake_up)

    def wake_up(self, *_: object) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def swept(self, now: float) -> None:
        """The sweep found an attempt past its timeout: count it, hedge it if allowed."""
        fwd = self.fwd
        for slow in [t for t in self.live if t.due <= now]:
            slow.due = math.inf
            if slow.call.done():
                continue  # it answered: the waiting call settles it
            fwd.attempt_timed_out(slow.alias, slow.endpoint.id, slow.started, slow.endpoint.address)
            if not self.hedged:
                self.hedge(slow, now)
        self.rewatch()

    def rewatch(self) -> None:
        """Recompute `due`; stop being swept once no live attempt has a timeout."""
        live = self.live
        self.due = min((t.due for t in live), default=math.inf) if live else math.inf
        if self.due == math.inf and self.sweeper is not None:
            self.sweeper.unwatch(self)

    def hedge(self, slow: _Try, now: float) -> None:
        """Start a second attempt elsewhere if allowed; else keep waiting on `slow`."""
        fwd = self.fwd
        left = self.deadline.left(now)
        if not may_hedge(fwd.policy, self.method, self.attempts, left, True):
            return
        picked = fwd.table.pick(self.aliases, frozenset(self.tried))
        if picked is None:
            return  # nowhere else to go: the slow attempt is still the best hope
        if fwd.may_hedge(self.method, slow.alias, slow.endpoint.id, self.attempts, left, True):
            self.hedged = True
            self.launch(*picked, hedge=True)

    async def settle(self, done: _Try, with_metadata: bool) -> UnaryAnswer | None:
        """An attempt ended: its answer, or None to keep going (retry or another attempt)."""
        fwd = self.fwd
        alias, endpoint = done.alias, done.endpoint
        try:
            response = await done.call
        except grpc.aio.AioRpcError as error:
            self.drop(done)
            self.failed(done, error)
            return None
        self.drop(done)
        if self.due != math.inf:  # a losing hedge is no longer timed: it is cancelled below
            self.due = math.inf
            assert self.sweeper is not None
            self.sweeper.unwatch(self)
        now = fwd.clock()
        latency = now - done.started
        fwd.metrics.answered(alias, endpoint.id, "OK", latency)
        fwd.observe(endpoint.id, latency, now)
        fwd.table.report_success(alias, endpoint.id)
        if done.hedge:
            fwd.hedge_won(alias, endpoint.id)
        if not with_metadata:
            return UnaryAnswer(response, (), (), alias, endpoint)
        return UnaryAnswer(
            response,
            answer_metadata(await done.call.initial_metadata()),
            answer_metadata(await done.call.trailing_metadata()),
            alias,
            endpoint,
        )

    def drop(self, done: _Try) -> None:
        """`done` ended: no longer live, in flight, or due."""
        live = self.live
        live.remove(done)
        self.fwd.table.in_flight[done.endpoint.id] -= 1
        if done.due == math.inf:
            return
        if live:
            self.rewatch()
        else:  # the usual end of a watched call, so without the general case
            self.due = math.inf
            assert self.sweeper is not None
            self.sweeper.unwatch(self)

    def failed(self, done: _Try, error: grpc.aio.AioRpcError) -> None:
        """A failed attempt: eject, retry, wait on the other attempt, or raise ForwardError."""
        fwd = self.fwd
        alias, endpoint = done.alias, done.endpoint
        code = error.code()
        now = fwd.clock()
        fwd.metrics.answered(alias, endpoint.id, code.name, now - done.started)
        failure = classify(code, error.details(), bool(error.initial_metadata()))
        if failure is Failure.ANSWERED:
            fwd.observe(endpoint.id, now - done.started, now)
        if self.live:  # the other attempt may still answer: wait for it
            if fwd.policy.ejects(failure, code):
                fwd.table.report_failure(alias, endpoint.id)
            return
        left = self.deadline.left(now)
        if fwd.after_failure(self.method, alias, endpoint, failure, code, self.attempts, left):
            self.launch(*fwd.pick(self.aliases, frozenset(self.tried)), hedge=False)
            return
        raise ForwardError(
            code,
            error.details() or "",
            answer_metadata(error.trailing_metadata()),
            endpoint.id,
            answer_metadata(error.initial_metadata()),
        ) from None
