"""One relayed gRPC call: route it, pick an engine, pump frames both ways, retry when safe.

The same policy as the grpc.aio path (`Forwarder.after_failure`): an attempt
that failed before the engine answered is retried on another instance while
the router still holds every request byte it sent (up to `BUFFER_LIMIT_BYTES`,
and never once a response has reached the caller); UNAVAILABLE from an engine
is retried for idempotent methods. Why hold a response's HEADERS for those
methods until its first DATA or trailers: an engine that answers UNAVAILABLE
after initial metadata could not be retried once the caller saw them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from router.endpoint import Endpoint
from router.forward import ForwardError
from router.relay import frames as f
from router.relay import health
from router.relay.connection import CONNECTION_LOST, Connection, Stream
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
from router.relay.watchdog import StreamWatchdog
from router.retry import Failure, classify
from router.table import RouteError

if TYPE_CHECKING:
    from router.core import RouterCore

BUFFER_LIMIT_BYTES = 1 << 20
"""Request bytes kept for a retry; a longer request is not retried once sent."""
NO_DEADLINE = 1e18
log = logging.getLogger(__name__)


class Relay:
    """What every call shares: the router core and the engine connections."""

    def __init__(self, core: RouterCore, pool: UpstreamPool) -> None:
        self.core = core
        self.table = core.table
        self.forwarder = core.forwarder
        self.metrics = core.forwarder.metrics
        self.refused = core.metrics.refused
        """Counts a refusal for a broken per-peer budget (`router.relay.limits`)."""
        self.pool = pool
        self.unary = frozenset(core.config.unary_methods)
        self.idempotent = frozenset(core.forwarder.policy.idempotent_methods)
        self.max_message = core.config.max_message_bytes
        self.stream_timeouts = core.config.stream_timeouts()
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


class RelayCall:
    """A client stream and, in turn, each attempt's upstream stream (a StreamHandler for both)."""

    def __init__(self, relay: Relay, client: Stream, request_done: bool) -> None:
        self.r = relay
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.method = ""
        self.began = 0.0
        self.aliases: tuple[str, ...] = ()
        self.block = b""
        self.deadline = NO_DEADLINE
        self.timer: asyncio.TimerHandle | None = None
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.replayable = True
        self.request_done = request_done
        self.received = 0  # client DATA bytes received, and credited back
        self.credited = 0
        self.responded = False  # response headers sent to the client
        self.finished = False
        self.attempts = 0
        self.exclude: frozenset[str] = frozenset()
        self.up: Stream | None = None
        self.alias = ""
        self.endpoint: Endpoint | None = None
        self.started = 0.0
        self.active = False  # this attempt counts in table.in_flight
        self.sent = 0  # request bytes this attempt wrote upstream
        self.answered = False  # this attempt's response headers arrived
        self.held: list[Header] | None = None
        self.resp_received = 0
        self.resp_credited = 0
        self.request_meter = MessageMeter(relay.max_message)
        self.response_meter = MessageMeter(relay.max_message)
        self.watchdog: StreamWatchdog | None = None

    def start(self, headers: list[Header]) -> None:
        self.client.handler = self
        path, alias, tenant, lang, timeout, forward = parse_request(headers)
        if not path:
            self.client.conn.reset(self.client, f.PROTOCOL_ERROR)
            return
        if path.startswith(health.PREFIX):
            call = health.HealthCall(self.client, path, self.r.is_serving, self.r.watchers)
            call.start(self.request_done)
            return
        self.method = path.decode(errors="replace")
        self.began = time.monotonic()
        unary = self.method in self.r.unary
        if timeout is None and unary:
            timeout = self.r.core.config.default_deadline_s
        try:
            self.aliases = self.r.table.route(alias, tenant, lang)
        except RouteError as error:
            self.r.metrics.failed(error.code.name)
            self.respond_error(error.code, error.message)
            return
        if timeout is not None:
            self.deadline = self.loop.time() + timeout
            self.timer = self.loop.call_at(self.deadline, self.on_deadline)
        self.block = f.encode_headers(forward)
        if not unary:
            self.watchdog = StreamWatchdog(self.loop, self.r.stream_timeouts, self.on_watchdog)
            if self.request_done:
                self.watchdog.caller_sent()
        self.r.forwarder.budget.deposit()
        self.client.conn.defer(self.first_attempt)  # not for a request reset in the same read

    def first_attempt(self) -> None:
        if not self.finished:
            self.attempt()

    def attempt(self) -> None:
        try:
            self.alias, endpoint = self.r.forwarder.pick(self.aliases, self.exclude)
        except ForwardError as error:
            self.r.metrics.failed(error.code.name)
            self.respond_error(error.code, error.details)
            return
        self.endpoint = endpoint
        self.attempts += 1
        self.started = time.monotonic()
        self.answered = False
        self.active = True
        in_flight = self.r.table.in_flight
        in_flight[endpoint.id] = in_flight.get(endpoint.id, 0) + 1
        conn = self.r.pool.ready(endpoint.address)
        if conn is not None:
            self.open_upstream(conn)
        else:
            self.r.spawn(self.connect(endpoint, self.attempts))

    async def connect(self, endpoint: Endpoint, attempt: int) -> None:
        wait = min(CONNECT_TIMEOUT_S, self.deadline - self.loop.time())
        try:
            conn = await self.r.pool.get(endpoint.address, max(wait, 0.001))
        except (OSError, TimeoutError) as error:
            if not self.finished and attempt == self.attempts:
                reason = str(error) or type(error).__name__
                message = f"failed to connect to engine {endpoint.address}: {reason}"
                self.attempt_failed(Failure.CONNECT, message)
            return
        if not self.finished and attempt == self.attempts:
            self.open_upstream(conn)

    def open_upstream(self, conn: Connection) -> None:
        up = self.up = conn.open_stream(self)
        self.sent = self.resp_received = self.resp_credited = 0
        self.response_meter.restart()
        block = self.block
        if self.deadline != NO_DEADLINE:
            left = self.deadline - self.loop.time()
            block += f.encode_header(b"grpc-timeout", f.format_grpc_timeout(left))
        body = self.body
        conn.send_headers(up, block, self.request_done and not body)
        for index, chunk in enumerate(body):
            conn.send_data(up, chunk, self.request_done and index == len(body) - 1)
        if self.body_bytes > BUFFER_LIMIT_BYTES:
            self.replayable = False
            self.body = []

    def on_headers(self, stream: Stream, headers: list[Header], end: bool) -> None:
        if stream is self.client:
            self.on_request_trailers(headers, end)
        elif stream is self.up:
            trailers_only = not self.answered
            if not self.answered:
                self.answered = True
                if not end:
                    if self.method in self.r.idempotent and self.request_done:
                        self.held = headers  # until DATA or trailers: see the module doc
                        return
                    self.send_response_headers(headers)
                    return
            self.on_trailers(headers, trailers_only)

    def on_request_trailers(self, headers: list[Header], end: bool) -> None:
        if self.finished:
            return
        if not end or check_trailers(headers) is not None:  # malformed: a stream error
            self.r.refused("malformed")
            self.cancel_attempt("CANCELLED")
            self.client.conn.reset(self.client, f.PROTOCOL_ERROR)
            self.finish()
            return
        self.request_done = self.request_done or end
        if end and self.watchdog is not None:
            self.watchdog.caller_sent()
        if self.up is not None:
            self.up.conn.send_headers(self.up, f.encode_headers(headers), end)

    def send_response_headers(self, headers: list[Header]) -> None:
        self.held = None
        self.responded = True
        self.replayable = False
        self.body = []
        self.client.conn.send_headers(self.client, f.encode_headers(headers), False)

    def on_data(self, stream: Stream, data: bytes, end: bool) -> None:
        if stream is self.client:
            self.on_request_data(data, end)
        elif stream is self.up:
            self.resp_received += len(data)
            if self.watchdog is not None and data:
                self.watchdog.engine_sent()
            too_long = self.response_meter.feed(data)
            if too_long is not None:
                self.message_too_long("response", too_long)
                return
            if self.held is not None:
                self.send_response_headers(self.held)
            self.client.conn.send_data(self.client, data, end)

    def on_request_data(self, data: bytes, end: bool) -> None:
        self.received += len(data)
        if self.finished:  # refused (too long, timed out): drop what is still coming
            self.client.conn.credit(self.client, len(data))
            self.credited += len(data)
            return
        self.request_done = self.request_done or end
        if self.watchdog is not None and (data or end):
            self.watchdog.caller_sent()
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
            if not self.answered and unprocessed:
                self.attempt_failed(None, "the engine refused the stream")
            elif not self.answered and code in (CONNECTION_LOST, f.CANCEL):
                # Lost, or cancelled by an engine shutting down, before it answered.
                self.attempt_failed(Failure.RESET, "connection to the engine reset")
            elif code == CONNECTION_LOST:
                self.count("UNAVAILABLE")
                self.r.table.report_failure(self.alias, self.endpoint_id)
                self.end_attempt()
                self.respond_error(grpc.StatusCode.UNAVAILABLE, "connection to the engine lost")
            else:
                self.count("CANCELLED" if code == f.CANCEL else "INTERNAL")
                self.end_attempt()
                self.client.conn.reset(self.client, code)
                self.finish()

    @property
    def endpoint_id(self) -> str:
        return self.endpoint.id if self.endpoint is not None else ""

    def count(self, code: str) -> None:
        self.r.metrics.answered(self.alias, self.endpoint_id, code, time.monotonic() - self.started)

    def on_trailers(self, headers: list[Header], trailers_only: bool = False) -> None:
        code = grpc_status(headers)
        self.count(code.name)
        endpoint = self.endpoint
        assert endpoint is not None
        failure = classify(code, None, answered=not trailers_only)
        if code is grpc.StatusCode.OK:
            self.r.table.report_success(self.alias, endpoint.id)
        elif self.retry_after(failure, code, self.replayable and self.request_done):
            return
        client = self.client
        if self.held is not None:
            self.send_response_headers(self.held)
        self.responded = True
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
        left = self.deadline - self.loop.time()
        replayable = replayable and not self.responded
        if not self.r.forwarder.after_failure(
            self.method, self.alias, endpoint, failure, code, self.attempts, left, replayable
        ):
            return False
        self.cancel_attempt(None)
        self.exclude = self.exclude | {endpoint.id}
        self.attempt()
        return True

    def attempt_failed(self, failure: Failure | None, message: str) -> None:
        """No answer from the engine (`failure` None: the engine never saw the stream)."""
        code = grpc.StatusCode.UNAVAILABLE
        self.count(code.name)
        if failure is None:
            policy = self.r.forwarder.policy
            if self.replayable and self.attempts < policy.max_attempts:
                self.r.metrics.retried(self.alias, "refused")
                self.cancel_attempt(None)
                self.exclude = self.exclude | {self.endpoint_id}
                self.attempt()
                return
        elif self.retry_after(failure, code, self.replayable):
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
            self.r.metrics.failed(grpc.StatusCode.RESOURCE_EXHAUSTED.name)
        self.cancel_attempt(grpc.StatusCode.RESOURCE_EXHAUSTED.name)
        self.respond_error(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def on_watchdog(self, what: str, limit: float) -> None:
        """A stream timer ran out (see `router.streams`): cancel upstream, fail the call."""
        self.watchdog = None
        if not self.finished:
            message = f"engine {self.endpoint_id} {what} {limit:g} s"
            self.cancel_attempt(grpc.StatusCode.DEADLINE_EXCEEDED.name)
            self.respond_error(grpc.StatusCode.DEADLINE_EXCEEDED, message)

    def on_deadline(self) -> None:
        self.timer = None
        if not self.finished:
            self.cancel_attempt("DEADLINE_EXCEEDED")
            self.respond_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def respond_error(self, code: grpc.StatusCode, message: str) -> None:
        """End the call for the client with `code` (trailers-only if nothing was sent yet)."""
        client = self.client
        if not self.finished and client.conn.streams.get(client.id) is client:
            client.conn.send_headers(client, status_block(code, message, not self.responded), True)
            self.responded = True
            if not client.remote_done:
                client.conn.reset(client, f.NO_ERROR)
        self.finish()

    def cancel_attempt(self, counted_as: str | None) -> None:
        """Stop the current attempt: RST_STREAM(CANCEL) upstream, count it if asked."""
        up = self.up
        if up is not None:
            up.conn.reset(up, f.CANCEL)
        if self.active and counted_as is not None:
            self.count(counted_as)
        self.end_attempt()

    def end_attempt(self) -> None:
        up, self.up = self.up, None
        if up is not None and self.resp_received > self.resp_credited:
            up.conn.credit(up, self.resp_received - self.resp_credited)  # dropped, not relayed
        self.resp_received = self.resp_credited = 0
        if self.active and self.endpoint is not None:
            self.active = False
            self.r.table.in_flight[self.endpoint.id] -= 1

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.end_attempt()
        if self.method:
            self.r.metrics.called(self.method, time.monotonic() - self.began)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        self.body = []
        if self.received > self.credited:  # received, never relayed: reopen the connection
            self.client.conn.credit(self.client, self.received - self.credited)
            self.credited = self.received
