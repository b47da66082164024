"""Scheduler settings: each a flag, an environment variable (`TIDEPOOL_SCHEDULER_*`) and a
config-file key. `TIDEPOOL_REGISTRY` and `TIDEPOOL_TOKEN` are shared with the other processes.

The policy (pools, watermarks, tenants, providers) is its own TOML file, `--policy`.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    Option,
    add_options,
    parse_bool,
    parse_choice,
    parse_host_port,
    resolve,
)

ENV = "TIDEPOOL_SCHEDULER_"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class SchedulerConfig:
    """Everything one scheduler process needs."""

    policy: str
    """Path of the TOML policy file."""
    registry: str = "127.0.0.1:7700"
    token: str | None = None
    """Admin token: the scheduler labels, drains and moves engines."""
    engine_token: str | None = None
    """Engine token handed to engines the local provider starts."""
    http_listen: str = "127.0.0.1:7720"
    """/metrics, /healthz, /readyz."""
    dry_run: bool = False
    """Print the decisions it would make; change nothing (and never lead)."""
    id: str = ""
    """This scheduler's holder id in the leader election (default: host-pid)."""
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.policy:
            raise ConfigError("--policy: a policy file is required (see the README)")
        if not self.id:
            object.__setattr__(self, "id", default_id())


def default_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{(host.lstrip('._-') or 'scheduler')[:40]}-{os.getpid()}"


def _host_port(text: str) -> str:
    parse_host_port(text)
    return text


def _holder_id(text: str) -> str:
    ok = text and text[0].isalnum() and len(text) <= 128
    if text and not (ok and all(c.isalnum() or c in "._-" for c in text)):
        raise ValueError(f"expected letters, digits, '.', '_' or '-' (1..128), got {text!r}")
    return text


def _o(name: str, default: Any, help: str, parse: Any = str, env: str | None = None) -> Option:
    return Option(name, env or ENV + name.upper(), default, help, parse)


OPTIONS: tuple[Option, ...] = (
    _o("registry", "127.0.0.1:7700", "registry gRPC address", _host_port, "TIDEPOOL_REGISTRY"),
    _o("token", None, "registry admin token", env="TIDEPOOL_TOKEN"),
    _o("policy", "", "TOML policy: pools, watermarks, tenants, providers (required)"),
    _o("engine_token", None, "engine token for engines the local provider starts"),
    _o("http_listen", "127.0.0.1:7720", "HTTP address: /metrics /healthz /readyz", _host_port),
    _o("dry_run", False, "print the decisions it would make and change nothing", parse_bool),
    _o("id", "", "holder id in the leader election (default: host-pid)", _holder_id),
    _o("log_level", "info", "debug, info, warning or error", parse_choice(LOG_LEVELS)),
)


def parser() -> argparse.ArgumentParser:
    result = CommandParser(
        prog="tidepool scheduler run",
        description="Run the pool scheduler: admission, tenant lists, tide moves, scaling.",
    )
    add_options(result, OPTIONS)
    for action in result._actions:
        if action.dest == "dry_run":
            # A switch on the command line (`--dry-run`), a boolean in env and config file.
            action.nargs, action.const, action.metavar = "?", "true", "true|false"
    return result


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> SchedulerConfig:
    values = resolve(OPTIONS, parser().parse_args(list(argv)), environ)
    return SchedulerConfig(**values)
