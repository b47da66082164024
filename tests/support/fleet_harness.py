"""A whole fleet as real processes for router tests: registry, engine stubs, routers, ctl.

Everything runs on 127.0.0.1 as separate processes started through the `tidepool`
command, so signals (SIGKILL, SIGTERM) and sockets behave as in production.

- `Fleet` starts and tracks the processes of one test (a `ProcessSet` stops them).
- `PartitionableLink` sits between engines and the registry: `partition()` stops
  every byte both ways while keeping the connections open (no RST, no FIN), so the
  registry sees heartbeats stop without a stream break and lets leases lapse by TTL
  while the engines themselves keep answering routers. That is the only way to make
  the registry call a live engine unhealthy, which panic and last resort need.
- `Traffic` sends Evaluate calls continuously (paced, with concurrency) and records
  which engine answered each and every error the caller saw.
- `Metrics` parses a Prometheus text page.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    REPO_ROOT,
    ProcessSet,
    RunningProcess,
    child_env,
    wait_until_async,
)
from tidepool.engine.v1 import evaluator_pb2 as epb
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ENGINE_TOKEN, READ_TOKEN, ADMIN_TOKEN = "fleet-engine", "fleet-reader", "fleet-admin"
REGISTRY_READY = "tidepool registry ready"
ENGINE_READY = "tidepool engine-stub ready"
ROUTER_READY = "tidepool router ready"
SCHEDULER_READY = "tidepool scheduler ready"
START_S = 30.0
CALL_TIMEOUT_S = 5.0
EVALUATE = "/tidepool.engine.v1.Evaluator/Evaluate"
AUDIO = bytes(range(256)) * 12 + bytes(128)  # 3 200 bytes: 0.1 s of 16 kHz 16-bit PCM
ENGINE_SPEED = "50"
"""Simulated GPU speed: a request costs ~0.2 ms of "GPU", so the CPU is the only limit."""


def tidepool_args(*args: str) -> list[str]:
    """`python -m tidepool ARGS` under this interpreter."""
    return [sys.executable, "-m", "tidepool", *args]


def evaluate_request(lang: str = "zh") -> epb.EvaluateRequest:
    return epb.EvaluateRequest(audio=AUDIO, text="ni hao shi jie", lang=lang)


# ---- processes -----------------------------------------------------------------------------


@dataclass
class Engine:
    """One engine-stub process and the id it registered under."""

    id: str
    process: RunningProcess

    @property
    def grpc(self) -> str:
        return self.process.grpc


@dataclass
class Router:
    """One router process, with its gRPC and HTTP addresses."""

    process: RunningProcess
    state_file: Path

    @property
    def grpc(self) -> str:
        return self.process.grpc

    @property
    def http(self) -> str:
        return self.process.http

    async def metrics(self) -> Metrics:
        status, body = await http_get(self.http, "/metrics")
        assert status == 200, f"router /metrics answered {status}: {body}"
        return Metrics.parse(body)

    async def readyz(self) -> tuple[int, str]:
        return await http_get(self.http, "/readyz")


class Fleet:
    """Registry, engines and routers of one test; `close()` (or `with`) stops them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.processes = ProcessSet()
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "registry"
        self.registry: RunningProcess | None = None
        self.registry_args: list[str] = []
        self._links: list[PartitionableLink] = []
        self._started: list[RunningProcess] = []
        self._routers = itertools.count(1)

    # ---- registry ----------------------------------------------------------

    @property
    def registry_address(self) -> str:
        assert self.registry is not None, "start_registry() first"
        return self.registry.grpc

    def start_registry(
        self, *, ttl_s: float = 1.0, heartbeat_interval_s: float = 0.25
    ) -> RunningProcess:
        """A registry on a free loopback port with short leases.

        Self-preservation is off, since a test that partitions most of a pool wants
        the registry to believe it; the restart grace outlasts the engines' longest
        reconnect wait (1 s), so a restarted registry declares nobody dead.
        """
        self.registry_args = [
            *("--data-dir", str(self.data_dir)),
            *("--engine-token", ENGINE_TOKEN, "--read-token", READ_TOKEN),
            *("--admin-token", ADMIN_TOKEN),
            *("--heartbeat-interval-s", f"{heartbeat_interval_s:g}", "--ttl-s", f"{ttl_s:g}"),
            *("--restart-grace-s", f"{max(ttl_s, 10.0):g}"),
            *("--self-preservation-min-instances", "1000"),
        ]
        self.registry = self._start(
            tidepool_args(
                "registry", "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                *self.registry_args,
            ),
            REGISTRY_READY,
        )  # fmt: skip
        return self.registry

    def restart_registry(self) -> RunningProcess:
        """A new registry process on the same port and data directory as the last one."""
        assert self.registry is not None
        address = self.registry.grpc
        assert self.registry.returncode is not None, "stop the running registry first"
        self.registry = self._start(
            tidepool_args(
                "registry", "serve", "--listen", address, "--http-listen", "127.0.0.1:0",
                *self.registry_args,
            ),
            REGISTRY_READY,
        )  # fmt: skip
        return self.registry

    # ---- engines -----------------------------------------------------------

    def start_engines(self, *specs: EngineSpec) -> list[Engine]:
        """Start every engine at once (they load in parallel), then wait for each."""
        spawned = [(spec, self._spawn(spec.args(self.registry_address))) for spec in specs]
        engines: list[Engine] = []
        for spec, process in spawned:
            process.wait_ready(ENGINE_READY, START_S)
            assert process.fields.get("id") == spec.id, process.describe("unexpected engine id")
            engines.append(Engine(spec.id, process))
        return engines

    def link(self) -> PartitionableLink:
        """A link to the registry that a test can partition (engines register through it)."""
        link = PartitionableLink(self.registry_address)
        self._links.append(link)
        return link

    # ---- routers -----------------------------------------------------------

    def start_router(self, *flags: str, state_file: Path | None = None) -> Router:
        """A router on port 0 with its own view file (or `state_file`, to share one)."""
        path = state_file or self.tmp_path / f"router-{next(self._routers)}" / "view.json"
        process = self._start(
            tidepool_args(
                "router", "serve",
                *("--registry", self.registry_address, "--token", READ_TOKEN),
                *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
                *("--state-file", str(path)),
                *flags,
            ),
            ROUTER_READY,
        )  # fmt: skip
        return Router(process, path)

    # ---- scheduler ---------------------------------------------------------

    def start_scheduler(
        self, policy: str, *flags: str, holder: str = "sched-a", role: str = "leader"
    ) -> RunningProcess:
        """A scheduler with `policy` (TOML text), waited for until it announces `role`."""
        path = self.tmp_path / f"policy-{holder}.toml"
        path.write_text(policy)
        return self._start(
            tidepool_args(
                "scheduler", "run",
                *("--registry", self.registry_address, "--token", ADMIN_TOKEN),
                *("--engine-token", ENGINE_TOKEN, "--policy", str(path)),
                *("--http-listen", "127.0.0.1:0", "--id", holder),
                *flags,
            ),
            f"{SCHEDULER_READY} role={role}",
        )  # fmt: skip

    async def instances(self) -> dict[str, pb.Instance]:
        """Every instance as the registry lists it, by id."""
        metadata = (("authorization", f"Bearer {READ_TOKEN}"),)
        async with grpc.aio.insecure_channel(self.registry_address) as channel:
            listed = await pb_grpc.RegistryStub(channel).ListInstances(
                pb.ListInstancesRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        return {i.id: i for i in listed.instances}

    async def moves(self) -> list[pb.Move]:
        metadata = (("authorization", f"Bearer {READ_TOKEN}"),)
        async with grpc.aio.insecure_channel(self.registry_address) as channel:
            listed = await pb_grpc.SchedulingStub(channel).ListMoves(
                pb.ListMovesRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        return list(listed.moves)

    async def pools(self) -> dict[str, str]:
        """Instance id -> its `pool` label ("" when none)."""
        return {i.id: i.labels.get("pool", "") for i in (await self.instances()).values()}

    # ---- administration ----------------------------------------------------

    def ctl(self, *args: str) -> str:
        """`tidepool ctl ARGS` with the admin token; its stdout, or AssertionError."""
        command = tidepool_args(
            "ctl", "--registry", self.registry_address, "--token", ADMIN_TOKEN, *args
        )
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=START_S,
            env=child_env(),
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 0, (
            f"`tidepool ctl {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}"
        )
        return done.stdout

    def put_aliases(self, aliases: dict[str, str]) -> None:
        """Create or replace aliases (name -> selector) over Admin.PutAlias."""
        metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        with grpc.insecure_channel(self.registry_address) as channel:
            admin = pb_grpc.AdminStub(channel)
            for name, selector in aliases.items():
                alias = pb.Alias(name=name, selector=selector, service="speech")
                admin.PutAlias(
                    pb.PutAliasRequest(alias=alias), metadata=metadata, timeout=CALL_TIMEOUT_S
                )

    async def instance_states(self) -> dict[str, str]:
        """Instance id -> state name ("INSTANCE_STATE_READY", ...) as the registry says."""
        metadata = (("authorization", f"Bearer {READ_TOKEN}"),)
        async with grpc.aio.insecure_channel(self.registry_address) as channel:
            listed = await pb_grpc.RegistryStub(channel).ListInstances(
                pb.ListInstancesRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        return {i.id: pb.InstanceState.Name(i.state) for i in listed.instances}

    # ---- plumbing ----------------------------------------------------------

    def _spawn(self, args: Sequence[str]) -> RunningProcess:
        process = self.processes.spawn(args)
        self._started.append(process)
        return process

    def _start(self, args: Sequence[str], ready: str) -> RunningProcess:
        process = self._spawn(args)
        process.wait_ready(ready, START_S)
        return process

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process still running, then close every link.

        SIGKILL, not SIGTERM: graceful stops are what some tests check, and nothing
        after a test needs them, so the teardown takes no drain time.
        """
        for process in reversed(self._started):
            process.kill()
        self.processes.close()
        for link in self._links:
            link.close()
        # An unclosed pipe is a ResourceWarning, which this suite treats as an error.
        for process in self._started:
            for pipe in (process.popen.stdout, process.popen.stderr):
                if pipe is not None:
                    pipe.close()


@dataclass(frozen=True)
class EngineSpec:
    """How to start one engine stub."""

    id: str
    weight: int = 100
    pool: str | None = None
    lang: str = "zh"
    slots: int = 8
    speed: str = ENGINE_SPEED
    model_load_s: float = 0.0
    via: PartitionableLink | None = None
    """Reach the registry through this link instead of directly."""
    extra: tuple[str, ...] = ()

    def args(self, registry: str) -> list[str]:
        pool = ("--pool", self.pool) if self.pool else ()
        target = self.via.address if self.via is not None else registry
        return tidepool_args(
            "engine-stub",
            *("--registry", target, "--token", ENGINE_TOKEN),
            *("--instance-id", self.id, "--lang", self.lang, "--weight", str(self.weight)),
            *("--slots", str(self.slots), "--speed", self.speed),
            *("--model-load-s", f"{self.model_load_s:g}", "--drain-timeout-s", "5"),
            *pool,
            *self.extra,
        )


# ---- a link the test can cut -------------------------------------------------------------


class PartitionableLink:
    """A TCP relay to `target` that can be partitioned and healed.

    Partitioned, it moves no bytes either way and closes nothing, as a network
    partition does: the registry hears nothing, the engine's writes sit in buffers,
    and neither side sees a reset until the link heals. Threads, not the test's event
    loop, so a test blocked on something else never stalls the relayed heartbeats.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._listener.accept()
            except OSError:
                return
            try:
                outbound = socket.create_connection(self._target, timeout=5)
                outbound.settimeout(None)
            except OSError:
                inbound.close()
                continue
            with self._lock:
                if self._closed:
                    inbound.close()
                    outbound.close()
                    return
                self._sockets.update((inbound, outbound))
                for src, dst in ((inbound, outbound), (outbound, inbound)):
                    thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()  # hold what was read while partitioned
                if not data or self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # A close or reset is held back too: a partition carries no news.
            self._flowing.wait()
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        for sock in sockets:
            sock.close()


# ---- metrics and probes --------------------------------------------------------------------


async def http_get(address: str, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    return await asyncio.to_thread(get)


@dataclass(frozen=True)
class Metrics:
    """Samples of one scrape: (sample name, sorted labels) -> value."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, got), v in self.samples.items() if n == name and wanted <= set(got))

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly `labels`, or None when it is not exposed."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """`total(name, **labels)` broken down by the value of `label`."""
        wanted = set(labels.items())
        out: dict[str, float] = {}
        for (n, got), v in self.samples.items():
            if n == name and wanted <= set(got):
                key = dict(got).get(label)
                if key is not None:
                    out[key] = out.get(key, 0.0) + v
        return out


async def wait_for_metric(
    router: Router,
    predicate: Callable[[Metrics], bool],
    timeout_s: float,
    what: str,
) -> Metrics:
    """Scrape until `predicate` holds; the scrape that satisfied it."""
    seen: list[Metrics] = []

    async def check() -> bool:
        metrics = await router.metrics()
        seen[:] = [metrics]
        return predicate(metrics)

    def message() -> str:
        return f"router metrics never showed {what}; last scrape: {_router_samples(seen)}"

    await wait_until_async(check, timeout_s, message, interval_s=0.05)
    return seen[0]


async def wait_routable(router: Router, alias: str, count: int, timeout_s: float = 10.0) -> None:
    """Until the router counts `count` routable endpoints in `alias`."""
    await wait_for_metric(
        router,
        lambda m: m.value("tidepool_router_endpoints", alias=alias, state="routable") == count,
        timeout_s,
        f"{count} routable endpoints in {alias!r}",
    )


def _router_samples(seen: list[Metrics]) -> str:
    if not seen:
        return "(none)"
    lines = [
        f"{name}{dict(labels)} = {value:g}"
        for (name, labels), value in sorted(seen[0].samples.items())
        if name.startswith("tidepool_router_") and not name.endswith("_created")
        and "_bucket" not in name and "attempt_seconds" not in name
    ]  # fmt: skip
    return "\n  " + "\n  ".join(lines)


# ---- traffic -------------------------------------------------------------------------------


class RouterCaller:
    """Evaluate through a router process; returns the id of the engine that answered."""

    def __init__(self, router: str, **routing: str) -> None:
        self._channel = grpc.aio.insecure_channel(router)
        self._call = self._channel.unary_unary(
            EVALUATE,
            request_serializer=epb.EvaluateRequest.SerializeToString,
            response_deserializer=epb.EvaluateResponse.FromString,
        )
        self._metadata = tuple((f"x-tidepool-{key}", value) for key, value in routing.items())
        self._request = evaluate_request(routing.get("lang", "zh"))

    async def __call__(self) -> str:
        response = await self._call(self._request, metadata=self._metadata, timeout=CALL_TIMEOUT_S)
        return str(response.engine_id)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> RouterCaller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def sequential(call: Callable[[], Awaitable[str]], count: int) -> list[str]:
    """`count` calls one after another; the engine of each, in order."""
    return [await call() for _ in range(count)]


@dataclass
class Traffic:
    """Calls `call` continuously from `concurrency` workers at about `rate_per_s` in all.

    Pacing keeps the load steady on a small machine (arrivals are scheduled, not
    sent as fast as answers come); `rate_per_s=None` sends back to back. Every
    answer is kept with its time, and every error the caller saw.
    """

    call: Callable[[], Awaitable[str]]
    concurrency: int = 8
    rate_per_s: float | None = 250.0
    answers: list[tuple[float, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _slots: Iterator[int] = field(default_factory=itertools.count)
    _started_at: float = 0.0
    _stopping: bool = False

    async def __aenter__(self) -> Traffic:
        self._started_at = time.monotonic()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while not self._stopping:
            if self.rate_per_s is not None:
                due = self._started_at + next(self._slots) / self.rate_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing, not synchronisation
            try:
                engine = await self.call()
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                details = error.details() if hasattr(error, "details") else str(error)
                self.errors.append((time.monotonic(), f"{code}: {details}"))
            except Exception as error:  # a broken caller counts against the test too
                self.errors.append((time.monotonic(), repr(error)))
            else:
                self.answers.append((time.monotonic(), engine))

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Answers per engine between `since` and `until` (monotonic seconds)."""
        return Counter(engine for at, engine in self.answers if since <= at < until)

    async def wait_answers(self, count: int, since: float, timeout_s: float = 15.0) -> None:
        """Until `count` more answers arrived after `since` (a window of real traffic)."""
        await wait_until_async(
            lambda: sum(1 for at, _ in self.answers if at >= since) >= count,
            timeout_s,
            lambda: (
                f"only {sum(1 for at, _ in self.answers if at >= since)} of {count} answers; "
                f"errors: {self.errors[-5:]}"
            ),
        )

    def assert_no_errors(self) -> None:
        assert not self.errors, (
            f"{len(self.errors)} client-visible errors out of "
            f"{len(self.errors) + len(self.answers)} calls; first: {self.errors[:5]}"
        )


# ---- scheduler tests -----------------------------------------------------------------------


def _read_metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {READ_TOKEN}"),)


async def leadership(fleet: Fleet) -> pb.Leadership:
    """Who holds the scheduler's leadership now, with its fence (GetLeadership)."""
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        held: pb.Leadership = await pb_grpc.SchedulingStub(channel).GetLeadership(
            pb.GetLeadershipRequest(), metadata=_read_metadata(), timeout=CALL_TIMEOUT_S
        )
    return held


async def list_pools(fleet: Fleet) -> pb.ListPoolsResponse:
    """The pool status the leader last published, with who published it (ListPools)."""
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        listed: pb.ListPoolsResponse = await pb_grpc.SchedulingStub(channel).ListPools(
            pb.ListPoolsRequest(), metadata=_read_metadata(), timeout=CALL_TIMEOUT_S
        )
    return listed


async def tenant_routes(fleet: Fleet) -> dict[tuple[str, str], list[str]]:
    """(tenant, lang) -> its published alias list, in order (ListTenants)."""
    async with grpc.aio.insecure_channel(fleet.registry_address) as channel:
        listed = await pb_grpc.RegistryStub(channel).ListTenants(
            pb.ListTenantsRequest(), metadata=_read_metadata(), timeout=CALL_TIMEOUT_S
        )
    return {(t.tenant, t.lang): list(t.aliases) for t in listed.tenants}


def run_ctl(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    """`tidepool ctl ARGS` with the admin token, whatever it exits with (bounded)."""
    return subprocess.run(
        tidepool_args("ctl", "--registry", fleet.registry_address, "--token", ADMIN_TOKEN, *args),
        capture_output=True,
        text=True,
        timeout=START_S,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )
