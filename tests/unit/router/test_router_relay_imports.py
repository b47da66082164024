"""The relay's modules import one way, and its HTTP/2 core is sans-IO.

`stream` and `limits` never import `connection` (no cycle between the two);
the core (`router.relay.h2core`) and the timer module import nothing that does
I/O or reads a clock, and the core nothing of the transport around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RELAY = ROOT / "router" / "relay"
CORE = sorted((RELAY / "h2core").glob("*.py"))
IO = {"asyncio", "socket", "ssl", "selectors", "time", "uvloop", "grpc", "threading"}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):  # TYPE_CHECKING blocks too: a cycle for the type checker
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["stream", "limits", "frames"])
def test_a_leaf_of_the_relay_does_not_import_the_connection(module: str) -> None:
    assert "router.relay.connection" not in imported(RELAY / f"{module}.py")


def test_limits_import_nothing_of_the_project() -> None:
    names = imported(RELAY / "limits.py")
    assert not {name for name in names if name.startswith(("router", "registry"))}


def imported_names(path: Path) -> set[str]:
    """Full names: `from a.b import c` is `a.b.c` (a module or a name of `a.b`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", CORE, ids=[path.name for path in CORE])
def test_the_http2_core_does_no_io_and_knows_nothing_of_its_transport(path: Path) -> None:
    names = imported_names(path)
    assert not {name for name in names if name.split(".")[0] in IO}, "I/O or a clock in the core"
    allowed = ("router.relay.h2core", "router.relay.frames", "router.relay.limits")
    project = {name for name in names if name.startswith(("router", "registry", "tidepool"))}
    assert {name for name in project if not name.startswith(allowed)} == set()


def test_the_core_modules_are_found() -> None:
    assert {path.name for path in CORE} >= {"connection.py", "state.py", "flow.py", "events.py"}
