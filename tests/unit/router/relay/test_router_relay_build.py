"""Which relay build is loaded (mypyc-compiled or pure), and the check for a stale compiled one.

CI sets TIDEPOOL_RELAY_BUILD when it installs a build on purpose, so a compilation
that silently fell back to the pure modules (or a pure install that kept compiled
ones) fails here instead of testing the wrong build.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import router.relay
from router.relay import build

SUFFIX = EXTENSION_SUFFIXES[0]


@pytest.mark.skipif(
    os.environ.get("TIDEPOOL_RELAY_BUILD", "auto") not in ("compiled", "pure"),
    reason="TIDEPOOL_RELAY_BUILD names no build to expect",
)
def test_the_build_asked_for_is_the_one_loaded() -> None:
    assert router.relay.BUILD == os.environ["TIDEPOOL_RELAY_BUILD"]


def test_the_build_reported_is_that_of_the_relay_module() -> None:
    compiled = build.CANARY in build.compiled_modules()
    assert router.relay.BUILD == ("compiled" if compiled else "pure")


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_a_source_newer_than_its_compiled_module_is_stale(tmp_path: Path) -> None:
    touch(tmp_path / f"router/relay/relay{SUFFIX}", 1000.0)
    source = touch(tmp_path / "router/relay/relay.py", 2000.0)
    touch(tmp_path / f"router/relay/h2core/connection{SUFFIX}", 2000.0)
    touch(tmp_path / "router/relay/h2core/connection.py", 1000.0)
    touch(tmp_path / f"router/table{SUFFIX}", 1000.0)
    table = touch(tmp_path / "router/table.py", 2000.0)
    names = ["router.relay.relay", "router.relay.h2core.connection", "router.table"]
    assert build.stale_sources(names, tmp_path) == [source, table]


def test_a_module_without_a_library_beside_it_is_never_stale(tmp_path: Path) -> None:
    touch(tmp_path / "router/relay/frames.py", 2000.0)
    assert build.stale_sources(["router.relay.frames"], tmp_path) == []
