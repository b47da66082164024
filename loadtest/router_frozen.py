"""A frozen engine under load: the router's two data paths against nginx and HAProxy.

Why: an engine that hangs (a stuck kernel, a paused VM, SIGSTOP) raises no error
at all, and issue 14 measured that no proxy handled it well. Each trial starts a
fresh registry and three engine stubs answering in about `--latency-s`, one proxy
in front, and offers `--rate` open-loop unary Evaluate calls with `--deadline-s`
deadlines from a separate process; `--freeze-at` seconds in, one engine is
stopped (SIGSTOP) for `--freeze-s`, then resumed. Measured per trial: calls lost
(any status but OK), p99 of the calls answered OK among those sent in the
`--after-s` after the freeze against p99 before it, and how long new calls
still reached the frozen engine. That last figure is read the same way for
every proxy: each engine sits behind a small TCP tap that timestamps every
HTTP/2 HEADERS frame a proxy sends it (a new call), so "reached" means the
call's HEADERS were written to the frozen engine's socket. Proxies: the router
(`relay` and `grpc` data paths), nginx `grpc_pass`, HAProxy with TCP checks,
and HAProxy with `timeout server 1s` + `retry-on response-timeout` (the
configurations of issue 14), in the same run, trial by trial.

    .venv/bin/python -m loadtest.router_frozen --json frozen.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvloop

from loadtest.bench import stop_signals
from loadtest.children import Child, Children
from loadtest.nginx import find_nginx, start_nginx
from loadtest.report import percentile, render_table, say
from loadtest.router_fleet import (
    ALIAS,
    Benchmark,
    EngineSpec,
    Flag,
    Fleet,
    free_port,
    header_lines,
)
from loadtest.scrape import scrape
from tidepool.engine.v1 import evaluator_pb2 as epb

ENGINES = ("engine-1", "engine-2", "engine-3")
VICTIM = "engine-2"
PROXIES = ("relay", "grpc", "nginx", "haproxy-tcp", "haproxy-retry")
AUDIO = bytes(range(256)) * 12 + bytes(128)
"""0.1 s of 16 kHz 16-bit PCM: the stub's own cost is a few ms at speed 10."""
WARM_S = 1.0
"""Calls sent in the first second are left out of "before" (connections warming)."""
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS = 0x1
HAPROXY_READY = "tidepool haproxy ready"
ROUTER_COUNTERS = (
    ("tidepool_router_attempt_timeouts_total", "attempt_timeouts"),
    ("tidepool_router_hedges_total", "hedges"),
    ("tidepool_router_hedge_wins_total", "hedge_wins"),
    ("tidepool_router_engine_ping_failures_total", "ping_failures"),
    ("tidepool_router_retry_budget_exhausted_total", "no_budget"),
)


# ---- the tap: when did a proxy last send a new call to an engine ---------------------


