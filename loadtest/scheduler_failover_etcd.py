"""Scheduler failover on etcd with fencing: kill -9 the leader at a random moment during moves.

Per run: one etcd member, two registry replicas on it (A, B), four engine stubs
(two per language, a fast model load) and two schedulers (`sched-a` leads, `sched-b`
stands by), each pointed at `--registry A,B`. Moves between zh-public and en-public
are asked for as an operator does (`ctl move`); while they are under way, at a random
moment, the leader is killed with SIGKILL. Each scheduler reaches the replicas through
a tap of ours (a gRPC relay in this process) that records every call with its fence
and outcome; just before the kill the leader's taps start holding its calls, as a
network does with what was on the wire when a process died, and they let them go
only after the standby has taken over. So every run sends the deposed leader's last
writes to the registry after the takeover, and the checks are:

- deposed writes landed: a write from the killed leader answered OK after the
  takeover (or a leadership it asked for granted) — must be 0;
- engines without a pool at the end, engines not ready or drained, moves left
  unfinished — each must be 0.

    .venv/bin/python -m loadtest.scheduler_failover_etcd --runs 20 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest.children import Child, Children
from loadtest.etcd_watch_delay import etcd_member
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 5.0
TAKEOVER_LIMIT_S = 10.0
SETTLE_LIMIT_S = 15.0
ENGINES = (("zh-0", "zh"), ("zh-1", "zh"), ("en-0", "en"), ("en-1", "en"))
POOL_OF = {"zh": "zh-public", "en": "en-public"}
FINISHED = (pb.Move.STATE_DONE, pb.Move.STATE_ROLLED_BACK)
READS = ("/ListInstances", "/ListMoves", "/ListAliases", "/ListTenants", "/GetLeadership")
FORWARDED_HEADERS = ("authorization", "x-tidepool-fence")
POLICY = """\
[scheduler]
interval_s = 0.25
window_s = 1.0
cooldown_s = 1.0
min_stay_s = 2.0
drain_timeout_s = 3.0
switch_timeout_s = 15.0
leader_ttl_s = 1.0
expected_switch_s = 0.5

[[pools]]
name = "zh-public"
lang = "zh"
min = 1
max = 5
target_utilization = 0.5
high_watermark = 0.75
low_watermark = 0.25
lend_to = ["en-public"]

