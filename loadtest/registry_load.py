"""Simulated engines that load the registry: register, attach, heartbeat every interval.

They run in their own processes (`GeneratorPool`), so the load generator's CPU
is not the registry's: each process owns a share of the engines and answers a
small request/reply protocol over a pipe (grow to N, report counters, stop).
Every engine registers 127.0.0.1:BASE_PORT+i, which nothing dials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import random
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

import grpc
import uvloop

from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

SERVICE = "speech"
BASE_PORT = 20000
"""Simulated engine i registers 127.0.0.1:BASE_PORT+i (nothing dials it)."""
REGISTER_CONCURRENCY = 64
LABELS = (("zh", "idc"), ("en", "cvm"), ("zh", "serverless"), ("en", "idc"), ("zh", "cvm"))


def engine_id(index: int) -> str:
    return f"lt-{index:05d}"


def channel_options() -> list[tuple[str, int]]:
    # A local subchannel pool gives every channel its own TCP connection.
    return [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]


@dataclass
class _GenStats:
    attached: int = 0
    failed: int = 0
    sent: int = 0
    broken: int = 0
    max_lag_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


class Generator:
    """Simulated engines of one process: register, attach, beat every interval."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.channels = [
            grpc.aio.insecure_channel(spec.registry, options=channel_options())
            for _ in range(spec.channels)
        ]
        self.stubs = [pb_grpc.RegistryStub(c) for c in self.channels]
        self.tasks: list[asyncio.Task[None]] = []
        self.stats = _GenStats()
        self.rng = random.Random(spec.seed * 1000 + spec.index)
        self.register_slots = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def grow(self, target: int) -> dict[str, Any]:
        """Start engines until this process runs `target`; return once all have attached."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[bool]] = []
        for local in range(len(self.tasks), target):
            index = local * self.spec.procs + self.spec.index
            attached: asyncio.Future[bool] = loop.create_future()
            stub = self.stubs[local % len(self.stubs)]
            self.tasks.append(asyncio.create_task(self._engine(index, stub, attached)))
            waits.append(attached)
        results = await asyncio.gather(*waits)
        return {
            "attached": sum(results),
            "failed": len(results) - sum(results),
            "errors": dict(self.stats.errors),
        }

    async def _attach(self, index: int, stub: Any) -> Any:
        lang, tier = LABELS[index % len(LABELS)]
        request = pb.RegisterRequest(
            service=SERVICE,
            instance_id=engine_id(index),
            address=f"127.0.0.1:{BASE_PORT + index}",
            weight=100,
            capacity=4,
            labels={"lang": lang, "tier": tier},
        )
        async with self.register_slots:
            registered = await stub.Register(request, timeout=60.0)
            call = stub.Heartbeat()
            first = pb.HeartbeatRequest(
                instance_id=engine_id(index), load=pb.Load(slots=4), secret=registered.secret
            )
            await call.write(first)
            ack = await asyncio.wait_for(call.read(), 30.0)
        if ack is grpc.aio.EOF:
            raise RuntimeError("heartbeat stream closed before its acknowledgement")
        return call

    async def _engine(self, index: int, stub: Any, attached: asyncio.Future[bool]) -> None:
        try:
            call = await self._attach(index, stub)
        except (grpc.aio.AioRpcError, RuntimeError, TimeoutError) as exc:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            self.stats.errors[f"attach:{code}"] += 1
            self.stats.failed += 1
            attached.set_result(False)
            return
        self.stats.attached += 1
        attached.set_result(True)
        await self._beat_forever(call)

    async def _beat_forever(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        interval = self.spec.interval_s
        due = loop.time() + self.rng.random() * interval
        progress = 0
        try:
            while True:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.stats.max_lag_s = max(self.stats.max_lag_s, -delay)
                in_flight = self.rng.randrange(3)
                progress += in_flight
                load = pb.Load(in_flight=in_flight, slots=4, progress=progress)
                await call.write(pb.HeartbeatRequest(load=load, status=pb.ENGINE_STATUS_SERVING))
                self.stats.sent += 1
                due += interval
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "closed"
            self.stats.errors[f"beat:{code}"] += 1
            self.stats.broken += 1

    def snapshot(self) -> dict[str, Any]:
        """Counters so far; the worst timer lag is since the previous snapshot."""
        snapshot = {**asdict(self.stats), "errors": dict(self.stats.errors)}
        self.stats.max_lag_s = 0.0
        return snapshot

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


@dataclass(frozen=True)
class GeneratorSpec:
    registry: str
    index: int
    procs: int
    channels: int
    interval_s: float
    seed: int


async def _serve_generator(spec: GeneratorSpec, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the benchmark went away: stop
                message = {"op": "stop"}
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message["op"] == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    generator = Generator(spec)
    try:
        while True:
            message = await inbox.get()
            if message["op"] == "grow":
                conn.send({"op": "grown", **await generator.grow(message["target"])})
            elif message["op"] == "stats":
                conn.send({"op": "stats", **generator.snapshot()})
            else:
                break
    finally:
        await generator.close()
    with contextlib.suppress(OSError):
        conn.send({"op": "stopped"})


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def generator_main(spec: GeneratorSpec, conn: Connection) -> None:
    """Entry point of a load-generator process; Ctrl-C is the benchmark's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve_generator(spec, conn))


class GeneratorPool:
    """The load-generator processes and the request/reply protocol with them."""

    def __init__(self, registry: str, args: argparse.Namespace) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[Any] = []
        for index in range(args.procs):
            ours, theirs = context.Pipe()
            spec = GeneratorSpec(
                registry, index, args.procs, args.channels, args.heartbeat_interval, args.seed
            )
            process = context.Process(
                target=generator_main, args=(spec, theirs), name=f"loadgen-{index}", daemon=True
            )
            process.start()
            theirs.close()
            self.conns.append(ours)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def _recv(self, conn: Connection, timeout_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), _resolve, readable)
        try:
            await asyncio.wait_for(readable, timeout_s)
        finally:
            loop.remove_reader(conn.fileno())
        return cast(dict[str, Any], conn.recv())

    async def ask(
        self, messages: Sequence[dict[str, Any]], timeout_s: float
    ) -> list[dict[str, Any]]:
        for conn, message in zip(self.conns, messages, strict=True):
            conn.send(message)
        return list(await asyncio.gather(*(self._recv(c, timeout_s) for c in self.conns)))

    async def grow(self, total: int, timeout_s: float) -> dict[str, Any]:
        procs = len(self.conns)
        targets = [max(0, math.ceil((total - i) / procs)) for i in range(procs)]
        replies = await self.ask([{"op": "grow", "target": t} for t in targets], timeout_s)
        errors: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
        failed = sum(r["failed"] for r in replies)
        return {
            "attached": sum(r["attached"] for r in replies),
            "failed": failed,
            "errors": dict(errors),
        }

    async def stats(self) -> dict[str, Any]:
        replies = await self.ask([{"op": "stats"}] * len(self.conns), 30.0)
        return {
            "sent": sum(r["sent"] for r in replies),
            "broken": sum(r["broken"] for r in replies),
            "max_lag_s": max(r["max_lag_s"] for r in replies),
        }

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send({"op": "stop"})
        for process in self.processes:
            # join() blocks: run it in a thread so the loop keeps serving the others.
            await asyncio.to_thread(process.join, 5.0)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 1.0)
        for conn in self.conns:
            conn.close()
