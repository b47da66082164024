"""How fast and how quietly the pool scheduler follows the tide, on real processes.

Three measurements, each on a fresh stack on 127.0.0.1 (registry, two slow zh
engines, three slow en engines, scheduler, router):

- surge: Chinese load jumps to about 90 % of zh-public while English idles;
  from the surge to the first move, and to zh-public back under its high
  watermark (the scheduler's own smoothed figure), over `--trials` trials, with
  every client error counted (target 0);
- steady: both pools at about 40 % with Poisson noise for `--steady-s`; moves
  made (target 0);
- failover: a leader and a standby; kill -9 of the leader, time until the
  standby holds the leadership (target 5 s), over `--failover-trials` trials.

Run: python -m loadtest.scheduler_bench [--trials 5] [--steady-s 600]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from loadtest.bench import stop_signals
from loadtest.children import Child, Children, registry_argv
from loadtest.config import LoadConfig
from loadtest.generator import run_load
from loadtest.router_fleet import Benchmark, header_lines, load_figures, not_ok
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ADMIN = "bench-admin"
ENGINE_TOKEN = "bench-engine"
HIGH = 0.75
POLICY = f"""\
[scheduler]
interval_s = 0.5
window_s = 4.0
cooldown_s = 4.0
min_stay_s = 10.0
drain_timeout_s = 5.0
switch_timeout_s = 30.0
leader_ttl_s = 2.0
expected_switch_s = 1.0

[[pools]]
name = "zh-public"
lang = "zh"
min = 1
max = 5
target_utilization = 0.5
high_watermark = {HIGH}
low_watermark = 0.25
lend_to = ["en-public"]

