"""The fleet every router benchmark starts: registry, alias, engine stubs, routers.

All of it runs as child processes on 127.0.0.1: a registry on a fresh data dir
with the alias `bench` (lang=zh), engine stubs of any weight, speed and slots,
and routers with any balancer, data path (`relay` or `grpc`), `--processes N`
and extra flags. A router is waited on until every one of its workers counts
the engines routable; its CPU is metered per process (`CpuTrace`, over the
helpers in `loadtest.procfs`) and its own counters are scraped from /metrics.
Also here: the house envelope of a benchmark's `main` and the report lines the
benchmarks share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import httpx

from loadtest.bench import Body, run_benchmark, stop_signals
from loadtest.children import Child, ChildError, Children, registry_argv
from loadtest.config import LoadConfig, LoadError
from loadtest.generator import run_load
from loadtest.histogram import Histogram
from loadtest.procfs import cpu_seconds
from loadtest.registry_load import SERVICE
from loadtest.report import command_line, say, write_json
from loadtest.result import LoadResult
from loadtest.scrape import Samples, metric_sum, scrape
from router.lkg import load_view
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ALIAS, SELECTOR = "bench", "lang=zh"
DATA_PATHS = ("relay", "grpc")
"""The router's two data paths: the HTTP/2 frame relay (its default) and the grpc.aio proxy."""
READY_TIMEOUT_S = 60.0
"""A process start on a busy 2-core machine (imports of grpc) can take seconds."""
ROUTABLE_TIMEOUT_S = 20.0
ADMIN_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 5.0
FAST_SPEED, FAST_SLOTS = 1000.0, 64
"""Latency divides by speed: (5 ms + 40 ms per audio second) / 1000 is a few µs."""
LATE_VOID_SHARE = 0.02
"""Above this share of late arrivals the generator itself was starved of CPU."""
CANCELLED_NOTE = (
    "  CANCELLED here has been the caller's deadline running out on a saturated machine: the "
    "server's deadline fires, its RST_STREAM(CANCEL) beats the starved client's own timer, and "
    "grpc-core reports CANCELLED (it happens direct to an engine too; compare the router's "
    "attempts by code below: the engines answered OK)"
)


