"""`tidepool up`: the whole stack on one machine, on the embedded store, until Ctrl-C.

It starts the registry, creates the public aliases (`zh-public`, `en-public`)
if they are missing, then a mixed fleet of engine stubs across languages, tiers
and weights, then the router, and prints where everything listens and how to
send traffic. Ctrl-C (or SIGTERM) stops the router first (no new traffic), then
drains and stops the engines, then the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import uvloop

from registry.sdk.channel import auth_metadata, open_channel
from registry.sdk.options import (
    CommandParser,
    ConfigError,
    Option,
    add_options,
    parse_host_port,
    parse_positive_float,
    resolve,
)
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.supervise import (
    Child,
    ChildError,
    start_child,
    start_children,
    stop_event,
    until_stopped_or_exited,
)

ENV = "TIDEPOOL_UP_"
READY_TIMEOUT_S = 60.0
ENGINE_STOP_S = 35.0
PUBLIC_ALIASES = {"zh-public": "lang=zh", "en-public": "lang=en"}


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


def _address(text: str) -> str:
    parse_host_port(text)
    return text


OPTIONS = (
    Option("data_dir", ENV + "DATA_DIR", ".tidepool/up", "registry data directory"),
    Option(
        "registry_listen",
        ENV + "REGISTRY_LISTEN",
        "127.0.0.1:7700",
        "registry gRPC address",
        _address,
        "HOST:PORT",
    ),
    Option(
        "registry_http_listen",
        ENV + "REGISTRY_HTTP_LISTEN",
        "127.0.0.1:7701",
        "registry /metrics and health address",
        _address,
        "HOST:PORT",
    ),
    Option(
        "fleet",
        ENV + "FLEET",
        DEFAULT_FLEET,
        "engines to start, comma-separated lang/tier/weight/speed",
        parse_fleet,
    ),
    Option(
        "model_load_seconds",
        ENV + "MODEL_LOAD_SECONDS",
        1.0,
        "simulated model load time of each engine",
        parse_positive_float,
        "S",
    ),
    Option(
        "router_listen",
        ENV + "ROUTER_LISTEN",
        "127.0.0.1:7710",
        "router gRPC address (send traffic here)",
        _address,
        "HOST:PORT",
    ),
    Option(
        "router_http_listen",
        ENV + "ROUTER_HTTP_LISTEN",
        "127.0.0.1:7711",
        "router /metrics, health and /v1/resolve address",
        _address,
        "HOST:PORT",
    ),
    Option("engine_token", ENV + "ENGINE_TOKEN", None, "engine token (registry and engines)"),
    Option("admin_token", ENV + "ADMIN_TOKEN", None, "admin token (registry)"),
)


def _registry_args(settings: Mapping[str, object]) -> list[str]:
    args = [
        "registry",
        "serve",
        "--listen",
        str(settings["registry_listen"]),
        "--http-listen",
        str(settings["registry_http_listen"]),
        "--data-dir",
        str(settings["data_dir"]),
    ]
    for name in ("engine_token", "admin_token"):
        if settings[name]:
            args += ["--" + name.replace("_", "-"), str(settings[name])]
    return args


def _engine_args(spec: EngineSpec, registry: str, settings: Mapping[str, object]) -> list[str]:
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
        "--model-load-seconds",
        str(settings["model_load_seconds"]),
    ]
    if settings["engine_token"]:
        args += ["--token", str(settings["engine_token"])]
    return args


def _router_args(registry: str, settings: Mapping[str, object]) -> list[str]:
    args = [
        "router",
        "serve",
        "--registry",
        registry,
        "--listen",
        str(settings["router_listen"]),
        "--http-listen",
        str(settings["router_http_listen"]),
        "--state-file",
        os.path.join(str(settings["data_dir"]), "router-view.json"),
    ]
    if settings["admin_token"]:
        args += ["--token", str(settings["admin_token"])]
    return args


async def ensure_public_aliases(registry: str, token: str | None) -> None:
    """Create `zh-public` and `en-public` unless an operator already defined them."""
    channel = open_channel(registry)
    try:
        stub = pb_grpc.RegistryStub(channel)
        admin = pb_grpc.AdminStub(channel)
        metadata = auth_metadata(token)
        existing = await stub.ListAliases(pb.ListAliasesRequest(), metadata=metadata, timeout=10)
        have = {a.name for a in existing.aliases}
        for name, selector in PUBLIC_ALIASES.items():
            if name not in have:
                alias = pb.Alias(name=name, selector=selector, service="speech")
                await admin.PutAlias(pb.PutAliasRequest(alias=alias), metadata=metadata, timeout=10)
    finally:
        await channel.close()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _start_fleet(settings: Mapping[str, object], registry: str) -> list[Child]:
    fleet: tuple[EngineSpec, ...] = settings["fleet"]  # type: ignore[assignment]
    engines = await start_children(
        [
            (f"engine-{i}-{spec.lang}-{spec.tier}", _engine_args(spec, registry, settings))
            for i, spec in enumerate(fleet)
        ],
        READY_TIMEOUT_S,
        ENGINE_STOP_S,
    )
    _say(f"{'ENGINE':28} {'GRPC':22} {'HTTP':22} ID")
    for engine, spec in zip(engines, fleet, strict=True):
        f = engine.fields
        _say(f"{spec!s:28} {f.get('grpc', '?'):22} {f.get('http', '?'):22} {f.get('id', '?')}")
    return engines


async def run(settings: Mapping[str, object]) -> int:
    stop = stop_event()
    _say(f"tidepool up: starting the registry (data in {settings['data_dir']})")
    registry = await start_child("registry", _registry_args(settings), READY_TIMEOUT_S)
    engines: list[Child] = []
    router: Child | None = None
    try:
        address = registry.fields["grpc"]
        await ensure_public_aliases(address, settings["admin_token"])  # type: ignore[arg-type]
        _say(f"registry  grpc={address}  http={registry.fields.get('http')}")
        engines = await _start_fleet(settings, address)
        router = await start_child("router", _router_args(address, settings), READY_TIMEOUT_S)
        at = router.fields.get("grpc", "?")
        _say(f"router    grpc={at}  http={router.fields.get('http')}")
        _say(
            f"tidepool up: {len(engines)} engines ready behind the router. Try:\n"
            f"  tidepool loadtest --target {at} --alias zh-public --rate 50 --duration 5\n"
            f"  tidepool ctl --registry {address} instances\n"
            "Send gRPC to the router with metadata x-tidepool-alias: zh-public (or en-public). "
            "Ctrl-C stops everything."
        )
        exited = await until_stopped_or_exited(stop, [registry, router])
        if exited is not None:
            _say(f"tidepool up: the {exited.name} exited; stopping everything")
            return 1
        return 0
    finally:
        if router is not None:
            _say("tidepool up: stopping the router")
            await router.stop(15.0)
        _say("tidepool up: draining engines, then stopping the registry")
        await asyncio.gather(*(e.stop(ENGINE_STOP_S) for e in engines))
        await registry.stop(10.0)
        _say("tidepool up: stopped")


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
        settings = resolve(OPTIONS, args, os.environ if environ is None else environ)
    except ConfigError as exc:
        sys.stderr.write(f"tidepool up: {exc}\n")
        return 2
    try:
        return uvloop.run(run(settings))
    except (ChildError, grpc.RpcError) as exc:
        sys.stderr.write(f"tidepool up: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
