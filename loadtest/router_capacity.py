"""Router capacity: CPU per call, throughput per core, next to nginx grpc_pass and HAProxy.

Latency hides capacity until the machine runs out, and on a shared 2-core box
it runs out for everyone at once. CPU seconds per request do not: the router's
own user + system time (from /proc, summed over the workers of `--processes N`)
divided by the requests it carried, over the exact sending window of a steady
open-loop load. Its inverse is the throughput one core could carry. The engines
answer at once and the load generator runs in its own processes, so what is
metered is the proxy. nginx `grpc_pass` and HAProxy (`loadtest.haproxy`: one
thread, `proto h2`, `http-reuse always`) to the same engines under the same load,
interleaved with the routers and repeated, give the yardsticks and the ratios.
Both data paths (`--data-paths relay,grpc`) run side by side in the same run,
a router each per `--processes` value; `--baseline-tree DIR` adds the same
routers run from another checkout (a `git worktree` of the commit before a
change), so "before" and "after" are measured side by side too. `--call stream`
sends client-streaming calls of `--chunks` messages instead of unary ones.
A rate ramp then shows where latency blows up (on this machine, usually where
the whole box saturates, generator and engines included). `--profile` samples
each path's first router with py-spy during a steady run (`loadtest.profiling`);
`--profile-perf` with perf (`loadtest.perf_profile`), which also names the functions of
the compiled data path.

    .venv/bin/python -m loadtest.router_capacity --profile --json capacity.json
    .venv/bin/python -m loadtest.router_capacity --repeats 3 --processes-list 1 --ramp '' \
        --baseline-tree /tmp/base --call stream --chunks 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtest.bench import stop_signals
from loadtest.children import ChildError, Children
from loadtest.generator import run_load
from loadtest.haproxy import find_haproxy, start_haproxy
from loadtest.nginx import find_nginx, start_nginx
from loadtest.perf_profile import profile_perf
from loadtest.profiling import profile_cprofile, profile_lines, profile_py_spy
from loadtest.report import render_table, say
from loadtest.result import LoadResult
from loadtest.router_fleet import (
    DATA_PATHS_FLAG,
    Benchmark,
    CpuTrace,
    Flag,
    Fleet,
    RouterProc,
    counter_lines,
    fast_engines,
    free_port,
    header_lines,
    load_config,
    load_figures,
    numbers,
    problems,
    starved,
)

TARGET_US, STRETCH_US = 600.0, 400.0
BLOWN_P99_FACTOR, BLOWN_P99_FLOOR_MS = 10.0, 50.0
"""A ramp step has blown up when its p99 passes 10x the first step's and 50 ms ..."""
BLOWN_OK_SHARE = 0.95
"""... or fewer than 95 % of the offered requests came back OK per second."""
TARGET_VS_NGINX = 1.5
"""Issue #13: the relay's CPU per call at most 1.5x nginx's in the same run."""
YARDSTICKS = ("nginx", "haproxy")
CALLS = ("unary", "stream")


@dataclass
class Target:
    """Something that proxies to the engines, and every pid whose CPU is its cost."""

    name: str
    address: str
    pids: list[int]
    processes: int
    data_path: str
    """relay or grpc; nginx or haproxy for those."""
    router: RouterProc | None = None
    tree: str = ""
    """"base" for a router run from `--baseline-tree`, "" for this checkout's."""


