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

from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    add_options,
    host_port,
    options_for,
    parse_bool,
    parse_choice,
    resolve,
    setting,
)
from tidepool.runtime.replicas import registry_setting

ENV = "TIDEPOOL_SCHEDULER_"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _holder_id(text: str) -> str:
    ok = text and text[0].isalnum() and len(text) <= 128
    if text and not (ok and all(c.isalnum() or c in "._-" for c in text)):
        raise ValueError(f"expected letters, digits, '.', '_' or '-' (1..128), got {text!r}")
    return text


@dataclass(frozen=True)
class SchedulerConfig:
    """Everything one scheduler process needs; each field is also a flag, env var and key."""

    policy: str = setting("", "TOML policy: pools, watermarks, tenants, providers (required)")
    registry: str = registry_setting()
    token: str | None = setting(None, "registry admin token", env="TIDEPOOL_TOKEN")
    """Admin token: the scheduler labels, drains and moves engines."""
    engine_token: str | None = setting(None, "engine token for engines the local provider starts")
    http_listen: str = setting(
        "127.0.0.1:7720", "HTTP address: /metrics /healthz /readyz", host_port
    )
    dry_run: bool = setting(
        False, "print the decisions it would make and change nothing", parse_bool
    )
    """Print the decisions it would make; change nothing (and never lead)."""
    id: str = setting("", "holder id in the leader election (default: host-pid)", _holder_id)
    log_level: str = setting("info", "debug, info, warning or error", parse_choice(LOG_LEVELS))

    def __post_init__(self) -> None:
        if not self.policy:
            raise ConfigError("--policy: a policy file is required (see the README)")
        if not self.id:
            object.__setattr__(self, "id", default_id())


def default_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{(host.lstrip('._-') or 'scheduler')[:40]}-{os.getpid()}"


OPTIONS = options_for(SchedulerConfig, ENV)


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
