"""Router overhead: the latency the router adds over calling the same engines directly.

A router is worth its hop only if the hop is cheap, and "cheap" means little
next to what the caller would see without it. So both arms run in one run,
interleaved, against the same engine stubs that answer at once: *direct*, the
same load spread evenly over the engines' own addresses without the router (one
generator share per engine), and *router*, the same shares all sent to the
router. Each share has the same seed in both arms, so both arms replay the same
Poisson arrivals. Phases: one request at a time (closed loop, concurrency 1;
direct means engine 0 only, since an idle engine is an idle engine), then open
loop at each `--rates` value. Every phase is repeated (`--repeats`), the arm
order alternating, and the spread of the added latency is reported beside it.

Also here, shared with `loadtest.router_capacity`: the stack (registry, alias,
engine stubs, routers) as child processes on 127.0.0.1.

    .venv/bin/python -m loadtest.router_overhead --json overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import httpx

from loadtest._procs import (
    SERVICE,
    Body,
    Child,
    ChildError,
    Children,
    command_line,
    cpu_seconds,
    metric_sum,
    registry_argv,
    render_table,
    run_benchmark,
    say,
    scrape,
    stop_signals,
    write_json,
)
from loadtest.config import LoadConfig, LoadError
from loadtest.generator import run_load
from loadtest.histogram import Histogram
from loadtest.result import LoadResult
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ALIAS = "bench"
ENGINE_SPEED = 1000.0
"""Latency divides by speed: (5 ms + 40 ms per audio second) / 1000 is a few µs."""
ENGINE_SLOTS = 64
READY_TIMEOUT_S = 60.0
ROUTABLE_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 5.0
TARGET_ADDED_P50_MS, TARGET_ADDED_P99_MS, STRETCH_ADDED_P50_MS = 1.0, 3.0, 0.5
LATE_VOID_SHARE = 0.02
"""Above this share of late arrivals the generator itself was starved of CPU."""
CANCELLED_NOTE = (
    "  CANCELLED here has been the caller's deadline running out on a saturated machine: the "
    "server's deadline fires, its RST_STREAM(CANCEL) beats the starved client's own timer, and "
    "grpc-core reports CANCELLED (it happens direct to an engine too; compare the router's "
    "attempts by code below: the engines answered OK)"
)

# --- the stack (also used by loadtest.router_capacity) ----------------------------------


def free_port() -> int:
    """A loopback port free right now (for `--processes N`, which needs a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RouterProc:
    """A started router: its gRPC address, worker HTTP addresses and every pid to meter."""

    child: Child
    grpc: str
    https: list[str]
    pids: list[int]
    """The supervisor's (with --processes N) and every worker's: all of them are the router."""


@dataclass
class Stack:
    """Registry, alias and engine stubs, started once per run."""

    children: Children
    work: Path
    http: httpx.AsyncClient
    registry: str = ""
    engines: list[Child] = field(default_factory=list)

    @property
    def engine_addresses(self) -> list[str]:
        return [engine.fields["grpc"] for engine in self.engines]

    @property
    def engine_pids(self) -> list[int]:
        return [engine.pid for engine in self.engines]

    async def start(self, engines: int) -> None:
        """The registry, the alias `bench` (lang=zh), then the engines, in parallel."""
        registry = await self.children.start("registry", registry_argv(self.work / "data", {}))
        self.registry = registry.fields["grpc"]
        async with grpc.aio.insecure_channel(self.registry) as channel:
            alias = pb.Alias(name=ALIAS, selector="lang=zh", service=SERVICE)
            await pb_grpc.AdminStub(channel).PutAlias(
                pb.PutAliasRequest(alias=alias), timeout=CALL_TIMEOUT_S
            )
        starts = [
            self.children.start(f"engine-{i}", self._engine_argv(i), READY_TIMEOUT_S)
            for i in range(engines)
        ]
        self.engines = list(await asyncio.gather(*starts))

    def _engine_argv(self, index: int) -> list[str]:
        return [
            sys.executable, "-m", "tidepool", "engine-stub", "--registry", self.registry,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--lang", "zh",
            "--tier", "idc", "--weight", "100", "--slots", str(ENGINE_SLOTS),
            "--speed", str(ENGINE_SPEED), "--model-load-seconds", "0",
            "--instance-id", f"bench-{index}",
        ]  # fmt: skip

    async def start_router(
        self, name: str, processes: int = 1, wrap: Sequence[str] = ()
    ) -> RouterProc:
        """A router (`wrap` goes before `-m tidepool`, e.g. cProfile) routing to every engine."""
        port = free_port() if processes > 1 else 0
        argv = [
            sys.executable, *wrap, "-m", "tidepool", "router", "serve",
            "--registry", self.registry, "--listen", f"127.0.0.1:{port}",
            "--http-listen", "127.0.0.1:0", "--state-file", str(self.work / f"{name}.json"),
            "--slow-start-s", "0", "--processes", str(processes),
        ]  # fmt: skip
        child = await self.children.start(name, argv, READY_TIMEOUT_S)
        workers = [int(p) for p in child.fields["pid"].split(",")]
        pids = sorted({child.pid, *workers})
        router = RouterProc(child, child.fields["grpc"], child.fields["http"].split(","), pids)
        await self.wait_routable(router)
        return router

    async def wait_routable(self, router: RouterProc) -> None:
        """Until every worker of `router` counts every engine routable in the alias."""
        want = len(self.engines)
        async with asyncio.timeout(ROUTABLE_TIMEOUT_S):
            for http in router.https:
                while True:  # the gauge is only seen by scraping: poll it
                    stop_signals.check()
                    samples = await scrape(self.http, http)
                    name = "tidepool_router_endpoints"
                    if metric_sum(samples, name, alias=ALIAS, state="routable") == want:
                        break
                    await asyncio.sleep(0.05)

    async def counters(self, router: RouterProc) -> dict[str, dict[str, float]]:
        """The router's own account, summed over its workers: attempts sent to engines by
        status, calls it failed itself, retries and ejections (to tell whose a non-OK was)."""
        wanted = {
            "engine_attempts_by_code": ("tidepool_router_requests_total", "code"),
            "calls_it_failed_itself_by_code": ("tidepool_router_errors_total", "code"),
            "retries_by_reason": ("tidepool_router_retries_total", "reason"),
            "ejections_by_kind": ("tidepool_router_ejections_total", "kind"),
        }
        out: dict[str, dict[str, float]] = {key: {} for key in wanted}
        for http in router.https:
            samples = await scrape(self.http, http)
            for key, (name, label) in wanted.items():
                for labels, value in samples.get(name, []):
                    by = out[key]
                    by[labels.get(label, "?")] = by.get(labels.get(label, "?"), 0.0) + value
        return out

    async def stop(self, child: Child) -> None:
        """Stop one child before the end of the run (the rest stop with the run)."""
        await child.stop()
        if child in self.children.started:
            self.children.started.remove(child)


class CpuTrace:
    """CPU seconds of some processes (each apart), sampled every `interval_s` meanwhile.

    Why not one reading before and one after a load run: a run spends a second or
    two spawning its generator processes, and an idle router's background work
    over that time would be charged to a few hundred requests. `window` cuts the
    exact sending window out instead (to a clock tick, 10 ms of CPU).
    """

    def __init__(self, pids: Sequence[int], interval_s: float = 0.05) -> None:
        self.pids, self.interval_s = list(pids), interval_s
        self.samples: list[tuple[float, list[float]]] = []
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> tuple[float, list[float]]:
        cpu = []
        for pid in self.pids:
            try:
                cpu.append(cpu_seconds(pid))
            except OSError:  # gone: it costs nothing more
                cpu.append(self.samples[-1][1][len(cpu)] if self.samples else 0.0)
        return time.time(), cpu

    async def _sample(self) -> None:
        while True:
            self.samples.append(self._read())
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> CpuTrace:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.samples.append(self._read())

    def _at(self, when: float, index: int) -> float:
        """CPU seconds of pid `index` at Unix time `when`, interpolated between samples."""
        earlier = [x for x in self.samples if x[0] <= when] or self.samples[:1]
        later = [x for x in self.samples if x[0] >= when] or self.samples[-1:]
        (t0, c0), (t1, c1) = (
            (earlier[-1][0], earlier[-1][1][index]),
            (later[0][0], later[0][1][index]),
        )
        return c0 if t1 <= t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)

    def window(self, result: LoadResult, tail_s: float = 0.1) -> list[float]:
        """CPU of each pid over a run's sending window, plus `tail_s` for the last answers."""
        start, end = result.started_at, result.started_at + result.elapsed_s + tail_s
        return [self._at(end, i) - self._at(start, i) for i in range(len(self.pids))]


