"""Registry capacity: how many heartbeating engines one registry serves, watchers attached.

Starts a registry, then steps a fleet of simulated engines upward. Each engine
registers and keeps a heartbeat stream beating every interval; the engines live
in separate load-generator processes (multiprocessing) on a few shared channels
each. Watchers in this process time, end to end, how long a weight change takes
to reach them. At every step the registry's processed heartbeat rate, CPU, RSS,
fan-out latency and unhealthy count are measured; the run stops at the first
step that is not healthy and reports the last healthy fleet size as capacity.

    .venv/bin/python -m loadtest.registry_capacity --json capacity.json
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvloop

from loadtest.bench import run_benchmark, stop_signals
from loadtest.capacity_report import histogram_quantile, median_steps, summary
from loadtest.children import Children, registry_argv
from loadtest.pinning import cpu_plan, pinned
from loadtest.procfs import CpuMeter, rss_bytes
from loadtest.registry_load import BASE_PORT, SERVICE, GeneratorPool, channel_options, engine_id
from loadtest.report import command_line, percentile, say, write_json
from loadtest.scrape import Samples, metric_sum, scrape
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

DEFAULT_STEPS = "250,500,1000,2000,3000,4000,5000,6000,7000,8000,10000"
FANOUT_HISTOGRAM = "tidepool_registry_watch_fanout_seconds"
GC_HISTOGRAM = "tidepool_registry_gc_pause_seconds"
DEFAULT_STORE_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
FLIP_TIMEOUT_S = 5.0
"""A weight change not seen by a watcher within this long counts as lost."""


# --- fan-out probe and watchers (this process) ------------------------------------------


@dataclass
class FanoutProbe:
    """Flips the probe instance's weight and times each watcher's sight of each flip."""

    probe_id: str
    watchers: int
    pending: dict[int, tuple[float, set[int]]] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)
    missed: int = 0
    admin_s: list[float] = field(default_factory=list)
    admin_errors: int = 0

    def reset(self) -> None:
        self.samples, self.missed, self.admin_s, self.admin_errors = [], 0, [], 0

    def seen(self, watcher: int, instance: Any, now: float) -> None:
        if instance.id != self.probe_id or not instance.weight_overridden:
            return
        entry = self.pending.get(instance.effective_weight)
        if entry is None or watcher in entry[1]:
            return
        entry[1].add(watcher)
        self.samples.append(now - entry[0])
        if len(entry[1]) == self.watchers:
            del self.pending[instance.effective_weight]

    def _expire(self, now: float) -> None:
        for weight, (started, got) in list(self.pending.items()):
            if now - started > FLIP_TIMEOUT_S:
                self.missed += self.watchers - len(got)
                del self.pending[weight]

    async def flip_forever(self, admin: Any, interval_s: float) -> None:
        sequence = 0
        while True:
            weight = 101 + sequence % 899  # a fresh weight per flip; never 0 (drained)
            sequence += 1
            started = time.monotonic()
            self.pending[weight] = (started, set())
            try:
                await admin.SetWeight(
                    pb.SetWeightRequest(instance_id=self.probe_id, weight=weight), timeout=10.0
                )
                self.admin_s.append(time.monotonic() - started)
            except grpc.aio.AioRpcError:
                self.admin_errors += 1
                self.pending.pop(weight, None)
            self._expire(time.monotonic())
            await asyncio.sleep(max(0.0, started + interval_s - time.monotonic()))


@dataclass
class WatchStats:
    events: int = 0
    snapshots: int = 0
    restarts: int = 0


async def watch_forever(index: int, address: str, probe: FanoutProbe, stats: WatchStats) -> None:
    """One router-like watcher on its own connection; it re-subscribes if the stream ends."""
    async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
        stub = pb_grpc.RegistryStub(channel)
        while True:
            try:
                async for event in stub.Watch(pb.WatchRequest(service=SERVICE)):
                    now = time.monotonic()
                    stats.events += 1
                    if event.kind == pb.WatchEvent.KIND_SNAPSHOT and not event.snapshot_more:
                        stats.snapshots += 1
                    if event.kind in (pb.WatchEvent.KIND_SNAPSHOT, pb.WatchEvent.KIND_UPSERT):
                        for instance in event.instances:
                            probe.seen(index, instance, now)
            except grpc.aio.AioRpcError:
                pass
            stats.restarts += 1
            await asyncio.sleep(0.5)


# --- one step --------------------------------------------------------------------------


@dataclass
class Step:
    """Everything measured while the fleet held at `engines`."""

    engines: int
    offered_hz: float = 0.0
    sent_hz: float = 0.0
    processed_hz: float = 0.0
    processed_ratio: float = 0.0
    registry_cpu_pct: float = 0.0
    registry_rss_mb: float = 0.0
    generator_cpu_pct: float = 0.0
    machine_cpu_pct: float = 0.0
    bench_cpu_pct: float = 0.0
    fanout_p50_ms: float | None = None
    fanout_p99_ms: float | None = None
    fanout_max_ms: float | None = None
    server_fanout_p99_le_ms: float | None = None
    gc_max_le_ms: float | None = None
    gc_full_collections: int | None = None
    watch_resyncs: int = 0
    """Watchers that fell behind and were sent a whole snapshot again, in the window."""
    fanout_samples: int = 0
    fanout_lost: int = 0
    admin_p50_ms: float | None = None
    admin_errors: int = 0
    unhealthy: int = 0
    streams_broken: int = 0
    generator_max_lag_ms: float = 0.0
    scrape_max_ms: float = 0.0
    ramp_s: float = 0.0
    settle_s: float = 0.0
    window_s: float = 0.0
    failed: list[str] = field(default_factory=list)
    ramp_ok: bool = True
    """False when the fleet never reached this size (nothing after it can be measured)."""

    def judge(self, args: argparse.Namespace) -> None:
        p99 = self.fanout_p99_ms
        checks = [
            (self.processed_ratio < 0.95, "processed/offered < 0.95"),
            (self.unhealthy > 0, f"{self.unhealthy} instances unhealthy"),
            (p99 is None or p99 > args.max_fanout_p99_ms, "fan-out p99 over the limit"),
            (self.registry_cpu_pct >= 95.0, "registry CPU >= 95% of a core"),
            (self.streams_broken > 0, f"{self.streams_broken} heartbeat streams broke"),
            # The generator itself fell behind: what lies beyond is not the registry's doing.
            (self.sent_hz < 0.95 * self.offered_hz, GENERATOR_BEHIND),
        ]
        self.failed = [reason for bad, reason in checks if bad]


GENERATOR_BEHIND = "load generator fell behind (inconclusive)"


def _ms(seconds: float) -> float | None:
    """Milliseconds; None for a lost (infinite) latency, so the JSON stays standard."""
    return seconds * 1000.0 if math.isfinite(seconds) else None


@dataclass
class _Window:
    """Where a measurement window started: counters, scrape and CPU meters."""

    t0: float
    beats0: float
    first: Samples
    registry: CpuMeter
    generators: CpuMeter
    bench: CpuMeter
    sent0: int


@dataclass
class Bench:
    """The running benchmark: registry, generators, watchers and the probe."""

    args: argparse.Namespace
    registry_pid: int
    http_address: str
    pool: GeneratorPool
    http: httpx.AsyncClient
    probe: FanoutProbe
    scrape_max_s: float = 0.0

    async def beats(self) -> tuple[float, Samples]:
        """(heartbeats counted so far, all samples); remembers the slowest scrape."""
        started = time.monotonic()
        samples = await scrape(self.http, self.http_address)
        self.scrape_max_s = max(self.scrape_max_s, time.monotonic() - started)
        return metric_sum(samples, "tidepool_registry_heartbeats_total"), samples

    async def settle(self, n: int) -> float:
        """Wait the warm-up, then until an interval's heartbeat rate matches the offered rate."""
        args = self.args
        started = time.monotonic()
        await asyncio.sleep(args.warmup_seconds)
        offered = n / args.heartbeat_interval
        count, _ = await self.beats()
        t = time.monotonic()
        while time.monotonic() - started < args.warmup_seconds + args.max_settle_seconds:
            stop_signals.check()
            await asyncio.sleep(args.heartbeat_interval)
            count2, _ = await self.beats()
            t2 = time.monotonic()
            # Steady: neither behind nor still draining a backlog from the ramp.
            if abs((count2 - count) / (t2 - t) / offered - 1) <= 0.05:
                break
            count, t = count2, t2
        return time.monotonic() - started

    async def measure(self, n: int, ramp_s: float, settle_s: float) -> Step:
        args = self.args
        step = Step(n, n / args.heartbeat_interval, ramp_s=ramp_s, settle_s=settle_s)
        # A whole number of intervals: each engine then beats exactly that many times.
        hold = max(1, round(args.step_seconds / args.heartbeat_interval)) * args.heartbeat_interval
        window = await self._open_window()
        t0, t_prev, beats_prev = window.t0, window.t0, window.beats0
        while (left := t0 + hold - time.monotonic()) > 0:
            stop_signals.check()
            await asyncio.sleep(min(args.progress_seconds, left))
            beats, samples = await self.beats()
            now = time.monotonic()
            unhealthy = int(metric_sum(samples, "tidepool_registry_instances", state="unhealthy"))
            step.unhealthy = max(step.unhealthy, unhealthy)
            say(
                f"  {n:>6} engines  t+{now - t0:4.1f}s  "
                f"heartbeats {(beats - beats_prev) / (now - t_prev):7.0f}/s  "
                f"registry cpu {window.registry.since_mark()[0]:5.1f}%  unhealthy {unhealthy}  "
                f"fan-out p99 {percentile(self.probe.samples, 99) * 1000:6.1f} ms "
                f"({len(self.probe.samples)} samples)"
            )
            beats_prev, t_prev, last = beats, now, samples
        step.window_s = t_prev - t0
        step.processed_hz = (beats_prev - window.beats0) / step.window_s
        step.processed_ratio = step.processed_hz / step.offered_hz
        await self._close_window(step, window, last)
        step.judge(args)
        return step

    async def _open_window(self) -> _Window:
        self.scrape_max_s = 0.0
        beats0, first = await self.beats()
        window = _Window(
            time.monotonic(),
            beats0,
            first,
            CpuMeter([self.registry_pid]),
            CpuMeter(self.pool.pids),
            CpuMeter([os.getpid()]),
            (await self.pool.stats())["sent"],
        )
        for meter in (window.registry, window.generators, window.bench):
            meter.mark()
        self.probe.reset()
        return window

    async def _close_window(self, step: Step, window: _Window, last: Samples) -> None:
        step.registry_cpu_pct, step.machine_cpu_pct = window.registry.since_mark()
        step.generator_cpu_pct = window.generators.since_mark()[0]
        step.bench_cpu_pct = window.bench.since_mark()[0]
        step.registry_rss_mb = rss_bytes(self.registry_pid) / 2**20
        sent = await self.pool.stats()
        step.sent_hz = (sent["sent"] - window.sent0) / step.window_s
        step.streams_broken = sent["broken"]
        step.generator_max_lag_ms = sent["max_lag_s"] * 1000
        step.scrape_max_ms = self.scrape_max_s * 1000
        server_p99 = histogram_quantile(window.first, last, FANOUT_HISTOGRAM, 0.99)
        step.server_fanout_p99_le_ms = _ms(server_p99) if server_p99 is not None else None
        self._gc(step, window.first, last)
        resyncs = "tidepool_registry_watch_resyncs_total"
        step.watch_resyncs = int(metric_sum(last, resyncs) - metric_sum(window.first, resyncs))
        self._fanout(step)

    @staticmethod
    def _gc(step: Step, first: Samples, last: Samples) -> None:
        """The longest garbage-collection pause (bucket bound) and the full collections
        in the window; None where the registry does not export them."""
        if GC_HISTOGRAM + "_count" not in last:
            return
        longest = histogram_quantile(first, last, GC_HISTOGRAM, 1.0)
        step.gc_max_le_ms = _ms(longest) if longest is not None else 0.0
        full = metric_sum(last, GC_HISTOGRAM + "_count", generation="2")
        step.gc_full_collections = int(
            full - metric_sum(first, GC_HISTOGRAM + "_count", generation="2")
        )

    def _fanout(self, step: Step) -> None:
        probe = self.probe
        # A lost update counts as infinitely late, so losses show in the p99.
        latencies = probe.samples + [math.inf] * probe.missed
        step.fanout_samples, step.fanout_lost = len(probe.samples), probe.missed
        if latencies:
            step.fanout_p50_ms = _ms(percentile(latencies, 50))
            step.fanout_p99_ms = _ms(percentile(latencies, 99))
            step.fanout_max_ms = _ms(max(latencies))
        step.admin_p50_ms = _ms(percentile(probe.admin_s, 50)) if probe.admin_s else None
        step.admin_errors = probe.admin_errors