class Tap:
    """A TCP relay in front of one engine that notes when each HTTP/2 HEADERS frame passes
    from a proxy to it (a new call; trailers would count too, unary calls send none)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.headers_at: list[float] = []
        self.server: asyncio.Server | None = None
        self.address = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        down = asyncio.create_task(self._pump(up_reader, writer, None))
        self._tasks.add(down)
        down.add_done_callback(self._tasks.discard)
        await self._pump(reader, up_writer, FrameCounter(self.headers_at))
        await asyncio.gather(down, return_exceptions=True)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: FrameCounter | None
    ) -> None:
        try:
            # No drain: a frozen engine reads nothing, and the tap must go on reading
            # (and dating) what the proxy sends it; 8 s of calls fit in memory.
            while data := await reader.read(65536):
                if frames is not None:
                    frames.feed(data, time.monotonic())
                writer.write(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class FrameCounter:
    """Walks the HTTP/2 frames of one client-to-server byte stream; notes HEADERS times."""

    def __init__(self, headers_at: list[float]) -> None:
        self.headers_at = headers_at
        self.buffer = b""
        self.preface = True

    def feed(self, data: bytes, now: float) -> None:
        self.buffer += data
        if self.preface:
            if len(self.buffer) < len(H2_PREFACE):
                return
            self.buffer = self.buffer[len(H2_PREFACE) :]
            self.preface = False
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                return
            if self.buffer[3] == HEADERS:
                self.headers_at.append(now)
            self.buffer = self.buffer[9 + length :]


# ---- the load: open loop, in its own process -----------------------------------------


def _load_process(
    target: str, rate: float, duration_s: float, deadline_s: float, pipe: Any
) -> None:
    uvloop.run(_load(target, rate, duration_s, deadline_s, pipe))


async def _load(target: str, rate: float, duration_s: float, deadline_s: float, pipe: Any) -> None:
    """Say ready, take the start time, send `rate` calls a second on schedule, send back
    (scheduled start, seconds, status, engine) of each."""
    request = epb.EvaluateRequest(audio=AUDIO, text="ni hao shi jie", lang="zh")
    metadata = (("x-tidepool-alias", ALIAS),)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/tidepool.engine.v1.Evaluator/Evaluate",
            request_serializer=epb.EvaluateRequest.SerializeToString,
            response_deserializer=epb.EvaluateResponse.FromString,
        )
        await call(request, metadata=metadata, timeout=deadline_s)  # connected and warm
        pipe.send("ready")
        start_at: float = await asyncio.to_thread(pipe.recv)
        outcomes: list[tuple[float, float, str, str]] = []

        async def one(due: float) -> None:
            try:
                answer = await call(request, metadata=metadata, timeout=deadline_s)
                code, engine = "OK", str(answer.engine_id)
            except grpc.aio.AioRpcError as error:
                code, engine = error.code().name, ""
            outcomes.append((due - start_at, time.monotonic() - due, code, engine))

        tasks = []
        for index in range(round(rate * duration_s)):
            due = start_at + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule, not synchronisation
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    pipe.send(outcomes)


# ---- one trial ----------------------------------------------------------------------


@dataclass
class Trial:
    proxy: str
    number: int
    sent: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    p99_before_ms: float | None = None
    p99_after_ms: float | None = None
    reached_frozen_s: float | None = None
    """The last new call written to the frozen engine, seconds after the freeze (0: none)."""
    calls_to_frozen: int = 0
    """New calls written to the frozen engine while it was frozen."""
    router: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.p99_before_ms and self.p99_after_ms is not None:
            return self.p99_after_ms / self.p99_before_ms
        return None


@dataclass
class Lab:
    args: argparse.Namespace
    children: Children
    work: Path
    http: httpx.AsyncClient
    binaries: dict[str, str]

    async def trial(self, proxy: str, number: int) -> Trial:
        trial = Trial(proxy, number)
        fleet = Fleet(self.children, self.work / f"{proxy}-{number}", self.http)
        taps = {name: Tap("") for name in ENGINES}
        proxies: list[Child] = []
        try:
            await self._start_fleet(fleet, taps)
            target = await self._start_proxy(fleet, proxy, taps, proxies)
            await self._under_load(fleet, trial, target, taps[VICTIM])
        except Exception as exc:  # one failed trial must not end the run
            trial.error = f"{type(exc).__name__}: {exc}"
        finally:
            for child in proxies:
                await fleet.stop(child)
            await fleet.close()
            for tap in taps.values():
                await tap.close()
        return trial

    async def _start_fleet(self, fleet: Fleet, taps: dict[str, Tap]) -> None:
        await fleet.start_registry()
        specs = []
        for name, tap in taps.items():
            listen = f"127.0.0.1:{free_port()}"
            tap.target = listen
            await tap.start()
            specs.append(
                TappedEngine(name, 10.0, 64, 100, listen, tap.address, self.args.latency_s)
            )
        await fleet.start_engines(specs)

    async def _start_proxy(
        self, fleet: Fleet, proxy: str, taps: dict[str, Tap], started: list[Child]
    ) -> str:
        upstreams = [(tap.address, 100) for tap in taps.values()]
        if proxy in ("relay", "grpc"):
            router = await fleet.start_router(proxy, data_path=proxy)
            await fleet.wait_routable(router)
            return router.grpc
        listen = f"127.0.0.1:{free_port()}"
        if proxy == "nginx":
            nginx = await start_nginx(self.children, self.binaries["nginx"], fleet.work, listen,
                                      upstreams)  # fmt: skip
            started.append(nginx.child)
            return listen
        child = await start_haproxy(
            self.children, self.binaries["haproxy"], fleet.work, listen, upstreams,
            retry=proxy == "haproxy-retry",
        )  # fmt: skip
        started.append(child)
        return listen

    async def _under_load(self, fleet: Fleet, trial: Trial, target: str, victim_tap: Tap) -> None:
        args = self.args
        duration = args.freeze_at + args.freeze_s + args.after_thaw_s
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        worker = ctx.Process(
            target=_load_process, args=(target, args.rate, duration, args.deadline_s, theirs)
        )
        worker.start()
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(ours.recv), 60)
            assert ready == "ready", ready
            start_at = time.monotonic() + 0.5
            ours.send(start_at)
            victim = fleet.engines[VICTIM]
            await asyncio.sleep(start_at + args.freeze_at - time.monotonic())
            frozen_at = time.monotonic()
            victim.signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(args.freeze_s)  # the freeze itself
                router_figures = await self._router_figures(fleet)
            finally:
                victim.signal(signal.SIGCONT)
            thawed_at = time.monotonic()
            outcomes = await asyncio.wait_for(
                asyncio.to_thread(ours.recv), duration + args.deadline_s + 30
            )
        finally:
            await asyncio.to_thread(worker.join, 10)
            if worker.is_alive():
                worker.kill()
        trial.router = router_figures
        analyse(trial, outcomes, args, victim_tap.headers_at, frozen_at, thawed_at)

    async def _router_figures(self, fleet: Fleet) -> dict[str, float]:
        if not fleet.routers:
            return {}
        router = next(iter(fleet.routers.values()))
        samples = await scrape(self.http, router.https[0])
        return {key: sum(v for _, v in samples.get(name, [])) for name, key in ROUTER_COUNTERS}


@dataclass(frozen=True)
class TappedEngine(EngineSpec):
    """An engine stub on a fixed port, registered at its tap's address, `latency_s` slow."""

    listen: str = ""
    advertise: str = ""
    latency_s: float = 0.05

    def argv(self, registry: str) -> list[str]:
        return [
            *super().argv(registry),
            *("--listen", self.listen, "--advertise", self.advertise),
            *("--fault-latency-s", f"{self.latency_s:g}"),
        ]