def free_port() -> int:
    """A loopback port free right now (for `--processes N`, which needs a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class EngineSpec:
    """One engine stub: its instance id and simulated GPU."""

    instance_id: str
    speed: float = 1.0
    slots: int = 4
    weight: int = 100

    def argv(self, registry: str) -> list[str]:
        return [
            sys.executable, "-m", "tidepool", "engine-stub", "--registry", registry,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--lang", "zh",
            "--tier", "idc", "--weight", str(self.weight), "--slots", str(self.slots),
            "--speed", f"{self.speed:g}", "--model-load-s", "0",
            "--instance-id", self.instance_id,
        ]  # fmt: skip


def fast_engines(count: int) -> list[EngineSpec]:
    """Engines that answer at once, so what a benchmark meters is the proxy in front."""
    return [EngineSpec(f"bench-{i}", FAST_SPEED, FAST_SLOTS) for i in range(count)]


@dataclass
class RouterProc:
    """A started router: its gRPC address, worker HTTP addresses and every pid to meter."""

    name: str
    data_path: str
    child: Child
    grpc: str
    https: list[str]
    pids: list[int]
    """The supervisor's (with --processes N) and every worker's: all of them are the router."""
    view_file: Path


@dataclass
class Fleet:
    """A registry, the alias `bench` over engine stubs, and routers, all on 127.0.0.1."""

    children: Children
    work: Path
    http: httpx.AsyncClient
    registry: Child | None = None
    engines: dict[str, Child] = field(default_factory=dict)
    routers: dict[str, RouterProc] = field(default_factory=dict)

    @property
    def registry_grpc(self) -> str:
        assert self.registry is not None, "start_registry() first"
        return self.registry.fields["grpc"]

    @property
    def engine_addresses(self) -> list[str]:
        return [engine.fields["grpc"] for engine in self.engines.values()]

    @property
    def engine_pids(self) -> list[int]:
        return [engine.pid for engine in self.engines.values()]

    async def start(
        self, engines: Sequence[EngineSpec], routers: Sequence[tuple[str, dict[str, Any]]] = ()
    ) -> None:
        """The registry, then engines and routers (name, `start_router` keywords) together
        (a router picks the engines up from the watch), then until every router routes to
        every engine."""
        await self.start_registry()
        starts = (self.start_router(name, **settings) for name, settings in routers)
        await asyncio.gather(self.start_engines(engines), *starts)
        for router in self.routers.values():
            await self.wait_routable(router, len(engines))

    async def start_registry(self, **flags: object) -> Child:
        """A registry on a fresh data dir, with the alias `bench` put."""
        data = self.work / f"registry-{len(self.children.started)}"
        argv = registry_argv(data, flags)
        self.registry = await self.children.start("registry", argv, READY_TIMEOUT_S)
        alias = pb.Alias(name=ALIAS, selector=SELECTOR, service=SERVICE)
        async with grpc.aio.insecure_channel(self.registry_grpc) as channel:
            admin = pb_grpc.AdminStub(channel)
            await admin.PutAlias(pb.PutAliasRequest(alias=alias), timeout=ADMIN_TIMEOUT_S)
        return self.registry

    async def start_engines(self, specs: Sequence[EngineSpec]) -> None:
        """Start the engines in parallel; each is ready once it has registered."""
        registry = self.registry_grpc
        started = await asyncio.gather(
            *(self.children.start(s.instance_id, s.argv(registry), READY_TIMEOUT_S) for s in specs)
        )
        self.engines.update((s.instance_id, c) for s, c in zip(specs, started, strict=True))

    async def start_router(
        self,
        name: str,
        *extra: str,
        balancer: str = "wrr",
        data_path: str = "relay",
        processes: int = 1,
        wrap: Sequence[str] = (),
    ) -> RouterProc:
        """A router (no slow start: a benchmark wants full weights at once); `wrap` goes
        before `-m tidepool` (e.g. cProfile). It is ready, not yet routable."""
        view_file = self.work / f"{name}-{len(self.children.started)}.json"
        port = free_port() if processes > 1 else 0
        argv = [
            sys.executable, *wrap, "-m", "tidepool", "router", "serve",
            "--registry", self.registry_grpc, "--listen", f"127.0.0.1:{port}",
            "--http-listen", "127.0.0.1:0", "--state-file", str(view_file),
            "--balancer", balancer, "--data-path", data_path, "--slow-start-s", "0",
            "--processes", str(processes), *extra,
        ]  # fmt: skip
        child = await self.children.start(name, argv, READY_TIMEOUT_S)
        workers = [int(p) for p in child.fields.get("pid", str(child.pid)).split(",")]
        https = child.fields["http"].split(",")
        pids = sorted({child.pid, *workers})
        router = RouterProc(name, data_path, child, child.fields["grpc"], https, pids, view_file)
        self.routers[name] = router
        return router

    async def wait_routable(self, router: RouterProc, count: int | None = None) -> None:
        """Until every worker of `router` counts `count` (None: every engine) routable."""
        want = len(self.engines) if count is None else count
        async with asyncio.timeout(ROUTABLE_TIMEOUT_S):
            for http in router.https:
                while True:  # the gauge is only seen by scraping: poll it
                    stop_signals.check()
                    samples = await scrape(self.http, http)
                    name = "tidepool_router_endpoints"
                    if metric_sum(samples, name, alias=ALIAS, state="routable") == want:
                        break
                    await asyncio.sleep(0.05)

    async def metrics(self, child: Child | RouterProc) -> Samples:
        """The /metrics of a child (a router's first worker)."""
        http = child.https[0] if isinstance(child, RouterProc) else child.fields["http"]
        return await scrape(self.http, http)

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
                for k, v in by_label(samples, name, label).items():
                    out[key][k] = out[key].get(k, 0.0) + v
        return out

    async def registry_expirations(self) -> dict[str, float]:
        """The registry's expirations so far, by reason."""
        assert self.registry is not None
        samples = await self.metrics(self.registry)
        return {
            reason: metric_sum(samples, "tidepool_registry_expirations_total", reason=reason)
            for reason in ("stream_broken", "ttl")
        }

    async def set_weights(self, weights: dict[str, int]) -> None:
        """Override instance weights in the registry; wait until every router uses them."""
        async with grpc.aio.insecure_channel(self.registry_grpc) as channel:
            admin = pb_grpc.AdminStub(channel)
            for instance_id, weight in weights.items():
                request = pb.SetWeightRequest(instance_id=instance_id, weight=weight)
                await admin.SetWeight(request, timeout=ADMIN_TIMEOUT_S)
        for router in self.routers.values():
            await self._wait_weights(router, weights)

    async def _wait_weights(self, router: RouterProc, weights: dict[str, int]) -> None:
        # The router's view file is written after its table is rebuilt, so once the file
        # holds the new weights, so does the table (/v1/resolve cannot show them all:
        # an idle least-loaded router never picks the lighter of two endpoints).
        async with asyncio.timeout(ROUTABLE_TIMEOUT_S):
            while True:
                stop_signals.check()
                loaded = await asyncio.to_thread(load_view, router.view_file)
                if loaded is not None:
                    instances = loaded[0].instances
                    have = {i: instances[i].weight for i in weights if i in instances}
                    if have == weights:
                        return
                await asyncio.sleep(0.05)

    async def stop(self, child: Child) -> None:
        """Stop one child before the end of the run (the rest stop with the run)."""
        await child.stop()
        with contextlib.suppress(ValueError):
            self.children.started.remove(child)

    async def close(self) -> None:
        """Stop routers, then engines, then the registry: each group all at once."""
        routers = [r.child for r in self.routers.values()]
        for group in (routers, list(self.engines.values()), [self.registry]):
            children = [c for c in group if c is not None]
            await asyncio.gather(*(self.stop(c) for c in children), return_exceptions=True)


@dataclass(frozen=True)
class RouterScrape:
    """What one scrape of a router says about one instance (the victim), and when: seconds
    from some moment (the failover benchmark's signal)."""

    sent_s: float
    received_s: float
    codes: dict[str, float]
    """Attempts to the instance that have ended, by gRPC status."""
    ejections: dict[str, float]
    """Ejections of the instance, by kind (active, passive)."""
    routable: float
    retries: dict[str, float]
    budget_exhausted: float
    failures: dict[str, float]
    """Failed attempts to any instance ("instance:code") and calls the router failed
    itself ("router:code"): where a client error came from."""

    @property
    def attempts(self) -> float:
        return sum(self.codes.values())


def router_scrape(samples: Samples, victim: str, sent_s: float, received_s: float) -> RouterScrape:
    return RouterScrape(
        sent_s,
        received_s,
        by_label(samples, "tidepool_router_requests_total", "code", engine=victim),
        by_label(samples, "tidepool_router_ejections_total", "kind", engine=victim),
        metric_sum(samples, "tidepool_router_endpoints", alias=ALIAS, state="routable"),
        by_label(samples, "tidepool_router_retries_total", "reason"),
        metric_sum(samples, "tidepool_router_retry_budget_exhausted_total"),
        {
            f"{labels.get('instance', 'router')}:{labels['code']}": value
            for name in ("tidepool_router_requests_total", "tidepool_router_errors_total")
            for labels, value in samples.get(name, [])
            if labels["code"] != "OK"
        },
    )


def by_label(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    """Values of the samples of `name` matching `match`, summed by `label`."""
    out: dict[str, float] = {}
    for labels, value in samples.get(name, []):
        if all(labels.get(k) == v for k, v in match.items()):
            key = labels.get(label, "?")
            out[key] = out.get(key, 0.0) + value
    return out


def counter_rises(series: Sequence[dict[str, float]]) -> tuple[dict[str, int], int]:
    """A counter's increases by label over successive scrapes, across resets (the router
    drops the series of an instance gone for good, SIGTERM's deregistration included, and
    a late answer starts it again from 0), and the index of the last scrape that saw one."""
    total: dict[str, float] = {}
    last = 0
    for i in range(1, len(series)):
        for key, value in series[i].items():
            previous = series[i - 1].get(key, 0.0)
            rise = value - previous if value >= previous else value
            if rise > 0:
                total[key], last = total.get(key, 0.0) + rise, i
    return {k: round(v) for k, v in total.items()}, last


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


# --- load ------------------------------------------------------------------------------


def load_config(target: str, duration_s: float, **changes: Any) -> LoadConfig:
    """The one request shape the capacity benchmarks send: 1 KiB unary Evaluate, alias bench."""
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


def load_figures(result: LoadResult) -> dict[str, Any]:
    """What the generator saw in one run: counts, late sends, achieved rate, p50/p99 in ms."""
    latency = result.latency["all"]
    return {
        "sent": result.sent,
        "ok": result.ok,
        "not_ok": not_ok(result),
        "late": result.late,
        "achieved_per_s": round(result.achieved_rate_per_s, 1),
        "p50_ms": round(pct_ms(latency, 50), 4),
        "p99_ms": round(pct_ms(latency, 99), 4),
    }


def starved(figures: dict[str, Any]) -> bool:
    """More than `LATE_VOID_SHARE` of a run's arrivals went out late: the generator was
    starved of CPU, so the machine, not the proxy, was saturated."""
    late, sent = int(figures["late"]), max(int(figures["sent"]), 1)
    return late > LATE_VOID_SHARE * sent


# --- the envelope and the shared report lines ------------------------------------------


def data_paths(text: str) -> list[str]:
    """`--data-paths relay,grpc`: a non-empty list of distinct data paths."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    if not paths or set(paths) - set(DATA_PATHS) or len(set(paths)) < len(paths):
        raise argparse.ArgumentTypeError(f"expected a list of {', '.join(DATA_PATHS)}: {text!r}")
    return paths


def numbers(kind: Callable[[str], float], what: str) -> Callable[[str], list[Any]]:
    """An argparse type: comma-separated positive numbers ('' for none)."""

    def parse(text: str) -> list[Any]:
        values = [kind(v) for v in text.split(",") if v.strip()]
        if any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"{what}: expected positive numbers, got {text!r}")
        return values

    return parse


Flag = tuple[str, Any, Any, str]
COMMON_FLAGS: tuple[Flag, ...] = (
    ("--log-dir", str, None, "keep the logs in this directory (None: a temp dir, removed)"),
    ("--json", str, None, "write the result as JSON to this path (None: do not)"),
)
DATA_PATHS_FLAG: Flag = ("--data-paths", data_paths, list(DATA_PATHS), "data paths, side by side")


Runner = Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]]
Switch = tuple[str, str]
"""A store_true flag and its help."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's command line and the house envelope around its body: signals,
    scratch dir and child cleanup, the printed report, the JSON."""

    name: str
    doc: str | None
    """The module's docstring: its first paragraph is the --help description."""
    flags: Sequence[Flag]
    body: Body
    report: Callable[[dict[str, Any]], str]
    check: Callable[[argparse.Namespace], str | None] = lambda _: None
    """What is wrong with the arguments (it may also normalise them), or None."""
    switches: Sequence[Switch] = ()
    data_path: bool = False
    """Whether it takes `--data-path` (relay, the router's default, or grpc)."""
    exit_code: Callable[[dict[str, Any]], int] = lambda _: 0
    runner: Runner = asyncio.run

    def parser(self) -> argparse.ArgumentParser:
        """Its own flags and switches, then --log-dir and --json."""
        p = argparse.ArgumentParser(
            prog=f"python -m loadtest.{self.name}",
            description=(self.doc or "").split("\n\n")[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        for flag, kind, default, text in (*self.flags, *COMMON_FLAGS):
            p.add_argument(flag, type=kind, default=default, help=text)
        if self.data_path:
            text = "the routers' data path"
            p.add_argument("--data-path", default="relay", choices=DATA_PATHS, help=text)
        for flag, text in self.switches:
            p.add_argument(flag, action="store_true", help=text)
        return p

    def main(self, argv: Sequence[str] | None = None) -> int:
        p = self.parser()
        args = p.parse_args(argv)
        problem = self.check(args)
        if problem:
            p.error(problem)
        say(f"command: {command_line()}")
        try:
            result = self.runner(run_benchmark(self.name, args, self.body))
        except (KeyboardInterrupt, asyncio.CancelledError):
            say("interrupted: every process this run started has been stopped")
            return 130
        except (ChildError, LoadError, TimeoutError, grpc.RpcError) as exc:
            say(f"error: {type(exc).__name__}: {exc}")
            return 1
        say(self.report(result))
        if args.json:
            write_json(args.json, result)
            say(f"result written to {args.json}")
        return self.exit_code(result)

    def exit(self) -> None:
        """`python -m loadtest.<name>`: run `main` on the command line, exit with its code."""
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(self.main())


def header_lines(title: str, result: dict[str, Any]) -> list[str]:
    """A report's first lines: a blank, the title, the command, the machine and its load."""
    return [
        "",
        title,
        f"command: {result['command']}",
        f"machine: {result['cpu_count']} CPUs; load average at start {result['loadavg_start']}, "
        f"at end {result['loadavg_end']}",
    ]


def problems(runs: Sequence[dict[str, Any]], key: str) -> list[str]:
    """One line per run with non-OK statuses, and what CANCELLED means when it shows."""
    arms = [(r[key], a) for r in runs for a in r.get("arms", r.get("runs", []))]
    lines = [f"problem: {name}{' ' + a['arm'] if 'arm' in a else ''}: non-OK {a['not_ok']}"
             for name, a in arms if a["not_ok"]]  # fmt: skip
    if any("CANCELLED" in a["not_ok"] for _, a in arms):
        lines.append(CANCELLED_NOTE)
    return lines


def counter_lines(counters: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Each router's own counters (warm-up included), one line each."""
    return [
        f"{router}: router's own count of {key.replace('_', ' ')}: "
        + (", ".join(f"{k} {v:g}" for k, v in sorted(by.items())) or "none")
        for router, mine in counters.items()
        for key, by in mine.items()
    ]
