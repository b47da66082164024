"""Command-line options that also come from environment variables and a config file.

Every setting of every tidepool process has one flag, one environment variable and
one config-file key. Precedence: flag, then environment, then config file, then the
default. Components declare their options here and build their frozen `*Config`
from the resolved values in their own `config.py`.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

CONFIG_ENV = "TIDEPOOL_CONFIG"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the flag and the rule."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, as operators' scripts expect."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_bool(text: str) -> bool:
    """Read a boolean the way operators write them in env files."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _number(text: str, kind: type[float] | type[int]) -> float:
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise ValueError(f"must be {noun}, got {text!r}") from None


def parse_positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {text}")
    return value


def parse_non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise ValueError(f"must be 0 or more, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: its field name, flag, environment variable, default and help."""

    name: str
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Declare `options` on `parser`; values stay None so `resolve` can see what was given."""
    for option in options:
        shown = "unset" if option.default is None else repr(option.default)
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.metavar,
            help=f"{option.help} [env {option.env}; default {shown}]",
        )
    parser.add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help=f"TOML file whose keys are the option names above [env {CONFIG_ENV}]",
    )


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file; keys may use dashes or underscores."""
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config: cannot read {path!r}: {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


def resolve(
    options: Sequence[Option],
    namespace: argparse.Namespace,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Merge flag, environment, config file and default for each option, parsing strings."""
    config_path = getattr(namespace, "config_file", None) or environ.get(CONFIG_ENV)
    from_file = load_config_file(config_path) if config_path else {}
    known = {option.name for option in options}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise ConfigError(f"--config: unknown key {unknown[0]!r} in {config_path!r}")
    values: dict[str, Any] = {}
    for option in options:
        raw: Any = getattr(namespace, option.name, None)
        source = option.flag
        if raw is None and option.env in environ:
            raw, source = environ[option.env], option.env
        if raw is None and option.name in from_file:
            raw, source = from_file[option.name], f"config key {option.name}"
        if raw is None:
            # A textual default goes through the same parser as a given value.
            default = option.default
            values[option.name] = (
                _parse(option, default, "default") if isinstance(default, str) else default
            )
            continue
        values[option.name] = _parse(option, raw, source)
    return values


def _parse(option: Option, raw: Any, source: str) -> Any:
    text = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A parser that accepts exactly one of `choices`."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def format_host_port(host: str, port: int) -> str:
    """The inverse of `parse_host_port`: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; the port must be 0..65535 (0 picks a free one)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return host.removeprefix("[").removesuffix("]"), port
