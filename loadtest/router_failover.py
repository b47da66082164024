"""Router failover under load: kill -9 (or SIGTERM) one of three engines mid-run.

Why: DESIGN §4 promises no client error when an engine dies or stops, and the
time a dead engine keeps being tried is what a caller pays for in retries and
latency. Each trial starts a fresh registry, three engine stubs and a router,
offers open-loop unary Evaluate through the router, and signals one engine at
`--kill-at`. The killed process cannot say when it stopped being tried, so the
router is watched instead: its /metrics is scraped every 10 ms for two seconds
after the signal (then every 100 ms) and the last increase of its attempt
counter for that instance (`tidepool_router_requests_total{engine=…}`, counted
when an attempt ends, failed ones included) marks when it stopped trying it.
The same scrapes date the passive ejection (a failure seen by the router) and
the drop of the instance from the router's view (the registry's watch), and
count the retries.

    .venv/bin/python -m loadtest.router_failover --json failover.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from loadtest.bench import stop_signals
from loadtest.children import STOP_TIMEOUT_S, ChildError, Children
from loadtest.config import LoadConfig, LoadError
from loadtest.generator import run_load
from loadtest.procfs import CpuMeter
from loadtest.report import percentile, render_table, say
from loadtest.result import LoadResult, Progress
from loadtest.router_fleet import (
    ALIAS,
    Benchmark,
    EngineSpec,
    Flag,
    Fleet,
    RouterScrape,
    counter_rises,
    header_lines,
    router_scrape,
)

ENGINES = ("engine-1", "engine-2", "engine-3")
MODES = {"kill9": signal.SIGKILL, "sigterm": signal.SIGTERM}
FAST_SCRAPE_S, FAST_WINDOW_S, SLOW_SCRAPE_S = 0.01, 2.0, 0.1
"""Scrape every 10 ms for the first 2 s after the signal, then every 100 ms."""
SIGNAL_MARGIN_S = 0.25
"""A signal this close to the end of the sending is too late to see what follows it."""
FIRST_PROGRESS_S = 1.5
"""The load's start is learnt from its first progress tick, about 1 s in."""


@dataclass
class Trial:
    """One signal under load: what the callers saw and what the router did about it."""

    mode: str
    number: int
    victim: str
    signal_at_s: float = 0.0
    """Seconds into the load when the signal was sent (wall clock against the load's start)."""
    router_cpu_pct: float = 0.0
    """The router's CPU from just before the signal to the end of the load, % of one core."""
    machine_busy_pct: float = 0.0
    """The whole machine's busy share over the same span: near 100 means overloaded."""
    p99_ms: float | None = None
    max_lag_ms: float = 0.0
    """The generator's worst lateness in sending: large means the callers were starved too."""
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_attempt_ms: float | None = None
    """Upper bound: the first scrape that saw the victim's final attempt count."""
    last_attempt_after_ms: float | None = None
    """Lower bound: the scrape before it was sent after this."""
    attempts_after: int = 0
    failed_attempts_after: dict[str, int] = field(default_factory=dict)
    """Attempts to the victim that ended after the signal, not OK, by status."""
    passive_ms: float | None = None
    passive_ejections: int = 0
    view_drop_ms: float | None = None
    """When the router's view first had fewer routable instances (the registry's watch)."""
    active_ejections: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    budget_exhausted: int = 0
    registry_expirations: dict[str, int] = field(default_factory=dict)
    exit_ms: float | None = None
    """When the victim's process had exited (SIGTERM: after its drain)."""
    victim_ok_after_signal: int = 0
    """Answers from the victim counted in the seconds after the signal's second."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed attempts after the signal by "instance:code", and "router:code" for calls the
    router failed itself."""
    errors_by_second: dict[str, dict[str, int]] = field(default_factory=dict)
    """Client errors by second of the load (by when they ended) and status."""
    scrapes: int = 0
    error: str | None = None