def load_config(target: str, duration_s: float, **changes: Any) -> LoadConfig:
    """The one request shape every benchmark here sends: 1 KiB unary Evaluate, alias bench."""
    base = LoadConfig(target=target, duration_s=duration_s, alias=ALIAS, timeout_s=CALL_TIMEOUT_S)
    return replace(base, **changes)


async def run_shares(configs: Sequence[LoadConfig]) -> LoadResult:
    """Run several generator configs at once (one `run_load` each) and merge the results."""
    results = await asyncio.gather(*(asyncio.to_thread(run_load, c) for c in configs))
    merged = LoadResult(configs[0], processes=sum(r.processes for r in results))
    for result in results:
        merged.merge(result)
    return merged


def pct_ms(histogram: Histogram, p: float) -> float:
    return histogram.percentile(p) * 1000.0


def not_ok(result: LoadResult) -> dict[str, int]:
    return {code: n for code, n in result.statuses.items() if code != "OK"}


# --- the phases -------------------------------------------------------------------------


@dataclass
class Arm:
    """One arm of one repeat of one phase: what the generator saw, and the router's CPU."""

    arm: str
    result: LoadResult
    router_cpu_s: float
    """In the sending window; in a direct arm, the idle router's own background work."""
    engine_cpu_s: float

    def summary(self) -> dict[str, Any]:
        latency = self.result.latency["all"]
        sent = max(self.result.sent, 1)
        return {
            "arm": self.arm,
            "sent": self.result.sent,
            "ok": self.result.ok,
            "not_ok": not_ok(self.result),
            "late": self.result.late,
            "achieved_per_s": round(self.result.achieved_rate_per_s, 1),
            "p50_ms": round(pct_ms(latency, 50), 4),
            "p99_ms": round(pct_ms(latency, 99), 4),
            "router_cpu_us_per_request": round(self.router_cpu_s / sent * 1e6, 1),
            "engine_cpu_us_per_request": round(self.engine_cpu_s / sent * 1e6, 1),
        }