def analyse(
    trial: Trial,
    outcomes: list[tuple[float, float, str, str]],
    args: argparse.Namespace,
    headers_at: list[float],
    frozen_at: float,
    thawed_at: float,
) -> None:
    trial.sent = len(outcomes)
    trial.lost = dict(Counter(code for _, _, code, _ in outcomes if code != "OK"))
    freeze, after = args.freeze_at, args.freeze_at + args.after_s
    before = [s for due, s, code, _ in outcomes if WARM_S <= due < freeze and code == "OK"]
    later = [s for due, s, code, _ in outcomes if freeze <= due < after and code == "OK"]
    trial.p99_before_ms = percentile(before, 99) * 1000 if before else None
    trial.p99_after_ms = percentile(later, 99) * 1000 if later else None
    during = [t - frozen_at for t in headers_at if frozen_at <= t < thawed_at]
    trial.calls_to_frozen = len(during)
    trial.reached_frozen_s = max(during) if during else 0.0


async def start_haproxy(
    children: Children,
    binary: str,
    work: Path,
    listen: str,
    upstreams: list[tuple[str, int]],
    *,
    retry: bool,
) -> Child:
    """HAProxy, h2c both sides, round robin with TCP checks; `retry`: the issue's second
    configuration (`timeout server 1s`, `retry-on response-timeout`, redispatch)."""
    prefix = work / "haproxy"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "haproxy.cfg"
    conf.write_text(haproxy_config(listen, upstreams, retry))
    script = (
        f"{binary} -c -q -f {conf} && echo '{HAPROXY_READY} pid='$$ && exec {binary} -db -f {conf}"
    )
    name = "haproxy-retry" if retry else "haproxy-tcp"
    child = await children.start(name, ["sh", "-c", script], ready_timeout_s=30.0)
    host, port = listen.rsplit(":", 1)
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                return child
            await asyncio.sleep(0.05)  # waiting for its port to open