def analyse(trial: Trial, before: RouterScrape, points: list[RouterScrape]) -> None:
    """Fill in the trial's router-side fields from the scrapes after the signal."""
    if not points:
        return
    series = [before, *points]
    codes, last = counter_rises([p.codes for p in series])
    trial.attempts_after = sum(codes.values())
    trial.failed_attempts_after = {k: v for k, v in codes.items() if k != "OK"}
    ejections, _ = counter_rises([p.ejections for p in series])
    trial.passive_ejections = ejections.get("passive", 0)
    trial.active_ejections = ejections.get("active", 0)
    trial.budget_exhausted = round(points[-1].budget_exhausted - before.budget_exhausted)
    trial.retries, _ = counter_rises([p.retries for p in series])
    trial.failures, _ = counter_rises([p.failures for p in series])
    trial.scrapes = len(points)
    # The victim's attempt counter last rose between these two scrapes (or before the first).
    last = max(last, 1)
    trial.last_attempt_ms = max(series[last].received_s, 0.0) * 1000
    trial.last_attempt_after_ms = max(series[last - 1].sent_s, 0.0) * 1000
    passive = before.ejections.get("passive", 0.0)
    trial.passive_ms = _first(points, lambda p: p.ejections.get("passive", 0.0) > passive)
    trial.view_drop_ms = _first(points, lambda p: p.routable < before.routable)


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


def _first(points: list[RouterScrape], hit: Any) -> float | None:
    return next((p.received_s * 1000 for p in points if hit(p)), None)


@dataclass
class Lab:
    """Runs trials: a fresh fleet each, the load, the signal, the scrapes."""

    args: argparse.Namespace
    children: Children
    work: Path
    http: httpx.AsyncClient

    async def trial(self, mode: str, number: int) -> Trial:
        result = Trial(mode, number, ENGINES[(number - 1) % len(ENGINES)])
        fleet = Fleet(self.children, self.work / f"{mode}-{number}", self.http)
        try:
            router = ("router", {"data_path": self.args.data_path})
            await fleet.start([EngineSpec(name) for name in ENGINES], [router])
            await self._under_load(fleet, result)
        except (TimeoutError, ChildError, LoadError, grpc.aio.AioRpcError, httpx.HTTPError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            await fleet.close()
        return result

    async def _under_load(self, fleet: Fleet, trial: Trial) -> None:
        args, loop = self.args, asyncio.get_running_loop()
        config = LoadConfig(
            target=fleet.routers["router"].grpc, rate_per_s=args.rate,
            duration_s=args.duration, alias=ALIAS, seed=args.seed + trial.number,
        )  # fmt: skip
        started: asyncio.Future[float] = loop.create_future()

        def on_progress(progress: Progress) -> None:  # in run_load's thread
            loop.call_soon_threadsafe(_resolve, started, time.monotonic() - progress.elapsed_s)

        load = asyncio.create_task(asyncio.to_thread(run_load, config, on_progress))
        try:
            waits: list[asyncio.Future[Any]] = [load, started]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                await load  # it ended before its first tick: raise its error
                raise LoadError("the load ended before its first progress report")
            result = await self._signal(fleet, trial, started.result(), load)
        finally:
            if not load.done():
                await asyncio.gather(load, return_exceptions=True)
        trial.sent, trial.ok = result.sent, result.ok
        latency = result.latency["all"]
        trial.p99_ms = latency.percentile(99) * 1000 if latency.count else None
        trial.max_lag_ms = result.max_lag_s * 1000
        trial.errors = {code: n for code, n in result.statuses.items() if code != "OK"}
        for second, counts in enumerate(result.time_series):
            bad = {code: n for code, n in counts.statuses.items() if code != "OK"}
            if bad:
                trial.errors_by_second[str(second)] = bad
        after = range(int(trial.signal_at_s) + 1, len(result.time_series))
        trial.victim_ok_after_signal = sum(
            result.time_series[s].engines[trial.victim] for s in after
        )

    async def _signal(
        self, fleet: Fleet, trial: Trial, load_start: float, load: asyncio.Task[LoadResult]
    ) -> LoadResult:
        router, victim = fleet.routers["router"], fleet.engines[trial.victim]
        await asyncio.sleep(max(0.0, load_start + self.args.kill_at - time.monotonic()))
        expired_before = await fleet.registry_expirations()
        meter = CpuMeter(router.pids)
        meter.mark()
        before = router_scrape(await fleet.metrics(router), trial.victim, 0.0, 0.0)
        signalled, signalled_wall = time.monotonic(), time.time()
        victim.signal(MODES[trial.mode])
        exited = asyncio.create_task(victim.wait())
        exited.add_done_callback(
            lambda _: setattr(trial, "exit_ms", (time.monotonic() - signalled) * 1000)
        )
        points: list[RouterScrape] = []
        while not load.done():
            stop_signals.check()
            sent = time.monotonic()
            samples = await fleet.metrics(router)
            points.append(
                router_scrape(samples, trial.victim, sent - signalled, time.monotonic() - signalled)
            )
            period = FAST_SCRAPE_S if sent - signalled < FAST_WINDOW_S else SLOW_SCRAPE_S
            await asyncio.wait({load}, timeout=max(0.0, sent + period - time.monotonic()))
        result = await load
        trial.router_cpu_pct, trial.machine_busy_pct = meter.since_mark()
        # The progress tick only estimated the load's start; its own record is exact.
        trial.signal_at_s = signalled_wall - result.started_at
        if not 0 < trial.signal_at_s < self.args.duration - SIGNAL_MARGIN_S:
            trial.error = f"the signal landed {trial.signal_at_s:.2f}s into the load, not within it"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT_S)
        now = time.monotonic() - signalled
        points.append(router_scrape(await fleet.metrics(router), trial.victim, now, now))
        analyse(trial, before, points)
        expired_after = await fleet.registry_expirations()
        trial.registry_expirations, _ = counter_rises([expired_before, expired_after])
        return result


