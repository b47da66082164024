"""Failure detection: how long from an engine's death, or its silence, to `unhealthy` in a watch.

Starts a registry, then per trial one real engine process: the engine stub when
it works, else the minimal SDK engine below (`python -m loadtest.failure_detection
engine …`). Once the watch shows it READY and its heartbeat stream is attached,
the engine gets SIGKILL (kill -9: the stream breaks) or SIGSTOP (silent: only the
TTL can tell); the time is taken from just before the signal to the watch event
that shows it INSTANCE_STATE_UNHEALTHY, both in this process.

    .venv/bin/python -m loadtest.failure_detection --json detection.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from loadtest.bench import run_benchmark, stop_signals
from loadtest.children import Child, ChildError, Children, registry_argv
from loadtest.report import command_line, percentile, render_table, say, write_json
from loadtest.scrape import metric_sum, scrape
from registry.server import sweep_interval_s
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

MODES = {"kill9": signal.SIGKILL, "sigstop": signal.SIGSTOP}
READY, UNHEALTHY = pb.INSTANCE_STATE_READY, pb.INSTANCE_STATE_UNHEALTHY
GONE = -1
"""The state recorded when an instance leaves the watched set."""
BUILTIN_BASE_PORT = 30000
ENGINE_READY_TIMEOUT_S = 30.0


# --- the watch -------------------------------------------------------------------------


class StateWatch:
    """One Watch stream; every instance's states, each with the monotonic time it arrived."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.history: dict[str, list[tuple[float, int]]] = {}
        self._changed = asyncio.Event()
        self.error: str | None = None

    async def run(self) -> None:
        try:
            async for event in self.stub.Watch(pb.WatchRequest(service="speech")):
                now = time.monotonic()
                gone = event.kind == pb.WatchEvent.KIND_DELETE
                for instance in event.instances:
                    state = GONE if gone else int(instance.state)
                    self.history.setdefault(instance.id, []).append((now, state))
                self._changed.set()
        except grpc.aio.AioRpcError as exc:
            self.error = f"watch ended: {exc.code().name} {exc.details()}"
            self._changed.set()

    def first(self, instance_id: str, state: int, after: float) -> float | None:
        for t, seen in self.history.get(instance_id, ()):
            if t >= after and seen == state:
                return t
        return None

    async def wait_for(self, instance_id: str, state: int, after: float, timeout_s: float) -> float:
        """The arrival time of the first event at or after `after` showing `state`."""
        async with asyncio.timeout(timeout_s):
            while (t := self.first(instance_id, state, after)) is None:
                if self.error is not None:
                    raise RuntimeError(self.error)
                self._changed.clear()
                await self._changed.wait()
        return t


# --- trials ----------------------------------------------------------------------------


@dataclass
class Trial:
    mode: str
    number: int
    instance_id: str = ""
    detected_s: float | None = None
    detected_by: str = ""
    error: str = ""


