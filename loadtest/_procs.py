"""Processes the benchmarks start and watch: children, load generators, CPU, memory, metrics.

Also the small reporting helpers both benchmarks share. Everything here talks
to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, cast

import grpc
import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 5.0
# If we die without cleaning up (kill -9), the kernel sends our children SIGTERM.
_ORPHAN_GUARD = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
SERVICE = "speech"
BASE_PORT = 20000
"""Simulated engine i registers 127.0.0.1:BASE_PORT+i (nothing dials it)."""
REGISTER_CONCURRENCY = 64
LABELS = (("zh", "idc"), ("en", "cvm"), ("zh", "serverless"), ("en", "idc"), ("zh", "cvm"))


class ChildError(Exception):
    """A child process exited or stayed silent instead of announcing it was ready."""


# --- child processes ------------------------------------------------------------------


@dataclass
class Child:
    """One started process, the fields of its `… ready k=v …` line, and its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    fields: dict[str, str] = field(default_factory=dict)
    _log: IO[bytes] | None = None
    _pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def signal(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (and SIGCONT, in case it is stopped), then SIGKILL after `timeout_s`."""
        if self.running:
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGCONT)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                self.signal(signal.SIGKILL)
        await self.process.wait()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._log is not None:
            self._log.close()
        return self.process.returncode or 0


async def _pump(stream: asyncio.StreamReader, log: IO[bytes]) -> None:
    """Copy the child's later stdout into its log so the pipe never fills."""
    while line := await stream.readline():
        log.write(line)
        log.flush()


def _ready_fields(line: bytes) -> dict[str, str] | None:
    words = line.decode(errors="replace").split()  # "tidepool registry ready k=v ..."
    return dict(w.split("=", 1) for w in words if "=" in w) if "ready" in words[:3] else None


async def start_child(
    name: str, argv: Sequence[str], log_dir: Path, ready_timeout_s: float
) -> Child:
    """Start `argv` and wait for its ready line; the stderr and later stdout go to a log."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = await asyncio.create_subprocess_exec(
        *_ORPHAN_GUARD,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        # Its own session: Ctrl-C reaches only us, and we stop children in order.
        start_new_session=True,
    )
    child = Child(name, process, log_path, _log=log)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(ready_timeout_s):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise ChildError(f"{name} exited with code {code} before it was ready")
                log.write(line)
                fields = _ready_fields(line)
                if fields is not None:
                    child.fields = fields
                    break
    except BaseException as exc:
        await child.stop(1.0)
        if isinstance(exc, TimeoutError):
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ChildError(f"{name} was not ready within {ready_timeout_s}s:\n{tail}") from None
        raise
    child._pump = asyncio.create_task(_pump(process.stdout, log))
    return child


@dataclass
class Children:
    """Every process a benchmark started; `stop_all` ends them, newest first."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    async def start(self, name: str, argv: Sequence[str], ready_timeout_s: float = 30.0) -> Child:
        child = await start_child(name, argv, self.log_dir, ready_timeout_s)
        self.started.append(child)
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.started):
            with contextlib.suppress(Exception):
                await child.stop()
        self.started.clear()


def registry_argv(data_dir: Path, flags: Mapping[str, object]) -> list[str]:
    """`python -m tidepool registry serve` on loopback port 0 with `flags` (name → value)."""
    argv = [sys.executable, "-m", "tidepool", "registry", "serve"]
    argv += ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    argv += ["--data-dir", str(data_dir)]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


class StopSignals:
    """Ctrl-C and SIGTERM cancel the main task once, so every `finally` cleans up.

    `check()` raises CancelledError after a signal: loops call it so that a library
    swallowing the one cancellation cannot keep the benchmark running. Later
    signals are ignored, so they cannot cut the clean-up short.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._fire, signum, task)

    def _fire(self, signum: int, task: asyncio.Task[Any]) -> None:
        if self.received is None:
            self.received = signum
            task.cancel()

    def check(self) -> None:
        if self.received is not None:
            raise asyncio.CancelledError


stop_signals = StopSignals()


# --- /proc sampling --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuMeter:
    """CPU use of a set of processes and of the whole machine between two `mark`s."""

    pids: Sequence[int]
    _t: float = 0.0
    _proc: float = 0.0
    _machine: tuple[int, int] = (0, 0)

    def _read(self) -> tuple[float, float, tuple[int, int]]:
        loop_time = asyncio.get_running_loop().time()
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return loop_time, total, machine_jiffies()

    def mark(self) -> None:
        self._t, self._proc, self._machine = self._read()

    def since_mark(self) -> tuple[float, float]:
        """(percent of one core used by the processes, percent of the whole machine busy)."""
        t, proc, (busy, total) = self._read()
        elapsed = max(t - self._t, 1e-9)
        proc_pct = 100.0 * (proc - self._proc) / elapsed
        d_total = total - self._machine[1]
        machine_pct = 100.0 * (busy - self._machine[0]) / d_total if d_total else 0.0
        return proc_pct, machine_pct


# --- metrics ---------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(client: httpx.AsyncClient, http_address: str) -> Samples:
    """Every sample of a Prometheus /metrics page, by sample name."""
    response = await client.get(f"http://{http_address}/metrics", timeout=10.0)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for sample_labels, value in samples.get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


# --- reporting -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def command_line() -> str:
    """The command exactly as it was typed (interpreter and flags included)."""
    return shlex.join(sys.orig_argv)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table: numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def write_json(path: str, result: Mapping[str, Any]) -> None:
    text = json.dumps(result, indent=2, sort_keys=True, allow_nan=False)
    Path(path).write_text(text + "\n")


def say(text: str) -> None:
    """A progress line, flushed at once so a pipe shows it live."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- the load generator (runs in its own processes) -------------------------------------


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


Body = Callable[[argparse.Namespace, "Children", Path], Awaitable[dict[str, Any]]]


async def run_benchmark(name: str, args: argparse.Namespace, body: Body) -> dict[str, Any]:
    """Run `body` with signal handling, a scratch dir and child cleanup; wrap its result."""
    task = asyncio.current_task()
    assert task is not None
    stop_signals.install(task)
    started_at, t0, load_start = time.time(), time.monotonic(), loadavg()
    work = Path(tempfile.mkdtemp(prefix=f"tidepool-{name}-"))
    log_dir = Path(args.log_dir) if args.log_dir else work
    log_dir.mkdir(parents=True, exist_ok=True)
    children = Children(log_dir)
    try:
        measured = await body(args, children, work)
    finally:
        await children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": name,
        "command": command_line(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        "duration_s": round(time.monotonic() - t0, 1),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "log_dir")},
        **measured,
    }