# --- the run ---------------------------------------------------------------------------


def summarise(trials: list[Trial]) -> dict[str, Any]:
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [t for t in trials if t.mode == mode]
        stops = [t.last_attempt_ms for t in mine if t.last_attempt_ms is not None and not t.error]
        modes[mode] = {
            "trials": len(mine),
            "failed": sum(1 for t in mine if t.error),
            "client_errors": sum(sum(t.errors.values()) for t in mine),
            "last_attempt_ms": {
                k: f(stops) if stops else None
                for k, f in (("min", min), ("median", lambda v: percentile(v, 50)), ("max", max))
            },
        }
    return modes


async def _body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    plan = [("kill9", n) for n in range(1, args.trials + 1)]
    plan += [("sigterm", n) for n in range(1, args.term_trials + 1)]
    trials: list[Trial] = []
    deadline = time.monotonic() + args.time_limit
    async with httpx.AsyncClient() as http:
        lab = Lab(args, children, work, http)
        for mode, number in plan:
            stop_signals.check()
            if time.monotonic() > deadline:
                say(f"time limit of {args.time_limit:g}s reached; skipping the remaining trials")
                break
            trial = await lab.trial(mode, number)
            trials.append(trial)
            say(progress_line(trial))
    return {"trials": [asdict(t) for t in trials], "modes": summarise(trials)}


