"""Send one unary call to a picked engine, retrying elsewhere when that is safe.

Shared by the proxy and the in-process client, so both balance, eject and retry
the same way, by `retry.decide` and a `timers.Deadline` (which the relay uses
too). Bytes in, bytes out: nothing here decodes a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from router.channels import ChannelPool
from router.endpoint import Endpoint
from router.metadata import Metadata, answer_metadata
from router.retry import Failure, RetryBudget, RetryPolicy, Verdict, classify, decide
from router.table import RoutingTable
from router.timers import Deadline

_NONE: frozenset[str] = frozenset()


class ForwardMetrics(Protocol):
    def answered(self, alias: str, instance: str, code: str, seconds: float) -> None: ...

    def retried(self, alias: str, reason: str) -> None: ...

    def budget_exhausted(self, alias: str) -> None: ...

    def failed(self, code: str) -> None: ...

    def called(self, method: str, seconds: float) -> None: ...


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


@dataclass(frozen=True, slots=True)
class UnaryAnswer:
    response: bytes
    initial: Metadata
    trailing: Metadata
    alias: str
    endpoint: Endpoint


class Forwarder:
    """Pick, call, classify, eject, retry: the request path of the router."""

    def __init__(
        self,
        table: RoutingTable,
        channels: ChannelPool,
        policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        metrics: ForwardMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.channels = channels
        self.policy = policy or RetryPolicy()
        self.budget = budget or RetryBudget()
        self.metrics: ForwardMetrics = metrics or _NoMetrics()
        self._clock = clock

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

    async def unary(
        self,
        method: str,
        request: bytes,
        aliases: tuple[str, ...],
        metadata: Metadata,
        timeout: float,  # noqa: ASYNC109 - the caller's deadline, passed on
        *,
        with_metadata: bool = True,
    ) -> UnaryAnswer:
        """Forward one unary call; raises ForwardError with the status to return.

        `with_metadata=False` skips collecting the engine's initial and trailing
        metadata (the in-process client returns the message alone).
        """
        self.budget.deposit()
        deadline = Deadline.after(self._clock(), timeout)
        exclude = _NONE
        attempts = 0
        in_flight = self.table.in_flight
        while True:
            alias, endpoint = self.pick(aliases, exclude)
            attempts += 1
            started = self._clock()
            call: Any = self.channels.unary(endpoint.address, method)(
                request, timeout=deadline.left(started), metadata=metadata
            )
            in_flight[endpoint.id] = in_flight.get(endpoint.id, 0) + 1
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                code = error.code()
                self.metrics.answered(alias, endpoint.id, code.name, self._clock() - started)
                answered = bool(error.initial_metadata())
                failure = classify(code, error.details(), answered)
                now = self._clock()
                if self.after_failure(
                    method, alias, endpoint, failure, code, attempts, deadline.left(now)
                ):
                    exclude = exclude | {endpoint.id}
                    continue
                raise ForwardError(
                    code,
                    error.details() or "",
                    answer_metadata(error.trailing_metadata()),
                    endpoint.id,
                    answer_metadata(error.initial_metadata()),
                ) from None
            finally:
                in_flight[endpoint.id] -= 1
            self.metrics.answered(alias, endpoint.id, "OK", self._clock() - started)
            self.table.report_success(alias, endpoint.id)
            if not with_metadata:
                return UnaryAnswer(response, (), (), alias, endpoint)
            return UnaryAnswer(
                response,
                answer_metadata(await call.initial_metadata()),
                answer_metadata(await call.trailing_metadata()),
                alias,
                endpoint,
            )
