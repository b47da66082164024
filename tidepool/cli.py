"""The `tidepool` command: one program, a subcommand per component."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: tidepool COMMAND [ARGS]

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


def _serve_command(component: str, argv: Sequence[str]) -> Sequence[str] | int:
    """The flags after `COMPONENT serve`, or the exit code of a usage error."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(f"usage: tidepool {component} serve [FLAGS]   (see --help after serve)\n")
        return 0 if argv else 2
    if argv[0] != "serve":
        sys.stderr.write(f"tidepool {component}: unknown command {argv[0]!r}; try `serve`\n")
        return 2
    return argv[1:]


def _registry(argv: Sequence[str]) -> int:
    flags = _serve_command("registry", argv)
    if isinstance(flags, int):
        return flags
    from registry.server import main

    return main(flags)


def _router(argv: Sequence[str]) -> int:
    flags = _serve_command("router", argv)
    if isinstance(flags, int):
        return flags
    from tidepool.router_group import main

    return main(flags)


def _scheduler(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write("usage: tidepool scheduler run --policy FILE [FLAGS]   (see run --help)\n")
        return 0 if argv else 2
    if argv[0] != "run":
        sys.stderr.write(f"tidepool scheduler: unknown command {argv[0]!r}; try `run`\n")
        return 2
    from scheduler.server import main

    return main(argv[1:])


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
    command = COMMANDS.get(args[0])
    if command is None:
        sys.stderr.write(f"tidepool: unknown command {args[0]!r}\n{USAGE}")
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
