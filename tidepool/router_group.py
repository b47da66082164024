"""`tidepool router serve`: one router process, or several sharing one port.

Why several: a Python process uses one core, and a sidecar may be given more.
With `--processes N` this process starts N single routers on the same gRPC port
(SO_REUSEPORT lets the kernel spread connections over them), each with its own
registry watch; worker i serves HTTP on the given port + i. It prints one ready
line when all are ready and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

import uvloop

from router.config import parse_config
from router.server import READY_PREFIX
from router.server import main as serve_one
from tidepool.runtime.children import (
    TIDEPOOL,
    ChildError,
    first_exit_async,
    prefixed,
    ready_all_async,
    start_child,
)
from tidepool.runtime.options import ConfigError, parse_host_port
from tidepool.runtime.signals import ShutdownSignals

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        config = parse_config(argv, env)
    except ConfigError as exc:
        sys.stderr.write(f"tidepool router: {exc}\n")
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    if config.processes == 1:
        return serve_one(argv, env)
    _, port = parse_host_port(config.listen)
    if port == 0:
        sys.stderr.write("tidepool router: --processes above 1 needs a fixed --listen port\n")
        return 2
    try:
        return uvloop.run(_run_group(list(argv), config.processes, config.http_listen))
    except ChildError as exc:
        sys.stderr.write(f"tidepool router: {exc}\n")
        return 1


def _worker_argv(argv: list[str], index: int, http_listen: str) -> list[str]:
    host, port = parse_host_port(http_listen)
    http = f"{host}:{port + index if port else 0}"
    return [
        "router", "serve", *argv,
        "--processes", "1", "--share-port", "true", "--http-listen", http,
    ]  # fmt: skip


async def _run_group(argv: list[str], processes: int, http_listen: str) -> int:
    with ShutdownSignals() as signals:
        return await _serve_group(argv, processes, http_listen, signals.received)


async def _serve_group(
    argv: list[str], processes: int, http_listen: str, stop: asyncio.Event
) -> int:
    names = [f"router-{i}" for i in range(processes)]
    workers = [
        start_child(
            name, [*TIDEPOOL, *_worker_argv(argv, i, http_listen)], on_stdout=prefixed(name)
        )
        for i, name in enumerate(names)
    ]
    await ready_all_async(workers, READY_TIMEOUT_S, STOP_TIMEOUT_S)
    try:
        grpc_at = workers[0].fields.get("grpc", "?")
        https = ",".join(w.fields.get("http", "?") for w in workers)
        pids = ",".join(w.fields.get("pid", "?") for w in workers)
        sys.stdout.write(f"{READY_PREFIX} grpc={grpc_at} http={https} pid={pids}\n")
        sys.stdout.flush()
        exited = await first_exit_async(workers, stop)
        return 0 if exited is None else 1
    finally:
        await asyncio.gather(*(w.stop_async(STOP_TIMEOUT_S) for w in workers))