[[pools]]
name = "en-public"
lang = "en"
min = 1
max = 5
target_utilization = 0.5
high_watermark = 0.75
low_watermark = 0.25
lend_to = ["zh-public"]
"""


# ---- the tap: a recording, holdable relay between one scheduler and one replica ------------


@dataclass
class Call:
    """One call a scheduler made, as its tap saw it."""

    scheduler: str
    method: str
    fence: int | None
    held: bool
    code: str = ""
    granted: bool = False
    done_at: float = 0.0

    @property
    def is_write(self) -> bool:
        return not self.method.endswith(READS)

    @property
    def is_leader_write(self) -> bool:
        """A change the leader makes under its fence (not its own lease's renewal)."""
        return self.is_write and self.fence is not None and "Leadership" not in self.method


@dataclass
class Gate:
    """Whether one scheduler's calls flow, shared by its taps.

    Armed, the next fenced write the scheduler sends (and everything after it) is held:
    the write "on the wire" when the process dies.
    """

    armed: bool = False
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    captured: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()

    def admit(self, call: Call) -> None:
        """Hold from `call` on when armed and it is the leader's write."""
        if self.armed and call.is_leader_write:
            self.armed = False
            self.flowing.clear()
            self.captured.set()
        call.held = not self.flowing.is_set()


class Tap(grpc.GenericRpcHandler):
    """Forwards every unary call to `target` unchanged (bytes in, bytes out) and records it.

    While the gate is closed, calls wait before going upstream. Each forward runs in a
    task of its own, so a call whose caller was killed still reaches the replica and
    its outcome is still recorded, as a request already on the wire would be.
    """

    def __init__(self, scheduler: str, target: str, calls: list[Call], gate: Gate) -> None:
        self.scheduler, self.calls, self.gate, self.target = scheduler, calls, gate, target
        self.forwards: set[asyncio.Task[bytes]] = set()
        self._channel = grpc.aio.insecure_channel(target)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self,))
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._relay(method, request, context)

        return grpc.unary_unary_rpc_method_handler(relay)

    async def _relay(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = tuple(
            (m.key, m.value) for m in context.invocation_metadata() or ()
            if m.key in FORWARDED_HEADERS
        )  # fmt: skip
        fence = next((int(v) for k, v in metadata if k == "x-tidepool-fence"), None)
        call = Call(self.scheduler, method, fence, held=False)
        self.gate.admit(call)
        self.calls.append(call)
        task = asyncio.create_task(self._forward(call, request, metadata))
        self.forwards.add(task)
        task.add_done_callback(self.forwards.discard)
        try:
            return await asyncio.shield(task)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise

    async def _forward(
        self, call: Call, request: bytes, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> bytes:
        await self.gate.flowing.wait()
        try:
            answer: bytes = await self._channel.unary_unary(call.method)(
                request, metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            call.code, call.done_at = exc.code().name, time.monotonic()
            raise
        call.code, call.done_at = "OK", time.monotonic()
        if call.method.endswith("/AcquireLeadership"):
            call.granted = pb.Leadership.FromString(answer).granted
        return answer

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        self.gate.flowing.set()
        await asyncio.gather(*self.forwards, return_exceptions=True)
        await self._server.stop(None)
        await self._channel.close()


# ---- one run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run saw."""

    run: int
    delay_s: float
    moves_asked: int
    under_way: int
    """Moves not finished when the leader was killed."""
    takeover_s: float
    deposed_calls: list[str]
    """Each call of the killed leader answered after the takeover: `Method->STATUS`."""
    deposed_refused: int
    deposed_landed: list[str]
    without_pool: list[str]
    not_ready: list[str]
    unfinished: list[str]

    @property
    def ok(self) -> bool:
        return not (self.deposed_landed or self.without_pool or self.not_ready or self.unfinished)

    def line(self) -> str:
        return (
            f"run {self.run:2d}: kill after {self.delay_s:4.2f}s, "
            f"moves {self.moves_asked} ({self.under_way} under way), "
            f"takeover {self.takeover_s:5.2f}s, deposed {'+'.join(self.deposed_calls) or 'none'} "
            f"(refused {self.deposed_refused}, landed {len(self.deposed_landed)}), "
            f"without pool {len(self.without_pool)}, not ready {len(self.not_ready)}, "
            f"unfinished moves {len(self.unfinished)}"
            + ("" if self.ok else f"  FAILED {self.__dict__}")
        )


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidepool", *args]


def _engine_argv(targets: str, instance_id: str, lang: str) -> list[str]:
    """An engine stub with a fast model load, so a move takes about a second."""
    return _python(
        "engine-stub", "--registry", targets, "--instance-id", instance_id, "--lang", lang,
        "--model-load-s", "0.5", "--drain-timeout-s", "2", "--speed", "50",
    )  # fmt: skip


@dataclass
class Stack:
    """The processes and taps of one run."""

    children: Children
    replicas: list[str] = field(default_factory=list)
    taps: dict[str, list[Tap]] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)
    schedulers: dict[str, Child] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    async def start(self, endpoint: str, policy: Path) -> None:
        replica = (
            "registry", "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            "--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-prefix", "/bench",
            "--heartbeat-interval-s", "0.25", "--ttl-s", "1", "--etcd-lease-ttl-s", "2",
        )  # fmt: skip
        started = await asyncio.gather(
            *(self.children.start(f"registry-{n}", _python(*replica)) for n in "ab")
        )
        self.replicas = [c.fields["grpc"] for c in started]
        targets = ",".join(self.replicas)
        await asyncio.gather(
            *(self.children.start(id_, _engine_argv(targets, id_, lang)) for id_, lang in ENGINES)
        )
        for holder in ("sched-a", "sched-b"):
            self.gates[holder] = Gate()
            self.taps[holder] = [
                Tap(holder, r, self.calls, self.gates[holder]) for r in self.replicas
            ]
            for tap in self.taps[holder]:
                await tap.start()
            self.schedulers[holder] = await self.children.start(
                holder,
                _python(
                    "scheduler", "run", "--policy", str(policy), "--id", holder,
                    "--registry", ",".join(t.address for t in self.taps[holder]),
                    "--http-listen", "127.0.0.1:0",
                ),
            )  # fmt: skip
            if holder == "sched-a":  # the first one leads before the standby starts
                await _until(lambda: self._holder_is("sched-a"), 15.0, "sched-a did not lead")

    async def _holder_is(self, holder: str) -> bool:
        async with grpc.aio.insecure_channel(self.replicas[0]) as channel:
            held = await pb_grpc.SchedulingStub(channel).GetLeadership(
                pb.GetLeadershipRequest(), timeout=CALL_TIMEOUT_S
            )
        return bool(held.holder == holder)

    async def close(self) -> None:
        await self.children.stop_all()
        for taps in self.taps.values():
            for tap in taps:
                await tap.close()


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll the async `check` until it holds; the seconds it took (TimeoutError naming `what`)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what} within {timeout_s:g}s")
        await asyncio.sleep(0.05)  # polling the registry; it has no event for this
    return time.monotonic() - started


class Observer:
    """Reads the registry through replica B, as an operator's `ctl` would."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.registry = pb_grpc.RegistryStub(self.channel)
        self.scheduling = pb_grpc.SchedulingStub(self.channel)

    async def instances(self) -> list[pb.Instance]:
        response = await self.registry.ListInstances(
            pb.ListInstancesRequest(), timeout=CALL_TIMEOUT_S
        )
        return list(response.instances)

    async def moves(self) -> list[pb.Move]:
        response = await self.scheduling.ListMoves(pb.ListMovesRequest(), timeout=CALL_TIMEOUT_S)
        return list(response.moves)

    async def holder(self) -> str:
        held = await self.scheduling.GetLeadership(
            pb.GetLeadershipRequest(), timeout=CALL_TIMEOUT_S
        )
        return str(held.holder)

    async def move(self, instance_id: str, to_pool: str) -> None:
        move = pb.Move(instance_id=instance_id, to_pool=to_pool, state=pb.Move.STATE_PENDING)
        await self.scheduling.PutMove(pb.PutMoveRequest(move=move), timeout=CALL_TIMEOUT_S)

    async def all_placed(self) -> bool:
        instances = await self.instances()
        return len(instances) == len(ENGINES) and all(i.labels.get("pool") for i in instances)

    async def settled(self) -> bool:
        moves_done = all(m.state in FINISHED for m in await self.moves())
        return moves_done and not _misplaced(await self.instances())[1]


def _misplaced(instances: list[pb.Instance]) -> tuple[list[str], list[str]]:
    """(ids without a pool, ids not ready or drained) among `instances` and ENGINES."""
    seen = {i.id: i for i in instances}
    without = [e for e, _ in ENGINES if not (e in seen and seen[e].labels.get("pool"))]
    not_ready = [
        e for e, _ in ENGINES
        if e not in seen or seen[e].state != pb.INSTANCE_STATE_READY or seen[e].admin_drained
    ]  # fmt: skip
    return without, not_ready


async def _ask_moves(observer: Observer, rng: random.Random) -> int:
    """One engine out of one pool or of each (never emptying a pool), to the other pool."""
    by_pool: dict[str, list[str]] = {}
    for instance in await observer.instances():
        by_pool.setdefault(instance.labels["pool"], []).append(instance.id)
    picked = [
        (rng.choice(sorted(ids)), "en-public" if pool == "zh-public" else "zh-public")
        for pool, ids in sorted(by_pool.items())
        if len(ids) > 1
    ]
    picked = rng.sample(picked, rng.randint(1, len(picked)))
    for instance_id, to_pool in picked:
        await observer.move(instance_id, to_pool)
    return len(picked)


async def one_run(run: int, rng: random.Random, base: Path) -> RunResult:
    """Start the stack, kill the leader at a random moment during moves, check the end state."""
    (base / "logs").mkdir(parents=True)
    policy = base / "policy.toml"
    policy.write_text(POLICY)
    with etcd_member(base) as endpoint:
        stack = Stack(Children(base / "logs"))
        try:
            await stack.start(endpoint, policy)
            return await _scenario(run, rng, stack)
        finally:
            await stack.close()


@dataclass(frozen=True)
class Killed:
    """When and how the leader was killed."""

    delay_s: float
    moves_asked: int
    under_way: int
    at: float


async def _kill_during_moves(rng: random.Random, stack: Stack, observer: Observer) -> Killed:
    """Ask for moves, then at a random moment hold the leader's next write and kill it."""
    await _until(observer.all_placed, 15.0, "the leader did not place every engine")
    moves_asked = await _ask_moves(observer, rng)
    delay_s = rng.uniform(0.0, 1.5)  # a random moment while the moves are under way
    await asyncio.sleep(delay_s)
    gate = stack.gates["sched-a"]
    gate.armed = True  # the leader's next write is "on the wire" when it dies
    await asyncio.wait_for(gate.captured.wait(), TAKEOVER_LIMIT_S)
    stack.schedulers["sched-a"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await stack.schedulers["sched-a"].wait()
    # Nobody leads until the standby takes over, so this is the moves' state at the kill.
    under_way = [m.id for m in await observer.moves() if m.state not in FINISHED]
    return Killed(delay_s, moves_asked, len(under_way), killed_at)


async def _scenario(run: int, rng: random.Random, stack: Stack) -> RunResult:
    observer = Observer(stack.replicas[1])
    try:
        killed = await _kill_during_moves(rng, stack, observer)

        async def b_leads() -> bool:
            return await observer.holder() == "sched-b"

        await _until(b_leads, TAKEOVER_LIMIT_S, "sched-b did not take the leadership")
        takeover_at = time.monotonic()
        stack.gates["sched-a"].flowing.set()  # its last calls reach the replicas now
        for tap in stack.taps["sched-a"]:
            await asyncio.gather(*tap.forwards, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await _until(observer.settled, SETTLE_LIMIT_S, "the fleet did not settle")
        without_pool, not_ready = _misplaced(await observer.instances())
        unfinished = [f"{m.instance_id}:{m.state}" for m in await observer.moves()
                      if m.state not in FINISHED]  # fmt: skip
    finally:
        await observer.channel.close()
    deposed = [
        c for c in stack.calls
        if c.scheduler == "sched-a" and (c.held or c.done_at > takeover_at)
    ]  # fmt: skip
    landed = [
        f"{c.method} fence={c.fence}" for c in deposed
        if (c.is_leader_write and c.code == "OK") or c.granted
    ]  # fmt: skip
    return RunResult(
        run=run,
        delay_s=killed.delay_s,
        moves_asked=killed.moves_asked,
        under_way=killed.under_way,
        takeover_s=takeover_at - killed.at,
        deposed_calls=[f"{c.method.rsplit('/', 1)[1]}->{c.code}" for c in deposed],
        deposed_refused=sum(c.code == "FAILED_PRECONDITION" for c in deposed),
        deposed_landed=landed,
        without_pool=without_pool,
        not_ready=not_ready,
        unfinished=unfinished,
    )


# ---- the benchmark -------------------------------------------------------------------------


async def run_all(runs: int, seed: int) -> list[RunResult]:
    results = []
    for run in range(1, runs + 1):
        rng = random.Random(seed * 1000 + run)
        with tempfile.TemporaryDirectory(prefix="tidepool-failover-") as tmp:
            result = await asyncio.wait_for(one_run(run, rng, Path(tmp)), 60)
        print(result.line(), flush=True)
        results.append(result)
    return results


def summary(results: Sequence[RunResult]) -> list[str]:
    takeovers = [r.takeover_s for r in results]
    return [
        f"runs {len(results)}, failed {sum(not r.ok for r in results)}, "
        f"killed with a move under way {sum(r.under_way > 0 for r in results)}",
        f"deposed calls released after the takeover {sum(len(r.deposed_calls) for r in results)}: "
        f"refused FAILED_PRECONDITION {sum(r.deposed_refused for r in results)}, "
        f"writes landed {sum(len(r.deposed_landed) for r in results)}",
        f"engines without a pool at the end {sum(len(r.without_pool) for r in results)}, "
        f"not ready or drained {sum(len(r.not_ready) for r in results)}, "
        f"moves unfinished {sum(len(r.unfinished) for r in results)}",
        f"takeover after kill -9: median {statistics.median(takeovers):.2f}s, "
        f"max {max(takeovers):.2f}s",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.scheduler_failover_etcd",
        description="Kill -9 the scheduler leader on etcd during moves; check fencing and pools.",
    )
    parser.add_argument("--runs", type=int, default=20, help="randomized runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random moments")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "loadtest.scheduler_failover_etcd", *sys.argv[1:]]
    print(f"command: {shlex.join(command)}")
    results = asyncio.run(run_all(args.runs, args.seed))
    for line in summary(results):
        print(line)
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}  cpus: {os.cpu_count()}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
