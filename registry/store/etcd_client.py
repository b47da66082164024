"""A small asyncio client for etcd's v3 gRPC API: KV, transactions, leases and watches.

We speak etcd's gRPC API directly (the subset in proto/tidepool/etcd/v3/rpc.proto)
rather than use a client library because the registry needs three things the
asyncio libraries do not give together: several endpoints with fail-over, TLS with
client certificates, and generated code from the same grpcio-tools pin as the rest
of the project. Every `grpc.RpcError` becomes an `EtcdError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from tidepool.etcd.v3 import rpc_pb2 as etcd
from tidepool.etcd.v3 import rpc_pb2_grpc as etcd_grpc
from tidepool.runtime.channel import RECONNECT_INITIAL_MS, RECONNECT_MAX_MS

T = TypeVar("T")
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
"""Codes after which another member may succeed (member down, no leader, leader changed;
CANCELLED: another request on this client gave up on the member and closed its channel)."""
REQUIRE_LEADER = (("hasleader", "true"),)
"""etcd cancels a watch or keep-alive made with this when its member loses the leader, so a
partitioned member cannot hold a stream open that never delivers."""
CHANNEL_OPTIONS = (
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A channel of its own per member connection: after `rotate` a new channel must try
    # at once, not inherit a shared subchannel still backing off from an outage (grpc
    # shares subchannels between channels to one address until the old ones are
    # collected), and its own retries back off at most about a second.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
)


class EtcdError(Exception):
    """etcd could not be reached or refused the request; `code` is the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EtcdSettings:
    """Where etcd is and how to reach it."""

    endpoints: tuple[str, ...]
    """URLs (`http://host:port`, `https://host:port`) or bare `host:port`."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout_s: float = 1.0
    """Deadline of one request to one member."""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix` (etcd's convention)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def parse_endpoint(text: str) -> tuple[str, bool]:
    """`(host:port, tls)` of one endpoint URL; raises ValueError naming what is wrong."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {text!r}: scheme must be http or https")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"endpoint {text!r}: must name a host and a port")
    if parts.path not in ("", "/"):
        raise ValueError(f"endpoint {text!r}: must not have a path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.scheme == "https"


class EtcdClient:
    """One channel at a time to one member; a request that finds it down moves to the next."""

    def __init__(self, settings: EtcdSettings) -> None:
        if not settings.endpoints:
            raise ValueError("etcd endpoints: at least one is needed")
        self._settings = settings
        self._targets = [parse_endpoint(e) for e in settings.endpoints]
        self._index = 0
        self._channel: grpc.aio.Channel | None = None

    @property
    def endpoint(self) -> str:
        """The member requests go to now."""
        return self._targets[self._index][0]

    def _credentials(self, tls: bool) -> grpc.ChannelCredentials | None:
        s = self._settings
        if not (tls or s.ca or s.cert):
            return None

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(s.ca), read(s.key), read(s.cert))

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            target, tls = self._targets[self._index]
            credentials = self._credentials(tls)
            if credentials is None:
                self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
        return self._channel

    async def rotate(self, failed: grpc.aio.Channel | None = None) -> None:
        """Give up on the current member and use the next one from now on.

        With `failed`, only if that channel is still the current one: two requests that
        failed on the same member move on by one member, not two.
        """
        if failed is not None and failed is not self._channel:
            return
        channel, self._channel = self._channel, None
        self._index = (self._index + 1) % len(self._targets)
        if channel is not None:
            await channel.close(grace=None)

    async def _call(self, what: str, request: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        """Run one unary request, trying each member once on a retryable failure."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self._targets)):
            channel = self.channel()
            try:
                return await request(channel)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise EtcdError(f"etcd {what}: {exc.details()}", exc.code()) from None
                last = exc
                await self.rotate(channel)
        assert last is not None
        endpoints = ", ".join(t for t, _ in self._targets)
        raise EtcdError(
            f"etcd {what}: no member answered ({endpoints}): {last.details()}", last.code()
        )

    async def range(
        self, key: bytes, range_end: bytes = b"", *, revision: int = 0
    ) -> etcd.RangeResponse:
        request = etcd.RangeRequest(key=key, range_end=range_end, revision=revision)
        return await self._call(
            "range",
            lambda ch: etcd_grpc.KVStub(ch).Range(request, timeout=self._settings.timeout_s),
        )

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> etcd.PutResponse:
        request = etcd.PutRequest(key=key, value=value, lease=lease)
        return await self._call(
            "put", lambda ch: etcd_grpc.KVStub(ch).Put(request, timeout=self._settings.timeout_s)
        )

    async def delete(self, key: bytes, range_end: bytes = b"") -> etcd.DeleteRangeResponse:
        request = etcd.DeleteRangeRequest(key=key, range_end=range_end)
        return await self._call(
            "delete",
            lambda ch: etcd_grpc.KVStub(ch).DeleteRange(request, timeout=self._settings.timeout_s),
        )

    async def txn(self, request: etcd.TxnRequest) -> etcd.TxnResponse:
        return await self._call(
            "txn", lambda ch: etcd_grpc.KVStub(ch).Txn(request, timeout=self._settings.timeout_s)
        )

    async def grant(self, ttl_s: int) -> etcd.LeaseGrantResponse:
        request = etcd.LeaseGrantRequest(TTL=ttl_s)
        return await self._call(
            "lease grant",
            lambda ch: etcd_grpc.LeaseStub(ch).LeaseGrant(
                request, timeout=self._settings.timeout_s
            ),
        )

    async def revoke(self, lease_id: int) -> None:
        request = etcd.LeaseRevokeRequest(ID=lease_id)
        await self._call(
            "lease revoke",
            lambda ch: etcd_grpc.LeaseStub(ch).LeaseRevoke(
                request, timeout=self._settings.timeout_s
            ),
        )

    async def keep_alive(self, lease_id: int) -> int:
        """Renew a lease once; its remaining TTL in seconds (0: etcd no longer has it)."""

        async def once(ch: grpc.aio.Channel) -> int:
            call = etcd_grpc.LeaseStub(ch).LeaseKeepAlive(
                iter([etcd.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self._settings.timeout_s,
                metadata=REQUIRE_LEADER,
            )
            async for reply in call:
                call.cancel()
                return int(reply.TTL)
            return 0

        return await self._call("lease keep-alive", once)

    async def watch(self, key: bytes, range_end: bytes, start_revision: int) -> WatchStream:
        """Open a watch on the current member (the caller rotates and re-opens on failure)."""
        call: Any = etcd_grpc.WatchStub(self.channel()).Watch(metadata=REQUIRE_LEADER)
        create = etcd.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, progress_notify=True
        )
        stream = WatchStream(call)
        try:
            await call.write(etcd.WatchRequest(create_request=create))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            stream.cancel()
            raise EtcdError(f"etcd watch at {self.endpoint}: {exc}") from None
        return stream

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None


class WatchStream:
    """One open watch. A reader task queues its responses, so waiting for the next one
    with a timeout never cancels the call itself; a broken stream queues an EtcdError."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: asyncio.Queue[etcd.WatchResponse | EtcdError] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_all(), name="etcd-watch-reader")

    async def _read_all(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    self._queue.put_nowait(EtcdError("etcd watch: the member closed the stream"))
                    return
                self._queue.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self._queue.put_nowait(EtcdError(f"etcd watch: {exc.details()}", exc.code()))

    async def next(self, timeout_s: float) -> etcd.WatchResponse:
        """The next response; TimeoutError when none came within `timeout_s`."""
        item = await asyncio.wait_for(self._queue.get(), timeout_s)
        if isinstance(item, EtcdError):
            raise item
        return item

    async def request_progress(self) -> None:
        """Ask the member to say how far it is (etcd 3.4+): a silent member is a dead one."""
        try:
            await self._call.write(etcd.WatchRequest(progress_request=etcd.WatchProgressRequest()))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise EtcdError(f"etcd watch: progress request failed: {exc}") from None

    def cancel(self) -> None:
        self._reader.cancel()
        self._call.cancel()