# --- command line ----------------------------------------------------------------------


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 100,250,500, got {text!r}") from None
    if not steps or steps[0] < 1 or steps != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"need increasing positive counts, got {text!r}")
    return steps


FLAGS: tuple[tuple[str, Any, Any, str], ...] = (
    ("--steps", parse_steps, DEFAULT_STEPS, "fleet sizes to hold, increasing, comma-separated"),
    ("--max-engines", int, 20000, "never grow the fleet beyond this many engines"),
    ("--step-seconds", float, 10.0, "measurement window per step"),
    ("--warmup-seconds", float, 2.0, "wait after a step's engines attached, before measuring"),
    ("--max-settle-seconds", float, 8.0,
     "then wait up to this long for the heartbeat rate to reach the offered rate"),
    ("--watchers", int, 10, "watch streams held by this process"),
    ("--procs", int, 2, "load-generator processes"),
    ("--channels", int, 4, "gRPC connections per generator process (streams share them)"),
    ("--heartbeat-interval", float, 1.0, "seconds between heartbeats (registry flag too)"),
    ("--ttl", float, 3.0, "registry TTL in seconds"),
    ("--flip-interval", float, 0.2, "seconds between weight flips that time the fan-out"),
    ("--max-fanout-p99-ms", float, 1000.0, "a step with a slower fan-out p99 is not healthy"),
    ("--progress-seconds", float, 2.0, "seconds between progress lines (each scrapes /metrics)"),
    ("--time-limit", float, 600.0, "start no new step after this many seconds"),
    ("--seed", int, 1, "seed of the beat phases and load figures"),
    ("--repeats", int, 1, "run the whole series this many times; the table shows medians"),
    ("--registry-cpu", int, 0, "pin the registry to this CPU (taskset; -1: do not pin)"),
    ("--generator-cpus", str, "rest",
     "CPUs for this process and the load generators: 'rest' (all but --registry-cpu), "
     "'all', or a list such as 1,2"),
    ("--store-dir", str, DEFAULT_STORE_DIR,
     "parent of the registry's data directory (tmpfs by default: registrations and admin "
     "writes fsync, and a busy disk's fsync is not what this measures)"),
    ("--registry-nice", int, 0,
     "run the registry at this nice value (negative: ahead of other processes on its CPU; "
     "needs root)"),
    ("--generator-nice", int, 10,
     "run the load generators at this nice value (positive: behind this process, whose "
     "watchers share their CPU, so the fan-out timed is the registry's, not the watchers' "
     "wait for a CPU the generators keep busy; 0: as they come)"),
    ("--registry-source", str, None,
     "run the registry from this source tree, e.g. a git worktree of an older commit, for a "
     "before/after table (None: this checkout)"),
    ("--log-dir", str, None, "keep the logs in this directory (None: a temp dir, removed)"),
    ("--json", str, None, "write the result as JSON to this path (None: do not)"),
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.registry_capacity",
        description="Step a fleet of simulated heartbeating engines upward against one "
        "registry (loopback only) and report the largest fleet it serves healthily.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, kind, default, text in FLAGS:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="measure every step even after one failed (for before/after tables)",
    )
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.procs, args.channels, args.watchers) < 1:
        p.error("--procs, --channels and --watchers must be at least 1")
    if args.ttl < 2 * args.heartbeat_interval:
        p.error("--ttl must be at least twice --heartbeat-interval")
    if min(args.step_seconds, args.warmup_seconds, args.flip_interval) <= 0:
        p.error("--step-seconds, --warmup-seconds and --flip-interval must be positive")
    if not 1 <= args.max_engines <= 65535 - BASE_PORT:
        p.error(f"--max-engines must be 1..{65535 - BASE_PORT}")
    args.steps = [n for n in args.steps if n <= args.max_engines]
    if not args.steps:
        p.error("no step is within --max-engines")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.registry_source is not None:
        args.registry_source = os.path.abspath(args.registry_source)
        if not os.path.isdir(os.path.join(args.registry_source, "registry")):
            p.error(f"--registry-source {args.registry_source} holds no registry/ package")
    try:
        plan = cpu_plan(args.registry_cpu, args.generator_cpus)
        args.generator_cpu_list = None if plan is None else sorted(plan)
    except ValueError as exc:
        p.error(str(exc))