@dataclass
class Lab:
    """What every trial shares: the registry, its metrics, the watch and the engine kind."""

    args: argparse.Namespace
    children: Children
    registry: str
    http_address: str
    http: httpx.AsyncClient
    stub: Any
    watch: StateWatch
    engine: str
    rng: random.Random
    started: int = 0

    def engine_argv(self) -> list[str]:
        if self.engine == "stub":
            return [
                sys.executable, "-m", "tidepool", "engine-stub", "--registry", self.registry,
                "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--lang", "zh",
                "--tier", "idc", "--weight", "100", "--slots", "4",
                "--model-load-s", str(self.args.model_load_s),
            ]  # fmt: skip
        address = f"127.0.0.1:{BUILTIN_BASE_PORT + self.started}"
        return [
            sys.executable, "-m", "loadtest.failure_detection", "engine",
            "--registry", self.registry, "--address", address,
        ]  # fmt: skip

    async def metric(self, name: str, **labels: str) -> float:
        return metric_sum(await scrape(self.http, self.http_address), name, **labels)

    async def wait_streams(self, count: int, timeout_s: float) -> None:
        """Until the registry holds exactly `count` heartbeat streams."""
        async with asyncio.timeout(timeout_s):
            while True:  # the gauge is only seen by scraping: poll it
                stop_signals.check()
                if await self.metric("tidepool_registry_heartbeat_streams") == count:
                    return
                await asyncio.sleep(0.02)

    async def expirations(self) -> dict[str, float]:
        samples = await scrape(self.http, self.http_address)
        return {
            reason: metric_sum(samples, "tidepool_registry_expirations_total", reason=reason)
            for reason in ("stream_broken", "ttl")
        }

    async def start_engine(self, name: str) -> tuple[Child, str]:
        child = await self.children.start(name, self.engine_argv(), ENGINE_READY_TIMEOUT_S)
        self.started += 1
        instance_id = child.fields.get("id", "")
        if not instance_id:
            raise ChildError(f"{name}: its ready line named no id: {child.fields}")
        return child, instance_id

    async def trial(self, mode: str, number: int) -> Trial:
        result = Trial(mode, number)
        child: Child | None = None
        try:
            child, result.instance_id = await self.start_engine(f"engine-{mode}-{number}")
            await self._detect(child, result)
        except (TimeoutError, RuntimeError, ChildError, grpc.aio.AioRpcError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            if child is not None:
                await self._dispose(child, result.instance_id)
        return result

    async def _detect(self, child: Child, result: Trial) -> None:
        args = self.args
        await self.watch.wait_for(result.instance_id, READY, 0.0, 10.0)
        await self.wait_streams(1, 10.0)
        # Land anywhere in the heartbeat cycle, so SIGSTOP samples every phase of it.
        await asyncio.sleep(self.rng.uniform(1.0, 2.0) * args.heartbeat_interval)
        before = await self.expirations()
        started = time.monotonic()
        child.signal(MODES[result.mode])
        seen = await self.watch.wait_for(
            result.instance_id, UNHEALTHY, started, 3 * args.ttl + 10.0
        )
        result.detected_s = seen - started
        after = await self.expirations()
        result.detected_by = ",".join(r for r in after if after[r] > before[r]) or "?"

    async def _dispose(self, child: Child, instance_id: str) -> None:
        child.signal(signal.SIGKILL)
        await child.stop(1.0)
        self.children.started.remove(child)
        with contextlib.suppress(TimeoutError):
            await self.wait_streams(0, 5.0)
        if instance_id:
            # A clean slate per trial: the next engine is alone in the fleet.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.stub.Deregister(pb.DeregisterRequest(instance_id=instance_id))


def stub_usable() -> tuple[bool, str]:
    """The engine stub is used when its module exists and `--help` works."""
    if importlib.util.find_spec("engine_stub.server") is None:
        return False, "engine_stub/server.py is missing"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tidepool", "engine-stub", "--help"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "`tidepool engine-stub --help` hung"
    if done.returncode != 0:
        return False, f"`tidepool engine-stub --help` exited {done.returncode}"
    return True, "the engine stub works"


def choose_engine(wanted: str) -> tuple[str, str]:
    if wanted == "builtin":
        return "builtin", "asked for with --engine builtin"
    ok, why = stub_usable()
    if ok:
        return "stub", why
    if wanted == "stub":
        raise ChildError(f"--engine stub: {why}")
    return "builtin", why


# --- the run ---------------------------------------------------------------------------


def summarise(trials: list[Trial]) -> dict[str, Any]:
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [t for t in trials if t.mode == mode]
        times = [t.detected_s for t in mine if t.detected_s is not None]
        via: dict[str, int] = {}
        for t in mine:
            if t.detected_s is not None:
                via[t.detected_by] = via.get(t.detected_by, 0) + 1
        modes[mode] = {
            "trials": len(mine),
            "detected": len(times),
            "failed": len(mine) - len(times),
            "samples_s": [round(x, 6) for x in times],
            "min_s": min(times) if times else None,
            "median_s": percentile(times, 50) if times else None,
            "p90_s": percentile(times, 90) if times else None,
            "max_s": max(times) if times else None,
            "detected_by": via,
        }
    return modes


async def _trials(lab: Lab) -> list[Trial]:
    args = lab.args
    plan = [("kill9", n) for n in range(1, args.trials + 1)]
    plan += [("sigstop", n) for n in range(1, args.stop_trials + 1)]
    trials: list[Trial] = []
    deadline = time.monotonic() + args.time_limit
    for mode, number in plan:
        stop_signals.check()
        if time.monotonic() > deadline:
            say(f"time limit of {args.time_limit:g}s reached; skipping the remaining trials")
            break
        trial = await lab.trial(mode, number)
        trials.append(trial)
        total = args.trials if mode == "kill9" else args.stop_trials
        if trial.detected_s is None:
            say(f"{mode} trial {number}/{total}: FAILED {trial.error}")
        else:
            say(
                f"{mode} trial {number}/{total}: {trial.instance_id} unhealthy after "
                f"{trial.detected_s * 1000:.1f} ms (via {trial.detected_by})"
            )
    return trials


async def _lab_run(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    engine, why = choose_engine(args.engine)
    say(f"engine: {engine} ({why})")
    flags = {"heartbeat_interval_s": args.heartbeat_interval, "ttl_s": args.ttl}
    flags["restart_grace_s"] = args.ttl
    registry = await children.start("registry", registry_argv(work / "data", flags))
    say(
        f"registry pid {registry.pid} grpc={registry.fields['grpc']} http={registry.fields['http']}"
    )
    async with (
        grpc.aio.insecure_channel(registry.fields["grpc"]) as channel,
        httpx.AsyncClient() as http,
    ):
        stub = pb_grpc.RegistryStub(channel)
        watch = StateWatch(stub)
        watching = asyncio.create_task(watch.run())
        try:
            lab = Lab(
                args, children, registry.fields["grpc"], registry.fields["http"], http, stub,
                watch, engine, random.Random(args.seed),
            )  # fmt: skip
            trials = await _trials(lab)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    return {
        "engine": engine,
        "engine_reason": why,
        "trials": [asdict(t) for t in trials],
        "modes": summarise(trials),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async def body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
        measured = await _lab_run(args, children, work)
        return {
            "ttl_s": args.ttl,
            "heartbeat_interval_s": args.heartbeat_interval,
            "sweep_interval_s": sweep_interval_s(args.ttl),
            **measured,
        }

    return await run_benchmark("failure_detection", args, body)


# --- the report ------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    ttl, beat, sweep = result["ttl_s"], result["heartbeat_interval_s"], result["sweep_interval_s"]
    rows = []
    for mode, m in result["modes"].items():
        ms = [
            None if m[k] is None else m[k] * 1000 for k in ("min_s", "median_s", "p90_s", "max_s")
        ]
        via = ", ".join(f"{k} x{v}" for k, v in sorted(m["detected_by"].items())) or "-"
        rows.append(
            [mode, m["trials"], m["detected"], *(float("nan") if v is None else v for v in ms), via]
        )
    headers = ["mode", "trials", "detected", "min ms", "median ms", "p90 ms", "max ms", "via"]
    lines = [
        "",
        "failure detection (signal -> INSTANCE_STATE_UNHEALTHY in a watch)",
        f"command: {result['command']}",
        f"engine: {result['engine']} ({result['engine_reason']})",
        f"registry: ttl {ttl:g}s, heartbeat interval {beat:g}s, sweep every {sweep:g}s",
        f"machine: {result['cpu_count']} CPUs; load average at start {result['loadavg_start']}, "
        f"at end {result['loadavg_end']}",
        "",
        render_table(headers, rows),
        "",
        "expected: kill9 -> the stream break, milliseconds; sigstop -> the TTL lapse, between "
        f"{(ttl - beat) * 1000:.0f} and {(ttl + sweep) * 1000:.0f} ms "
        "(ttl minus up to one interval, plus up to one sweep)",
        *(f"{t['mode']} trial {t['number']} failed: {t['error']}" for t in result["trials"]
          if t["detected_s"] is None),
        f"run took {result['duration_s']}s",
    ]  # fmt: skip
    return "\n".join(lines)


FLAGS: tuple[tuple[str, Any, Any, str], ...] = (
    ("--trials", int, 20, "kill -9 trials"),
    ("--stop-trials", int, 5, "SIGSTOP trials (each takes about a TTL)"),
    ("--heartbeat-interval", float, 1.0, "registry heartbeat interval, seconds"),
    ("--ttl", float, 3.0, "registry TTL, seconds"),
    ("--engine", str, "auto", "auto (the stub when it works), stub, or builtin (SDK engine)"),
    ("--model-load-s", float, 0.2, "the engine stub's simulated model load time"),
    ("--time-limit", float, 600.0, "start no new trial after this many seconds"),
    ("--seed", int, 1, "seed of the random wait before each signal"),
    ("--log-dir", str, None, "keep the logs in this directory (None: a temp dir, removed)"),
    ("--json", str, None, "write the result as JSON to this path (None: do not)"),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.failure_detection",
        description="Time from kill -9 / SIGSTOP of an engine to `unhealthy` in a registry "
        "watch (loopback only).",
        epilog="`python -m loadtest.failure_detection engine --help`: the minimal SDK engine "
        "used when the engine stub is not available.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, kind, default, text in FLAGS:
        p.add_argument(flag, type=kind, default=default, help=text)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.trials < 0 or args.stop_trials < 0 or args.trials + args.stop_trials == 0:
        p.error("--trials and --stop-trials must be >= 0, and not both 0")
    if args.heartbeat_interval <= 0 or args.ttl < 2 * args.heartbeat_interval:
        p.error("--ttl must be at least twice a positive --heartbeat-interval")
    if args.engine not in ("auto", "stub", "builtin"):
        p.error("--engine must be auto, stub or builtin")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["engine"]:
        return engine_main(argv[1:])
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    say(f"command: {command_line()}")
    try:
        result = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: every process this run started has been stopped")
        return 130
    except ChildError as exc:
        say(f"error: {exc}")
        return 1
    say(summary(result))
    if args.json:
        write_json(args.json, result)
        say(f"result written to {args.json}")
    failed = sum(m["failed"] for m in result["modes"].values())
    return 1 if failed else 0


# --- the minimal engine (used when the engine stub is not available) --------------------


class _IdleLoad:
    """An engine with nothing to do: idle, four slots."""

    def load(self) -> Any:
        from registry.sdk import LoadReport

        return LoadReport(in_flight=0, queued=0, slots=4, progress=0)


class _Obedient:
    async def on_drain(self) -> None:
        return None

    async def on_resume(self) -> None:
        return None

    async def on_switch_model(self, model: str) -> None:
        return None


class _NoGpu:
    def sample(self) -> Any:
        from registry.sdk import GpuSample

        return GpuSample.absent("the loadtest engine has no GPU")


async def _engine(registry: str, address: str) -> int:
    from registry.sdk import AgentConfig, EngineAgent

    config = AgentConfig(
        registry=registry, address=address, capacity=4, labels={"lang": "zh", "tier": "idc"}
    )
    agent = EngineAgent(config, _IdleLoad(), _Obedient(), _NoGpu())
    await agent.start(timeout_s=10.0)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    say(f"loadtest engine ready id={agent.instance_id} address={address}")
    await stop.wait()
    await agent.shutdown()
    return 0


def engine_main(argv: Sequence[str]) -> int:
    """`python -m loadtest.failure_detection engine --registry H:P --address 127.0.0.1:P`."""
    p = argparse.ArgumentParser(
        prog="python -m loadtest.failure_detection engine",
        description="A minimal engine: registers through the engine SDK and heartbeats.",
    )
    p.add_argument("--registry", required=True, help="registry gRPC address, host:port")
    p.add_argument("--address", required=True, help="advertised 127.0.0.1:port (not served)")
    args = p.parse_args(argv)
    return asyncio.run(_engine(args.registry, args.address))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
