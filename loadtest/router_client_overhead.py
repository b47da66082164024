"""The in-process RouterClient's cost per call over a plain grpc.aio stub to the same engine.

Why: a Python access layer embeds the router's balancer (DESIGN §2.3) only if
doing so costs it little CPU; the target is at most 0.05 ms of CPU per call on
top of the gRPC call it makes anyway. Both arms run in this one process against
one engine stub that answers at once (tiny audio, speed 1000, 256 slots):
*direct* is `EvaluatorStub.Evaluate` on a channel of its own, *client* is
`RouterClient.evaluate(alias=…)` (pick, forward, metrics, retries armed). CPU is
this process's user + system time (`resource.getrusage`, every thread, gRPC's
included) per block of calls; the arms alternate block by block, the order
flipping each pair, so drift on a shared machine lands on both arms alike, and
the added CPU is taken per adjacent pair, then its median and spread reported.
Two levels: one call at a time, and `--callers` concurrent callers.

    .venv/bin/python -m loadtest.router_client_overhead --json client.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvloop

from loadtest.bench import stop_signals
from loadtest.children import Children
from loadtest.report import percentile, render_table, say
from loadtest.router_fleet import ALIAS, Benchmark, EngineSpec, Flag, Fleet, header_lines
from router.channels import engine_channel_options
from router.client import RouterClient
from router.config import RouterConfig
from tidepool.engine.v1 import evaluator_pb2 as epb
from tidepool.engine.v1 import evaluator_pb2_grpc as epb_grpc

ENGINE = EngineSpec("engine-1", speed=1000.0, slots=256)
"""Latency divides by speed: (5 ms + 40 ms per audio second) / 1000 is about 5 µs."""
REQUEST = epb.EvaluateRequest(audio=bytes(64), text="ni hao", lang="zh")
"""64 bytes: 2 ms of 16 kHz audio, so the wire and the engine cost next to nothing."""
CALL_TIMEOUT_S = 5.0
TARGET_ADDED_CPU_MS = 0.05
MODES = ("direct", "client")

Call = Callable[[], Awaitable[Any]]


@dataclass
class Block:
    """One block of calls in one mode: CPU and wall time used, each call's latency."""

    mode: str
    callers: int
    calls: int
    errors: int
    cpu_s: float
    wall_s: float
    latencies_s: list[float]


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_block(mode: str, call: Call, calls: int, callers: int) -> Block:
    """`calls` calls spread over `callers` closed-loop callers."""
    latencies: list[float] = []
    errors = 0

    async def caller(count: int) -> None:
        nonlocal errors
        for _ in range(count):
            started = time.perf_counter()
            try:
                await call()
            except grpc.RpcError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    shares = [calls // callers + (i < calls % callers) for i in range(callers)]
    gc.collect()  # a collection owed by the previous block is not this block's cost
    cpu, wall = cpu_now(), time.perf_counter()
    await asyncio.gather(*(caller(n) for n in shares if n))
    cpu, wall = cpu_now() - cpu, time.perf_counter() - wall
    return Block(mode, callers, calls, errors, cpu, wall, latencies)


async def measure_level(calls: dict[str, Call], args: argparse.Namespace, callers: int) -> Any:
    """Warm both arms up, then alternate blocks; every block kept for the summary."""
    for mode in MODES:
        await run_block(mode, calls[mode], args.block, callers)
    blocks: list[Block] = []
    pairs = max(1, args.calls // args.block)
    for index in range(pairs):
        stop_signals.check()
        order = MODES if index % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            blocks.append(await run_block(mode, calls[mode], args.block, callers))
    return summarise(blocks, callers)


def summarise(blocks: list[Block], callers: int) -> dict[str, Any]:
    level: dict[str, Any] = {"callers": callers, "modes": {}}
    for mode in MODES:
        mine = [b for b in blocks if b.mode == mode]
        latencies = [x for b in mine for x in b.latencies_s]
        calls = sum(b.calls for b in mine)
        level["modes"][mode] = {
            "blocks": len(mine),
            "calls": calls,
            "errors": sum(b.errors for b in mine),
            "cpu_ms_per_call": 1000 * sum(b.cpu_s for b in mine) / calls,
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "calls_per_s": calls / sum(b.wall_s for b in mine),
        }
    direct = [b for b in blocks if b.mode == "direct"]
    client = [b for b in blocks if b.mode == "client"]
    added_cpu = [
        1000 * (c.cpu_s / c.calls - d.cpu_s / d.calls) for d, c in zip(direct, client, strict=True)
    ]
    added_p50 = [
        1000 * (percentile(c.latencies_s, 50) - percentile(d.latencies_s, 50))
        for d, c in zip(direct, client, strict=True)
    ]
    for name, values in (("added_cpu_ms", added_cpu), ("added_p50_ms", added_p50)):
        level[name] = {
            "median": percentile(values, 50),
            "p10": percentile(values, 10),
            "p90": percentile(values, 90),
            "min": min(values),
            "max": max(values),
            "pairs": [round(v, 5) for v in values],
        }
    return level


async def _body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        fleet = Fleet(children, work, http)
        await fleet.start([ENGINE])
        address = fleet.engines[ENGINE.instance_id].fields["grpc"]
        try:
            return await _measure(args, fleet.registry_grpc, address)
        finally:
            await fleet.close()


async def _measure(args: argparse.Namespace, registry: str, address: str) -> dict[str, Any]:
    options = engine_channel_options(4 << 20)
    config = RouterConfig(state_file=None, slow_start_s=0.0)
    async with (
        grpc.aio.insecure_channel(address, options=options) as channel,
        RouterClient(registry, config=config) as client,
    ):
        stub = epb_grpc.EvaluatorStub(channel)
        calls: dict[str, Call] = {
            "direct": lambda: stub.Evaluate(REQUEST, timeout=CALL_TIMEOUT_S),
            "client": lambda: client.evaluate(REQUEST, alias=ALIAS, timeout=CALL_TIMEOUT_S),
        }
        levels = []
        for callers in (1, args.callers):
            say(f"{callers} caller(s): {args.calls} calls per mode in blocks of {args.block}")
            levels.append(await measure_level(calls, args, callers))
            say(level_line(levels[-1]))
    return {"engine": asdict(ENGINE), "levels": levels}


def level_line(level: dict[str, Any]) -> str:
    cpu, p50 = level["added_cpu_ms"], level["added_p50_ms"]
    return (
        f"  added CPU per call {1000 * cpu['median']:.1f} µs (p10 {1000 * cpu['p10']:.1f}, "
        f"p90 {1000 * cpu['p90']:.1f}); added p50 {1000 * p50['median']:.1f} µs"
    )


# --- the report ------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    headers = ["callers", "mode", "calls", "errors", "CPU µs/call", "p50 µs", "p99 µs", "calls/s"]
    rows: list[list[object]] = []
    added: list[list[object]] = []
    for level in result["levels"]:
        for mode, m in level["modes"].items():
            micros = [1000 * m[k] for k in ("cpu_ms_per_call", "p50_ms", "p99_ms")]
            rows.append(
                [level["callers"], mode, m["calls"], m["errors"], *micros, m["calls_per_s"]]
            )
        cpu, p50 = level["added_cpu_ms"], level["added_p50_ms"]
        verdict = "ok" if cpu["median"] <= TARGET_ADDED_CPU_MS else "OVER"
        spread = [1000 * d[k] for d in (cpu, p50) for k in ("median", "p10", "p90")]
        added.append([level["callers"], len(cpu["pairs"]), *spread, verdict])
    added_headers = ["callers", "pairs", "+CPU µs", "p10", "p90", "+p50 µs", "p10", "p90"]
    title = "in-process RouterClient vs a direct grpc.aio stub (same engine, same process)"
    lines = [
        *header_lines(title, result),
        f"engine: speed {ENGINE.speed:g}, {ENGINE.slots} slots, {len(REQUEST.audio)} B audio; "
        "CPU = this process's getrusage (all threads) per call",
        "",
        render_table(headers, rows),
        "",
        "added by the client, per adjacent pair of blocks (median and p10/p90 over pairs):",
        render_table([*added_headers, f"target <= {1000 * TARGET_ADDED_CPU_MS:g} µs"], added),
        "",
        f"run took {result['duration_s']}s",
    ]
    return "\n".join(lines)


FLAGS: tuple[Flag, ...] = (
    ("--calls", int, 5000, "measured calls per mode and level (warm-up not counted)"),
    ("--block", int, 250, "calls per block; the modes alternate block by block"),
    ("--callers", int, 50, "concurrent callers of the second level"),
)


def _check(args: argparse.Namespace) -> str | None:
    if args.calls < 1 or args.block < 1 or args.callers < 1 or args.block < args.callers:
        return "--calls, --block and --callers must be >= 1, and --block >= --callers"
    return None


BENCHMARK = Benchmark(
    "router_client_overhead", __doc__, FLAGS, _body, report, _check, runner=uvloop.run
)

if __name__ == "__main__":
    BENCHMARK.exit()
