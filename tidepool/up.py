"""`tidepool up`: the whole stack on one machine, on the embedded store, until Ctrl-C.

With `--store etcd` the registry is a local etcd member and two replicas on it
(tidepool/up_etcd.py), and every client takes both.

It starts the registry, then the pool scheduler (with `--policy`, or a default
policy for this fleet written to the data directory), then a mixed fleet of
engine stubs across languages, tiers and weights that register without a pool
(the scheduler admits them into `zh-public` and `en-public` and creates those
aliases), then the router, and prints where everything listens and how to send
traffic. Ctrl-C (or SIGTERM) stops the router first (no new traffic), then the
scheduler (it hands back its leadership and stops engines it started), then
drains and stops the engines, then the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvloop

from scheduler.policy import DEFAULT_POLICY_TEXT
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import auth_metadata, open_channel
from tidepool.runtime.children import (
    TIDEPOOL,
    Child,
    ChildError,
    first_exit_async,
    prefixed,
    ready_all_async,
    start_child,
)
from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    add_options,
    host_port,
    options_for,
    parse_positive_float,
    resolve,
    setting,
)
from tidepool.runtime.signals import ShutdownSignals
from tidepool.up_etcd import LocalEtcd, start_registries

ENV = "TIDEPOOL_UP_"
READY_TIMEOUT_S = 60.0
ENGINE_STOP_S = 35.0
ADMISSION_TIMEOUT_S = 30.0
POLL_S = 0.2


@dataclass(frozen=True)
class EngineSpec:
    """One engine of the fleet: `lang/tier/weight/speed`."""

    lang: str
    tier: str
    weight: int
    speed: float

    def __str__(self) -> str:
        return f"{self.lang}/{self.tier}/{self.weight}/{self.speed:g}"


# Old IDC cards do ~60 % of a new cloud card's work; weights say so.
DEFAULT_FLEET = (
    "zh/idc/60/0.6,zh/cvm/100/1,zh/serverless/100/1,en/idc/60/0.6,en/cvm/100/1,en/serverless/80/0.8"
)


def parse_fleet(text: str) -> tuple[EngineSpec, ...]:
    specs = []
    for index, item in enumerate(t.strip() for t in text.split(",") if t.strip()):
        parts = item.split("/")
        if len(parts) != 4:
            raise ValueError(f"engine {index} {item!r} must be lang/tier/weight/speed")
        lang, tier, weight, speed = parts
        if lang not in ("zh", "en") or tier not in ("idc", "cvm", "serverless"):
            raise ValueError(f"engine {index} {item!r}: lang is zh|en, tier idc|cvm|serverless")
        specs.append(EngineSpec(lang, tier, int(weight), parse_positive_float(speed)))
    if not specs:
        raise ValueError("the fleet needs at least one engine")
    return tuple(specs)


def _store(text: str) -> str:
    if text not in ("embedded", "etcd"):
        raise ValueError(f"must be embedded or etcd, got {text!r}")
    return text


@dataclass(frozen=True)
class UpConfig:
    """What `tidepool up` starts; each field is also a flag, env var and config key."""

    data_dir: str = setting(".tidepool/up", "registry data directory", metavar="DIR")
    registry_listen: str = setting(
        "127.0.0.1:7700", "registry gRPC address", host_port, metavar="HOST:PORT"
    )
    registry_http_listen: str = setting(
        "127.0.0.1:7701", "registry /metrics and health address", host_port, metavar="HOST:PORT"
    )
    fleet: tuple[EngineSpec, ...] = setting(
        DEFAULT_FLEET, "engines to start, comma-separated lang/tier/weight/speed", parse_fleet
    )
    model_load_s: float = setting(
        1.0, "simulated model load time of each engine", parse_positive_float, metavar="S"
    )
    router_listen: str = setting(
        "127.0.0.1:7710", "router gRPC address (send traffic here)", host_port, metavar="HOST:PORT"
    )
    router_http_listen: str = setting(
        "127.0.0.1:7711",
        "router /metrics, health, /v1/resolve and /v1/endpoints address",
        host_port,
        metavar="HOST:PORT",
    )
    scheduler_http_listen: str = setting(
        "127.0.0.1:7720", "scheduler /metrics and health address", host_port, metavar="HOST:PORT"
    )
    policy: str | None = setting(
        None,
        "scheduler policy TOML (default: a policy for this fleet, written to the data dir)",
        metavar="FILE",
    )
    engine_token: str | None = setting(None, "engine token (registry and engines)")
    admin_token: str | None = setting(None, "admin token (registry)")
    store: str = setting(
        "embedded",
        "embedded (one registry) or etcd (a local etcd member and two registry replicas)",
        _store,
    )
    etcd_listen: str = setting(
        "127.0.0.1:7730", "with --store etcd: etcd's client address", host_port, metavar="HOST:PORT"
    )
    etcd_peer_listen: str = setting(
        "127.0.0.1:7731", "with --store etcd: etcd's peer address", host_port, metavar="HOST:PORT"
    )

    def __post_init__(self) -> None:
        if isinstance(self.fleet, str):  # the default, as text: one parser for both
            object.__setattr__(self, "fleet", parse_fleet(self.fleet))


OPTIONS = options_for(UpConfig, ENV)


def _registry_args(config: UpConfig) -> list[str]:
    args = [
        "registry",
        "serve",
        "--listen",
        str(config.registry_listen),
        "--http-listen",
        str(config.registry_http_listen),
        "--data-dir",
        str(config.data_dir),
    ]
    if config.engine_token:
        args += ["--engine-token", config.engine_token]
    if config.admin_token:
        args += ["--admin-token", config.admin_token]
    return args


def _engine_args(spec: EngineSpec, registry: str, config: UpConfig) -> list[str]:
    args = [
        "engine-stub",
        "--registry",
        registry,
        "--lang",
        spec.lang,
        "--tier",
        spec.tier,
        "--weight",
        str(spec.weight),
        "--speed",
        str(spec.speed),
        "--model-load-s",
        str(config.model_load_s),
    ]
    if config.engine_token:
        args += ["--token", str(config.engine_token)]
    return args


def _router_args(registry: str, config: UpConfig) -> list[str]:
    args = [
        "router",
        "serve",
        "--registry",
        registry,
        "--listen",
        str(config.router_listen),
        "--http-listen",
        str(config.router_http_listen),
        "--state-file",
        os.path.join(str(config.data_dir), "router-view.json"),
    ]
    if config.admin_token:
        args += ["--token", str(config.admin_token)]
    return args


def _policy_path(config: UpConfig) -> str:
    """The policy the scheduler runs: `--policy`, or the default written to the data dir."""
    if config.policy:
        return str(config.policy)
    path = Path(str(config.data_dir)) / "policy.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULT_POLICY_TEXT, encoding="utf-8")
    return str(path)


def _scheduler_args(registry: str, config: UpConfig) -> list[str]:
    args = [
        "scheduler",
        "run",
        "--registry",
        registry,
        "--policy",
        _policy_path(config),
        "--http-listen",
        str(config.scheduler_http_listen),
    ]
    if config.admin_token:
        args += ["--token", str(config.admin_token)]
    if config.engine_token:
        args += ["--engine-token", str(config.engine_token)]
    return args


async def wait_admitted(registry: str, token: str | None, ids: Sequence[str]) -> None:
    """Wait until the scheduler has labelled every engine of the fleet into a pool."""
    channel = open_channel(registry)
    try:
        stub = pb_grpc.RegistryStub(channel)
        metadata = auth_metadata(token)
        deadline = asyncio.get_running_loop().time() + ADMISSION_TIMEOUT_S
        waiting = set(ids)
        while True:
            listing = await stub.ListInstances(
                pb.ListInstancesRequest(), metadata=metadata, timeout=10
            )
            waiting -= {i.id for i in listing.instances if i.labels.get("pool")}
            if not waiting:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise ChildError(
                    f"the scheduler did not admit {sorted(waiting)[0]} into a pool within "
                    f"{ADMISSION_TIMEOUT_S:g}s; see its log lines above"
                )
            await asyncio.sleep(POLL_S)
    finally:
        await channel.close()


def command_prefix(
    argv0: str | None = None,
    main_module: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    executable: str = sys.executable,
) -> str:
    """How the user ran us, so the banner's commands work from where they stand.

    `python -m tidepool` (argv[0] is then tidepool/__main__.py) gives `python -m
    tidepool` with the interpreter as it is found on PATH, or its path when it is not
    (a venv that is not activated); a `tidepool` script gives `tidepool` when PATH
    finds that same script, else the path it was run by (`.venv/bin/tidepool`).
    """
    invoked = sys.argv[0] if argv0 is None else argv0
    if main_module is None:
        main_module = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", "")
    if main_module in ("tidepool", "tidepool.__main__"):
        return f"{_found_as(executable, 'python', which)} -m tidepool"
    if os.path.basename(invoked or "") != "tidepool":
        return "tidepool"
    return _found_as(invoked, "tidepool", which)


def _found_as(path: str, name: str, which: Callable[[str], str | None]) -> str:
    """`name` when PATH finds the same file as `path`, else `path` (relative if shorter)."""
    found = which(name)
    # abspath, not realpath: a venv's python is a symlink to the system one, which
    # would match the system `python` on PATH that cannot import tidepool.
    if found and os.path.abspath(found) == os.path.abspath(path):
        return name
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _start(name: str, args: Sequence[str]) -> Child:
    """`tidepool ARGS…` as a child whose output is relayed as `[name] line`; stderr is ours."""
    return start_child(name, [*TIDEPOOL, *args], on_stdout=prefixed(name))


async def _start_ready(name: str, args: Sequence[str]) -> Child:
    child = _start(name, args)
    await child.wait_ready_async(READY_TIMEOUT_S)
    return child


async def _start_fleet(config: UpConfig, registry: str) -> list[Child]:
    fleet: tuple[EngineSpec, ...] = config.fleet
    engines = [
        _start(f"engine-{i}-{spec.lang}-{spec.tier}", _engine_args(spec, registry, config))
        for i, spec in enumerate(fleet)
    ]
    await ready_all_async(engines, READY_TIMEOUT_S, ENGINE_STOP_S)
    _say(f"{'ENGINE':28} {'GRPC':22} {'HTTP':22} ID")
    for engine, spec in zip(engines, fleet, strict=True):
        f = engine.fields
        _say(f"{spec!s:28} {f.get('grpc', '?'):22} {f.get('http', '?'):22} {f.get('id', '?')}")
    return engines


async def run(config: UpConfig) -> int:
    with ShutdownSignals() as signals:
        return await _run(config, signals.received)


async def _run(config: UpConfig, stop: asyncio.Event) -> int:
    _say(f"tidepool up: starting the registry (data in {config.data_dir})")
    etcd = LocalEtcd(
        Path(str(config.data_dir)) / "etcd", config.etcd_listen, config.etcd_peer_listen
    )
    registry, replicas, address = await start_registries(
        None if config.store == "embedded" else etcd, _registry_args(config), _start_ready
    )
    engines: list[Child] = []
    scheduler: Child | None = None
    router: Child | None = None
    try:
        _say(f"registry  grpc={address}  http={registry.fields.get('http')}")
        scheduler = await _start_ready("scheduler", _scheduler_args(address, config))
        _say(f"scheduler role={scheduler.fields.get('role')}  http={scheduler.fields.get('http')}")
        engines = await _start_fleet(config, address)
        ids = [e.fields.get("id", "") for e in engines]
        await wait_admitted(registry.fields["grpc"], config.admin_token, ids)
        router = await _start_ready("router", _router_args(address, config))
        at = router.fields.get("grpc", "?")
        _say(f"router    grpc={at}  http={router.fields.get('http')}")
        me = command_prefix()
        _say(
            f"tidepool up: {len(engines)} engines ready behind the router. Try:\n"
            f"  {me} loadtest --target {at} --alias zh-public --rate 50 --duration 5\n"
            f"  {me} ctl --registry {address} instances\n"
            f"  {me} ctl --registry {address} pools\n"
            "Send gRPC to the router with metadata x-tidepool-alias: zh-public (or en-public). "
            "Ctrl-C stops everything."
        )
        return await _watch(stop, [registry, *replicas, scheduler, router], engines)
    finally:
        if router is not None:
            _say("tidepool up: stopping the router")
            await router.stop_async(15.0)
        if scheduler is not None:
            _say("tidepool up: stopping the scheduler")
            await scheduler.stop_async(ENGINE_STOP_S)
        _say("tidepool up: draining engines, then stopping the registry")
        await asyncio.gather(*(e.stop_async(ENGINE_STOP_S) for e in engines))
        await registry.stop_async(10.0)
        for child in replicas:  # the second replica, then etcd
            await child.stop_async(10.0)
        _say("tidepool up: stopped")


async def _watch(stop: asyncio.Event, vital: list[Child], engines: list[Child]) -> int:
    """Until Ctrl-C: an engine that exits is reported (the rest keep serving); a vital
    process that exits stops everything."""
    watched = [*vital, *engines]
    while True:
        exited = await first_exit_async(watched, stop)
        if exited is None:
            return 0
        if exited not in engines:
            _say(f"tidepool up: the {exited.name} exited; stopping everything")
            return 1
        code = exited.returncode
        _say(f"tidepool up: {exited.name} exited with status {code}; the others keep serving")
        watched.remove(exited)


def parser() -> argparse.ArgumentParser:
    result = CommandParser(
        prog="tidepool up",
        description="Run the registry, a mixed engine-stub fleet and the router on this machine.",
    )
    add_options(result, OPTIONS)
    return result


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool up`; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        config = UpConfig(**resolve(OPTIONS, args, os.environ if environ is None else environ))
    except ConfigError as exc:
        sys.stderr.write(f"tidepool up: {exc}\n")
        return 2
    try:
        return uvloop.run(run(config))
    except (ChildError, grpc.RpcError) as exc:
        sys.stderr.write(f"tidepool up: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
