"""Router overhead: the latency the router adds over calling the same engines directly.

A router is worth its hop only if the hop is cheap, and "cheap" means little
next to what the caller would see without it. So every arm runs in one run,
interleaved, against the same engine stubs that answer at once: *direct*, the
same load spread evenly over the engines' own addresses without the router (one
generator share per engine), and one router per data path (`--data-paths
relay,grpc`: the HTTP/2 frame relay and the grpc.aio proxy), each sent the same
shares. Each share has the same seed in every arm, so all arms replay the same
Poisson arrivals. Phases: one request at a time (closed loop, concurrency 1;
direct means engine 0 only, since an idle engine is an idle engine), then open
loop at each `--rates` value. Every phase is repeated (`--repeats`), the arm
order reversing each repeat, and the spread of the added latency is reported.

    .venv/bin/python -m loadtest.router_overhead --json overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from loadtest.bench import stop_signals
from loadtest.children import Children
from loadtest.config import LoadConfig
from loadtest.histogram import Histogram
from loadtest.report import render_table, say
from loadtest.result import LoadResult
from loadtest.router_fleet import (
    DATA_PATHS_FLAG,
    Benchmark,
    CpuTrace,
    Flag,
    Fleet,
    counter_lines,
    fast_engines,
    header_lines,
    load_config,
    load_figures,
    numbers,
    pct_ms,
    problems,
    run_shares,
    starved,
)

TARGET_ADDED_P50_MS, TARGET_ADDED_P99_MS, STRETCH_ADDED_P50_MS = 1.0, 3.0, 0.5


# --- the phases -------------------------------------------------------------------------


@dataclass
class Arm:
    """One arm of one repeat of one phase: what the generator saw, and each router's CPU."""

    arm: str
    """direct, or the data path of the router it went through."""
    repeat: int
    result: LoadResult
    router_cpu_s: dict[str, float]
    """Each router's (by data path) in the sending window; idle unless it is this arm's."""
    engine_cpu_s: float

    def summary(self) -> dict[str, Any]:
        sent = max(self.result.sent, 1)
        own = self.router_cpu_s.get(self.arm, sum(self.router_cpu_s.values()))
        return {
            "arm": self.arm,
            "repeat": self.repeat,
            **load_figures(self.result),
            "router_cpu_us_per_request": round(own / sent * 1e6, 1),
            "engine_cpu_us_per_request": round(self.engine_cpu_s / sent * 1e6, 1),
        }


@dataclass
class Phase:
    name: str
    rate: float | None
    """None: one request at a time."""
    arms: list[Arm] = field(default_factory=list)


def phase_configs(
    phase: Phase, arm: str, fleet: Fleet, args: argparse.Namespace
) -> list[LoadConfig]:
    engines = fleet.engine_addresses
    router = fleet.routers[arm].grpc if arm in fleet.routers else None
    if phase.rate is None:
        return [load_config(router or engines[0], args.duration, concurrency=1)]
    targets = [router] * len(engines) if router else engines
    rate = phase.rate / len(engines)
    return [
        load_config(t, args.duration, rate_per_s=rate, processes=args.gen_processes, seed=i + 1)
        for i, t in enumerate(targets)
    ]


async def run_arm(
    phase: Phase, arm: str, repeat: int, fleet: Fleet, args: argparse.Namespace
) -> Arm:
    stop_signals.check()
    configs = phase_configs(phase, arm, fleet, args)
    async with contextlib.AsyncExitStack() as stack:
        routers = {
            name: await stack.enter_async_context(CpuTrace(r.pids))
            for name, r in fleet.routers.items()
        }
        engines = await stack.enter_async_context(CpuTrace(fleet.engine_pids))
        result = await run_shares(configs)
    cpu = {name: sum(trace.window(result)) for name, trace in routers.items()}
    done = Arm(arm, repeat, result, cpu, sum(engines.window(result)))
    s = done.summary()
    say(
        f"  {phase.name:<10} {arm:<6} sent {s['sent']:>6}  p50 {s['p50_ms']:.3f} ms  "
        f"p99 {s['p99_ms']:.3f} ms  late {s['late']}  not OK {s['not_ok'] or 0}"
        + f"  router CPU{'' if arm in fleet.routers else ' (idle, all)'} "
        f"{s['router_cpu_us_per_request']:.0f} µs/req"
    )
    return done


