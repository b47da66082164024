"""`tidepool scheduler run`: the pool scheduler as a process.

It prints one ready line, `tidepool scheduler ready role=leader|standby id=… pid=…`,
once it knows its role, and logs every role change. SIGTERM or SIGINT: the
current tick finishes, the leadership is released (a standby takes over at
once), engines the local provider started are stopped, exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from scheduler.config import SchedulerConfig, parse_config
from scheduler.policy import Policy, PolicyError, load_policy
from scheduler.providers import LocalProvider, Provider
from scheduler.registry_client import SchedulerRegistry
from scheduler.runner import SchedulerRunner
from tidepool.runtime.options import ConfigError, format_host_port, parse_host_port
from tidepool.runtime.process_main import process_main
from tidepool.runtime.status_http import StatusServer

COMPONENT = "scheduler"
FIRST_ROLE_TIMEOUT_S = 30.0


@dataclass
class SchedulerServer:
    config: SchedulerConfig
    runner: SchedulerRunner
    status: StatusServer


def readiness(config: SchedulerConfig, runner: SchedulerRunner) -> tuple[bool, str]:
    """For /readyz: ready while the registry answered within a few intervals."""
    contact = runner.last_contact
    limit_s = 3 * runner.policy.loop.interval_s + 5.0
    if contact is None or time.monotonic() - contact > limit_s:
        return False, f"no answer from the registry at {config.registry}"
    return True, f"{runner.role} ({runner.holder})"


def read_policy(config: SchedulerConfig) -> Policy:
    """The policy file `--policy` names; ConfigError naming the file (and line) when bad."""
    try:
        return load_policy(config.policy)
    except PolicyError as exc:
        raise ConfigError(f"--policy: {exc}") from None


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> SchedulerConfig:
    """Flags, then the policy: a bad policy file is bad configuration (exit 2), as a bad flag is."""
    config = parse_config(argv, environ)
    read_policy(config)
    return config


def build_server(config: SchedulerConfig) -> SchedulerServer:
    """Read the policy and wire the runner; raises ConfigError on a bad policy."""
    policy = read_policy(config)
    provider: Provider | None = None
    if policy.provider is not None and not config.dry_run:
        provider = LocalProvider(policy.provider, config.registry, config.engine_token)
    runner = SchedulerRunner(
        policy=policy,
        registry=SchedulerRegistry(config.registry, config.token),
        holder=config.id,
        provider=provider,
        dry_run=config.dry_run,
    )
    host, port = parse_host_port(config.http_listen)
    status = StatusServer(host, port, runner.metrics.registry, lambda: readiness(config, runner))
    return SchedulerServer(config, runner, status)


async def run(config: SchedulerConfig, *, out: TextIO | None = None) -> int:
    server = build_server(config)
    out = out or sys.stdout
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.status.start()
    except OSError as exc:
        raise ConfigError(f"--http-listen: cannot listen on {config.http_listen}: {exc}") from None
    runner = server.runner
    task = asyncio.create_task(runner.run(stop))
    try:
        await _announce(server, out, task)
        await task
    finally:
        await server.status.stop()
        await runner.registry.close()
    return 0


async def _announce(server: SchedulerServer, out: TextIO, task: asyncio.Task[None]) -> None:
    """Print the ready line once the first tick has settled the role."""
    runner = server.runner
    deadline = time.monotonic() + FIRST_ROLE_TIMEOUT_S
    while runner.role == "starting" and not task.done() and time.monotonic() < deadline:
        runner.role_changed.clear()
        try:
            await asyncio.wait_for(runner.role_changed.wait(), 0.5)
        except TimeoutError:
            if runner.dry_run and runner.last_contact is not None:
                break
    host, _port = parse_host_port(server.config.http_listen)
    http = format_host_port(host, server.status.port)
    out.write(
        f"tidepool {COMPONENT} ready role={runner.role} id={runner.holder} "
        f"pid={os.getpid()} http={http}\n"
    )
    out.flush()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    return process_main(COMPONENT, parse, run, argv, environ)
