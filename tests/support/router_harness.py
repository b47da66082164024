"""A registry, echo engines and routers as real processes on loopback, for router tests.

`echo_stack(tmp_dir, spec)` starts a registry process, puts the spec's aliases
and tenant routes, starts the echo engines (in parallel), then the routers, and
waits (bounded) until every router routes to every engine each alias selects.
It stops everything afterwards: SIGTERM to all at once, SIGKILL for stragglers.
Test modules wrap it in a module-scoped fixture so one stack serves many tests.

To run a suite against both data paths cheaply, a spec names one router per
path (`each_data_path`) in the same stack, so engines and registry are shared,
and a module-scoped fixture parametrized over `DATA_PATHS` hands each test the
stack `on` one of them.

Also here: a port that refuses connections (for a fake instance), a scraper
that turns a router's /metrics into numbers, the engines' /stats, and metadata
helpers for the routing keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.support.echo_engine import READY_PREFIX as ENGINE_READY
from tests.support.echo_engine import method_path
from tests.support.processes import RunningProcess, python_args, spawn, wait_until
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

REGISTRY_READY = "tidepool registry ready"
ROUTER_READY = "tidepool router ready"
START_S = 20.0
"""Longest wait for one process's ready line (a loaded 2-core machine is slow)."""
VIEW_S = 10.0
"""Longest wait for a router to see every engine an alias selects."""
STOP_S = 5.0
HTTP_TIMEOUT_S = 5.0

UNARY = method_path("Unary")
MUTATE = method_path("Mutate")
CLIENT_STREAM = method_path("ClientStream")
SERVER_STREAM = method_path("ServerStream")
BIDI = method_path("Bidi")

Metadata = tuple[tuple[str, str | bytes], ...]
DATA_PATHS = ("grpc", "relay")
"""The router's data paths (`--data-path`); `each_data_path` names a router after each."""


def each_data_path(flags: Sequence[str] = ()) -> dict[str, list[str]]:
    """`StackSpec.routers` for one router per data path, each with `flags`."""
    return {path: [*flags, "--data-path", path] for path in DATA_PATHS}


@dataclass(frozen=True)
class EngineSpec:
    """One echo engine: its id, labels, weight, and optionally a fake advertised address."""

    instance_id: str
    labels: Mapping[str, str]
    weight: int = 100
    advertise: str | None = None


@dataclass(frozen=True)
class StackSpec:
    """What `echo_stack` starts. `routers` maps a name to that router's extra flags."""

    engines: Sequence[EngineSpec]
    aliases: Mapping[str, str]
    """Alias name → label selector."""
    routers: Mapping[str, Sequence[str]]
    tenants: Mapping[tuple[str, str], Sequence[str]] = field(default_factory=dict)
    """(tenant, lang) → ordered aliases."""


@dataclass
class EchoStack:
    registry: RunningProcess
    engines: dict[str, RunningProcess]
    routers: dict[str, RunningProcess]
    processes: list[RunningProcess]
    default_router: str = "main"
    """The router that `router()` and `metrics_async()` mean when given no name."""

    def on(self, router: str) -> EchoStack:
        """The same stack, with `router` as the default one."""
        assert router in self.routers, f"no router {router!r} in {sorted(self.routers)}"
        return dataclasses.replace(self, default_router=router)

    def router(self, name: str | None = None) -> RunningProcess:
        return self.routers[name or self.default_router]

    def stats(self, instance_id: str) -> dict[str, Any]:
        """The engine's /stats: calls, cancelled and deadlines, by method name."""
        return engine_stats(self.engines[instance_id])

    def calls(self, method: str) -> dict[str, int]:
        """Calls of `method` (a short name, e.g. "Unary") per engine id."""
        return {
            engine_id: int(self.stats(engine_id)["calls"].get(method, 0))
            for engine_id in self.engines
        }

    async def calls_async(self, method: str) -> dict[str, int]:
        """`calls` off the event loop (it reads HTTP synchronously)."""
        return await asyncio.to_thread(self.calls, method)

    async def stats_async(self, instance_id: str) -> dict[str, Any]:
        """`stats` off the event loop."""
        return await asyncio.to_thread(self.stats, instance_id)

    async def metrics_async(self, router: str | None = None) -> Samples:
        """The router's /metrics, scraped off the event loop."""
        return await asyncio.to_thread(scrape_metrics, self.router(router).http)

    def describe(self) -> str:
        """Every process's output tail, for a failure message."""
        return "\n\n".join(p.describe("process:") for p in self.processes)


# ---- processes ---------------------------------------------------------------


def registry_args(data_dir: Path) -> list[str]:
    return python_args(
        "registry.server",
        *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
        *("--data-dir", str(data_dir)),
        # Short beats, a generous TTL and no stall verdict: a test that holds a call
        # hung for a few seconds must not make the registry give up on its engine.
        *("--heartbeat-interval-s", "0.5", "--ttl-s", "5", "--stall-after-s", "60"),
    )


def engine_args(registry: str, spec: EngineSpec) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in spec.labels.items())
    args = [
        sys.executable,
        *("-m", "tests.support.echo_engine"),
        *("--registry", registry, "--labels", labels),
        *("--weight", str(spec.weight), "--instance-id", spec.instance_id),
    ]
    if spec.advertise:
        args += ["--advertise", spec.advertise]
    return args