def _percentiles(arms: Sequence[Arm]) -> dict[str, Any]:
    merged = Histogram()
    for a in arms:
        merged.merge(a.result.latency["all"])
    out: dict[str, Any] = {f"p{p}_ms": round(pct_ms(merged, p), 4) for p in (50, 90, 99)}
    out["count"] = merged.count
    return out


def summarise(phase: Phase, paths: Sequence[str]) -> dict[str, Any]:
    """Merged percentiles per arm; per path the added latency, also per repeat (the spread),
    its ratio to direct and the router's CPU per request (and idle, in the other arms)."""
    direct = [a for a in phase.arms if a.arm == "direct"]
    out: dict[str, Any] = {"phase": phase.name, "rate_per_s": phase.rate}
    out["direct"] = _percentiles(direct)
    out["paths"] = {}
    for path in paths:
        mine = [a for a in phase.arms if a.arm == path]
        figures = _percentiles(mine)
        for q, p in (("p50", 50), ("p99", 99)):
            figures[f"added_{q}_ms"] = round(figures[f"{q}_ms"] - out["direct"][f"{q}_ms"], 4)
            figures[f"added_{q}_ms_by_repeat"] = [
                round(pct_ms(a.result.latency["all"], p) - pct_ms(d.result.latency["all"], p), 4)
                for a, d in zip(mine, direct, strict=True)
            ]
            figures[f"x_direct_{q}"] = round(figures[f"{q}_ms"] / out["direct"][f"{q}_ms"], 2)
        sent = max(sum(a.result.sent for a in mine), 1)
        figures["router_cpu_us_per_request"] = round(
            sum(a.router_cpu_s[path] for a in mine) / sent * 1e6, 1
        )
        idle = [a for a in phase.arms if a.arm != path]
        idle_s = sum(a.result.elapsed_s for a in idle)
        figures["router_idle_cpu_percent"] = round(
            100 * sum(a.router_cpu_s[path] for a in idle) / max(idle_s, 1e-9), 2
        )
        out["paths"][path] = figures
    out["arms"] = [a.summary() for a in phase.arms]
    return out