def progress_line(t: Trial) -> str:
    if t.error:
        return f"{t.mode} trial {t.number}: FAILED {t.error}"
    return (
        f"{t.mode} trial {t.number}: {t.victim} signalled at {t.signal_at_s:.2f}s; "
        f"client errors {_count(t.errors)}; last attempt <= {_ms(t.last_attempt_ms)} ms after"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --- the report ------------------------------------------------------------------------


def _count(counts: dict[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "0"


def caller_row(t: Trial) -> list[object]:
    p99 = math.nan if t.p99_ms is None else t.p99_ms
    return [
        t.mode, t.number, t.victim, t.signal_at_s, t.sent, _count(t.errors), p99,
        t.max_lag_ms, t.victim_ok_after_signal, t.router_cpu_pct, t.machine_busy_pct,
    ]  # fmt: skip


def router_row(t: Trial) -> list[object]:
    stop = "-"
    if t.last_attempt_ms is not None:
        stop = f"{_ms(t.last_attempt_after_ms)}..{_ms(t.last_attempt_ms)}"
    return [
        t.mode, t.number, stop, f"{t.attempts_after}/{_count(t.failed_attempts_after)}",
        f"{_ms(t.passive_ms)} (x{t.passive_ejections})", _ms(t.view_drop_ms),
        t.active_ejections, _count(t.retries), t.budget_exhausted,
        _count(t.registry_expirations), _ms(t.exit_ms),
    ]  # fmt: skip


CALLER_HEADERS = [
    "mode", "#", "victim", "signal s", "sent", "errors", "p99 ms", "send lag ms", "victim ok",
    "router cpu %", "busy %",
]  # fmt: skip
ROUTER_HEADERS = [
    "mode", "#", "last attempt ms", "attempts/failed", "passive ms", "view drop ms",
    "active", "retries", "no budget", "registry", "exit ms",
]  # fmt: skip


def report(result: dict[str, Any]) -> str:
    trials = [Trial(**t) for t in result["trials"]]
    settings = result["settings"]
    title = "router failover (3 engines behind one router; one signalled under open-loop load)"
    lines = [
        *header_lines(title, result),
        f"load: {settings['rate']:g}/s unary Evaluate for {settings['duration']:g}s, "
        f"signal at {settings['kill_at']:g}s; router data path {settings['data_path']}",
        "",
        "what the callers saw (errors by status; send lag: the generator's worst lateness; "
        "victim ok: answers from the victim the callers got in the seconds after the signal's, "
        "0 unless they lag; busy: the whole machine, 100 = saturated)",
        render_table(CALLER_HEADERS, [caller_row(t) for t in trials]),
        "",
        "what the router did, in ms after the signal (last attempt: the victim's attempt "
        "counter last rose between these scrapes; view drop: the registry's watch took it out "
        "of the routable set; registry: its expirations by reason; exit: the victim's process)",
        render_table(ROUTER_HEADERS, [router_row(t) for t in trials]),
        *(f"{t.mode} trial {t.number} failed: {t.error}" for t in trials if t.error),
        *(
            f"{t.mode} trial {t.number}: client errors {_count(t.errors)}; failed attempts "
            f"at the router {_count(t.failures)}; by second {t.errors_by_second}"
            for t in trials
            if t.errors
        ),
    ]
    for mode, m in result["modes"].items():
        if m["trials"]:
            s = m["last_attempt_ms"]
            lines.append(
                f"{mode}: {m['trials']} trials, {m['failed']} failed, client errors "
                f"{m['client_errors']} (target 0); last attempt min {_ms(s['min'])} / median "
                f"{_ms(s['median'])} / max {_ms(s['max'])} ms"
            )
    lines.append(f"run took {result['duration_s']}s")
    return "\n".join(lines)


FLAGS: tuple[Flag, ...] = (
    ("--rate", float, 500.0, "offered unary Evaluate calls per second (open loop)"),
    ("--duration", float, 10.0, "seconds of load per trial"),
    ("--kill-at", float, 4.0, "seconds into the load to signal the engine"),
    ("--trials", int, 3, "kill -9 trials"),
    ("--term-trials", int, None, "SIGTERM trials (None: as many as --trials)"),
    ("--seed", int, 1, "seed of the arrival schedules"),
    ("--time-limit", float, 600.0, "start no new trial after this many seconds"),
)


def _check(args: argparse.Namespace) -> str | None:
    if args.term_trials is None:
        args.term_trials = args.trials
    if args.trials < 0 or args.term_trials < 0 or args.trials + args.term_trials == 0:
        return "--trials and --term-trials must be >= 0, and not both 0"
    if args.rate <= 0 or not FIRST_PROGRESS_S <= args.kill_at < args.duration - SIGNAL_MARGIN_S:
        return f"--rate must be > 0 and {FIRST_PROGRESS_S:g} <= --kill-at < --duration"
    return None


def _exit_code(result: dict[str, Any]) -> int:
    return 1 if any(m["failed"] for m in result["modes"].values()) else 0


BENCHMARK = Benchmark(
    "router_failover", __doc__, FLAGS, _body, report, _check, exit_code=_exit_code, data_path=True
)

if __name__ == "__main__":
    BENCHMARK.exit()