# --- the run ---------------------------------------------------------------------------


def registry_flags(args: argparse.Namespace) -> dict[str, object]:
    # Registrations are rate-limited per caller IP (20/s by default) and every engine
    # here comes from 127.0.0.1: lift the limit so ramping up is not throttled.
    return {
        "heartbeat_interval": args.heartbeat_interval,
        "ttl": args.ttl,
        "restart_grace": args.ttl,
        "register_rate": 1_000_000,
        "register_burst": 1_000_000,
    }


async def _run_step(bench: Bench, n: int) -> Step:
    say(f"step {n}: growing the fleet to {n} engines")
    started = time.monotonic()
    grown = await bench.pool.grow(n, timeout_s=60.0 + n / 20)
    ramp_s = time.monotonic() - started
    if grown["failed"]:
        reason = f"{grown['failed']} engines failed to attach {grown['errors']}"
        offered = n / bench.args.heartbeat_interval
        return Step(n, offered, ramp_s=ramp_s, failed=[reason], ramp_ok=False)
    say(f"  {n} engines attached in {ramp_s:.1f}s; settling")
    settle_s = await bench.settle(n)
    step = await bench.measure(n, ramp_s, settle_s)
    verdict = "healthy" if not step.failed else "NOT healthy: " + "; ".join(step.failed)
    say(
        f"step {n}: processed {step.processed_hz:.0f}/s of {step.offered_hz:.0f}/s offered, "
        f"registry cpu {step.registry_cpu_pct:.0f}%, fan-out p99 "
        f"{'lost' if step.fanout_p99_ms is None else f'{step.fanout_p99_ms:.1f}'} ms -> {verdict}"
    )
    return step


