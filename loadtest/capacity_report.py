"""The registry capacity benchmark's report: medians over repeats and the printed table."""

from __future__ import annotations

import math
import statistics
from typing import Any

from loadtest.report import render_table
from loadtest.scrape import Samples


def histogram_quantile(
    before: Samples, after: Samples, name: str, q: float, **labels: str
) -> float | None:
    """Bucket bound `le` of a histogram's q-quantile between two scrapes (None: empty),
    over the series whose labels include `labels`."""

    def buckets(samples: Samples) -> dict[float, float]:
        sums: dict[float, float] = {}
        for series, value in samples.get(name + "_bucket", []):
            if all(series.get(k) == v for k, v in labels.items()):
                le = float(series["le"])
                sums[le] = sums.get(le, 0.0) + value
        return sums

    start, end = buckets(before), buckets(after)
    deltas = sorted((le, end[le] - start.get(le, 0.0)) for le in end)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    return next(le for le, count in deltas if count >= q * total)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def median_steps(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per fleet size, the median of each figure over the runs that reached it; a step
    is failed when any run failed it (the reasons of every run are kept)."""
    sizes = sorted({step["engines"] for steps in runs for step in steps})
    merged = []
    for n in sizes:
        measured = [step for steps in runs for step in steps if step["engines"] == n]
        row: dict[str, Any] = {"engines": n, "runs": len(measured)}
        # A run whose fleet never reached this size measured nothing here.
        reached = [m for m in measured if m["ramp_ok"]]
        for key in measured[0]:
            values = [m[key] for m in reached if m[key] is not None]
            if key != "engines" and all(_is_number(v) for v in values):
                row[key] = statistics.median(values) if values else None
        row["failed"] = sorted({reason for m in measured for reason in m["failed"]})
        row["ramp_ok"] = all(m["ramp_ok"] for m in measured)
        merged.append(row)
    return merged


COLUMNS = (
    ("engines", "engines"), ("offered/s", "offered_hz"), ("sent/s", "sent_hz"),
    ("processed/s", "processed_hz"), ("ratio", "processed_ratio"),
    ("reg cpu%", "registry_cpu_pct"), ("reg MB", "registry_rss_mb"),
    ("gen cpu%", "generator_cpu_pct"), ("bench cpu%", "bench_cpu_pct"),
    ("box cpu%", "machine_cpu_pct"), ("fan p50 ms", "fanout_p50_ms"),
    ("fan p99 ms", "fanout_p99_ms"), ("srv p99<=", "server_fanout_p99_le_ms"),
    ("gc max<=ms", "gc_max_le_ms"), ("gc2 n", "gc_full_collections"),
    ("resyncs", "watch_resyncs"),
    ("fan n", "fanout_samples"), ("lost", "fanout_lost"), ("admin ms", "admin_p50_ms"),
    ("unhealthy", "unhealthy"), ("scrape ms", "scrape_max_ms"), ("ramp s", "ramp_s"),
)  # fmt: skip


def _row(step: dict[str, Any]) -> list[object]:
    cells: list[object] = [math.nan if step.get(key) is None else step[key] for _, key in COLUMNS]
    return [*cells, "ok" if not step["failed"] else "FAIL"]


def _pinning_line(pinning: dict[str, Any]) -> str:
    if pinning["registry_cpu"] < 0:
        return "pinning: none (registry and load side share every CPU)"
    nice = pinning.get("registry_nice", 0)
    generators = pinning.get("generator_nice", 0)
    return (
        f"pinning: registry on CPU {pinning['registry_cpu']} only"
        f"{f' at nice {nice}' if nice else ''}; this process and the "
        f"load generators{f' (at nice {generators})' if generators else ''} on CPUs "
        f"{pinning['generator_cpus']}"
    )


def summary(result: dict[str, Any]) -> str:
    s = result["settings"]
    table = render_table([h for h, _ in COLUMNS] + ["verdict"], [_row(x) for x in result["steps"]])
    lines = [
        "",
        "registry capacity",
        f"command: {result['command']}",
        f"registry: heartbeat interval {s['heartbeat_interval']:g}s, ttl {s['ttl']:g}s; "
        f"{s['watchers']} watchers; {s['procs']} generator processes x {s['channels']} "
        f"connections; {s['step_seconds']:g}s window per step",
        f"machine: {result['cpu_count']} CPUs; load average at start {result['loadavg_start']}, "
        f"at end {result['loadavg_end']}",
        _pinning_line(result["pinning"]),
        f"figures: median of {s['repeats']} runs (a fresh registry each)"
        if s["repeats"] > 1
        else "figures: one run",
        "",
        table,
        "",
        *(
            f"step {step['engines']} failed: {'; '.join(step['failed'])}"
            for step in result["steps"]
            if step["failed"]
        ),
    ]
    capacity, bound = result["capacity_engines"], result["capacity_limited_by"]
    shown = "none (the first step failed)" if capacity is None else f"{capacity} engines"
    if bound == "not reached":
        shown = f"at least {capacity} engines (no step failed)"
    lines.append(f"capacity: {shown}; limited by: {bound}")
    lines.append(f"stopped: {result['stop_reason']} (run took {result['duration_s']}s)")
    return "\n".join(lines)
