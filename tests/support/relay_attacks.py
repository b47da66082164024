"""Hostile and slow HTTP/2 callers for the relay, and a well-behaved load to measure beside them.

A `RawCaller` speaks HTTP/2 through raw sockets with the relay's own frame
encoder (`router.relay.frames`), so it can do what no gRPC library lets a
caller do: withhold flow-control window, never read, reset streams as fast as
it opens them, flood control frames, or say nothing at all. `GoodLoad` runs
ordinary gRPC calls meanwhile and reports their success and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from router.relay import frames as f
from router.relay.grpcwire import message

Header = tuple[bytes, bytes]
MAX_FRAME = 1 << 24


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def request_headers(path: str, alias: str, *extra: Header, timeout: bytes = b"30S") -> list[Header]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"relay"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", timeout),
        (b"x-tidepool-alias", alias.encode()),
        *extra,
    ]


@dataclass
class RawCaller:
    """One raw HTTP/2 connection to the relay."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reading: bool = True
    preface: bool = True
    frames: list[f.Frame] = field(default_factory=list)
    goaway: int | None = None
    """The error code of the first GOAWAY the relay sent, if any."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the relay's SETTINGS and its connection WINDOW_UPDATE arrived."""
    next_id: int = 1
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        settings: Sequence[tuple[int, int]] = (),
        *,
        reading: bool = True,
        preface: bool = True,
        rcvbuf: int | None = None,
    ) -> RawCaller:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small buffer so the kernel does not absorb what we never read
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        caller = cls(reader, writer, reading, preface)
        if preface:
            writer.write(f.PREFACE + f.frame(f.SETTINGS, 0, 0, f.settings_payload(settings)))
        caller._task = asyncio.create_task(caller._read(expect_settings=preface))
        return caller

    async def _read(self, expect_settings: bool) -> None:
        buffer = b""
        seen_settings = seen_window = not expect_settings
        try:
            while True:
                if not self.reading and self.settled.is_set():
                    await asyncio.Event().wait()  # never read again
                data = await self.reader.read(1 << 16)
                if not data:
                    return
                buffer += data
                parsed, used = f.parse_frames(buffer, MAX_FRAME)
                buffer = buffer[used:]
                for item in parsed:
                    seen_settings, seen_window = self._take(item, seen_settings, seen_window)
                if seen_settings and seen_window:
                    self.settled.set()
        except (ConnectionError, OSError):
            return
        finally:
            self.settled.set()
            self.closed.set()

    def _take(self, item: f.Frame, seen_settings: bool, seen_window: bool) -> tuple[bool, bool]:
        self.frames.append(item)
        if item.type == f.GOAWAY and self.goaway is None:
            self.goaway = f.read_u32(item.payload, 4)
        elif item.type == f.SETTINGS and not item.flags & f.ACK:
            seen_settings = True
            if self.preface:
                self.writer.write(f.frame(f.SETTINGS, f.ACK, 0))
        elif item.type == f.WINDOW_UPDATE and item.stream_id == 0:
            seen_window = True
        return seen_settings, seen_window

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def stream_id(self) -> int:
        sid, self.next_id = self.next_id, self.next_id + 2
        return sid

    def call(self, headers: Sequence[Header], body: bytes | None, *, end: bool = True) -> int:
        """Open a stream: HEADERS, then (if given) one gRPC message as DATA; its stream id."""
        sid = self.stream_id()
        block = f.encode_headers(headers)
        if body is None:
            self.send(f.frame(f.HEADERS, f.END_HEADERS | (f.END_STREAM if end else 0), sid, block))
            return sid
        self.send(f.frame(f.HEADERS, f.END_HEADERS, sid, block))
        data = message(body)
        for start in range(0, len(data), f.DEFAULT_MAX_FRAME):
            chunk = data[start : start + f.DEFAULT_MAX_FRAME]
            last = start + f.DEFAULT_MAX_FRAME >= len(data)
            self.send(f.frame(f.DATA, f.END_STREAM if last and end else 0, sid, chunk))
        return sid

    def reset_codes(self, sid: int) -> list[int]:
        frames = self.frames
        return [
            f.read_u32(x.payload) for x in frames if x.type == f.RST_STREAM and x.stream_id == sid
        ]

    def headers_on(self, sid: int) -> list[f.Frame]:
        return [x for x in self.frames if x.type == f.HEADERS and x.stream_id == sid]

    async def wait_closed(self, timeout_s: float) -> bool:
        """Whether the relay closed the connection within `timeout_s`."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def p99_s(self) -> float:
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    @property
    def success(self) -> float:
        total = self.ok + self.failed
        return self.ok / total if total else 0.0

    def describe(self) -> str:
        return (
            f"ok={self.ok} failed={self.failed} p99={self.p99_s * 1000:.1f}ms "
            f"errors={self.errors[:3]}"
        )


class GoodLoad:
    """Ordinary unary calls, `concurrency` at a time, until stopped; each bounded by `timeout_s`."""

    def __init__(
        self, address: str, method: str, metadata: Sequence[tuple[str, str]], concurrency: int = 4,
        timeout_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.address = address
        self.method = method
        self.metadata = tuple(metadata)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> GoodLoad:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> LoadResult:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.result

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = channel.unary_unary(self.method)
            await asyncio.gather(*(self._worker(call) for _ in range(self.concurrency)))

    async def _worker(self, call: grpc.aio.UnaryUnaryMultiCallable) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await call(b"ping", metadata=self.metadata, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as error:
                self.result.failed += 1
                self.result.errors.append(error.code().name)
                await asyncio.sleep(0.01)
            else:
                self.result.ok += 1
                self.result.latencies.append(time.monotonic() - started)


# ---- the attacks -------------------------------------------------------------

UNARY_PATH = "/tidepool.test.v1.Echo/Unary"
SERVER_STREAM_PATH = "/tidepool.test.v1.Echo/ServerStream"
BIDI_PATH = "/tidepool.test.v1.Echo/Bidi"
BIG_WINDOW = f.MAX_WINDOW


async def stalled_responses(
    port: int, alias: str, streams: int, size: int = 1_000_000, per_connection: int = 10
) -> list[RawCaller]:
    """Callers that open `streams` Bidi calls, send one large message on each (echoed
    back, the call left open) and grant no window to receive the answers."""
    callers = []
    for start in range(0, streams, per_connection):
        caller = await RawCaller.open(port, [(f.SETTINGS_INITIAL_WINDOW_SIZE, 0)])
        await asyncio.wait_for(caller.settled.wait(), 5)
        for _ in range(min(per_connection, streams - start)):
            caller.call(request_headers(BIDI_PATH, alias), b"x" * size, end=False)
        await caller.drain()
        callers.append(caller)
    return callers


async def unread_responses(port: int, alias: str, streams: int, messages: int) -> RawCaller:
    """A caller that grants every window there is and then never reads a byte."""
    caller = await RawCaller.open(
        port, [(f.SETTINGS_INITIAL_WINDOW_SIZE, BIG_WINDOW)], reading=False, rcvbuf=4096
    )
    caller.send(f.window_update(0, BIG_WINDOW - f.DEFAULT_WINDOW))
    await asyncio.wait_for(caller.settled.wait(), 5)
    for _ in range(streams):
        caller.call(request_headers(SERVER_STREAM_PATH, alias), str(messages).encode())
    await caller.drain()
    return caller


async def rapid_reset(port: int, alias: str, duration_s: float, batch: int = 100) -> RawCaller:
    """Open streams and reset each at once (CVE-2023-44487) for `duration_s` or until closed."""
    caller = await RawCaller.open(port)
    await asyncio.wait_for(caller.settled.wait(), 5)
    block = f.encode_headers(request_headers(UNARY_PATH, alias))
    stop = time.monotonic() + duration_s
    while time.monotonic() < stop and not caller.closed.is_set():
        out = []
        for _ in range(batch):
            sid = caller.stream_id()
            if sid >= f.MAX_STREAM_ID:
                break
            out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, block))
            out.append(f.rst_stream(sid, f.CANCEL))
        caller.send(b"".join(out))
        await caller.drain()
        await asyncio.sleep(0)
    return caller


def flood_frame(kind: str, alias: str) -> tuple[bytes, bytes]:
    """(what opens the flood, one frame of it) for `kind`: ping, settings or continuation."""
    if kind == "ping":
        return b"", f.frame(f.PING, 0, 0, b"12345678")
    if kind == "settings":
        return b"", f.frame(f.SETTINGS, 0, 0, b"")
    block = f.encode_headers(request_headers(UNARY_PATH, alias))
    return f.frame(f.HEADERS, 0, 1, block), f.frame(f.CONTINUATION, 0, 1, b"")


async def control_flood(port: int, kind: str, alias: str, duration_s: float) -> RawCaller:
    """Send one kind of control frame as fast as the socket takes them."""
    caller = await RawCaller.open(port)
    await asyncio.wait_for(caller.settled.wait(), 5)
    first, one = flood_frame(kind, alias)
    caller.send(first)
    chunk = one * 1000
    stop = time.monotonic() + duration_s
    while time.monotonic() < stop and not caller.closed.is_set():
        caller.send(chunk)
        await caller.drain()
        await asyncio.sleep(0)
    return caller


async def silent_sockets(port: int, count: int, trickle: bool = False) -> list[RawCaller]:
    """Connections that never finish the preface (`trickle`: one byte of it, then nothing)."""
    callers = []
    for _ in range(count):
        caller = await RawCaller.open(port, preface=False)
        if trickle:
            caller.send(f.PREFACE[:1])
        callers.append(caller)
    return callers