async def _steps(bench: Bench, admin: Any) -> tuple[list[Step], str]:
    args = bench.args
    steps: list[Step] = []
    flipper: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        for n in args.steps:
            stop_signals.check()
            if time.monotonic() - started > args.time_limit:
                return steps, f"time limit of {args.time_limit:g}s reached"
            if flipper is None:
                await bench.pool.grow(1, timeout_s=60.0)  # the probe engine must exist first
                flipper = asyncio.create_task(bench.probe.flip_forever(admin, args.flip_interval))
            steps.append(await _run_step(bench, n))
            if steps[-1].failed and not (args.keep_going and steps[-1].ramp_ok):
                return steps, f"step {n}: " + "; ".join(steps[-1].failed)
        failed = [s.engines for s in steps if s.failed]
        if failed:
            return steps, f"every step measured (--keep-going); failed: {failed}"
        return steps, "every step was healthy (capacity not reached)"
    finally:
        if flipper is not None:
            flipper.cancel()
            await asyncio.gather(flipper, return_exceptions=True)


def _capacity(steps: list[Step]) -> tuple[int | None, str]:
    """The largest step before the first failed one, and what limited it."""
    first_failed = next((s for s in steps if s.failed), None)
    healthy = [s.engines for s in steps if first_failed is None or s.engines < first_failed.engines]
    capacity = max(healthy) if healthy else None
    if first_failed is None:
        return capacity, "not reached"
    if first_failed.failed == [GENERATOR_BEHIND]:
        return capacity, "load generator"
    return capacity, "registry"


