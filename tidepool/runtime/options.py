"""Command-line options that also come from environment variables and a config file.

Every setting of every tidepool process has one flag, one environment variable and
one config-file key. Precedence: flag, then environment, then config file, then the
default. A component declares each setting once, as a field of its frozen `*Config`
dataclass made with `setting(...)`; `options_for` derives the options from the fields,
and the config's `__post_init__` is the one place for checks across fields.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
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


def number(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A parser of numbers in [low, high] (or above `low`), saying the rule when out of it.
    Never infinity or NaN: no setting means "forever" by a number (a duration, a share)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {text}")
        too_low = value <= low if above else value < low
        if too_low or (high is not None and value > high) or value != value:
            bound = f"above {low:g}" if above else f"{low:g} or more"
            rule = f"within {low:g}..{high:g}" if high is not None else bound
            raise ValueError(f"must be {rule}, got {text}")
        return value

    return parse


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers in [low, high]."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            rule = f"within {low}..{high}" if high is not None else f"{low} or more"
            raise ValueError(f"must be {rule}, got {value}")
        return value

    return parse


def optional_whole(low: int) -> Callable[[str], int | None]:
    """`whole(low)`, or None for an empty value (the setting is off)."""
    parse_whole = whole(low)

    def parse(text: str) -> int | None:
        return None if text.strip() == "" else parse_whole(text)

    return parse


def host_port(text: str) -> str:
    """A HOST:PORT setting, checked and kept as written."""
    parse_host_port(text)
    return text


def optional_path(text: str) -> str | None:
    """A file setting where the empty string turns it off."""
    return text or None


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
    old_names: tuple[str, ...] = ()
    """Names this setting had before (a renamed flag keeps working for old scripts)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def old_envs(self) -> tuple[str, ...]:
        """The environment variables of `old_names` (the new name's prefix, old suffix)."""
        suffix = self.name.upper()
        prefix = self.env[: -len(suffix)] if self.env.endswith(suffix) else ""
        return tuple(prefix + old.upper() for old in self.old_names) if prefix else ()


@dataclass(frozen=True)
class OptionSpec:
    """What a config field adds to become an option (kept in the field's metadata)."""

    help: str
    parse: Callable[[str], Any] = str
    env: str | None = None
    """The whole environment variable name, where it is not the component's prefix + NAME."""
    metavar: str | None = None
    old_names: tuple[str, ...] = ()


OPTION_KEY = "tidepool.option"


def setting(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    env: str | None = None,
    metavar: str | None = None,
    old_names: tuple[str, ...] = (),
) -> Any:
    """A config dataclass field that is also a flag, an environment variable and a config key.

    `old_names`: what the setting was called before a rename; the old flag, environment
    variable and config key are still read (not shown in --help).
    """
    spec = OptionSpec(help, parse, env, metavar, old_names)
    return field(default=default, metadata={OPTION_KEY: spec})


def options_for(config: type, env_prefix: str, *, prefix: str = "") -> tuple[Option, ...]:
    """The options of a config dataclass: one per field made with `setting`, in field order.

    `prefix` names the options of a nested config (`fault_` + `latency_s`).
    """
    result = []
    for item in fields(config):
        spec = item.metadata.get(OPTION_KEY)
        if spec is None:
            continue
        name = prefix + item.name
        default = None if item.default is MISSING else item.default
        env = spec.env or env_prefix + name.upper()
        old = tuple(prefix + o for o in spec.old_names)
        result.append(Option(name, env, default, spec.help, spec.parse, spec.metavar, old))
    return tuple(result)


def add_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    option: Option,
    metavar: str | None = None,
) -> None:
    """Declare one option; its value stays None so `resolve` can see whether it was given."""
    default = option.default
    if default is None:
        shown = "unset"
    elif isinstance(default, tuple):
        shown = repr(",".join(map(str, default)))
    else:
        shown = repr(default)
    parser.add_argument(
        option.flag,
        dest=option.name,
        default=None,
        metavar=metavar or option.metavar,
        help=f"{option.help} [env {option.env}; default {shown}]",
    )
    for old in option.old_names:
        parser.add_argument(
            "--" + old.replace("_", "-"), dest=option.name, default=None, help=argparse.SUPPRESS
        )


def add_config_file_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help=f"TOML file whose keys are the option names above [env {CONFIG_ENV}]",
    )


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Declare `options` and `--config` on `parser`."""
    for option in options:
        add_option(parser, option)
    add_config_file_option(parser)


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
    from_file = _file_values(options, config_path)
    values: dict[str, Any] = {}
    for option in options:
        raw, source = _given(option, namespace, environ, from_file)
        if raw is None:
            # A textual default goes through the same parser as a given value.
            default = option.default
            values[option.name] = (
                _parse(option, default, "default") if isinstance(default, str) else default
            )
        else:
            values[option.name] = _parse(option, raw, source)
    return values


def _file_values(options: Sequence[Option], config_path: str | None) -> dict[str, Any]:
    """The config file's keys, old names mapped to new ones; an unknown key is an error."""
    from_file = load_config_file(config_path) if config_path else {}
    known = {option.name for option in options}
    for option in options:
        for old in option.old_names:
            if old in from_file and option.name not in from_file:
                from_file[option.name] = from_file.pop(old)
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise ConfigError(f"--config: unknown key {unknown[0]!r} in {config_path!r}")
    return from_file


def _given(
    option: Option,
    namespace: argparse.Namespace,
    environ: Mapping[str, str],
    from_file: Mapping[str, Any],
) -> tuple[Any, str]:
    """The value given for `option` and where (flag, environment, file), or (None, "")."""
    raw: Any = getattr(namespace, option.name, None)
    if raw is not None:
        return raw, option.flag
    for env in (option.env, *option.old_envs()):
        if env in environ:
            return environ[env], env
    if option.name in from_file:
        return from_file[option.name], f"config key {option.name}"
    return None, ""


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
