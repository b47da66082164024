"""Build hook: the data path compiled with mypyc where that can be done, else pure Python.

What is compiled: the relay (`router/relay`) and the router modules each relayed call runs
through (`router.relay.build.ROUTER_MODULES`: picking, retry, timers, metrics).

Everything else about the package is in pyproject.toml. TIDEPOOL_RELAY_BUILD chooses:

- `auto` (the default): compiled when mypyc (it ships with mypy) and a C compiler are at
  hand, the pure-Python modules otherwise, with a note saying why;
- `compiled`: compile or fail the install (CI, so a broken compilation cannot pass unnoticed);
- `pure`: never compile.

Why it needs the project's development environment (`scripts/install.sh`, or pip's
`--no-build-isolation` from .venv): mypyc compiles with the types mypy sees, so it must
see the same dependencies as `mypy` does; an isolated build (plain `pip install .`) has
no mypy and installs the pure modules. The compiled modules keep their .py sources
beside them; `router.relay.build` says at run time which build is loaded.
"""

from __future__ import annotations

import os
import runpy
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

CHOICES = ("auto", "compiled", "pure")
ROOT = Path(__file__).resolve().parent
NEVER_COMPILED = {"__init__.py", "build.py"}
"""`build` reports which build is loaded, so it must stay Python; package inits gain nothing."""


def choice() -> str:
    value = os.environ.get("TIDEPOOL_RELAY_BUILD", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        sys.exit(f"TIDEPOOL_RELAY_BUILD={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def note(message: str) -> None:
    sys.stderr.write(f"tidepool: {message}\n")


def compiled_sources() -> list[str]:
    """Every module of router/relay but the package inits and `build`, and the router
    modules `build.ROUTER_MODULES` names, as relative paths."""
    relay = ROOT / "router" / "relay"
    # By path, not import: the package cannot be imported before it is built.
    router_modules = runpy.run_path(str(relay / "build.py"))["ROUTER_MODULES"]
    paths = sorted(relay.rglob("*.py")) + [ROOT / "router" / f"{m}.py" for m in router_modules]
    return [str(p.relative_to(ROOT)) for p in paths if p.name not in NEVER_COMPILED]


def compiled_extensions(mode: str) -> list[object]:
    if mode == "pure":
        note("relay: pure-Python build (TIDEPOOL_RELAY_BUILD=pure)")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if mode == "compiled":
            sys.exit("TIDEPOOL_RELAY_BUILD=compiled, but mypyc (mypy) is not installed here")
        note("relay: pure-Python build (no mypyc here: install mypy, build without isolation)")
        return []
    try:  # one shared library for the group, inside the package (not a top-level module)
        extensions: list[object] = mypycify(compiled_sources(), group_name="router._native")
    except BaseException as error:  # a type error ends mypy with SystemExit
        if mode == "compiled":
            raise
        note(f"relay: pure-Python build (mypyc could not compile it: {error!r})")
        return []
    return extensions


def remove_in_place() -> None:
    """Drop compiled modules an earlier editable build left beside the sources (the
    router package holds no other extension modules)."""
    for suffix in EXTENSION_SUFFIXES:
        for path in (ROOT / "router").rglob(f"*{suffix}"):
            path.unlink()


class OptionalBuildExt(build_ext):
    """Falls back to the pure modules when the C compilation fails (no compiler, no headers),
    unless TIDEPOOL_RELAY_BUILD=compiled. All or nothing: one missing extension of the group
    would leave a module that cannot import. In place (an editable install), the modules an
    earlier build left go first: one no longer compiled would shadow its source."""

    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            remove_in_place()
        try:
            super().run()
        except Exception as error:
            if choice() == "compiled":
                raise
            for path in self.get_outputs():
                Path(path).unlink(missing_ok=True)
            if self.inplace or getattr(self, "editable_mode", False):
                remove_in_place()
            note(f"relay: pure-Python build (C compilation failed: {error})")


class PureInPlace(build_py):
    """An editable pure build removes the compiled modules a compiled one left in place:
    Python would import them before the sources."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False) and not self.distribution.ext_modules:
            remove_in_place()
        super().run()


setup(
    ext_modules=compiled_extensions(choice()),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": PureInPlace},
)
