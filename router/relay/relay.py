"""One relayed gRPC call: route it, pick an engine, pump frames both ways, retry when safe.

The same policy as the grpc.aio path, through the same `retry.decide`
(`Forwarder.after_failure`): an attempt that failed before the engine answered
is retried on another instance while the router still holds every request byte
it sent (up to `BUFFER_LIMIT_BYTES`, and never once a response has reached the
caller); UNAVAILABLE from an engine is retried for idempotent methods. Why hold
a response's HEADERS for those methods until its first DATA or trailers: an
engine that answers UNAVAILABLE after initial metadata could not be retried
once the caller saw them. A call moves through one `Phase`; its deadline and
stream timers are `router.timers`' and share one wheel timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING, Final

import grpc

from router.endpoint import Endpoint
from router.forward import ForwardError
from router.relay import frames as f
from router.relay import health, reflection
from router.relay.connection import CONNECTION_LOST, Connection, Stream, StreamHandler
from router.relay.frames import Header
from router.relay.grpcwire import (
    MessageMeter,
    check_request,
    check_trailers,
    grpc_status,
    parse_request,
    status_block,
)
from router.relay.upstream import CONNECT_TIMEOUT_S, UpstreamPool
from router.retry import Failure, classify
from router.table import RouteError
from router.timers import NO_DEADLINE, Deadline, LoopTimers, StreamClock, Timer

if TYPE_CHECKING:
    from router.core import RouterCore

BUFFER_LIMIT_BYTES: Final = 1 << 20
"""Request bytes kept for a retry; a longer request is not retried once sent."""
log = logging.getLogger(__name__)


class Phase(Enum):
    """Where a relayed call stands; each attempt goes CONNECTING → SENT (→ HELD)."""

    ROUTING = "routing"
    """Routed; the first attempt starts once the caller's read is handled."""
    CONNECTING = "connecting"
    """An engine is picked (and counted in flight); waiting for a connection to it."""
    SENT = "sent"
    """The attempt's stream is open; the engine has not answered: a retry is possible."""
    HELD = "held"
    """The engine's response headers are held back (idempotent method): still retryable."""
    RESPONDING = "responding"
    """The caller has seen response headers: the answer is the caller's, no retry."""
    DONE = "done"


def _unanswered(phase: Phase) -> bool:
    """The phases an attempt timer runs in: the engine has not answered yet. (Identity
    tests, not a frozenset of phases: an Enum's hash is Python code, run per lookup.)"""
    return phase is Phase.CONNECTING or phase is Phase.SENT


def _attempting(phase: Phase) -> bool:
    return phase is Phase.CONNECTING or phase is Phase.SENT or phase is Phase.HELD


# Final: in the compiled build a C static each, not a module attribute looked up per use.
_monotonic: Final = time.monotonic
OK: Final = grpc.StatusCode.OK
UNAVAILABLE: Final = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED: Final = grpc.StatusCode.DEADLINE_EXCEEDED
RESOURCE_EXHAUSTED: Final = grpc.StatusCode.RESOURCE_EXHAUSTED


class Relay:
    """What every call shares: the router core, the engine connections, the timers."""

    def __init__(self, core: RouterCore, pool: UpstreamPool) -> None:
        self.core = core
        self.table = core.table
        self.forwarder = core.forwarder
        self.metrics = core.metrics  # the forwarder's; as the class: direct calls compiled
        self.refused = core.metrics.refused
        """Counts a refusal for a broken per-peer budget (`router.relay.limits`)."""
        self.pool = pool
        self.unary = frozenset(core.config.unary_methods)
        self.idempotent = frozenset(core.forwarder.policy.idempotent_methods)
        self.max_message = core.config.max_message_bytes
        self.stream_timeouts = core.config.stream_timeouts()
        self.loop = asyncio.get_running_loop()
        self.timers = LoopTimers(self.loop)
        self.serving = False
        """What grpc.health.v1.Health/Check answers (the frontend sets it)."""
        self.watchers = health.Watchers()
        self.tasks: set[asyncio.Task[None]] = set()

    def open_call(self, stream: Stream, headers: list[Header], end: bool) -> None:
        problem = check_request(headers)
        if problem is None:
            RelayCall(self, stream, end).start(headers)
            return
        reason, message = problem
        self.refused(reason)
        conn = stream.conn
        if reason == "content_type":  # the gRPC spec's answer to a request that is not gRPC
            conn.send_headers(stream, f.encode_headers([(b":status", b"415")]), True)
            if not end:
                conn.reset(stream, f.NO_ERROR)
        else:  # malformed (RFC 9113 §8.1.1): a stream error, the connection goes on
            log.info("relay: refusing a malformed request: %s", message)
            conn.reset(stream, f.PROTOCOL_ERROR)

    def is_serving(self) -> bool:
        return self.serving

    def set_serving(self, serving: bool) -> None:
        """Health/Check's answer from now on; every Health/Watch is told of a change."""
        if serving != self.serving:
            self.serving = serving
            self.watchers.changed(serving)

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


