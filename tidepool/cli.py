"""The `tidepool` command: one program, a subcommand per component."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

USAGE = """usage: tidepool [--version] COMMAND [ARGS]

commands:
  registry serve   run the registry (embedded store)
  router serve     run the router: balance gRPC calls over healthy engines
  scheduler run    run the pool scheduler: admission, tenant lists, tide moves, scaling
  engine-stub      run a simulated GPU engine that registers itself
  ctl              administer a registry: instances, aliases, tenants, drains
  up               run registry, router and a mixed engine fleet on this machine
  loadtest         open-loop load generator (Poisson arrivals) for engines or the router

Run `tidepool COMMAND --help` for a command's flags.
"""
SUBCOMMANDS = {
    "registry": ("serve", "run the registry on the embedded store"),
    "router": ("serve", "run a router: balance gRPC calls over healthy engines"),
    "scheduler": ("run", "run the pool scheduler with a policy file (--policy FILE)"),
}


def package_version() -> str:
    """The installed distribution's version ("unknown" when run from a bare checkout)."""
    try:
        return version("tidepool")
    except PackageNotFoundError:
        return "unknown"


def _group_usage(component: str) -> str:
    name, summary = SUBCOMMANDS[component]
    return (
        f"usage: tidepool {component} COMMAND [FLAGS]\n\n"
        f"commands:\n  {name:8} {summary}\n\n"
        f"Run `tidepool {component} {name} --help` for its flags.\n"
    )


def _subcommand(component: str, argv: Sequence[str]) -> Sequence[str] | int:
    """The flags after `COMPONENT serve` (or `run`), or the exit code of a usage error."""
    name = SUBCOMMANDS[component][0]
    if not argv or argv[0] in ("-h", "--help", "help"):
        (sys.stdout if argv else sys.stderr).write(_group_usage(component))
        return 0 if argv else 2
    if argv[0] != name:
        sys.stderr.write(f"tidepool {component}: unknown command {argv[0]!r}; try `{name}`\n")
        return 2
    return argv[1:]


def _registry(argv: Sequence[str]) -> int:
    flags = _subcommand("registry", argv)
    if isinstance(flags, int):
        return flags
    from registry.server import main

    return main(flags)


def _router(argv: Sequence[str]) -> int:
    flags = _subcommand("router", argv)
    if isinstance(flags, int):
        return flags
    from tidepool.router_group import main

    return main(flags)


def _scheduler(argv: Sequence[str]) -> int:
    flags = _subcommand("scheduler", argv)
    if isinstance(flags, int):
        return flags
    from scheduler.server import main

    return main(flags)


def _loadtest(argv: Sequence[str]) -> int:
    from loadtest.__main__ import main

    return main(list(argv))


def _engine_stub(argv: Sequence[str]) -> int:
    from engine_stub.server import main

    return main(argv)


def _ctl(argv: Sequence[str]) -> int:
    from tidepool.ctl.main import main

    return main(argv)


def _up(argv: Sequence[str]) -> int:
    from tidepool.up import main

    return main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "registry": _registry,
    "router": _router,
    "scheduler": _scheduler,
    "loadtest": _loadtest,
    "engine-stub": _engine_stub,
    "ctl": _ctl,
    "up": _up,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    if args[0] in ("--version", "-V"):
        sys.stdout.write(f"tidepool {package_version()}\n")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        sys.stderr.write(f"tidepool: unknown command {args[0]!r}\n{USAGE}")
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
