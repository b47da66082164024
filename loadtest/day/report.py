"""A day's figures per strategy: cost, engine-hours, scale-outs, moves, latency; as a table
and as the documented JSON shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.day.fleet_config import TIER_NAMES, FleetConfig
from loadtest.day.simulate import DayRun

DEFAULT_SLO_MS = 1000.0


@dataclass(frozen=True)
class Summary:
    """One strategy's day, in the units the JSON uses."""

    cost: float
    gpu_hours: Mapping[str, float]
    scale_outs: int
    peak_scale_outs: int
    engines_started: int
    peak_engines_started: int
    scale_ins: int
    moves: int
    moves_done: int
    requests: int
    p50_ms: float
    p99_ms: float
    slo_miss_rate: float
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost": round(self.cost, 2),
            "gpu_hours": {tier: round(hours, 2) for tier, hours in self.gpu_hours.items()},
            "scale_outs": self.scale_outs,
            "peak_scale_outs": self.peak_scale_outs,
            "engines_started": self.engines_started,
            "peak_engines_started": self.peak_engines_started,
            "scale_ins": self.scale_ins,
            "moves": self.moves,
            "moves_done": self.moves_done,
            "requests": self.requests,
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "slo_miss_rate": round(self.slo_miss_rate, 6),
            "wall_s": round(self.wall_s, 2),
        }


def summarize(
    run: DayRun, fleet: FleetConfig, peak_window_s: tuple[float, float], slo_ms: float
) -> Summary:
    """The figures of one run; requests never served (no slot all day) count as SLO misses."""
    hours: dict[str, float] = {tier: run.engine_s.get(tier, 0.0) / 3600.0 for tier in TIER_NAMES}
    cost = sum(hours[tier] * fleet.tiers[tier].price_per_hour for tier in TIER_NAMES)
    start, end = peak_window_s
    outs = run.events.scale_outs
    peak = [count for at, count in outs if start <= at < end]
    latency = np.concatenate(list(run.latency_s.values())) * 1000.0
    served = int(latency.size)
    total = served + run.unserved
    missed = int(np.count_nonzero(latency > slo_ms)) + run.unserved
    p50, p99 = np.percentile(latency, [50, 99]) if served else (0.0, 0.0)
    return Summary(
        cost=cost,
        gpu_hours=hours,
        scale_outs=len(outs),
        peak_scale_outs=len(peak),
        engines_started=sum(count for _, count in outs),
        peak_engines_started=sum(peak),
        scale_ins=run.events.scale_ins,
        moves=run.events.moves,
        moves_done=run.events.moves_done,
        requests=total,
        p50_ms=float(p50),
        p99_ms=float(p99),
        slo_miss_rate=missed / total if total else 0.0,
        wall_s=run.wall_s,
    )


COLUMNS = (
    ("strategy", "{:<10}"),
    ("cost", "{:>8.1f}"),
    ("idc h", "{:>7.1f}"),
    ("cvm h", "{:>6.1f}"),
    ("svl h", "{:>6.1f}"),
    ("outs", "{:>5}"),
    ("peak", "{:>5}"),
    ("engines", "{:>8}"),
    ("moves", "{:>6}"),
    ("requests", "{:>9}"),
    ("p50 ms", "{:>7.0f}"),
    ("p99 ms", "{:>7.0f}"),
    ("slo miss", "{:>9.5f}"),
)


def table(summaries: Mapping[str, Summary], baseline: str = "static") -> str:
    """One row per strategy; then each one's cost and peak scale-outs against the baselines."""
    widths = [len(fmt.format(*_sample(fmt))) for _, fmt in COLUMNS]
    header = "  ".join(name.rjust(width) for (name, _), width in zip(COLUMNS, widths, strict=True))
    lines = [header.replace("  strategy", "strategy  ", 1)]
    for name, s in summaries.items():
        values: Sequence[object] = (
            name,
            s.cost,
            s.gpu_hours["idc"],
            s.gpu_hours["cvm"],
            s.gpu_hours["serverless"],
            s.scale_outs,
            s.peak_scale_outs,
            s.engines_started,
            s.moves,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.slo_miss_rate,
        )
        lines.append("  ".join(fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)))
    lines.extend(_comparisons(summaries, baseline))
    return "\n".join(lines)


def _sample(fmt: str) -> tuple[object]:
    return ("x",) if "<" in fmt else (0,)


def _comparisons(summaries: Mapping[str, Summary], baseline: str) -> list[str]:
    tide = summaries.get("tidepool")
    lines = []
    if tide is not None and baseline in summaries and summaries[baseline].cost > 0:
        saving = 1 - tide.cost / summaries[baseline].cost
        lines.append(f"tidepool cost vs {baseline}: {saving:+.1%} saved")
    auto = summaries.get("autoscale")
    if tide is not None and auto is not None and auto.peak_scale_outs > 0:
        fewer = 1 - tide.peak_scale_outs / auto.peak_scale_outs
        lines.append(f"tidepool morning-peak scale-outs vs autoscale: {fewer:.0%} fewer")
    return lines


def document(
    summaries: Mapping[str, Summary], *, seed: int, source: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The `--json` document: seed, profile (or trace path), strategies, then the run's inputs."""
    return {
        "seed": seed,
        "profile": source,
        "strategies": {name: s.to_dict() for name, s in summaries.items()},
        **extra,
    }
