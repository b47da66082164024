"""The ctl's global flags, accepted before or after the command (kubectl, etcdctl).

`tidepool ctl --json instances`, `tidepool ctl instances --json` and
`tidepool ctl instances -o json --registry HOST:PORT` mean the same. Every
parser declares the global flags; only the top one has defaults, the others
leave a flag unset unless it is given, so a flag after the command overrides
one before it and an absent one overrides nothing.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from tidepool.runtime.options import CONFIG_ENV, CommandParser, Option
from tidepool.runtime.replicas import DEFAULT_REGISTRY, REGISTRY_HELP, registry_addresses

OUTPUTS = ("json", "wide")


OPTIONS = (
    Option(
        "registry",
        "TIDEPOOL_REGISTRY",
        DEFAULT_REGISTRY,
        REGISTRY_HELP,
        registry_addresses,
        "HOST:PORT[,…]",
    ),
    Option("token", "TIDEPOOL_TOKEN", None, "admin (or read) token for the registry", str, "T"),
)


class CtlParser(CommandParser):
    """Usage errors as one line, `tidepool ctl: …`, whichever command they are in."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tidepool ctl").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"tidepool ctl: {where}{message} (see --help)\n")


def add_global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Declare --registry, --token, --config, --json and -o on `parser`."""
    group = parser.add_argument_group(
        "global flags" if top else "global flags (also accepted before the command)"
    )
    unset: Any = None if top else argparse.SUPPRESS
    for option in OPTIONS:
        shown = "unset" if option.default is None else repr(option.default)
        group.add_argument(
            option.flag,
            dest=option.name,
            default=unset,
            metavar=option.metavar,
            help=f"{option.help} [env {option.env}; default {shown}]",
        )
    group.add_argument(
        "--config",
        dest="config_file",
        default=unset,
        metavar="FILE",
        help=f"TOML file with the keys registry and token [env {CONFIG_ENV}]",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=unset,
        help="json: the documented JSON shapes; wide: more columns (address, labels)",
    )
    group.add_argument(
        "--json", dest="output", action="store_const", const="json", default=unset,
        help="the same as -o json",
    )  # fmt: skip


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """Derive the handlers' `json` and `wide` from the output format."""
    args.json = args.output == "json"
    args.wide = args.output == "wide"
    return args