[[pools]]
name = "en-public"
lang = "en"
min = 1
max = 5
target_utilization = 0.5
high_watermark = {HIGH}
low_watermark = 0.25
lend_to = ["zh-public"]
"""
SPEED = "0.1"
"""A 1 KiB request takes about 65 ms: 4 slots serve about 60 calls/s."""
POLL_S = 0.1
CALL_S = 5.0
FINISHED = (pb.Move.STATE_DONE, pb.Move.STATE_ROLLED_BACK)


class Stack:
    """One registry, its engines, schedulers and a router, with registry reads for probes."""

    def __init__(self, children: Children, work: Path) -> None:
        self.children = children
        self.work = work
        self.registry = ""
        self.router = ""
        self._channel: grpc.aio.Channel | None = None
        self._schedulers = 0

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {ADMIN}"),)

    async def start(self, schedulers: int = 1) -> list[Child]:
        data = self.work / f"registry-{time.monotonic_ns()}"
        flags = {"admin_token": ADMIN, "engine_token": ENGINE_TOKEN}
        child = await self.children.start("registry", registry_argv(data, flags))
        self.registry = child.fields["grpc"]
        self._channel = grpc.aio.insecure_channel(self.registry)
        started = [await self.scheduler() for _ in range(schedulers)]
        engines = [("zh", i) for i in range(2)] + [("en", i) for i in range(3)]
        await asyncio.gather(*(self._engine(lang, i) for lang, i in engines))
        await self._until(self._all_pooled, 10.0, "engines not admitted within 10 s")
        router = await self.children.start("router", _tidepool(
            "router", "serve", "--registry", self.registry, "--token", ADMIN,
            "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--state-file", "",
        ))  # fmt: skip
        self.router = router.fields["grpc"]
        return started

    async def scheduler(self) -> Child:
        self._schedulers += 1
        policy = self.work / "policy.toml"
        policy.write_text(POLICY)
        return await self.children.start(f"scheduler-{self._schedulers}", _tidepool(
            "scheduler", "run", "--registry", self.registry, "--token", ADMIN,
            "--policy", str(policy), "--http-listen", "127.0.0.1:0",
            "--id", f"bench-{self._schedulers}",
        ))  # fmt: skip

    async def _engine(self, lang: str, index: int) -> Child:
        return await self.children.start(f"{lang}-{index}", _tidepool(
            "engine-stub", "--registry", self.registry, "--token", ENGINE_TOKEN,
            "--instance-id", f"{lang}-{index}", "--lang", lang, "--slots", "4",
            "--speed", SPEED, "--model-load-s", "1",
        ))  # fmt: skip

    async def close(self) -> None:
        await self.children.stop_all()
        if self._channel is not None:
            await self._channel.close()

    # ---- probes ---------------------------------------------------------------------

    async def instances(self) -> list[Any]:
        stub = pb_grpc.RegistryStub(self._channel)
        listed = await stub.ListInstances(
            pb.ListInstancesRequest(), metadata=self.metadata, timeout=CALL_S
        )
        return list(listed.instances)

    async def moves(self) -> list[Any]:
        stub = pb_grpc.SchedulingStub(self._channel)
        listed = await stub.ListMoves(pb.ListMovesRequest(), metadata=self.metadata, timeout=CALL_S)
        return list(listed.moves)

    async def utilization(self, pool: str) -> float | None:
        stub = pb_grpc.SchedulingStub(self._channel)
        listed = await stub.ListPools(pb.ListPoolsRequest(), metadata=self.metadata, timeout=CALL_S)
        return next((p.utilization for p in listed.pools if p.name == pool), None)

    async def leader(self) -> str:
        stub = pb_grpc.SchedulingStub(self._channel)
        lease = await stub.GetLeadership(
            pb.GetLeadershipRequest(), metadata=self.metadata, timeout=CALL_S
        )
        return str(lease.holder)

    async def _all_pooled(self) -> bool:
        instances = await self.instances()
        return len(instances) == 5 and all(i.labels.get("pool") for i in instances)

    async def _until(self, check: Callable[[], Awaitable[bool]], limit_s: float, why: str) -> None:
        deadline = time.monotonic() + limit_s
        while not await check():
            stop_signals.check()
            if time.monotonic() > deadline:
                raise TimeoutError(why)
            await asyncio.sleep(POLL_S)


def _tidepool(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidepool", *args]


def _load(stack: Stack, alias: str, rate: float, seconds: float, seed: int) -> LoadConfig:
    return LoadConfig(
        target=stack.router, alias=alias, rate_per_s=rate, duration_s=seconds, seed=seed,
        timeout_s=10.0,
    )  # fmt: skip


async def _surge_trial(args: argparse.Namespace, stack: Stack, seed: int) -> dict[str, Any]:
    """Time to the first move and to zh-public back under its high watermark."""
    load = asyncio.create_task(
        asyncio.to_thread(run_load, _load(stack, "zh-public", args.rate, args.surge_s, seed))
    )
    started = time.monotonic()
    first_move = recovered = None
    while not load.done():
        stop_signals.check()
        now = time.monotonic() - started
        if first_move is None and await stack.moves():
            first_move = now
        done = [m for m in await stack.moves() if m.state == pb.Move.STATE_DONE]
        utilization = await stack.utilization("zh-public")
        if recovered is None and done and utilization is not None and utilization < HIGH:
            recovered = now
        await asyncio.sleep(POLL_S)
    result = await load
    moves = await stack.moves()
    return {
        "to_first_move_s": _round(first_move),
        "to_under_high_s": _round(recovered),
        "moves_done": sum(1 for m in moves if m.state == pb.Move.STATE_DONE),
        "moves_rolled_back": sum(1 for m in moves if m.state == pb.Move.STATE_ROLLED_BACK),
        "client_errors": sum(not_ok(result).values()),
        "load": load_figures(result),
    }


async def _steady(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    rate = args.steady_rate
    loads = [
        asyncio.to_thread(run_load, _load(stack, alias, rate, args.steady_s, i))
        for i, alias in enumerate(("zh-public", "en-public"))
    ]
    results = await asyncio.gather(*loads)
    moves = await stack.moves()
    return {
        "seconds": args.steady_s,
        "rate_per_pool": rate,
        "moves": len(moves),
        "move_reasons": [m.reason for m in moves],
        "client_errors": sum(sum(not_ok(r).values()) for r in results),
        "load": [load_figures(r) for r in results],
    }


async def _failover_trial(stack: Stack, leader: Child) -> float:
    holder = await stack.leader()
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()

    async def replaced() -> bool:
        current = await stack.leader()
        return bool(current) and current != holder

    await stack._until(replaced, 15.0, "no standby took over within 15 s")
    return time.monotonic() - killed


async def _body(args: argparse.Namespace, children: Children, work: Path) -> dict[str, Any]:
    surges = []
    for trial in range(args.trials):
        stack = Stack(children, work)
        try:
            await stack.start()
            surges.append(await _surge_trial(args, stack, trial + 1))
        finally:
            await stack.close()
    steady = None
    if args.steady_s > 0:
        stack = Stack(children, work)
        try:
            await stack.start()
            steady = await _steady(args, stack)
        finally:
            await stack.close()
    failovers = await _failovers(args, children, work)
    return {"surges": surges, "steady": steady, "failover_s": failovers}


async def _failovers(args: argparse.Namespace, children: Children, work: Path) -> list[float]:
    times: list[float] = []
    if args.failover_trials <= 0:
        return times
    stack = Stack(children, work)
    try:
        leaders = await stack.start(schedulers=2)
        for _ in range(args.failover_trials):
            holder = await stack.leader()
            leader = next(c for c in leaders if c.fields.get("id") == holder)
            times.append(round(await _failover_trial(stack, leader), 2))
            leaders.remove(leader)
            leaders.append(await stack.scheduler())
    finally:
        await stack.close()
    return times


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _summary(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "never"
    missing = len(values) - len(seen)
    tail = f" ({missing} never)" if missing else ""
    return f"median {statistics.median(seen):.2f} s, max {max(seen):.2f} s{tail}"


def report(result: dict[str, Any]) -> str:
    lines = header_lines("pool scheduler: surge, steady load, failover", result)
    surges = result["surges"]
    if surges:
        lines.append(f"surge ({len(surges)} trials, {result['settings']['rate']:g} calls/s):")
        lines.append(f"  to first move:      {_summary([s['to_first_move_s'] for s in surges])}")
        lines.append(f"  to under high:      {_summary([s['to_under_high_s'] for s in surges])}")
        errors = [s["client_errors"] for s in surges]
        lines.append(f"  client errors:      {sum(errors)} ({errors} per trial)")
        lines.append(
            f"  moves done/rolled:  {[(s['moves_done'], s['moves_rolled_back']) for s in surges]}"
        )
    steady = result["steady"]
    if steady:
        lines.append(
            f"steady ({steady['seconds']:g} s at {steady['rate_per_pool']:g} calls/s a pool): "
            f"{steady['moves']} moves, {steady['client_errors']} client errors"
        )
        lines.extend(f"  move: {reason}" for reason in steady["move_reasons"])
    failovers = result["failover_s"]
    if failovers:
        lines.append(f"failover (kill -9 of the leader): {_summary(failovers)}; all {failovers}")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> str | None:
    if args.trials < 0 or args.failover_trials < 0 or args.steady_s < 0:
        return "--trials, --failover-trials and --steady-s must be >= 0"
    if args.rate <= 0 or args.surge_s <= 0 or args.steady_rate <= 0:
        return "--rate, --surge-s and --steady-rate must be > 0"
    return None


def _exit_code(result: dict[str, Any]) -> int:
    errors = sum(s["client_errors"] for s in result["surges"])
    steady = result["steady"] or {"moves": 0, "client_errors": 0}
    return 1 if errors or steady["moves"] or steady["client_errors"] else 0


FLAGS = (
    ("--trials", int, 5, "surge trials"),
    ("--rate", float, 110.0, "Chinese calls/s during a surge (about 90 % of zh-public)"),
    ("--surge-s", float, 25.0, "length of a surge"),
    ("--steady-s", float, 600.0, "length of the steady run (0: skip)"),
    ("--steady-rate", float, 45.0, "calls/s to each pool in the steady run (about 40 %)"),
    ("--failover-trials", int, 5, "kill -9 trials of the leader (0: skip)"),
)

BENCHMARK = Benchmark(
    "scheduler_bench", __doc__, FLAGS, _body, report, _check, exit_code=_exit_code
)

if __name__ == "__main__":
    BENCHMARK.exit()
