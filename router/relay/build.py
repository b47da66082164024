"""Which build of the relay is loaded: mypyc-compiled or pure Python, and whether it is stale.

`setup.py` compiles every relay module but this one and the package inits
(TIDEPOOL_RELAY_BUILD: auto, compiled, pure). An editable install leaves each
compiled module (a shared library) beside its .py source, and Python imports the
library first: an edited source would be ignored until the next build. So at import
the relay warns about every compiled module whose source is newer (rebuild with
`make compile`, or go back to the sources with `make pure`).
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
_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)
PACKAGE = Path(__file__).resolve().parent
"""router/relay, where an editable install puts the compiled modules beside the sources."""


def compiled_modules() -> list[str]:
    """The relay's loaded modules that are compiled, by name."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("router.relay.")
        and str(getattr(module, "__file__", "")).endswith(_EXTENSIONS)
    )


def loaded() -> Build:
    """The build of the relay imported in this process."""
    return "compiled" if CANARY in compiled_modules() else "pure"


def stale_sources(names: list[str], package: Path = PACKAGE) -> list[Path]:
    """Sources edited after their module was compiled (the library shadows them).

    Why the paths are worked out from the names: mypyc sets a wrong `__file__` on some
    modules compiled into a group library inside a package."""
    stale = []
    for name in names:
        parts = name.split(".")[2:]  # below router.relay
        source = package.joinpath(*parts).with_suffix(".py")
        for suffix in _EXTENSIONS:
            library = source.with_name(parts[-1] + suffix)
            if source.exists() and library.exists():
                if source.stat().st_mtime > library.stat().st_mtime:
                    stale.append(source)
                break
    return stale


def warn_if_stale() -> None:
    """Only in a checkout (an editable install): a wheel's files all come in at once."""
    if not (PACKAGE.parents[1] / "setup.py").exists():
        return
    stale = stale_sources(compiled_modules())
    if stale:
        names = ", ".join(str(p) for p in stale)
        warnings.warn(
            f"the compiled relay is older than its sources ({names}): they are not what runs;"
            " rebuild it (make compile) or remove it (make pure)",
            RuntimeWarning,
            stacklevel=2,
        )
