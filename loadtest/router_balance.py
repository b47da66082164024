"""Router balance on a mixed fleet: wrr vs least-loaded, weights matched to speed or not.

Why: static weights are an operator's guess at an engine's speed. When the
guess is right, smooth WRR gives each engine its share of the fleet's capacity;
when it is wrong, WRR keeps feeding the slow engine its full share and its queue
grows without bound, while least-loaded (power of two choices on in-flight per
weight) sends less to whatever answers slowly. This runs engines of speed
1.0/1.0/0.5 behind two routers (one per balancer), sets the weights to 100/100/50
(matched) or 100/100/100 (mismatched) through the registry's admin API, and
offers the same open-loop load to every cell, in alternating order per repeat.

The routers use the default data path (relay) unless `--data-path grpc`.

    .venv/bin/python -m loadtest.router_balance --json balance.json
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path
from typing import Any

import httpx

from engine_stub.load_model import audio_ms, latency_s
from loadtest.bench import stop_signals
from loadtest.children import Children
from loadtest.config import LoadConfig
from loadtest.generator import run_load
from loadtest.report import percentile, render_table, say
from loadtest.result import LoadResult
from loadtest.router_fleet import (
    ALIAS,
    Benchmark,
    EngineSpec,
    Flag,
    Fleet,
    header_lines,
)

SAMPLE_RATE = 16_000
BYTES_PER_AUDIO_S = SAMPLE_RATE * 2


# --- the benchmark ---------------------------------------------------------------------

SPEEDS = (("fast-a", 1.0), ("fast-b", 1.0), ("slow", 0.5))
WEIGHTS = {"matched": (100, 100, 50), "mismatched": (100, 100, 100)}
BALANCERS = ("wrr", "least-loaded")


def service_s(speed: float, audio_bytes: int) -> float:
    """The engine stub's time to score one request (engine_stub/load_model.py)."""
    return latency_s(audio_ms(audio_bytes, SAMPLE_RATE), speed)


def fleet_capacity(slots: int, audio_bytes: int) -> float:
    """Requests per second the three engines finish when every slot is always busy."""
    return sum(slots / service_s(speed, audio_bytes) for _, speed in SPEEDS)


def ideal_shares(slots: int, audio_bytes: int) -> dict[str, float]:
    """Shares proportional to capacity: every engine equally busy."""
    total = fleet_capacity(slots, audio_bytes)
    return {name: slots / service_s(speed, audio_bytes) / total for name, speed in SPEEDS}


def _ms(result: LoadResult, q: float) -> float | None:
    """The q-th latency percentile in ms; None when no call succeeded."""
    histogram = result.latency["all"]
    return histogram.percentile(q) * 1000 if histogram.count else None


def cell_summary(result: LoadResult) -> dict[str, Any]:
    shares = result.engine_shares()
    return {
        "sent": result.sent,
        "ok": result.ok,
        "errors": {code: n for code, n in result.statuses.items() if code != "OK"},
        "dropped": result.dropped,
        "late": result.late,
        "p50_ms": _ms(result, 50),
        "p99_ms": _ms(result, 99),
        "max_ms": _ms(result, 100),
        "shares": {name: round(shares.get(name, 0.0), 4) for name, _ in SPEEDS},
    }


async def _cells(args: argparse.Namespace, fleet: Fleet, rate: float) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        settings = args.weights if repeat % 2 == 0 else list(reversed(args.weights))
        balancers = BALANCERS if repeat % 2 == 0 else tuple(reversed(BALANCERS))
        for setting in settings:
            names = [name for name, _ in SPEEDS]
            await fleet.set_weights(dict(zip(names, WEIGHTS[setting], strict=True)))
            for balancer in balancers:
                stop_signals.check()
                config = LoadConfig(
                    target=fleet.routers[balancer].grpc, rate_per_s=rate,
                    duration_s=args.duration, alias=ALIAS, audio_bytes=args.audio_bytes,
                    seed=args.seed + repeat, timeout_s=args.timeout,
                )  # fmt: skip
                result = await asyncio.to_thread(run_load, config)
                cell: dict[str, Any] = {"repeat": repeat, "weights": setting}
                cell.update(balancer=balancer, **cell_summary(result))
                cells.append(cell)
                say(
                    f"repeat {repeat + 1}/{args.repeats} {setting:10} {balancer:12} "
                    f"p50 {cell['p50_ms'] or math.nan:7.1f} ms  "
                    f"p99 {cell['p99_ms'] or math.nan:7.1f} ms  "
                    f"slow share {cell['shares']['slow']:.1%}  "
                    f"errors {sum(cell['errors'].values())}"
                )
    return cells