def haproxy_config(listen: str, upstreams: list[tuple[str, int]], retry: bool) -> str:
    servers = "\n".join(
        f"    server e{i} {address} proto h2 weight {weight} check inter 1s"
        for i, (address, weight) in enumerate(upstreams)
    )
    server_timeout = "1s" if retry else "30s"
    retries = "    retries 3\n    retry-on response-timeout\n    option redispatch 1\n"
    return f"""\
global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server {server_timeout}
frontend grpc
    bind {listen} proto h2
    default_backend engines
backend engines
    balance roundrobin
{retries if retry else ""}{servers}
"""


# ---- the run and the report -----------------------------------------------------------


async def _body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    binaries, skipped = await _binaries(args.proxies)
    trials: list[Trial] = []
    async with httpx.AsyncClient() as http:
        lab = Lab(args, children, work, http, binaries)
        for number in range(1, args.trials + 1):
            for proxy in args.proxies:
                if proxy in skipped:
                    continue
                stop_signals.check()
                trial = await lab.trial(proxy, number)
                trials.append(trial)
                say(progress_line(trial))
    return {
        "trials": [asdict(t) for t in trials],
        "skipped": skipped,
        "summary": summarise(trials, args.proxies),
    }


async def _binaries(proxies: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    binaries: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if "nginx" in proxies:
        found, why = await asyncio.to_thread(find_nginx)
        if found:
            binaries["nginx"] = found
        else:
            skipped["nginx"] = why
    if any(p.startswith("haproxy") for p in proxies):
        found_haproxy = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
        )
        if found_haproxy:
            binaries["haproxy"] = found_haproxy
        else:
            for p in proxies:
                if p.startswith("haproxy"):
                    skipped[p] = "haproxy is not installed (apt-get install -y haproxy)"
    return binaries, skipped


def _median(values: list[float]) -> float | None:
    return percentile(values, 50) if values else None