_GRPC_SERVICES: Final = b"/grpc."
"""What the paths of every service the relay answers itself begin with."""


def _local_call(relay: Relay, stream: Stream, path: bytes, end: bool) -> bool:
    """Answer a call for a service the relay serves itself (health, reflection)."""
    if not path.startswith(_GRPC_SERVICES):  # an engine's method: one test, not three
        return False
    if path.startswith(health.PREFIX):
        health.HealthCall(stream, path, relay.is_serving, relay.watchers).start(end)
        return True
    if path.startswith(reflection.PREFIXES):
        reflection.ReflectionCall(stream, path).start(end)
        return True
    return False


class RelayCall(StreamHandler):
    """A client stream and, in turn, each attempt's upstream stream (a StreamHandler for both)."""

    def __init__(self, relay: Relay, client: Stream, request_done: bool) -> None:
        self.r = relay
        self.client = client
        self.phase = Phase.ROUTING
        self.method = ""
        self.began = 0.0
        self.aliases: tuple[str, ...] = ()
        self.block = b""
        self.deadline = Deadline(NO_DEADLINE)
        self.clock: StreamClock | None = None
        """The stream timers of a non-unary call."""
        self.timer: Timer | None = None
        """One wheel timer for the deadline and the stream timers, whichever is first."""
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.replayable = True
        self.request_done = request_done
        self.received = 0  # client DATA bytes received, and credited back
        self.credited = 0
        self.attempts = 0
        self.hedged = False
        """An attempt timed out and another was started: once per call (no cascade)."""
        self.attempt_due: float | None = None
        """When this attempt runs past its attempt timeout (loop time); None: not armed yet
        (the request is not all sent), inf: no timeout or already past."""
        self.exclude: frozenset[str] = frozenset()
        self.up: Stream | None = None
        self.alias = ""
        self.endpoint: Endpoint | None = None
        self.in_flight: str | None = None
        """The engine whose in-flight count this attempt holds (until `end_attempt`)."""
        self.started = 0.0  # this attempt's start (for its latency)
        self.sent = 0  # request bytes this attempt wrote upstream
        self.held: list[Header] = []
        self.resp_received = 0
        self.resp_credited = 0
        self.request_meter = MessageMeter(relay.max_message)
        self.response_meter = MessageMeter(relay.max_message)

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    def start(self, headers: list[Header]) -> None:
        self.client.handler = self
        path, alias, tenant, lang, timeout, forward, method = parse_request(headers)
        if not path:
            self.client.conn.reset(self.client, f.PROTOCOL_ERROR)
            return
        if _local_call(self.r, self.client, path, self.request_done):
            return
        self.method = method
        self.began = _monotonic()
        unary = self.method in self.r.unary
        if timeout is None and unary:
            timeout = self.r.core.config.default_deadline_s
        try:
            self.aliases = self.r.table.route(alias, tenant, lang)
        except RouteError as error:
            self.r.metrics.failed(error.code.name)
            self.respond_error(error.code, error.message)
            return
        now = self.r.loop.time()
        self.deadline = Deadline.after(now, timeout)
        self.block = f.encode_headers(forward)
        if not unary:
            self.clock = StreamClock(self.r.stream_timeouts, now)
            if self.request_done:
                self.clock.caller_sent(now)
        self.arm()
        self.r.forwarder.budget.deposit()
        self.client.conn.defer(self.first_attempt)  # not for a request reset in the same read

    def first_attempt(self) -> None:
        if self.phase is Phase.ROUTING:
            self.attempt()

    def attempt(self, picked: tuple[str, Endpoint] | None = None) -> None:
        try:
            self.alias, endpoint = picked or self.r.forwarder.pick(self.aliases, self.exclude)
        except ForwardError as error:
            self.r.metrics.failed(error.code.name)
            self.respond_error(error.code, error.details)
            return
        self.endpoint = endpoint
        self.attempts += 1
        self.started = _monotonic()
        self.phase = Phase.CONNECTING
        self.attempt_due = None
        self.arm_attempt()
        self.in_flight = endpoint.id
        in_flight = self.r.table.in_flight
        in_flight[endpoint.id] = in_flight.get(endpoint.id, 0) + 1
        conn = self.r.pool.ready(endpoint.address)
        if conn is not None:
            self.open_upstream(conn)
        else:
            self.r.spawn(self.connect(endpoint, self.attempts))

    async def connect(self, endpoint: Endpoint, attempt: int) -> None:
        wait = min(CONNECT_TIMEOUT_S, self.deadline.left(self.r.loop.time()))
        try:
            conn = await self.r.pool.get(endpoint.address, max(wait, 0.001))
        except (OSError, TimeoutError) as error:
            if self.phase is Phase.CONNECTING and attempt == self.attempts:
                reason = str(error) or type(error).__name__
                message = f"failed to connect to engine {endpoint.address}: {reason}"
                self.attempt_failed(Failure.CONNECT, message)
            return
        if self.phase is Phase.CONNECTING and attempt == self.attempts:
            self.open_upstream(conn)

    def open_upstream(self, conn: Connection) -> None:
        up = self.up = conn.open_stream(self)
        self.phase = Phase.SENT
        self.sent = self.resp_received = self.resp_credited = 0
        self.response_meter.restart()
        block = self.block
        if self.deadline.bounded:
            left = self.deadline.left(self.r.loop.time())
            block += f.grpc_timeout_field(left)
        body = self.body
        conn.send_headers(up, block, self.request_done and not body)
        for index, chunk in enumerate(body):
            conn.send_data(up, chunk, self.request_done and index == len(body) - 1)
        if self.body_bytes > BUFFER_LIMIT_BYTES:
            self.replayable = False
            self.body = []

    # ---- timers ---------------------------------------------------------------------

    def arm(self) -> None:
        """(Re-)arm the call's one timer for the deadline, the stream timer or the attempt
        timer, whichever is first."""
        due = self.deadline.at
        if self.clock is not None:
            due = min(due, self.clock.due())
        if self.attempt_due is not None and _unanswered(self.phase):
            due = min(due, self.attempt_due)
        if due == NO_DEADLINE:
            return
        if self.timer is None:
            self.timer = self.r.timers.call_at(due, self.on_timer)
        else:
            self.r.timers.move(self.timer, due)

    def on_timer(self) -> None:
        self.timer = None
        if self.finished:
            return
        now = self.r.loop.time()
        if self.deadline.left(now) <= 0:
            self.cancel_attempt("DEADLINE_EXCEEDED")
            self.respond_error(DEADLINE_EXCEEDED, "Deadline Exceeded")
            return
        if self.attempt_due is not None and now >= self.attempt_due:
            self.attempt_timed_out()
            if self.finished:
                return
        verdict = self.clock.expired(now) if self.clock is not None else None
        if verdict is None:
            self.arm()  # traffic moved the stream timer on
            return
        what, limit = verdict
        message = f"engine {self.endpoint_id} {what} {limit:g} s"
        self.cancel_attempt(DEADLINE_EXCEEDED.name)
        self.respond_error(DEADLINE_EXCEEDED, message)

    def arm_attempt(self) -> None:
        """Start the attempt timer once the engine has the whole request (idempotent methods)."""
        endpoint = self.endpoint
        if self.attempt_due is not None or endpoint is None or not self.request_done:
            return
        limit = self.r.forwarder.attempt_timeout_s(self.method, endpoint.id, _monotonic())
        self.attempt_due = NO_DEADLINE if limit is None else self.r.loop.time() + limit
        if limit is not None:
            self.arm()

    def attempt_timed_out(self) -> None:
        """The attempt waited past its engine's attempt timeout. Within the retry budget,
        and while the request is held in full, it is cancelled and another engine tried
        (why not a hedge beside it: the relay pumps one upstream stream per call);
        otherwise the call keeps waiting on it: slowness never becomes an error."""
        self.attempt_due = NO_DEADLINE
        endpoint = self.endpoint
        if not _unanswered(self.phase) or endpoint is None:
            return
        fwd = self.r.forwarder
        fwd.attempt_timed_out(self.alias, endpoint.id, self.started, endpoint.address)
        if self.hedged:
            return
        picked = self.r.table.pick(self.aliases, self.exclude | {endpoint.id})
        left = self.deadline.left(self.r.loop.time())
        replayable = self.replayable and self.request_done
        if picked is None or not fwd.may_hedge(
            self.method, self.alias, endpoint.id, self.attempts, left, replayable
        ):
            return
        self.hedged = True
        self.cancel_attempt("CANCELLED")
        self.exclude = self.exclude | {endpoint.id}
        self.attempt(picked)

    def caller_sent(self) -> None:
        if self.request_done and self.attempt_due is None and _unanswered(self.phase):
            self.arm_attempt()
        clock = self.clock
        if clock is not None:
            spoke = clock.spoke
            clock.caller_sent(self.r.loop.time())
            if not spoke and not clock.answered:  # the first-response limit may be shorter
                self.arm()

    # ---- frames from either side ------------------------------------------------------

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        if stream is self.client:
            self.on_request_trailers(headers, end)
        elif stream is self.up:
            if self.r.pool.busy_pings:
                self.r.pool.answered(stream.conn)
            if self.phase is Phase.SENT:
                now = _monotonic()
                self.r.forwarder.observe(self.endpoint_id, now - self.started, now)
                if end:  # trailers-only: the engine's status, no answer sent
                    self.on_trailers(headers, trailers_only=True)
                elif self.method in self.r.idempotent and self.request_done:
                    self.held = headers  # until DATA or trailers: see the module doc
                    self.phase = Phase.HELD
                else:
                    self.send_response_headers(headers)
                return
            self.on_trailers(headers)

    def on_request_trailers(self, headers: list[Header], end: bool) -> None:
        if self.finished:
            return
        if not end or check_trailers(headers) is not None:  # malformed: a stream error
            self.r.refused("malformed")
            self.cancel_attempt("CANCELLED")
            self.client.conn.reset(self.client, f.PROTOCOL_ERROR)
            self.finish()
            return
        self.request_done = True
        self.caller_sent()
        if self.up is not None:
            self.up.conn.send_headers(self.up, f.encode_headers(headers), end)

    def send_response_headers(self, headers: list[Header]) -> None:
        self.held = []
        self.phase = Phase.RESPONDING
        self.replayable = False
        self.body = []
        self.client.conn.send_headers(self.client, f.encode_headers(headers), False)

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        if stream is self.client:
            self.on_request_data(data, end)
        elif stream is self.up:
            self.resp_received += len(data)
            if self.clock is not None and data:
                self.clock.engine_sent(self.r.loop.time())
            too_long = self.response_meter.feed(data)
            if too_long is not None:
                self.message_too_long("response", too_long)
                return
            if self.phase is Phase.HELD:
                self.send_response_headers(self.held)
            self.client.conn.send_data(self.client, data, end)

    def on_request_data(self, data: bytes, end: bool) -> None:
        self.received += len(data)
        if self.finished:  # refused (too long, timed out): drop what is still coming
            self.client.conn.credit(self.client, len(data))
            self.credited += len(data)
            return
        self.request_done = self.request_done or end
        if data or end:
            self.caller_sent()
        too_long = self.request_meter.feed(data)
        if too_long is not None:
            self.message_too_long("request", too_long)
            return
        up = self.up
        if data and (self.replayable or up is None):
            self.body.append(data)
            self.body_bytes += len(data)
        if up is not None:
            up.conn.send_data(up, data, end)
            if self.replayable and self.body_bytes > BUFFER_LIMIT_BYTES:
                self.replayable = False
                self.body = []

    def on_sent(self, stream: Stream, length: int) -> None:
        if stream is self.up:
            self.sent += length
            if self.sent > self.credited:
                self.client.conn.credit(self.client, self.sent - self.credited)
                self.credited = self.sent
        elif stream is self.client and self.up is not None:
            self.resp_credited += length
            self.up.conn.credit(self.up, length)

    def on_reset(self, stream: Stream, code: int, unprocessed: bool) -> None:
        if stream is self.client:
            self.cancel_attempt("CANCELLED")
            self.finish()
        elif stream is self.up and not self.finished:
            self.up = None
            unanswered = self.phase is Phase.SENT
            if unanswered and unprocessed:
                self.attempt_failed(Failure.REFUSED, "the engine refused the stream")
            elif unanswered and code in (CONNECTION_LOST, f.CANCEL):
                # Lost, or cancelled by an engine shutting down, before it answered.
                self.attempt_failed(Failure.RESET, "connection to the engine reset")
            elif code == CONNECTION_LOST:
                self.count("UNAVAILABLE")
                held = self.phase is Phase.HELD  # answered headers only: still retryable
                replayable = held and self.replayable and self.request_done
                if replayable and self.retry_after(Failure.ANSWERED, UNAVAILABLE, True):
                    return
                self.r.table.report_failure(self.alias, self.endpoint_id)
                self.end_attempt()
                self.respond_error(UNAVAILABLE, "connection to the engine lost")
            else:
                self.count("CANCELLED" if code == f.CANCEL else "INTERNAL")
                self.end_attempt()
                self.client.conn.reset(self.client, code)
                self.finish()

    # ---- outcomes ---------------------------------------------------------------------

    @property
    def endpoint_id(self) -> str:
        return self.endpoint.id if self.endpoint is not None else ""

    def count(self, code: str) -> None:
        self.r.metrics.answered(self.alias, self.endpoint_id, code, _monotonic() - self.started)

    def on_trailers(self, headers: list[Header], trailers_only: bool = False) -> None:
        code = grpc_status(headers)
        endpoint = self.endpoint
        assert endpoint is not None
        if code is OK:  # `name` is a Python property of an Enum: not on the common path
            self.count("OK")
            self.r.table.report_success(self.alias, endpoint.id)
        else:
            self.count(code.name)
            failure = classify(code, None, answered=not trailers_only)
            if self.retry_after(failure, code, self.replayable and self.request_done):
                return
        client = self.client
        if self.phase is Phase.HELD:
            self.send_response_headers(self.held)
        self.phase = Phase.RESPONDING
        client.conn.send_headers(client, f.encode_headers(headers), True)
        self.cancel_attempt(None)  # RST only if we were still sending: the engine is done
        if not client.remote_done:
            client.conn.reset(client, f.NO_ERROR)
        self.finish()

    def retry_after(self, failure: Failure, code: grpc.StatusCode, replayable: bool) -> bool:
        """`retry.decide` through the forwarder: eject if it says so; True when a new
        attempt was started (never once the caller has seen any of the answer)."""
        endpoint = self.endpoint
        assert endpoint is not None
        left = self.deadline.left(self.r.loop.time())
        replayable = replayable and _attempting(self.phase)
        if not self.r.forwarder.after_failure(
            self.method, self.alias, endpoint, failure, code, self.attempts, left, replayable
        ):
            return False
        self.cancel_attempt(None)
        self.exclude = self.exclude | {endpoint.id}
        self.attempt()
        return True

    def attempt_failed(self, failure: Failure, message: str) -> None:
        """No answer from the engine: not connected, reset, or refused unprocessed."""
        code = UNAVAILABLE
        self.count(code.name)
        if self.retry_after(failure, code, self.replayable):
            return
        self.cancel_attempt(None)
        self.respond_error(code, message)

    def message_too_long(self, direction: str, length: int) -> None:
        """A message over max_message_bytes: never forwarded, the call ends for both sides."""
        limit = self.r.max_message
        message = f"{direction} message larger than max ({length} vs. {limit} bytes)"
        if direction == "response":
            message += f" from engine {self.endpoint_id}"
        else:
            self.r.metrics.failed(RESOURCE_EXHAUSTED.name)
        self.cancel_attempt(RESOURCE_EXHAUSTED.name)
        self.respond_error(RESOURCE_EXHAUSTED, message)

    def respond_error(self, code: grpc.StatusCode, message: str) -> None:
        """End the call for the client with `code` (trailers-only if nothing was sent yet)."""
        client = self.client
        if not self.finished and client.conn.streams.get(client.id) is client:
            trailers_only = self.phase is not Phase.RESPONDING
            client.conn.send_headers(client, status_block(code, message, trailers_only), True)
            if not client.remote_done:
                client.conn.reset(client, f.NO_ERROR)
        self.finish()

    def cancel_attempt(self, counted_as: str | None) -> None:
        """Stop the current attempt: RST_STREAM(CANCEL) upstream, count it if asked."""
        up = self.up
        if up is not None:
            up.conn.reset(up, f.CANCEL)
        if self.in_flight is not None and counted_as is not None:
            self.count(counted_as)
        self.end_attempt()

    def end_attempt(self) -> None:
        up, self.up = self.up, None
        if up is not None and self.resp_received > self.resp_credited:
            up.conn.credit(up, self.resp_received - self.resp_credited)  # dropped, not relayed
        self.resp_received = self.resp_credited = 0
        if self.in_flight is not None:
            self.r.table.in_flight[self.in_flight] -= 1
            self.in_flight = None

    def finish(self) -> None:
        if self.finished:
            return
        self.phase = Phase.DONE
        self.end_attempt()
        if self.method:
            self.r.metrics.called(self.method, _monotonic() - self.began)
        if self.timer is not None:
            self.r.timers.cancel(self.timer)
            self.timer = None
        self.body = []
        if self.received > self.credited:  # received, never relayed: reopen the connection
            self.client.conn.credit(self.client, self.received - self.credited)
            self.credited = self.received
