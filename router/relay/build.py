"""Which build of the data path is loaded: mypyc-compiled or pure Python, and whether it is stale.

`setup.py` compiles every relay module but this one and the package inits, and the
router modules a relayed call runs through (`ROUTER_MODULES`), into one library
(TIDEPOOL_RELAY_BUILD: auto, compiled, pure). An editable install leaves each
compiled module (a shared library) beside its .py source, and Python imports the
library first: an edited source would be ignored until the next build. So at import
the relay warns about every compiled module whose source is newer (rebuild with
`make compile`, or go back to the sources with `make pure`).

Only the standard library here: `setup.py` reads `ROUTER_MODULES` from this file
before the package can be imported.
"""

from __future__ import annotations

import importlib.machinery
import sys
import warnings
from pathlib import Path
from typing import Literal

Build = Literal["compiled", "pure"]
CANARY = "router.relay.relay"
"""A module every compiled build holds: its kind is the build's."""
ROUTER_MODULES = (
    "attempt_timeout",
    "balancer",
    "forward",
    "metrics",
    "outlier",
    "retry",
    "shares",
    "slow_start",
    "table",
    "timers",
)
"""The modules of `router` compiled with the relay: what every relayed call runs through
(pick, retry and ejection decisions, attempt timeouts, timers, metrics). Why not
`endpoint`: its validation must tell a caller's wrong type by ValueError, and a
compiled signature would turn that into a TypeError first."""
_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)
ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the `router` package (the checkout, for an editable install)."""
_COMPILED_NAMES = frozenset(f"router.{name}" for name in ROUTER_MODULES)


def compiled_modules() -> list[str]:
    """The loaded modules of the compiled set that are compiled, by name."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (name.startswith("router.relay.") or name in _COMPILED_NAMES)
        and str(getattr(module, "__file__", "")).endswith(_EXTENSIONS)
    )


def loaded() -> Build:
    """The build of the data path imported in this process."""
    return "compiled" if CANARY in compiled_modules() else "pure"


def stale_sources(names: list[str], root: Path = ROOT) -> list[Path]:
    """Sources edited after their module was compiled (the library shadows them).

    Why the paths are worked out from the names: mypyc sets a wrong `__file__` on some
    modules compiled into a group library inside a package."""
    stale = []
    for name in names:
        parts = name.split(".")
        source = root.joinpath(*parts).with_suffix(".py")
        for suffix in _EXTENSIONS:
            library = source.with_name(parts[-1] + suffix)
            if source.exists() and library.exists():
                if source.stat().st_mtime > library.stat().st_mtime:
                    stale.append(source)
                break
    return stale


def warn_if_stale() -> None:
    """Only in a checkout (an editable install): a wheel's files all come in at once."""
    if not (ROOT / "setup.py").exists():
        return
    stale = stale_sources(compiled_modules())
    if stale:
        names = ", ".join(str(p) for p in stale)
        warnings.warn(
            f"the compiled data path is older than its sources ({names}): they are not what"
            " runs; rebuild it (make compile) or remove it (make pure)",
            RuntimeWarning,
            stacklevel=2,
        )