async def _body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    capacity = fleet_capacity(args.slots, args.audio_bytes)
    rate = args.rate or round(args.utilisation * capacity, 1)
    say(f"fleet capacity {capacity:.1f}/s; offering {rate:g}/s ({rate / capacity:.0%})")
    async with httpx.AsyncClient() as http:
        fleet = Fleet(children, work, http)
        engines = [EngineSpec(name, speed, args.slots) for name, speed in SPEEDS]
        routers = [(b, {"balancer": b, "data_path": args.data_path}) for b in BALANCERS]
        try:
            await fleet.start(engines, routers)
            cells = await _cells(args, fleet, rate)
        finally:
            await fleet.close()
    return {
        "capacity_per_s": round(capacity, 2),
        "rate_per_s": rate,
        "utilisation": round(rate / capacity, 3),
        "ideal_shares": {
            k: round(v, 4) for k, v in ideal_shares(args.slots, args.audio_bytes).items()
        },
        "service_ms": {n: round(service_s(s, args.audio_bytes) * 1000, 2) for n, s in SPEEDS},
        "engine_capacity_per_s": {
            n: round(args.slots / service_s(s, args.audio_bytes), 2) for n, s in SPEEDS
        },
        "cells": cells,
        "table": summarise(cells),
    }


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (weights, balancer): medians over repeats and their spread."""
    rows = []
    for setting in WEIGHTS:
        for balancer in BALANCERS:
            mine = [c for c in cells if c["weights"] == setting and c["balancer"] == balancer]
            if not mine:
                continue
            row: dict[str, Any] = {"weights": setting, "balancer": balancer, "runs": len(mine)}
            for key in ("p50_ms", "p99_ms"):
                values = [c[key] for c in mine if c[key] is not None]
                row[key] = percentile(values, 50) if values else None
                row[key + "_range"] = [min(values), max(values)] if values else None
            for name, _ in SPEEDS:
                row[f"share_{name}"] = percentile([c["shares"][name] for c in mine], 50)
            row["errors"] = sum(sum(c["errors"].values()) for c in mine)
            rows.append(row)
    return rows


def report(result: dict[str, Any]) -> str:
    headers = ["weights", "balancer", "runs", "p50 ms", "p50 range", "p99 ms", "p99 range"]
    headers += [f"{name} %" for name, _ in SPEEDS] + ["slow busy %", "errors"]
    rows = []
    slow_capacity = result["engine_capacity_per_s"]["slow"]
    for r in result["table"]:
        spans = [_span(r[k]) for k in ("p50_ms_range", "p99_ms_range")]
        p50, p99 = (math.nan if r[k] is None else r[k] for k in ("p50_ms", "p99_ms"))
        shares = [100 * r[f"share_{name}"] for name, _ in SPEEDS]
        slow_busy = 100 * result["rate_per_s"] * r["share_slow"] / slow_capacity
        rows.append([r["weights"], r["balancer"], r["runs"], p50, spans[0], p99, spans[1]])
        rows[-1] += [*shares, slow_busy, r["errors"]]
    ideal = ", ".join(f"{k} {v:.0%}" for k, v in result["ideal_shares"].items())
    service = ", ".join(f"{k} {v:g} ms" for k, v in result["service_ms"].items())
    title = (
        "router balance (engines of speed 1.0/1.0/0.5; weights 100/100/50 matched, "
        f"100/100/100 mismatched; data path {result['settings']['data_path']})"
    )
    lines = [
        *header_lines(title, result),
        f"offered {result['rate_per_s']:g}/s open loop = {result['utilisation']:.0%} of the "
        f"fleet's {result['capacity_per_s']:g}/s; service time {service}",
        "",
        render_table(headers, rows),
        "",
        f"ideal shares (every engine equally busy): {ideal}",
        "latency is from the scheduled arrival (open loop), medians over repeats, range min-max;",
        "slow busy: the load sent to the slow engine over what its slots can finish (over 100: "
        "its queue grows for the whole run)",
        f"run took {result['duration_s']}s",
    ]
    return "\n".join(lines)


def _span(values: list[float] | None) -> str:
    return "-" if values is None else f"{values[0]:.1f}-{values[1]:.1f}"


FLAGS: tuple[Flag, ...] = (
    ("--rate", float, None, "offered requests per second (None: --utilisation of capacity)"),
    ("--utilisation", float, 0.7, "offered load as a fraction of the fleet's capacity"),
    ("--duration", float, 10.0, "seconds of load per cell"),
    ("--repeats", int, 2, "times to run the 2x2 cells (order alternates per repeat)"),
    ("--weights", str, ",".join(WEIGHTS), "weight settings to run, comma-separated"),
    ("--slots", int, 4, "slots per engine"),
    ("--audio-bytes", int, BYTES_PER_AUDIO_S, "audio per request (32000 = 1 s: 45 ms at 1.0)"),
    ("--timeout", float, 10.0, "per-call deadline, seconds"),
    ("--seed", int, 1, "seed of the arrival schedule"),
)


def _check(args: argparse.Namespace) -> str | None:
    args.weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    if args.duration <= 0 or args.repeats < 1 or args.slots < 1 or args.audio_bytes < 2:
        return "--duration must be > 0, --repeats and --slots >= 1, --audio-bytes >= 2"
    if not args.weights or set(args.weights) - set(WEIGHTS):
        return f"--weights: a comma-separated subset of {', '.join(WEIGHTS)}"
    if (args.rate is not None and args.rate <= 0) or not 0 < args.utilisation <= 2:
        return "--rate must be > 0 and --utilisation within (0, 2]"
    return None


BENCHMARK = Benchmark("router_balance", __doc__, FLAGS, _body, report, _check, data_path=True)

if __name__ == "__main__":
    BENCHMARK.exit()