@dataclass
class Phase:
    name: str
    rate: float | None
    """None: one request at a time."""
    arms: list[Arm] = field(default_factory=list)


def phase_configs(
    phase: Phase, arm: str, stack: Stack, router: RouterProc, args: argparse.Namespace
) -> list[LoadConfig]:
    if phase.rate is None:
        target = router.grpc if arm == "router" else stack.engine_addresses[0]
        return [load_config(target, args.duration, concurrency=1)]
    engines = stack.engine_addresses
    targets = [router.grpc] * len(engines) if arm == "router" else engines
    rate = phase.rate / len(engines)
    return [
        load_config(t, args.duration, rate_per_s=rate, processes=args.gen_processes, seed=i + 1)
        for i, t in enumerate(targets)
    ]


async def run_arm(
    phase: Phase, arm: str, stack: Stack, router: RouterProc, args: argparse.Namespace
) -> Arm:
    stop_signals.check()
    configs = phase_configs(phase, arm, stack, router, args)
    async with CpuTrace(router.pids) as router_cpu, CpuTrace(stack.engine_pids) as engine_cpu:
        result = await run_shares(configs)
    done = Arm(arm, result, sum(router_cpu.window(result)), sum(engine_cpu.window(result)))
    s = done.summary()
    say(
        f"  {phase.name:<10} {arm:<6} sent {s['sent']:>6}  p50 {s['p50_ms']:.3f} ms  "
        f"p99 {s['p99_ms']:.3f} ms  late {s['late']}  not OK {s['not_ok'] or 0}"
        + f"  router CPU{'' if arm == 'router' else ' (idle)'} "
        f"{s['router_cpu_us_per_request']:.0f} µs/req"
    )
    return done