async def _bench(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="tidepool-capacity-", dir=args.store_dir))
    try:
        return await _bench_on(args, children, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def _bench_on(args: argparse.Namespace, children: Children, data: Path) -> dict[str, Any]:
    argv = registry_argv(data, registry_flags(args))
    if args.registry_source:
        # `python -m` imports from its working directory first: run the registry there.
        argv = ["env", "--chdir", args.registry_source, *argv]
    if args.registry_nice:
        # On a shared machine others' processes also run on the registry's CPU; a
        # higher priority gives it that CPU when it needs it, as a dedicated one would.
        argv = ["nice", "-n", str(args.registry_nice), *argv]
    argv = pinned(argv, args.registry_cpu)
    registry = await children.start("registry", argv)
    grpc_address, http_address = registry.fields["grpc"], registry.fields["http"]
    say(f"registry pid {registry.pid} grpc={grpc_address} http={http_address}")
    pool = GeneratorPool(grpc_address, args)
    for pid in pool.pids:
        # The engines this stands for run on other machines, as do the routers the
        # watchers stand for: the watchers must not queue behind them for a CPU.
        os.setpriority(os.PRIO_PROCESS, pid, args.generator_nice)
    probe, watch_stats = FanoutProbe(engine_id(0), args.watchers), WatchStats()
    watchers = [
        asyncio.create_task(watch_forever(i, grpc_address, probe, watch_stats))
        for i in range(args.watchers)
    ]
    say(
        f"load generators: {args.procs} processes (pids {pool.pids}), {args.channels} "
        f"connections each; {args.watchers} watchers in this process (pid {os.getpid()})"
    )
    try:
        async with (
            httpx.AsyncClient() as http,
            grpc.aio.insecure_channel(grpc_address, options=channel_options()) as channel,
        ):
            bench = Bench(args, registry.pid, http_address, pool, http, probe)
            steps, stop_reason = await _steps(bench, pb_grpc.AdminStub(channel))
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await pool.close()
        await registry.stop()
    capacity, limited_by = _capacity(steps)
    return {
        "steps": [asdict(s) for s in steps],
        "capacity_engines": capacity,
        "capacity_limited_by": limited_by,
        "stop_reason": stop_reason,
        "watch": asdict(watch_stats),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async def body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
        runs = []
        for repeat in range(args.repeats):
            if args.repeats > 1:
                say(f"--- repeat {repeat + 1} of {args.repeats} (a fresh registry) ---")
            runs.append(await _bench(args, children, work / f"run-{repeat}"))
        result = {"registry_flags": registry_flags(args), **runs[0]}
        if args.repeats > 1:
            result["runs"] = runs
            result["steps"] = median_steps([r["steps"] for r in runs])
            result["capacity_engines"] = statistics.median_low(
                [r["capacity_engines"] or 0 for r in runs]
            )
        result["pinning"] = {
            "registry_cpu": args.registry_cpu,
            "generator_cpus": args.generator_cpu_list or sorted(os.sched_getaffinity(0)),
            "registry_nice": args.registry_nice,
            "generator_nice": args.generator_nice,
        }
        return result

    return await run_benchmark("registry_capacity", args, body)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    if args.generator_cpu_list is not None:
        # Before grpc or the generators start a thread: they all inherit it.
        os.sched_setaffinity(0, args.generator_cpu_list)
    say(f"command: {command_line()}")
    try:
        result = uvloop.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: every process this run started has been stopped")
        return 130
    say(summary(result))
    if args.json:
        write_json(args.json, result)
        say(f"result written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