@dataclass
class Run:
    target: str
    rate: float
    result: LoadResult
    cpu_s: float
    cpu_by_pid: list[float]

    def summary(self) -> dict[str, Any]:
        r = self.result
        us = self.cpu_s / max(r.sent, 1) * 1e6
        return {
            "target": self.target,
            "offered_per_s": self.rate,
            **load_figures(r),
            "ok_per_s": round(r.ok / max(r.elapsed_s, 1e-9), 1),
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
        mix={args.call: 1.0},
        chunks=args.chunks,
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


# --- the run ----------------------------------------------------------------------------


@contextlib.contextmanager
def _tree(path: str) -> Iterator[None]:
    """Processes started meanwhile import tidepool from the checkout at `path`, not from
    their working directory: PYTHONSAFEPATH (3.11) drops the cwd from sys.path, PYTHONPATH
    puts `path` first, and both reach a router group's workers, which inherit them."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ.update(PYTHONPATH=path, PYTHONSAFEPATH="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def start_routers(fleet: Fleet, args: Any) -> list[Target]:
    """A router per data path and `--processes` value, and the same from `--baseline-tree`."""
    targets = []
    trees = [("", None), *([("base", args.baseline_tree)] if args.baseline_tree else [])]
    for n in args.processes_list:
        for tree, path in trees:
            for data_path in args.data_paths:
                name = f"{tree + '-' if tree else ''}{data_path}-p{n}"
                with _tree(path) if path else contextlib.nullcontext():
                    router = await fleet.start_router(name, data_path=data_path, processes=n)
                await fleet.wait_routable(router)
                targets.append(
                    Target(name, router.grpc, router.pids, n, data_path, router, tree)
                )  # fmt: skip
    return targets


async def start_yardstick(fleet: Fleet, kind: str) -> tuple[Target | None, str]:
    """nginx or HAProxy in front of the engines, or None and why its column is skipped."""
    find, start = (find_nginx, start_nginx) if kind == "nginx" else (find_haproxy, start_haproxy)
    binary, why = await asyncio.to_thread(find)
    if binary is None:
        return None, f"{kind} is not available, its column is skipped: {why}"
    address = f"127.0.0.1:{free_port()}"
    upstreams = [(a, 100) for a in fleet.engine_addresses]
    try:
        proxy = await start(fleet.children, binary, fleet.work, address, upstreams)
    except ChildError as exc:
        return None, f"{kind} could not be started, its column is skipped: {exc}"
    return Target(kind, proxy.address, proxy.pids(), 1, kind), f"{kind} {why}"


async def start_targets(fleet: Fleet, args: Any) -> tuple[list[Target], str]:
    """The routers (interleaved), then nginx and HAProxy unless switched off."""
    targets = await start_routers(fleet, args)
    notes = []
    for kind in YARDSTICKS:
        if getattr(args, f"no_{kind}"):
            notes.append(f"{kind} skipped (--no-{kind})")
            continue
        target, note = await start_yardstick(fleet, kind)
        targets += [target] if target is not None else []
        notes.append(note)
    say("; ".join(notes))
    return targets, "; ".join(notes)


async def ramp(target: Target, args: Any) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for rate in args.ramp:
        s = (await measure_run(target, rate, args.ramp_seconds, args)).summary()
        first_p99 = steps[0]["p99_ms"] if steps else s["p99_ms"]
        limit = max(BLOWN_P99_FACTOR * first_p99, BLOWN_P99_FLOOR_MS)
        s["blown"] = s["p99_ms"] > limit or s["ok_per_s"] < BLOWN_OK_SHARE * rate
        # A generator that could not send on time was starved of CPU: the box, not the proxy.
        s["generator_starved"] = starved(s)
        steps.append(s)
        if s["blown"]:
            break
    return steps


async def profile(fleet: Fleet, targets: Sequence[Target], args: Any) -> dict[str, Any]:
    """Each data path's first router under perf (`--profile-perf`) or py-spy (cProfile if
    it cannot attach)."""
    profiles: dict[str, Any] = {}
    for path in args.data_paths:
        target = next(t for t in targets if t.data_path == path)
        assert target.router is not None
        tool = "perf" if args.profile_perf else "py-spy"
        say(f"profile: {target.name}, a steady run under {tool} (not counted above)")
        out, seconds = fleet.work / f"{tool}-{path}.data", args.duration + 5  # + spawn time

        async def load(t: Target = target) -> Run:
            return await measure_run(t, args.rate, args.duration, args)

        if args.profile_perf:
            profiles[target.name] = await profile_perf(target.router, seconds, out, load)
            continue
        found = await profile_py_spy(target.router, seconds, out, load, args.profile_native)
        if found is None:
            say("profile: falling back to cProfile")

            async def load_router(router: RouterProc, path: str = path) -> Run:
                t = Target(router.name, router.grpc, router.pids, 1, path, router)
                return await measure_run(t, args.rate, args.duration, args)

            found = await profile_cprofile(fleet, path, load_router)
        profiles[target.name] = found
    return profiles


async def measure(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        fleet = Fleet(children, work, http)
        await fleet.start(fast_engines(args.engines))
        targets, nginx_note = await start_targets(fleet, args)
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
            for target in (t for t in targets if t.router):
                ramps[target.name] = await ramp(target, args)
        wanted = args.profile or args.profile_perf
        profiles = await profile(fleet, targets, args) if wanted else {}
        counters = {t.name: await fleet.counters(t.router) for t in targets if t.router}
    return {
        "router_counters": counters,
        "nginx": nginx_note,
        "call": args.call,
        "chunks": args.chunks,
        "baseline_tree": args.baseline_tree,
        "engines": fleet.engine_addresses,
        "steady": steady_summary(targets, runs),
        "ramps": ramps,
        "profiles": profiles,
    }


def steady_summary(targets: Sequence[Target], runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per target: median CPU per request over the repeats, its spread, and the median of
    its per-repeat ratios to nginx and to HAProxy (each repeat against the same repeat's)."""
    yardsticks = {
        kind: [r.summary()["cpu_us_per_request"] for r in runs if r.target == kind]
        for kind in YARDSTICKS
    }
    out = []
    for target in targets:
        mine = [r.summary() for r in runs if r.target == target.name]
        us = [s["cpu_us_per_request"] for s in mine]
        median = statistics.median(us)
        row: dict[str, Any] = {
            "target": target.name, "data_path": target.data_path, "tree": target.tree,
            "processes": target.processes,
            "cpu_us_per_request": median, "cpu_us_min": min(us), "cpu_us_max": max(us),
            "per_core_per_s": round(1e6 / median) if median > 0 else None, "runs": mine,
        }  # fmt: skip
        for kind, theirs in yardsticks.items():
            ratios = [u / n for u, n in zip(us, theirs, strict=False) if n > 0]
            row[f"vs_{kind}"] = round(statistics.median(ratios), 2) if ratios else None
            row[f"vs_{kind}_by_repeat"] = [round(x, 2) for x in ratios]
        out.append(row)
    return out