def summarise(trials: list[Trial], proxies: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for proxy in proxies:
        mine = [t for t in trials if t.proxy == proxy and not t.error]
        if not mine:
            continue
        summary[proxy] = {
            "trials": len(mine),
            "lost": _median([sum(t.lost.values()) for t in mine]),
            "p99_before_ms": _median([t.p99_before_ms for t in mine if t.p99_before_ms]),
            "p99_after_ms": _median([t.p99_after_ms for t in mine if t.p99_after_ms]),
            "ratio": _median([r for t in mine if (r := t.ratio) is not None]),
            "reached_frozen_s": _median([t.reached_frozen_s or 0.0 for t in mine]),
            "calls_to_frozen": _median([float(t.calls_to_frozen) for t in mine]),
        }
    return summary


def progress_line(t: Trial) -> str:
    if t.error:
        return f"{t.proxy} trial {t.number}: FAILED {t.error}"
    return (
        f"{t.proxy} trial {t.number}: lost {sum(t.lost.values())} {t.lost or ''}; p99 "
        f"{_f(t.p99_before_ms)} -> {_f(t.p99_after_ms)} ms; last call to the frozen engine "
        f"{_f(t.reached_frozen_s, 2)} s after the freeze ({t.calls_to_frozen} calls)"
    )


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADERS_ROW = [
    "proxy", "trials", "lost", "p99 before ms", "p99 after ms", "after/before",
    "last call to frozen s", "calls to frozen",
]  # fmt: skip
TRIAL_HEADERS = [
    "proxy", "#", "sent", "lost", "p99 before", "p99 after", "last call s", "calls",
    "attempt timeouts", "hedges", "hedge wins", "ping failures", "no budget",
]  # fmt: skip


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    trials = [Trial(**t) for t in result["trials"]]
    rows = [
        [proxy, m["trials"], _f(m["lost"], 0), _f(m["p99_before_ms"]), _f(m["p99_after_ms"]),
         _f(m["ratio"], 2), _f(m["reached_frozen_s"], 2), _f(m["calls_to_frozen"], 0)]
        for proxy, m in result["summary"].items()
    ]  # fmt: skip
    per_trial = [
        [t.proxy, t.number, t.sent, sum(t.lost.values()), _f(t.p99_before_ms),
         _f(t.p99_after_ms), _f(t.reached_frozen_s, 2), t.calls_to_frozen,
         *(_f(t.router.get(k), 0) if t.router else "-" for k in
           ("attempt_timeouts", "hedges", "hedge_wins", "ping_failures", "no_budget"))]
        for t in trials
    ]  # fmt: skip
    return "\n".join(
        [
            *header_lines("a frozen engine under load (SIGSTOP one of three)", result),
            f"load: {s['rate']:g} unary Evaluate/s, deadlines {s['deadline_s']:g} s, engines "
            f"~{s['latency_s'] * 1000:g} ms; {VICTIM} frozen {s['freeze_at']:g} s in for "
            f"{s['freeze_s']:g} s; p99 of OK calls sent in the {s['after_s']:g} s after the "
            f"freeze against those sent before it",
            "",
            "median of the trials (target: 0 lost, after/before <= 3, last call to frozen "
            "<= 0.5 s)",
            render_table(HEADERS_ROW, rows),
            "",
            "every trial (the router's own counters as of the end of the freeze)",
            render_table(TRIAL_HEADERS, per_trial),
            *(f"skipped {p}: {why}" for p, why in result["skipped"].items()),
            *(f"{t.proxy} trial {t.number} failed: {t.error}" for t in trials if t.error),
            *(f"{t.proxy} trial {t.number}: lost {t.lost}" for t in trials if t.lost),
            f"run took {result['duration_s']}s",
        ]
    )


def _proxies(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PROXIES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(PROXIES)}, got {text!r}")
    return chosen


FLAGS: tuple[Flag, ...] = (
    ("--rate", float, 300.0, "offered unary Evaluate calls per second (open loop)"),
    ("--deadline-s", float, 5.0, "each call's deadline"),
    ("--latency-s", float, 0.05, "how long each engine takes per call"),
    ("--freeze-at", float, 5.0, "seconds into the load to freeze one engine (SIGSTOP)"),
    ("--freeze-s", float, 8.0, "how long it stays frozen before SIGCONT"),
    ("--after-s", float, 5.0, "the window after the freeze whose p99 is compared"),
    ("--after-thaw-s", float, 3.0, "load kept up after the thaw"),
    ("--trials", int, 3, "trials per proxy (the table shows their median)"),
    ("--proxies", _proxies, list(PROXIES), "comma-separated: " + ",".join(PROXIES)),
)


def _check(args: argparse.Namespace) -> str | None:
    if args.rate <= 0 or args.trials < 1:
        return "--rate must be > 0 and --trials >= 1"
    if args.freeze_at < WARM_S + 1 or args.after_s > args.freeze_s + args.after_thaw_s:
        return f"--freeze-at must be >= {WARM_S + 1:g} and --after-s within the run after it"
    return None


def _exit_code(result: dict[str, Any]) -> int:
    return 1 if any(t["error"] for t in result["trials"]) else 0


BENCHMARK = Benchmark("router_frozen", __doc__, FLAGS, _body, report, _check, exit_code=_exit_code)

if __name__ == "__main__":
    BENCHMARK.exit()
