"""Open-loop gRPC load against the Evaluator API, in one event loop or several processes.

A closed-loop client (send, wait, send again) slows down exactly when the
server does and so never records the requests a stalled server made it skip
(coordinated omission). Here arrival times are drawn up front from a seeded
Poisson process and each request goes out at its time whether or not earlier
ones have answered. Latency is measured from the *scheduled* arrival, so time
the generator itself lost is charged to the result and counted as `late`;
service time (from the actual send) is kept beside it. In-flight requests are
bounded: beyond the bound an arrival is counted as dropped, never queued.
`concurrency=N` switches to a closed loop of N callers, for overhead
benchmarks that want one request at a time.

`run_open_loop` runs a config in the current event loop; `run_load` splits it
over `processes` spawned workers (one uvloop each) and merges what they send
back as JSON: histograms, status counts, per-second time series, CPU used.
The config lives in `loadtest.config` and the result in `loadtest.result`;
both are re-exported here, the one module callers need.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import random
import signal
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import Any, cast

import grpc
import uvloop

from loadtest.config import (
    EARLY_S,
    KINDS,
    MAX_SLEEP_S,
    METHODS,
    PROGRESS_INTERVAL_S,
    READY_TIMEOUT_GRACE_S,
    START_DELAY_S,
    TEXTS,
    YIELD_EVERY,
    LoadConfig,
    LoadError,
    TargetUnreachableError,
)
from loadtest.result import LoadResult, Progress
from tidepool.engine.v1 import evaluator_pb2 as epb
from tidepool.runtime.channel import channel_options


def stream_rng(seed: int, stream: int) -> random.Random:
    """The random source of worker `stream`: independent streams, reproducible by seed."""
    return random.Random(f"{seed}/{stream}")


def _payloads(config: LoadConfig) -> tuple[bytes, list[bytes]]:
    """The serialized unary request and stream chunks, built once (only bytes go out)."""
    audio = (bytes(range(256)) * (config.audio_bytes // 256 + 1))[: config.audio_bytes]
    lang = config.request_lang
    text = config.text or TEXTS.get(lang, TEXTS["en"])
    unary = epb.EvaluateRequest(audio=audio, text=text, lang=lang).SerializeToString()
    size = math.ceil(len(audio) / config.chunks)
    pieces = [audio[i * size : (i + 1) * size] for i in range(config.chunks)]
    chunks = [epb.EvaluateChunk(audio=pieces[0], text=text, lang=lang)]
    chunks += [epb.EvaluateChunk(audio=piece) for piece in pieces[1:]]
    return unary, [chunk.SerializeToString() for chunk in chunks]


def arrival_schedule(config: LoadConfig, rng: random.Random) -> tuple[array[float], array[int]]:
    """Poisson arrival offsets (s) within the duration, and each arrival's kind (index in KINDS).

    Drawn before the run so that sending never waits on anything but the clock.
    """
    offsets: array[float] = array("d")
    kinds: array[int] = array("b")
    rate, stream_fraction = config.rate_per_s, config.stream_fraction
    t = rng.expovariate(rate)
    while t < config.duration_s:
        offsets.append(t)
        kinds.append(1 if rng.random() < stream_fraction else 0)
        t += rng.expovariate(rate)
    return offsets, kinds


class _Runner:
    """Sends one process's share of the load and records what came back."""

    def __init__(self, config: LoadConfig, stream: int = 0) -> None:
        self.config = config
        self.result = LoadResult(config)
        self._rng = stream_rng(config.seed, stream)
        self._unary, self._chunks = _payloads(config)
        self._metadata = config.metadata()
        self._channels: list[grpc.aio.Channel] = []
        self._calls: list[tuple[Any, Any]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._start_at = 0.0

    async def connect(self) -> None:
        """Open the channels and wait until all are connected; TargetUnreachableError if not."""
        size = max(4 << 20, self.config.audio_bytes + (64 << 10))
        options = [*channel_options(size), ("grpc.use_local_subchannel_pool", 1)]
        for _ in range(self.config.channels):
            channel = grpc.aio.insecure_channel(self.config.target, options=options)
            self._channels.append(channel)
            decode = epb.EvaluateResponse.FromString
            self._calls.append(
                (
                    channel.unary_unary(
                        METHODS[0], response_deserializer=decode, _registered_method=True
                    ),
                    channel.stream_unary(
                        METHODS[1], response_deserializer=decode, _registered_method=True
                    ),
                )
            )
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await asyncio.gather(*(channel.channel_ready() for channel in self._channels))
        except TimeoutError:
            raise TargetUnreachableError(
                f"cannot reach {self.config.target}: no connection within "
                f"{self.config.connect_timeout_s:g}s"
            ) from None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def stop(self) -> None:
        """Send nothing more; calls in flight still finish (or reach their deadline)."""
        self._stopping = True

    def progress(self) -> Progress:
        r = self.result
        elapsed = time.monotonic() - self._start_at
        return Progress(elapsed, r.sent, r.ok, r.errors, r.dropped, r.late)

    async def run(
        self, start_at: float, on_progress: Callable[[Progress], None] | None = None
    ) -> LoadResult:
        """Send from monotonic time `start_at` for the configured duration; the result."""
        self._start_at = start_at
        closed = self.config.concurrency is not None
        schedule = None if closed else arrival_schedule(self.config, self._rng)
        self.result.started_at = time.time() + (start_at - time.monotonic())
        reporter = asyncio.create_task(self._report(on_progress)) if on_progress else None
        await self._sleep_until(start_at)
        cpu_before = os.times()
        try:
            if schedule is None:
                await self._closed_loop()
            else:
                await self._open_loop(*schedule)
        finally:
            cpu = os.times()
            self.result.cpu_s = cpu.user + cpu.system - cpu_before.user - cpu_before.system
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
        return self.result

    async def _sleep_until(self, due: float) -> None:
        # Polling `_stopping` keeps the per-arrival cost at one timer (an Event wait is a task).
        while not self._stopping and (delay := due - time.monotonic()) > EARLY_S:  # noqa: ASYNC110
            await asyncio.sleep(min(delay, MAX_SLEEP_S))

    async def _report(self, on_progress: Callable[[Progress], None]) -> None:
        tick = self._start_at + PROGRESS_INTERVAL_S
        while True:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            on_progress(self.progress())
            tick += PROGRESS_INTERVAL_S

    async def _open_loop(self, offsets: array[float], kinds: array[int]) -> None:
        result, start_at = self.result, self._start_at
        for index, offset in enumerate(offsets):
            due = start_at + offset
            await self._sleep_until(due)
            if self._stopping:
                break
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let launched calls start when arrivals bunch up
            result.scheduled += 1
            second = result.second(max(0, int(time.monotonic() - start_at)))
            if len(self._in_flight) >= self.config.max_in_flight:
                result.dropped += 1
                second.dropped += 1
                continue
            result.sent += 1
            second.sent += 1
            task = asyncio.create_task(self._call(kinds[index], due, index))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        self._finish_window()
        await self._drain()

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        # Every call has a deadline; the grace covers a server that ignores it.
        _, pending = await asyncio.wait(set(self._in_flight), timeout=self.config.timeout_s + 2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.result.abandoned += len(pending)

    async def _closed_loop(self) -> None:
        assert self.config.concurrency is not None
        end_at = self._start_at + self.config.duration_s
        stream_fraction = self.config.stream_fraction

        async def caller(index: int) -> None:
            while not self._stopping and (now := time.monotonic()) < end_at:
                self.result.scheduled += 1
                self.result.sent += 1
                self.result.second(int(now - self._start_at)).sent += 1
                kind = 1 if self._rng.random() < stream_fraction else 0
                await self._call(kind, now, index)
                index += self.config.concurrency or 1

        await asyncio.gather(*(caller(i) for i in range(self.config.concurrency)))
        self._finish_window()

    def _finish_window(self) -> None:
        elapsed = time.monotonic() - self._start_at
        # A stopped run's window is what it sent in; a full one is at least the duration.
        self.result.elapsed_s = elapsed if self._stopping else max(self.config.duration_s, elapsed)

    async def _call(self, kind: int, due: float, index: int) -> None:
        unary, stream = self._calls[index % len(self._calls)]
        sent = time.monotonic()
        lag = sent - due  # measured where the call starts, so a busy loop shows as lag
        if lag > self.config.late_after_s:
            self.result.late += 1
        if lag > self.result.max_lag_s:
            self.result.max_lag_s = lag
        try:
            if kind:
                call = stream(
                    iter(self._chunks), timeout=self.config.timeout_s, metadata=self._metadata
                )
            else:
                call = unary(self._unary, timeout=self.config.timeout_s, metadata=self._metadata)
            response = await call
        except grpc.aio.AioRpcError as exc:
            self._record(kind, due, sent, exc.code().name, message=exc.details() or "")
            return
        except (grpc.RpcError, grpc.aio.UsageError, OSError) as exc:  # not a status: name it
            self._record(kind, due, sent, type(exc).__name__, message=str(exc))
            return
        self._record(kind, due, sent, "OK", response.engine_id)

    def _record(
        self,
        kind: int,
        due: float,
        sent: float,
        status: str,
        engine_id: str = "",
        message: str = "",
    ) -> None:
        end = time.monotonic()
        result, name = self.result, KINDS[kind]
        result.statuses[status] += 1
        result.statuses_by_kind[name][status] += 1
        second = result.second(max(0, int(end - self._start_at)))
        second.statuses[status] += 1
        if status != "OK":
            result.note_error(status, message)
            return
        result.engines[engine_id] += 1
        second.engines[engine_id] += 1
        # Sent early (within EARLY_S of its time): measure from the send, never before it.
        latency = end - min(due, sent)
        result.latency["all"].record(latency)
        result.latency[name].record(latency)
        result.service["all"].record(end - sent)
        result.service[name].record(end - sent)


async def run_open_loop(
    config: LoadConfig, on_progress: Callable[[Progress], None] | None = None
) -> LoadResult:
    """Run all of `config` in the running event loop (`processes` is ignored).

    Open loop at `rate_per_s`, or a closed loop when `concurrency` is set.
    TargetUnreachableError when no connection can be made first. CPU is this
    whole process's, so it includes whatever else the loop is doing.
    """
    runner = _Runner(config)
    try:
        await runner.connect()
        return await runner.run(time.monotonic() + 0.01, on_progress)
    finally:
        await runner.close()


# --- worker processes ------------------------------------------------------------------


def _shares(config: LoadConfig) -> list[LoadConfig]:
    """Each worker's config: the rate (or callers) and in-flight bound split evenly."""
    if config.concurrency is not None:
        n = min(config.processes, config.concurrency)
        split = [config.concurrency // n + (i < config.concurrency % n) for i in range(n)]
        return [replace(config, processes=1, concurrency=c) for c in split]
    n = config.processes
    bound = max(1, math.ceil(config.max_in_flight / n))
    return [replace(config, processes=1, rate_per_s=config.rate_per_s / n, max_in_flight=bound)] * n


def _worker_main(config: LoadConfig, stream: int, conn: Connection) -> None:
    """Entry point of a worker process; Ctrl-C is the parent's to handle (it sends stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        uvloop.run(_worker(config, stream, conn))
    except Exception as exc:  # reported to the parent as one line, not a traceback
        with contextlib.suppress(OSError):
            conn.send({"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def _worker(config: LoadConfig, stream: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent went away: stop
            loop.remove_reader(conn.fileno())
            message = {"op": "stop"}
        inbox.put_nowait(message)

    loop.add_reader(conn.fileno(), readable)
    runner = _Runner(config, stream)
    try:
        try:
            await runner.connect()
        except TargetUnreachableError as exc:
            conn.send({"op": "unreachable", "error": str(exc)})
            return
        conn.send({"op": "ready"})
        start = await inbox.get()
        if start["op"] != "start":
            return

        async def stop_on_request() -> None:
            while (await inbox.get())["op"] != "stop":
                pass
            runner.stop()

        watcher = asyncio.create_task(stop_on_request())
        try:
            result = await runner.run(
                start["at"], lambda p: conn.send({"op": "progress", **asdict(p)})
            )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        conn.send({"op": "result", "result": result.to_dict()})
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        await runner.close()


@dataclass
class _Worker:
    stream: int
    process: Any  # multiprocessing's SpawnProcess (its type is not exported)
    conn: Connection
    result: LoadResult | None = None
    progress: Progress | None = None
    reports: int = 0

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def recv(self) -> dict[str, Any]:
        try:
            message: dict[str, Any] = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            raise LoadError(
                f"load worker {self.stream} exited (code {self.process.exitcode}) mid-run"
            ) from None
        if message["op"] == "unreachable":
            raise TargetUnreachableError(message["error"])
        if message["op"] == "failed":
            raise LoadError(f"load worker {self.stream} failed: {message['error']}")
        return message


def run_load(
    config: LoadConfig, on_progress: Callable[[Progress], None] | None = None
) -> LoadResult:
    """Run `config` over `config.processes` spawned workers and merge their results.

    Blocking; from async code use `await asyncio.to_thread(run_load, config)`.
    `on_progress` gets summed totals about once a second. Ctrl-C stops the
    sending, waits for answers and returns a result marked `interrupted`.
    Raises TargetUnreachableError when a worker cannot connect before the start,
    LoadError when a worker dies.
    """
    workers: list[_Worker] = []
    try:
        _spawn(config, workers)
        for worker, message in _gather(workers, config.connect_timeout_s + READY_TIMEOUT_GRACE_S):
            if message["op"] != "ready":
                raise LoadError(f"load worker {worker.stream} said {message['op']!r}, not ready")
        start_at = time.monotonic() + START_DELAY_S
        for worker in workers:
            worker.send({"op": "start", "at": start_at})
        interrupted = _collect(workers, config, start_at, on_progress)
    finally:
        _stop(workers)
    merged = LoadResult(config, processes=len(workers), interrupted=interrupted)
    for worker in workers:
        assert worker.result is not None
        merged.merge(worker.result)
    return merged


def _spawn(config: LoadConfig, workers: list[_Worker]) -> None:
    """Start one worker per share, appending each to `workers` as soon as it runs."""
    context = multiprocessing.get_context("spawn")
    # Children inherit the blocked SIGINT, so a Ctrl-C while they import cannot
    # print tracebacks from them; they ignore it for good and the parent stops them.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for stream, share in enumerate(_shares(config)):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(share, stream, theirs), name=f"loadtest-{stream}"
            )
            process.daemon = True
            process.start()
            theirs.close()
            workers.append(_Worker(stream, process, ours))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _gather(workers: list[_Worker], timeout_s: float) -> list[tuple[_Worker, dict[str, Any]]]:
    """One message from each worker, within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    replies: list[tuple[_Worker, dict[str, Any]]] = []
    waiting = {worker.conn: worker for worker in workers}
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LoadError(f"{len(waiting)} load worker(s) not ready within {timeout_s:g}s")
        for conn in mp_connection.wait(list(waiting), remaining):
            worker = waiting.pop(cast(Connection, conn))
            replies.append((worker, worker.recv()))
    return replies


def _collect(
    workers: list[_Worker],
    config: LoadConfig,
    start_at: float,
    on_progress: Callable[[Progress], None] | None,
) -> bool:
    """Read progress and results until every worker has reported; True after Ctrl-C."""
    # A run lasts its duration plus the last calls' deadline and drain grace.
    deadline = start_at + config.duration_s + config.timeout_s + READY_TIMEOUT_GRACE_S
    interrupted, shown = False, 0
    while running := [worker for worker in workers if worker.result is None]:
        if time.monotonic() > deadline:
            raise LoadError(f"load workers did not report within {deadline - start_at:.0f}s")
        try:
            _read_some(running, config, min(1.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            for worker in workers:
                worker.send({"op": "stop"})
        # Show a tick once every running worker has reported it, so the sums are whole.
        ticks = [w.reports for w in workers if w.result is None]
        reports = [w.progress for w in workers if w.progress is not None]
        if on_progress is not None and ticks and reports and min(ticks) > shown:
            shown = min(ticks)
            totals = [sum(getattr(p, name) for p in reports) for name in _COUNTS]
            on_progress(Progress(max(p.elapsed_s for p in reports), *totals))
    return interrupted


_COUNTS = ("sent", "ok", "errors", "dropped", "late")


def _read_some(running: list[_Worker], config: LoadConfig, timeout_s: float) -> None:
    waiting = {worker.conn: worker for worker in running}
    for conn in mp_connection.wait(list(waiting), max(0.0, timeout_s)):
        worker = waiting[cast(Connection, conn)]
        message = worker.recv()
        if message["op"] == "progress":
            worker.reports += 1
            worker.progress = Progress(**{k: v for k, v in message.items() if k != "op"})
        elif message["op"] == "result":
            result = worker.result = LoadResult.from_dict(message["result"], config)
            worker.progress = Progress(
                result.elapsed_s, result.sent, result.ok, result.errors, result.dropped, result.late
            )


def _stop(workers: list[_Worker]) -> None:
    """Ask every worker to stop, then reap it (SIGKILL after a grace)."""
    for worker in workers:
        worker.send({"op": "stop"})
    for worker in workers:
        worker.process.join(5.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(1.0)
        worker.conn.close()
