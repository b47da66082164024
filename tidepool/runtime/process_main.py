"""The `main()` every long-running tidepool process shares: flags, logging, the loop, errors.

One place decides what a user sees when a process cannot start: one line on
stderr naming the problem, exit 2 for bad flags and 1 for a failed start, and
never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import uvloop

from tidepool.runtime.options import ConfigError


class _HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


C = TypeVar("C", bound=_HasLogLevel)


def process_main(
    component: str,
    parse: Callable[[Sequence[str], Mapping[str, str]], C],
    run: Callable[[C], Coroutine[Any, Any, int]],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
    start_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse flags, set up logging, run `run(config)` on uvloop; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse(args, os.environ if environ is None else environ)
    except ConfigError as exc:
        return report_error(component, str(exc), 2)
    except SystemExit as exc:  # --help, or a flag argparse rejected (already reported)
        return exc.code if isinstance(exc.code, int) else 0
    logging.basicConfig(
        stream=sys.stderr,
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failures: tuple[type[BaseException], ...] = (ConfigError, OSError, *start_errors)
    try:
        return uvloop.run(run(config))
    except failures as exc:
        return report_error(component, str(exc), 1)


def report_error(component: str, message: str, code: int) -> int:
    sys.stderr.write(f"tidepool {component}: {message}\n")
    sys.stderr.flush()
    return code