def summarise(phase: Phase) -> dict[str, Any]:
    """Merged percentiles per arm, and the added latency per repeat (for the spread)."""
    merged = {arm: Histogram() for arm in ("direct", "router")}
    for a in phase.arms:
        merged[a.arm].merge(a.result.latency["all"])
    pairs = list(zip(phase.arms[0::2], phase.arms[1::2], strict=True))
    added: dict[str, list[float]] = {"p50": [], "p99": []}
    for first, second in pairs:
        by = {first.arm: first.result.latency["all"], second.arm: second.result.latency["all"]}
        for q, p in (("p50", 50), ("p99", 99)):
            added[q].append(round(pct_ms(by["router"], p) - pct_ms(by["direct"], p), 4))
    routed = [a for a in phase.arms if a.arm == "router"]
    idle = [a for a in phase.arms if a.arm == "direct"]
    sent = max(sum(a.result.sent for a in routed), 1)
    out: dict[str, Any] = {"phase": phase.name, "rate_per_s": phase.rate}
    for arm, histogram in merged.items():
        out[arm] = {f"p{p}_ms": round(pct_ms(histogram, p), 4) for p in (50, 90, 99)}
        out[arm]["count"] = histogram.count
    for q in ("p50", "p99"):
        out[f"added_{q}_ms"] = round(out["router"][f"{q}_ms"] - out["direct"][f"{q}_ms"], 4)
        out[f"added_{q}_ms_by_repeat"] = added[q]
    out["router_cpu_us_per_request"] = round(sum(a.router_cpu_s for a in routed) / sent * 1e6, 1)
    idle_s = sum(a.result.elapsed_s for a in idle)
    out["router_idle_cpu_percent"] = round(100 * sum(a.router_cpu_s for a in idle) / idle_s, 2)
    out["arms"] = [a.summary() for a in phase.arms]
    return out