# --- the report -------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    rows = []
    for t in result["steady"]:
        runs = t["runs"]
        rows.append([
            t["target"], t["data_path"], t["processes"], runs[-1]["offered_per_s"],
            *(statistics.median(r[k] for r in runs) for k in ("achieved_per_s", "p50_ms",
                                                               "p99_ms")),
            sum(r["late"] for r in runs), sum(sum(r["not_ok"].values()) for r in runs),
            t["cpu_us_per_request"], f"{t['cpu_us_min']:.0f}..{t['cpu_us_max']:.0f}",
            t["per_core_per_s"] or math.nan,
            *(math.nan if t[f"vs_{k}"] is None else t[f"vs_{k}"] for k in YARDSTICKS),
        ])  # fmt: skip
    headers = ["target", "path", "procs", "offered/s", "achieved/s", "p50 ms", "p99 ms", "late",
               "not OK", "CPU µs/call", "spread", "calls/s per core", "x nginx",
               "x haproxy"]  # fmt: skip
    call = result.get("call", "unary")
    shape = (
        "unary 1 KiB Evaluate" if call == "unary"
        else f"client-streaming EvaluateStream, 1 KiB in {result.get('chunks')} chunks"
    )  # fmt: skip
    title = f"router capacity (CPU per call, {shape}; engines answer at once)"
    lines = [
        *header_lines(title, result), result["nginx"], "", render_table(headers, rows), "",
        *_path_lines(result["steady"]), *_ramp_lines(result["ramps"]),
        *(line for name, p in result["profiles"].items() for line in profile_lines(name, p)),
        *_verdict(result["steady"]), *counter_lines(result["router_counters"]),
        f"run took {result['duration_s']}s",
    ]  # fmt: skip
    return "\n".join(lines)


