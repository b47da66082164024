"""Router capacity: CPU per unary request, throughput per core, next to nginx grpc_pass.

Latency hides capacity until the machine runs out, and on a shared 2-core box
it runs out for everyone at once. CPU seconds per request do not: the router's
own user + system time (from /proc, summed over the workers of `--processes N`)
divided by the requests it carried, over the exact sending window of a steady
open-loop load. Its inverse is the throughput one core could carry. The engines
answer at once and the load generator runs in its own processes, so what is
metered is the proxy. nginx `grpc_pass` to the same engines under the same load,
interleaved with the routers and repeated, gives the yardstick and the ratio.
A rate ramp then shows where latency blows up (on this machine, usually where
the whole box saturates, generator and engines included). `--profile` samples a
router with py-spy during a steady run (cProfile if py-spy cannot attach).

    .venv/bin/python -m loadtest.router_capacity --profile --json capacity.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import pstats
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtest._procs import (
    ChildError,
    Children,
    render_table,
    say,
    stop_signals,
)
from loadtest.generator import run_load
from loadtest.nginx import find_nginx, start_nginx
from loadtest.result import LoadResult
from loadtest.router_overhead import (
    LATE_VOID_SHARE,
    CpuTrace,
    RouterProc,
    Stack,
    bench_main,
    counter_lines,
    free_port,
    load_config,
    not_ok,
    pct_ms,
    problems,
)

TARGET_US, STRETCH_US = 600.0, 400.0
BLOWN_P99_FACTOR, BLOWN_P99_FLOOR_MS = 10.0, 50.0
"""A ramp step has blown up when its p99 passes 10x the first step's and 50 ms ..."""
BLOWN_OK_SHARE = 0.95
"""... or fewer than 95 % of the offered requests came back OK per second."""
TOP_FUNCTIONS = 15
AREAS = (
    ("router code", ("router/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("grpc aio, Python part", ("grpc/",)),
    ("grpc poller thread (C core, HTTP/2)", ("threading.py",)),
    ("event loop: uvloop + grpc Cython", ("asyncio/runners.py", "uvloop/", "runners.py")),
)
"""Where a sample's leaf frame lies. Cython and C code has no Python frame, so py-spy
charges it to the nearest Python caller: Runner.run for the loop, Thread.run for grpc's
completion-queue poller thread."""


@dataclass
class Target:
    """Something that proxies to the engines, and every pid whose CPU is its cost."""

    name: str
    address: str
    pids: list[int]
    processes: int
    router: RouterProc | None = None


@dataclass
class Run:
    target: str
    rate: float
    result: LoadResult
    cpu_s: float
    cpu_by_pid: list[float]

    def summary(self) -> dict[str, Any]:
        r, sent = self.result, max(self.result.sent, 1)
        latency = r.latency["all"]
        us = self.cpu_s / sent * 1e6
        return {
            "target": self.target,
            "offered_per_s": self.rate,
            "achieved_per_s": round(r.achieved_rate_per_s, 1),
            "ok_per_s": round(r.ok / max(r.elapsed_s, 1e-9), 1),
            "sent": r.sent,
            "not_ok": not_ok(r),
            "late": r.late,
            "p50_ms": round(pct_ms(latency, 50), 3),
            "p99_ms": round(pct_ms(latency, 99), 3),
            "cpu_us_per_request": round(us, 1),
            "per_core_per_s": round(1e6 / us) if us > 0 else None,
            "cores_used": round(self.cpu_s / max(r.elapsed_s, 1e-9), 3),
            "cpu_split": [round(c / max(self.cpu_s, 1e-9), 3) for c in self.cpu_by_pid],
        }


async def measure_run(target: Target, rate: float, duration_s: float, args: Any) -> Run:
    """One steady open-loop run against `target`, its CPU cut to the sending window."""
    stop_signals.check()
    config = load_config(
        target.address,
        duration_s,
        rate_per_s=rate,
        processes=args.gen_processes,
        channels=args.channels,
    )
    async with CpuTrace(target.pids) as trace:
        result = await asyncio.to_thread(run_load, config)
    by_pid = trace.window(result)
    run = Run(target.name, rate, result, sum(by_pid), by_pid)
    s = run.summary()
    say(
        f"  {target.name:<9} {rate:>6g}/s  achieved {s['achieved_per_s']:>7.1f}/s  "
        f"p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  late {s['late']}  "
        f"not OK {s['not_ok'] or 0}  CPU {s['cpu_us_per_request']:.0f} µs/req "
        f"({s['cores_used']:.2f} cores"
        + (f", split {'/'.join(f'{x:.0%}' for x in s['cpu_split'])})" if len(by_pid) > 1 else ")")
    )
    return run


# --- profiling --------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy next to this interpreter or on PATH; pip-installs it into the venv if missing."""
    here = Path(sys.executable).parent / "py-spy"
    if here.exists() or shutil.which("py-spy"):
        return str(here) if here.exists() else shutil.which("py-spy")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"]
    done = subprocess.run(pip, capture_output=True, timeout=300, check=False)
    return str(here) if done.returncode == 0 and here.exists() else None


def area(frame: str) -> str:
    return next((name for name, keys in AREAS if any(k in frame for k in keys)), "other")


def areas(own: Counter[str], samples: int) -> dict[str, float]:
    """Share of samples by the area of their leaf frame."""
    by: Counter[str] = Counter()
    for frame, n in own.items():
        by[area(frame)] += n
    return {name: round(n / max(samples, 1), 4) for name, n in by.most_common()}


def own_and_total(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """From py-spy's collapsed stacks: samples by leaf frame, by any frame, and in all."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
        samples += int(count)
    return own, total, samples


async def profile_py_spy(target: Target, work: Path, args: Any) -> dict[str, Any] | None:
    """Sample the router (`--nonblocking`: it is never paused) during one steady run."""
    binary = await asyncio.to_thread(py_spy)
    if binary is None:
        say("profile: py-spy is not available")
        return None
    out = work / "py-spy.txt"
    seconds = args.duration + 5  # the generator's spawn is idle time, which is not sampled
    argv = [binary, "record", "--pid", str(target.pids[-1]), "--duration", str(int(seconds))]
    argv += ["--rate", "250", "--format", "raw", "--function"]
    # Native unwinding needs the process paused per sample; otherwise never pause it.
    argv += ["--native"] if args.profile_native else ["--nonblocking"]
    process = await asyncio.create_subprocess_exec(
        *argv, "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.0)  # let it attach before the load starts
        if process.returncode is None:
            await measure_run(target, args.rate, args.duration, args)
        _, err = await asyncio.wait_for(process.communicate(), seconds + 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0 or not out.exists():
        say(f"profile: py-spy failed ({process.returncode}): {err.decode()[-300:].strip()}")
        return None
    own, total, samples = own_and_total(out.read_text())
    rows = [
        {"function": f, "own": n / samples, "total": total[f] / samples}
        for f, n in own.most_common(TOP_FUNCTIONS)
    ]
    shares = areas(own, samples)
    return {"tool": "py-spy", "unit": "samples", "count": samples, "top": rows, "areas": shares}


async def profile_cprofile(stack: Stack, args: Any) -> dict[str, Any]:
    """A router started under cProfile (in-process, so it costs the router itself)."""
    out = stack.work / "router.prof"
    router = await stack.start_router("router-cprofile", 1, ["-m", "cProfile", "-o", str(out)])
    target = Target("cprofile", router.grpc, router.pids, 1)
    await measure_run(target, args.rate, args.duration, args)
    await stack.stop(router.child)  # SIGTERM: a clean exit writes the profile
    stats = pstats.Stats(str(out))
    entries = getattr(stats, "stats", {})
    grand = sum(v[2] for v in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP_FUNCTIONS]

    def label(file: str, line: int, name: str) -> str:
        return f"{name} ({'/'.join(Path(file).parts[-2:])}:{line})"

    rows = [
        {"function": label(*key), "own": v[2] / grand, "total": v[3] / grand} for key, v in ranked
    ]
    own = Counter({label(*key): round(v[2] * 1e6) for key, v in entries.items()})
    calls = int(sum(v[1] for v in entries.values()))
    shares = areas(own, own.total())
    return {"tool": "cProfile", "unit": "calls", "count": calls, "top": rows, "areas": shares}


# --- the run ----------------------------------------------------------------------------


async def start_targets(stack: Stack, args: Any) -> tuple[list[Target], str]:
    targets = []
    for n in args.processes_list:
        router = await stack.start_router(f"router-p{n}", n)
        targets.append(Target(f"router-p{n}", router.grpc, router.pids, n, router))
    nginx_note = "skipped (--no-nginx)"
    if not args.no_nginx:
        binary, why = await asyncio.to_thread(find_nginx)
        nginx_note = f"nginx {why}"
        if binary is not None:
            address = f"127.0.0.1:{free_port()}"
            upstreams = [(a, 100) for a in stack.engine_addresses]
            try:
                nginx = await start_nginx(stack.children, binary, stack.work, address, upstreams)
                targets.append(Target("nginx", nginx.address, nginx.pids(), 1))
            except ChildError as exc:
                nginx_note = f"nginx could not be started, its column is skipped: {exc}"
        else:
            nginx_note = f"nginx is not available, its column is skipped: {why}"
    say(nginx_note)
    return targets, nginx_note


async def ramp(target: Target, args: Any) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for rate in args.ramp:
        s = (await measure_run(target, rate, args.ramp_seconds, args)).summary()
        first_p99 = steps[0]["p99_ms"] if steps else s["p99_ms"]
        limit = max(BLOWN_P99_FACTOR * first_p99, BLOWN_P99_FLOOR_MS)
        s["blown"] = s["p99_ms"] > limit or s["ok_per_s"] < BLOWN_OK_SHARE * rate
        # A generator that could not send on time was starved of CPU: the box, not the proxy.
        s["generator_starved"] = s["late"] > LATE_VOID_SHARE * max(s["sent"], 1)
        steps.append(s)
        if s["blown"]:
            break
    return steps


async def measure(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        stack = Stack(children, work, http)
        await stack.start(args.engines)
        targets, nginx_note = await start_targets(stack, args)
        for target in targets if args.warmup > 0 else ():
            say(f"warm-up {target.name} (not measured)")
            await measure_run(target, 100.0, args.warmup, args)
        say(f"steady {args.rate:g}/s for {args.duration:g}s, {args.repeats} repeats, interleaved")
        runs: list[Run] = []
        for repeat in range(args.repeats):
            order = targets if repeat % 2 == 0 else targets[::-1]
            for target in order:
                runs.append(await measure_run(target, args.rate, args.duration, args))
        ramps: dict[str, list[dict[str, Any]]] = {}
        if args.ramp:
            say(f"ramp {','.join(f'{r:g}' for r in args.ramp)}/s, {args.ramp_seconds:g}s a step")
            for target in (t for t in targets if t.name != "nginx"):
                ramps[target.name] = await ramp(target, args)
        profile = None
        if args.profile:
            say("profile: a steady run under py-spy (not counted above)")
            first = next(t for t in targets if t.name.startswith("router"))
            profile = await profile_py_spy(first, work, args)
            if profile is None:
                say("profile: falling back to cProfile")
                profile = await profile_cprofile(stack, args)
        counters = {t.name: await stack.counters(t.router) for t in targets if t.router}
    return {
        "router_counters": counters,
        "nginx": nginx_note,
        "engines": stack.engine_addresses,
        "steady": steady_summary(targets, runs),
        "ramps": ramps,
        "profile": profile,
    }


def steady_summary(targets: Sequence[Target], runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per target: median CPU per request over the repeats, its spread, and vs nginx."""
    nginx = [r.summary()["cpu_us_per_request"] for r in runs if r.target == "nginx"]
    out = []
    for target in targets:
        mine = [r.summary() for r in runs if r.target == target.name]
        us = [s["cpu_us_per_request"] for s in mine]
        median = statistics.median(us)
        ratios = [u / n for u, n in zip(us, nginx, strict=False) if n > 0]
        out.append({
            "target": target.name, "processes": target.processes,
            "cpu_us_per_request": median, "cpu_us_min": min(us), "cpu_us_max": max(us),
            "per_core_per_s": round(1e6 / median) if median > 0 else None,
            "vs_nginx": round(statistics.median(ratios), 2) if ratios else None,
            "vs_nginx_by_repeat": [round(x, 2) for x in ratios], "runs": mine,
        })  # fmt: skip
    return out


# --- the report -------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    rows = []
    for t in result["steady"]:
        last = t["runs"][-1]
        rows.append([
            t["target"], t["processes"], last["offered_per_s"],
            statistics.median(r["achieved_per_s"] for r in t["runs"]),
            statistics.median(r["p50_ms"] for r in t["runs"]),
            statistics.median(r["p99_ms"] for r in t["runs"]),
            sum(r["late"] for r in t["runs"]), sum(sum(r["not_ok"].values()) for r in t["runs"]),
            t["cpu_us_per_request"], f"{t['cpu_us_min']:.0f}..{t['cpu_us_max']:.0f}",
            t["per_core_per_s"] or math.nan, math.nan if t["vs_nginx"] is None else t["vs_nginx"],
        ])  # fmt: skip
    headers = ["target", "procs", "offered/s", "achieved/s", "p50 ms", "p99 ms", "late",
               "not OK", "CPU µs/req", "spread", "req/s per core", "x nginx"]  # fmt: skip
    lines = [
        "", "router capacity (CPU per unary 1 KiB Evaluate; engines answer at once)",
        f"command: {result['command']}",
        f"machine: {result['cpu_count']} CPUs; load average at start {result['loadavg_start']}, "
        f"at end {result['loadavg_end']}", result["nginx"], "",
        render_table(headers, rows), "", *_ramp_lines(result["ramps"]),
        *_profile_lines(result["profile"]), *_verdict(result["steady"]),
        *(f"{name}: {line}" for name, c in result["router_counters"].items()
          for line in counter_lines(c)),
        f"run took {result['duration_s']}s",
    ]  # fmt: skip
    return "\n".join(lines)


def _ramp_lines(ramps: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    for name, steps in ramps.items():
        rows = [
            [s["offered_per_s"], s["achieved_per_s"], s["ok_per_s"], s["p50_ms"], s["p99_ms"],
             s["late"], sum(s["not_ok"].values()), s["cpu_us_per_request"], s["cores_used"],
             ("BLOWN" if s["blown"] else "")
             + (" (generator starved)" if s["generator_starved"] else "")]
            for s in steps
        ]  # fmt: skip
        held = [s["offered_per_s"] for s in steps if not s["blown"]]
        headers = ["offered/s", "achieved/s", "ok/s", "p50 ms", "p99 ms", "late", "not OK",
                   "CPU µs/req", "cores", ""]  # fmt: skip
        title = f"ramp {name}: held up to {max(held, default=0):g}/s"
        lines += [title, render_table(headers, rows), ""]
    return lines


def _profile_lines(profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    rows = [[f"{r['own']:.1%}", f"{r['total']:.1%}", r["function"]] for r in profile["top"]]
    title = f"profile ({profile['tool']}, {profile['count']} {profile['unit']}): top by own time"
    shares = [[f"{v:.1%}", k] for k, v in profile["areas"].items()]
    return [
        title, render_table(["own", "total", "function"], rows), "",
        "own time by area (leaf frame)", render_table(["share", "area"], shares), "",
    ]  # fmt: skip


def _verdict(steady: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for t in steady:
        if t["target"].startswith("router"):
            us = t["cpu_us_per_request"]
            met = "MET" if us <= TARGET_US else "MISSED"
            lines.append(
                f"{t['target']}: {us:.0f} µs/req vs target {TARGET_US:.0f}: {met}; stretch "
                f"{STRETCH_US:.0f}: {'met' if us <= STRETCH_US else 'not met'}"
            )
    return lines + problems(steady, "target")


def _numbers(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(v) for v in text.split(",") if v.strip()]
        if any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.router_capacity",
        description="Router CPU per request and throughput per core, vs nginx grpc_pass.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--rate", type=float, default=600.0, help="steady open-loop rate, requests/s")
    add("--duration", type=float, default=10.0, help="seconds per steady run")
    add("--repeats", type=int, default=2, help="steady runs per target, interleaved")
    add("--processes-list", type=_numbers(int), default=[1, 2], help="router --processes values")
    add("--warmup", type=float, default=1.0, help="seconds per target first (0: none)")
    add("--engines", type=int, default=3, help="engine stubs behind every proxy")
    add("--gen-processes", type=int, default=2, help="load generator processes")
    add("--channels", type=int, default=4, help="connections per generator process")
    add("--ramp", type=_numbers(float), default=[400.0, 800.0, 1200.0, 1600.0, 2000.0],
        help="ramp rates per router, /s ('' for none)")  # fmt: skip
    add("--ramp-seconds", type=float, default=4.0, help="seconds per ramp step")
    add("--profile", action="store_true", help="profile a router (py-spy, else cProfile)")
    add("--profile-native", action="store_true", help="py-spy --native: C frames (pauses it)")
    add("--no-nginx", action="store_true", help="do not run nginx")
    add("--log-dir", default=None, help="keep the logs here (None: temp, removed)")
    add("--json", default=None, help="write the result as JSON to this path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if min(args.repeats, args.engines, args.gen_processes, args.channels) < 1:
        p.error("--repeats, --engines, --gen-processes and --channels must be >= 1")
    if args.rate <= 0 or args.duration <= 0 or args.ramp_seconds <= 0 or not args.processes_list:
        p.error("--rate, --duration, --ramp-seconds must be > 0; --processes-list not empty")
    return bench_main("router_capacity", args, measure, summary)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