async def measure(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        stack = Stack(children, work, http)
        await stack.start(args.engines)
        router = await stack.start_router("router")
        say(f"engines {', '.join(stack.engine_addresses)}; router {router.grpc} pid {router.pids}")
        phases = [Phase("serial", None), *(Phase(f"open {r:g}/s", r) for r in args.rates)]
        for arm in ("direct", "router") if args.warmup > 0 else ():
            say(f"warm-up {arm} (not measured): connections and caches")
            configs = phase_configs(Phase("warm-up", 100.0), arm, stack, router, args)
            await run_shares([replace(c, duration_s=args.warmup) for c in configs])
        for phase in phases:
            for repeat in range(args.repeats):
                order = ("direct", "router") if repeat % 2 == 0 else ("router", "direct")
                for arm in order:
                    phase.arms.append(await run_arm(phase, arm, stack, router, args))
        counters = await stack.counters(router)
    return {
        "router_counters": counters,
        "direct_means": "serial: engine 0 alone; open loop: one generator share per engine, "
        "each sent straight to its engine (the same shares and seeds as the router arm)",
        "engines": stack.engine_addresses,
        "phases": [summarise(p) for p in phases],
    }


# --- the report -------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    headers = [
        "phase", "direct p50", "router p50", "+p50 ms", "+p50 spread", "direct p99",
        "router p99", "+p99 ms", "+p99 spread", "router µs/req", "late d/r", "not OK d/r",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for p in result["phases"]:
        arms = [[x for x in p["arms"] if x["arm"] == a] for a in ("direct", "router")]
        late = "/".join(str(sum(x["late"] for x in arm)) for arm in arms)
        bad = "/".join(str(sum(sum(x["not_ok"].values()) for x in arm)) for arm in arms)
        spread = [
            f"{min(v):.2f}..{max(v):.2f}"
            for v in (p["added_p50_ms_by_repeat"], p["added_p99_ms_by_repeat"])
        ]
        rows.append([
            p["phase"], p["direct"]["p50_ms"], p["router"]["p50_ms"], p["added_p50_ms"],
            spread[0], p["direct"]["p99_ms"], p["router"]["p99_ms"], p["added_p99_ms"],
            spread[1], p["router_cpu_us_per_request"], late, bad,
        ])  # fmt: skip
    lines = [
        "", "router overhead (latency in ms from scheduled arrival to answer; + = router - direct)",
        f"command: {result['command']}", f"direct means: {result['direct_means']}",
        f"machine: {result['cpu_count']} CPUs; load average at start {result['loadavg_start']}, "
        f"at end {result['loadavg_end']}", "", render_table(headers, rows), "",
        *_verdict(result["phases"]), *problems(result["phases"], "phase"),
        *counter_lines(result["router_counters"]), f"run took {result['duration_s']}s",
    ]  # fmt: skip
    return "\n".join(lines)


def _verdict(phases: Sequence[dict[str, Any]]) -> list[str]:
    top = max((p for p in phases if p["rate_per_s"]), key=lambda p: p["rate_per_s"], default=None)
    if top is None:
        return []
    p50, p99 = top["added_p50_ms"], top["added_p99_ms"]
    met = p50 <= TARGET_ADDED_P50_MS and p99 <= TARGET_ADDED_P99_MS
    lines = [
        f"target at {top['rate_per_s']:g}/s (added p50 <= {TARGET_ADDED_P50_MS} ms, p99 <= "
        f"{TARGET_ADDED_P99_MS} ms): {'MET' if met else 'MISSED'} (+{p50:.2f} / +{p99:.2f} ms); "
        f"stretch p50 <= {STRETCH_ADDED_P50_MS} ms: "
        + ("met" if p50 <= STRETCH_ADDED_P50_MS else "not met")
    ]
    late = max(a["late"] / max(a["sent"], 1) for a in top["arms"])
    if late > LATE_VOID_SHARE:
        lines.append(
            f"  ...but up to {late:.0%} of the arrivals went out late: the generator was starved, "
            "the machine saturated, so this comparison measures the machine, not the router"
        )
    return lines


def problems(runs: Sequence[dict[str, Any]], key: str) -> list[str]:
    """One line per run with non-OK statuses, and what CANCELLED means when it shows."""
    arms = [(r[key], a) for r in runs for a in r.get("arms", r.get("runs", []))]
    lines = [f"problem: {name}{' ' + a['arm'] if 'arm' in a else ''}: non-OK {a['not_ok']}"
             for name, a in arms if a["not_ok"]]  # fmt: skip
    if any("CANCELLED" in a["not_ok"] for _, a in arms):
        lines.append(CANCELLED_NOTE)
    return lines


def counter_lines(counters: dict[str, dict[str, float]]) -> list[str]:
    """The router's own counters (warm-up included), one line each."""
    return [
        f"router's own count of {key.replace('_', ' ')}: "
        + (", ".join(f"{k} {v:g}" for k, v in sorted(by.items())) or "none")
        for key, by in counters.items()
    ]


def _rates(text: str) -> list[float]:
    rates = [float(r) for r in text.split(",") if r.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"expected positive rates like 200,1000, got {text!r}")
    return rates


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.router_overhead",
        description="Latency the router adds over calling the engines directly (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--engines", type=int, default=3, help="engine stubs behind the router")
    p.add_argument("--rates", type=_rates, default=[200.0, 1000.0], help="open-loop rates, /s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per arm and repeat")
    p.add_argument("--repeats", type=int, default=2, help="direct/router pairs per phase")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds per arm first (0: none)")
    p.add_argument("--gen-processes", type=int, default=1, help="generator processes per share")
    p.add_argument("--log-dir", default=None, help="keep the logs here (None: temp, removed)")
    p.add_argument("--json", default=None, help="write the result as JSON to this path")
    return p


def bench_main(
    name: str, args: argparse.Namespace, body: Body, report: Callable[[dict[str, Any]], str]
) -> int:
    """Run a benchmark body in the house envelope; print the report; write the JSON."""
    say(f"command: {command_line()}")
    try:
        result = asyncio.run(run_benchmark(name, args, body))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: every process this run started has been stopped")
        return 130
    except (ChildError, LoadError, TimeoutError) as exc:
        say(f"error: {type(exc).__name__}: {exc}")
        return 1
    say(report(result))
    if args.json:
        write_json(args.json, result)
        say(f"result written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.engines < 1 or args.repeats < 1 or args.gen_processes < 1 or args.duration <= 0:
        p.error("--engines, --repeats and --gen-processes must be >= 1, --duration > 0")
    return bench_main("router_overhead", args, measure, summary)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