async def measure(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        fleet = Fleet(children, work, http)
        await fleet.start(fast_engines(args.engines))
        for path in args.data_paths:
            await fleet.wait_routable(await fleet.start_router(path, data_path=path))
        routers = "; ".join(f"{r.name} {r.grpc} pid {r.pids}" for r in fleet.routers.values())
        say(f"engines {', '.join(fleet.engine_addresses)}; routers {routers}")
        arms = ["direct", *args.data_paths]
        phases = [Phase("serial", None), *(Phase(f"open {r:g}/s", r) for r in args.rates)]
        for arm in arms if args.warmup > 0 else ():
            say(f"warm-up {arm} (not measured): connections and caches")
            configs = phase_configs(Phase("warm-up", 100.0), arm, fleet, args)
            await run_shares([replace(c, duration_s=args.warmup) for c in configs])
        for phase in phases:
            for repeat in range(args.repeats):
                for arm in arms if repeat % 2 == 0 else arms[::-1]:
                    phase.arms.append(await run_arm(phase, arm, repeat, fleet, args))
        counters = {r.name: await fleet.counters(r) for r in fleet.routers.values()}
    return {
        "router_counters": counters,
        "direct_means": "serial: engine 0 alone; open loop: one generator share per engine, "
        "each sent straight to its engine (the same shares and seeds as the router arms)",
        "engines": fleet.engine_addresses,
        "phases": [summarise(p, args.data_paths) for p in phases],
    }


# --- the report -------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    headers = [
        "phase", "path", "direct p50", "path p50", "+p50 ms", "+p50 spread", "x direct",
        "direct p99", "path p99", "+p99 ms", "+p99 spread", "router µs/req", "late d/p",
        "not OK d/p",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for p in result["phases"]:
        direct = [x for x in p["arms"] if x["arm"] == "direct"]
        for path, f in p["paths"].items():
            arms = [direct, [x for x in p["arms"] if x["arm"] == path]]
            late = "/".join(str(sum(x["late"] for x in arm)) for arm in arms)
            bad = "/".join(str(sum(sum(x["not_ok"].values()) for x in arm)) for arm in arms)
            spread = [
                f"{min(v):.2f}..{max(v):.2f}"
                for v in (f["added_p50_ms_by_repeat"], f["added_p99_ms_by_repeat"])
            ]
            rows.append([
                p["phase"], path, p["direct"]["p50_ms"], f["p50_ms"], f["added_p50_ms"],
                spread[0], f["x_direct_p50"], p["direct"]["p99_ms"], f["p99_ms"],
                f["added_p99_ms"], spread[1], f["router_cpu_us_per_request"], late, bad,
            ])  # fmt: skip
    title = "router overhead (latency in ms from scheduled arrival to answer; + = path - direct)"
    lines = [
        *header_lines(title, result), f"direct means: {result['direct_means']}", "",
        render_table(headers, rows), "", *_verdict(result["phases"]),
        *problems(result["phases"], "phase"), *counter_lines(result["router_counters"]),
        f"run took {result['duration_s']}s",
    ]  # fmt: skip
    return "\n".join(lines)


def _verdict(phases: Sequence[dict[str, Any]]) -> list[str]:
    top = max((p for p in phases if p["rate_per_s"]), key=lambda p: p["rate_per_s"], default=None)
    if top is None:
        return []
    lines = []
    for path, f in top["paths"].items():
        p50, p99 = f["added_p50_ms"], f["added_p99_ms"]
        met = p50 <= TARGET_ADDED_P50_MS and p99 <= TARGET_ADDED_P99_MS
        lines.append(
            f"{path}: target at {top['rate_per_s']:g}/s (added p50 <= {TARGET_ADDED_P50_MS} ms, "
            f"p99 <= {TARGET_ADDED_P99_MS} ms): {'MET' if met else 'MISSED'} "
            f"(+{p50:.2f} / +{p99:.2f} ms); stretch p50 <= {STRETCH_ADDED_P50_MS} ms: "
            + ("met" if p50 <= STRETCH_ADDED_P50_MS else "not met")
        )
    if any(starved(a) for a in top["arms"]):
        late = max(a["late"] / max(a["sent"], 1) for a in top["arms"])
        lines.append(
            f"  ...but up to {late:.0%} of the arrivals went out late: the generator was starved, "
            "the machine saturated, so this comparison measures the machine, not the router"
        )
    return lines


FLAGS: tuple[Flag, ...] = (
    ("--engines", int, 3, "engine stubs behind the routers"),
    ("--rates", numbers(float, "--rates"), [200.0, 1000.0], "open-loop rates, /s"),
    DATA_PATHS_FLAG,
    ("--duration", float, 10.0, "seconds per arm and repeat"),
    ("--repeats", int, 2, "rounds of every arm per phase"),
    ("--warmup", float, 1.0, "seconds per arm first (0: none)"),
    ("--gen-processes", int, 1, "generator processes per share"),
)


def _check(args: argparse.Namespace) -> str | None:
    if args.engines < 1 or args.repeats < 1 or args.gen_processes < 1 or args.duration <= 0:
        return "--engines, --repeats and --gen-processes must be >= 1, --duration > 0"
    return None if args.rates else "--rates: at least one rate"


BENCHMARK = Benchmark("router_overhead", __doc__, FLAGS, measure, summary, _check)

if __name__ == "__main__":
    BENCHMARK.exit()