def _path_lines(steady: Sequence[dict[str, Any]]) -> list[str]:
    """The grpc path's CPU per request over the relay's, at each --processes value, and each
    router's over the same router run from `--baseline-tree` (after / before)."""
    by = {(t["data_path"], t["processes"]): t["cpu_us_per_request"] for t in steady
          if not t.get("tree")}  # fmt: skip
    base = {(t["data_path"], t["processes"]): t["cpu_us_per_request"] for t in steady
            if t.get("tree") == "base"}  # fmt: skip
    lines = [
        f"grpc path / relay path, CPU per request at --processes {n}: {us / by[('relay', n)]:.2f}x"
        for (path, n), us in by.items()
        if path == "grpc" and by.get(("relay", n))
    ]
    lines += [
        f"{path}-p{n}: this tree / --baseline-tree, CPU per call: {us / base[(path, n)]:.2f}x"
        for (path, n), us in by.items()
        if base.get((path, n))
    ]
    return [*lines, ""] if lines else []


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


def _verdict(steady: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for t in steady:
        if t["data_path"] not in YARDSTICKS:
            us = t["cpu_us_per_request"]
            met = "MET" if us <= TARGET_US else "MISSED"
            line = (
                f"{t['target']}: {us:.0f} µs/call vs target {TARGET_US:.0f}: {met}; stretch "
                f"{STRETCH_US:.0f}: {'met' if us <= STRETCH_US else 'not met'}"
            )
            if t.get("vs_nginx") is not None:
                ok = "MET" if t["vs_nginx"] <= TARGET_VS_NGINX else "MISSED"
                line += f"; {t['vs_nginx']:.2f}x nginx vs target {TARGET_VS_NGINX:g}x: {ok}"
            lines.append(line)
    return lines + problems(steady, "target")


FLAGS: tuple[Flag, ...] = (
    ("--rate", float, 600.0, "steady open-loop rate, requests/s"),
    ("--duration", float, 10.0, "seconds per steady run"),
    ("--repeats", int, 2, "steady runs per target, interleaved"),
    DATA_PATHS_FLAG,
    ("--processes-list", numbers(int, "--processes-list"), [1, 2], "router --processes values"),
    ("--warmup", float, 1.0, "seconds per target first (0: none)"),
    ("--engines", int, 3, "engine stubs behind every proxy"),
    ("--gen-processes", int, 2, "load generator processes"),
    ("--channels", int, 4, "connections per generator process"),
    ("--ramp", numbers(float, "--ramp"), [400.0, 800.0, 1200.0, 1600.0, 2000.0],
     "ramp rates per router, /s ('' for none)"),
    ("--ramp-seconds", float, 4.0, "seconds per ramp step"),
    ("--call", str, "unary", f"call kind sent in the steady runs: {' or '.join(CALLS)}"),
    ("--chunks", int, 10, "messages per client-streaming call (--call stream)"),
    ("--baseline-tree", str, "", "another checkout whose routers run beside these (before)"),
)  # fmt: skip
SWITCHES = (
    ("--profile", "profile each data path's first router (py-spy, else cProfile)"),
    ("--profile-native", "py-spy --native: C frames too (pauses the router per sample)"),
    ("--profile-perf", "profile with perf instead: it sees the compiled data path by name"),
    ("--no-nginx", "do not run nginx"),
    ("--no-haproxy", "do not run HAProxy"),
)


def _check(args: argparse.Namespace) -> str | None:
    if min(args.repeats, args.engines, args.gen_processes, args.channels) < 1:
        return "--repeats, --engines, --gen-processes and --channels must be >= 1"
    if args.rate <= 0 or args.duration <= 0 or args.ramp_seconds <= 0 or not args.processes_list:
        return "--rate, --duration, --ramp-seconds must be > 0; --processes-list not empty"
    if args.call not in CALLS or args.chunks < 1:
        return f"--call must be one of {', '.join(CALLS)}; --chunks must be >= 1"
    tree = args.baseline_tree
    if tree and not (Path(tree) / "tidepool" / "__main__.py").is_file():
        return f"--baseline-tree {tree!r}: no tidepool checkout there (tidepool/__main__.py)"
    if tree:
        args.baseline_tree = str(Path(tree).resolve())
    return None


BENCHMARK = Benchmark("router_capacity", __doc__, FLAGS, measure, summary, _check, SWITCHES)

if __name__ == "__main__":
    BENCHMARK.exit()