def router_args(registry: str, state_file: Path, *flags: str) -> list[str]:
    return python_args(
        "router.server",
        *("--registry", registry, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
        *("--state-file", str(state_file)),
        # No ramp: a fresh instance gets its full share at once, so picks are predictable.
        *("--slow-start-s", "0"),
        *flags,
    )


def start_all(
    started: list[RunningProcess], commands: Sequence[Sequence[str]], ready_prefix: str
) -> list[RunningProcess]:
    """Spawn every command at once, then wait for each ready line (they start in parallel)."""
    processes = []
    for args in commands:
        process = spawn(args)
        started.append(process)
        processes.append(process)
    for process in processes:
        process.wait_ready(ready_prefix, START_S)
    return processes


def stop_all(processes: Sequence[RunningProcess], timeout_s: float = STOP_S) -> None:
    """SIGTERM everything at once, then wait for each; SIGKILL what outlives `timeout_s`."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.stop(timeout_s=max(deadline - time.monotonic(), 0.1))


@contextlib.contextmanager
def echo_stack(tmp_dir: Path, spec: StackSpec) -> Iterator[EchoStack]:
    """Start registry, aliases, engines and routers; stop all of them afterwards."""
    started: list[RunningProcess] = []
    try:
        (registry,) = start_all(started, [registry_args(tmp_dir / "registry")], REGISTRY_READY)
        with grpc.insecure_channel(registry.grpc) as channel:
            admin = pb_grpc.AdminStub(channel)
            for name, selector in spec.aliases.items():
                rule = pb.Alias(name=name, selector=selector)
                admin.PutAlias(pb.PutAliasRequest(alias=rule), timeout=HTTP_TIMEOUT_S)
            for (tenant, lang), aliases in spec.tenants.items():
                route = pb.TenantRoute(tenant=tenant, lang=lang, aliases=list(aliases))
                admin.PutTenant(pb.PutTenantRequest(route=route), timeout=HTTP_TIMEOUT_S)
        engines = start_all(
            started, [engine_args(registry.grpc, e) for e in spec.engines], ENGINE_READY
        )
        routers = start_all(
            started,
            [
                router_args(registry.grpc, tmp_dir / f"router-{name}.json", *flags)
                for name, flags in spec.routers.items()
            ],
            ROUTER_READY,
        )
        stack = EchoStack(
            registry=registry,
            engines={e.fields["id"]: e for e in engines},
            routers=dict(zip(spec.routers, routers, strict=True)),
            processes=started,
        )
        for router in stack.routers.values():
            for alias, count in _selected(spec).items():
                wait_routable(router, alias, count)
        yield stack
    finally:
        # Routers first, so none sees its engines leave; then engines, then the registry.
        stop_all(started[::-1])


def _selected(spec: StackSpec) -> dict[str, int]:
    """How many of the spec's engines each alias's selector picks."""
    return {
        alias: sum(1 for e in spec.engines if _matches(selector, e.labels))
        for alias, selector in spec.aliases.items()
    }


def _matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, values = term.partition("=")
        if labels.get(key.strip()) not in {v.strip() for v in values.split("|")}:
            return False
    return True


def wait_routable(
    router: RunningProcess, alias: str, count: int, timeout_s: float = VIEW_S
) -> None:
    """Wait until `router` counts exactly `count` routable instances in `alias`."""

    def seen() -> float:
        return metric(scrape_metrics(router.http), "tidepool_router_endpoints", alias=alias,
                      state="routable")  # fmt: skip

    wait_until(
        lambda: seen() == count,
        timeout_s,
        lambda: (
            f"router never saw {count} routable instance(s) in alias {alias!r} "
            f"(saw {seen():g})\n{router.describe('router')}"
        ),
    )


class RefusingPort:
    """A loopback port that refuses every connection: bound, never listening.

    Held for the life of the object so no other process can take the port meanwhile.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RefusingPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- HTTP, metrics and stats ---------------------------------------------------


def http_get(address: str, path: str) -> tuple[int, str]:
    """(status, body) of GET http://address/path; error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def http_json(address: str, path: str) -> tuple[int, Any]:
    status, body = http_get(address, path)
    return status, json.loads(body)


def engine_stats(engine: RunningProcess) -> dict[str, Any]:
    status, body = http_json(engine.http, "/stats")
    assert status == 200, body
    return dict(body)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Samples:
    """Prometheus text format → {(name, labels): value}."""
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def scrape_metrics(http_address: str) -> Samples:
    status, body = http_get(http_address, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, pairs), v in samples.items() if n == name and wanted <= pairs)


# ---- calls ---------------------------------------------------------------------


def alias_key(alias: str, *extra: tuple[str, str | bytes]) -> Metadata:
    return (("x-tidepool-alias", alias), *extra)


def trailer(metadata: Any, key: str) -> str | bytes | None:
    """The value of `key` in a call's metadata (None if absent)."""
    for item_key, value in metadata or ():
        if item_key == key:
            return value  # type: ignore[no-any-return]
    return None


def pairs(metadata: Any, prefix: str) -> list[tuple[str, str | bytes]]:
    """The (key, value) pairs of `metadata` whose key starts with `prefix`, in order."""
    return [(k, v) for k, v in metadata or () if k.startswith(prefix)]
