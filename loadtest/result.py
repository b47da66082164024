"""What a load run measured: counts, histograms, per-second series, the summary table.

Results merge (one per worker process) and round-trip through JSON, which is how
workers send them to the parent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from loadtest.config import KINDS, LoadConfig
from loadtest.histogram import Histogram

FIRST_ERROR_CHARS = 200
"""Longest first error message kept per status code (one line, the rest cut)."""


@dataclass(frozen=True)
class Progress:
    """Running totals, reported about once a second while a run goes on."""

    elapsed_s: float
    sent: int
    ok: int
    errors: int
    dropped: int
    late: int


@dataclass
class SecondCounts:
    """What happened in one second of the run: sends by send time, outcomes by end time."""

    sent: int = 0
    dropped: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    engines: Counter[str] = field(default_factory=Counter)

    def merge(self, other: SecondCounts) -> None:
        self.sent += other.sent
        self.dropped += other.dropped
        self.statuses.update(other.statuses)
        self.engines.update(other.engines)


def _histograms() -> dict[str, Histogram]:
    return {"all": Histogram(), **{kind: Histogram() for kind in KINDS}}


@dataclass
class LoadResult:
    """Everything one run measured. Latency histograms hold OK calls only."""

    config: LoadConfig
    started_at: float = 0.0
    """Unix time of the schedule's start."""
    elapsed_s: float = 0.0
    """Length of the sending window (the duration, or longer if sending fell behind)."""
    scheduled: int = 0
    sent: int = 0
    dropped: int = 0
    late: int = 0
    max_lag_s: float = 0.0
    abandoned: int = 0
    """Calls still unanswered after their deadline plus a grace, then cancelled."""
    statuses: Counter[str] = field(default_factory=Counter)
    """Finished calls by gRPC status code name (OK, UNAVAILABLE, ...)."""
    statuses_by_kind: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in KINDS}
    )
    engines: Counter[str] = field(default_factory=Counter)
    """OK calls by the engine_id that answered them."""
    first_errors: dict[str, str] = field(default_factory=dict)
    """The first message seen for each status code other than OK, cut to FIRST_ERROR_CHARS."""
    latency: dict[str, Histogram] = field(default_factory=_histograms)
    """From scheduled arrival to answer, by kind and "all"."""
    service: dict[str, Histogram] = field(default_factory=_histograms)
    """From actual send to answer, by kind and "all"."""
    time_series: list[SecondCounts] = field(default_factory=list)
    cpu_s: float = 0.0
    """User + system CPU the generator used while running (all processes)."""
    processes: int = 1
    interrupted: bool = False

    @property
    def ok(self) -> int:
        return self.statuses["OK"]

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != "OK")

    @property
    def achieved_rate_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def engine_shares(self) -> dict[str, float]:
        """Fraction of OK calls each engine answered."""
        total = sum(self.engines.values())
        return {engine: n / total for engine, n in sorted(self.engines.items())} if total else {}

    @property
    def error_share(self) -> float:
        """Calls sent that did not end OK (an error status, or abandoned unanswered)."""
        return (self.errors + self.abandoned) / self.sent if self.sent else 0.0

    def note_error(self, status: str, message: str) -> None:
        """Keep `message` if it is the first one for `status`."""
        if status not in self.first_errors:
            text = " ".join(message.split()) or "(no message)"
            if len(text) > FIRST_ERROR_CHARS:
                text = text[: FIRST_ERROR_CHARS - 1] + "…"
            self.first_errors[status] = text

    def second(self, index: int) -> SecondCounts:
        """The time-series entry of second `index`, growing the series as needed."""
        while len(self.time_series) <= index:
            self.time_series.append(SecondCounts())
        return self.time_series[index]

    def merge(self, other: LoadResult) -> None:
        """Fold another process's result into this one."""
        self.started_at = min(self.started_at, other.started_at) or other.started_at
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.max_lag_s = max(self.max_lag_s, other.max_lag_s)
        for name in ("scheduled", "sent", "dropped", "late", "abandoned", "cpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.statuses.update(other.statuses)
        for kind, counts in other.statuses_by_kind.items():
            self.statuses_by_kind.setdefault(kind, Counter()).update(counts)
        self.engines.update(other.engines)
        for status, message in other.first_errors.items():
            self.first_errors.setdefault(status, message)
        for ours, theirs in ((self.latency, other.latency), (self.service, other.service)):
            for key, histogram in theirs.items():
                ours.setdefault(key, Histogram()).merge(histogram)
        for index, second in enumerate(other.time_series):
            self.second(index).merge(second)
        self.interrupted = self.interrupted or other.interrupted

    def to_dict(self) -> dict[str, Any]:
        """The JSON written by `--json`: settings, counters, `latency_ms`/`service_ms`
        summaries by kind, the raw `histograms`, `time_series` (one entry per second)
        and `cpu`. Plain JSON: no NaN (an empty histogram's percentiles are null).
        """
        sent = max(self.sent, 1)
        return {
            "config": self.config.to_dict(),
            "mode": "open" if self.config.concurrency is None else "closed",
            "processes": self.processes,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 6),
            "rate_offered_per_s": None if self.config.concurrency else self.config.rate_per_s,
            "rate_achieved_per_s": round(self.achieved_rate_per_s, 3),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "dropped": self.dropped,
            "late": self.late,
            "max_lag_ms": round(self.max_lag_s * 1000.0, 3),
            "abandoned": self.abandoned,
            "interrupted": self.interrupted,
            "statuses": dict(self.statuses),
            "statuses_by_kind": {k: dict(v) for k, v in self.statuses_by_kind.items()},
            "engines": dict(self.engines),
            "first_errors": dict(self.first_errors),
            "error_share": round(self.error_share, 6),
            "latency_ms": {k: h.summary_ms() for k, h in self.latency.items()},
            "service_ms": {k: h.summary_ms() for k, h in self.service.items()},
            "histograms": {
                "latency": {k: h.to_dict() for k, h in self.latency.items()},
                "service": {k: h.to_dict() for k, h in self.service.items()},
            },
            "time_series": [
                {"t_s": i, **asdict(s), "statuses": dict(s.statuses), "engines": dict(s.engines)}
                for i, s in enumerate(self.time_series)
            ],
            "cpu": {
                "cpu_s": round(self.cpu_s, 4),
                "per_request_us": round(self.cpu_s / sent * 1e6),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: LoadConfig | None = None) -> LoadResult:
        """Rebuild from `to_dict`; `config` replaces the stored one (whose token is hidden)."""
        if config is None:
            stored = {f.name: data["config"][f.name] for f in fields(LoadConfig)}
            config = LoadConfig(**{**stored, "token": None})
        histograms = data["histograms"]
        return cls(
            config=config,
            **{name: data[name] for name in ("started_at", "elapsed_s", "scheduled", "sent")},
            **{name: data[name] for name in ("dropped", "late", "abandoned", "interrupted")},
            max_lag_s=data["max_lag_ms"] / 1000.0,
            statuses=Counter(data["statuses"]),
            statuses_by_kind={k: Counter(v) for k, v in data["statuses_by_kind"].items()},
            engines=Counter(data["engines"]),
            first_errors=dict(data.get("first_errors", {})),
            latency={k: Histogram.from_dict(h) for k, h in histograms["latency"].items()},
            service={k: Histogram.from_dict(h) for k, h in histograms["service"].items()},
            time_series=[
                SecondCounts(s["sent"], s["dropped"], Counter(s["statuses"]), Counter(s["engines"]))
                for s in data["time_series"]
            ],
            cpu_s=data["cpu"]["cpu_s"],
            processes=data["processes"],
        )

    def summary_table(self) -> str:
        """A human-readable summary: rates, counts by status, percentiles in ms, CPU used."""
        config, elapsed = self.config, max(self.elapsed_s, 1e-9)
        mode = "open loop" if config.concurrency is None else f"closed loop x{config.concurrency}"
        offered = "-" if config.concurrency else f"{config.rate_per_s:.1f}/s"
        statuses = "  ".join(f"{code} {n}" for code, n in self.statuses.most_common()) or "-"
        shares = self.engine_shares()
        engines = "  ".join(f"{e} {self.engines[e]} ({s:.1%})" for e, s in shares.items()) or "-"
        lines = [
            f"target    {config.target}  {mode}  processes {self.processes}"
            f"  duration {config.duration_s:g}s  elapsed {self.elapsed_s:.2f}s"
            + ("  (interrupted)" if self.interrupted else ""),
            f"rate      offered {offered}  achieved {self.achieved_rate_per_s:.1f}/s"
            f"  ok {self.ok / elapsed:.1f}/s",
            f"requests  scheduled {self.scheduled}  sent {self.sent}  dropped {self.dropped}"
            f"  late {self.late} (max lag {self.max_lag_s * 1000:.1f} ms)"
            f"  abandoned {self.abandoned}",
            f"status    {statuses}",
            *(
                f"error     {code} (first of {self.statuses[code]}): {message}"
                for code, message in self.first_errors.items()
            ),
            f"engines   {engines}",
            f"cpu       {self.cpu_s:.2f} s = {self.cpu_s / max(self.sent, 1) * 1e6:.0f} µs"
            " per request",
            "",
            _percentile_table(self.latency, self.service),
        ]
        return "\n".join(lines)


def _percentile_table(latency: Mapping[str, Histogram], service: Mapping[str, Histogram]) -> str:
    headers = ("ms", "kind", "count", "p50", "p90", "p99", "p99.9", "max")
    rows: list[tuple[str, ...]] = [headers]
    for measure, histograms in (("latency", latency), ("service", service)):
        for kind, histogram in histograms.items():
            if kind != "all" and not histogram.count:
                continue
            cells = [_ms(histogram.percentile(p)) for p in (50, 90, 99, 99.9, 100)]
            rows.append((measure, kind, str(histogram.count), *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000.0:.2f}"


# --- one event loop's share of the load ------------------------------------------------
