"""One HTTP/2 channel per engine address, reused by every call and closed when it leaves.

Why per address and cached multicallables: building a channel costs a TCP and
HTTP/2 handshake, and building a multicallable per call costs several µs of
Python on the hot path. Channels never retry on their own (the forwarder
decides), fail fast instead of waiting for a dead engine (no wait_for_ready),
and ping an idle engine so a vanished peer is noticed in seconds.

TLS (`--engine-ca`): every channel verifies its engine against the given roots,
by the engine's IP address (engines register by IP, so certificates need an IP
SAN) or, with `server_name`, by that one name. A failed handshake fails the
call UNAVAILABLE "failed to connect …", which the forwarder treats as any other
connect failure: eject and retry elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import grpc

from tidepool.runtime.channel import DEFAULT_MAX_MESSAGE_BYTES, channel_options

CLOSE_GRACE_S = 30.0
"""A channel of an engine that left keeps its calls this long before it is closed."""


def engine_channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        *channel_options(max_message_bytes),
        ("grpc.enable_retries", 0),
        # One subchannel per channel: an engine's connection is ours to close.
        ("grpc.use_local_subchannel_pool", 1),
        # Reconnect soon after an engine restarts on the same address.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


KEEPALIVE_TIME_MS = 1_000
"""With calls in flight, PING the engine this often (`keepalive_options`)."""


def keepalive_options(timeout_s: float) -> list[tuple[str, int]]:
    """Fail a channel's connection whose engine leaves a PING unanswered for `timeout_s`
    (a frozen engine): its calls end UNAVAILABLE "ping timeout", which the forwarder
    retries elsewhere when safe. Why two PINGs without data at most: a grpc server
    counts PINGs that come while it sends nothing as strikes and drops the connection
    (GOAWAY too_many_pings) at the third, which would cost a slow call its connection."""
    timeout_ms = max(1, round(timeout_s * 1000))
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # grpc-core times the keepalive PING by this one (60 s by default), not the above.
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.http2.max_pings_without_data", 2),
    ]


class ChannelPool:
    """Channels by engine address, with unary and stream multicallables cached per method."""

    def __init__(
        self,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        *,
        root_certificates: bytes | None = None,
        server_name: str | None = None,
        keepalive_timeout_s: float | None = None,
    ) -> None:
        self._options: list[tuple[str, Any]] = [*engine_channel_options(max_message_bytes)]
        if keepalive_timeout_s is not None:  # grpc takes an option's first value: replace
            keepalive = keepalive_options(keepalive_timeout_s)
            names = {name for name, _ in keepalive}
            self._options = [o for o in self._options if o[0] not in names] + keepalive
        self._credentials: grpc.ChannelCredentials | None = None
        if root_certificates is not None:
            self._credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            if server_name is not None:
                self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channels: dict[str, Any] = {}
        self._unary: dict[tuple[str, str], Any] = {}
        self._stream: dict[tuple[str, str], Any] = {}
        self._retired: dict[asyncio.Task[None], Any] = {}

    def channel(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, self._options)
            self._channels[address] = channel
        return channel

    def unary(self, address: str, method: str) -> Any:
        """A raw-bytes unary-unary multicallable for `method` on the engine at `address`."""
        key = (address, method)
        callable_ = self._unary.get(key)
        if callable_ is None:
            callable_ = self.channel(address).unary_unary(method)
            self._unary[key] = callable_
        return callable_

    def stream(self, address: str, method: str) -> Any:
        """A raw-bytes stream-stream multicallable (wire-compatible with every shape)."""
        key = (address, method)
        callable_ = self._stream.get(key)
        if callable_ is None:
            callable_ = self.channel(address).stream_stream(method)
            self._stream[key] = callable_
        return callable_

    def retain(self, addresses: Iterable[str]) -> None:
        """Close the channels of addresses no pool routes to any more (after a grace)."""
        keep = set(addresses)
        for address in [a for a in self._channels if a not in keep]:
            channel = self._channels.pop(address)
            for cache in (self._unary, self._stream):
                for key in [k for k in cache if k[0] == address]:
                    del cache[key]
            task = asyncio.get_running_loop().create_task(self._close_later(channel))
            self._retired[task] = channel
            task.add_done_callback(lambda done: self._retired.pop(done, None))

    async def _close_later(self, channel: Any) -> None:
        await asyncio.sleep(CLOSE_GRACE_S)
        await channel.close()

    async def close(self) -> None:
        channels = [*self._channels.values(), *self._retired.values()]
        for task in list(self._retired):
            task.cancel()
        self._channels.clear()
        self._unary.clear()
        self._stream.clear()
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    def __len__(self) -> int:
        return len(self._channels)
