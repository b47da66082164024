"""The relay's modules import one way: `stream` and `limits` never import `connection`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[3] / "router" / "relay"


def imported(module: str) -> set[str]:
    tree = ast.parse((RELAY / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):  # TYPE_CHECKING blocks too: a cycle for the type checker
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["stream", "limits", "frames"])
def test_a_leaf_of_the_relay_does_not_import_the_connection(module: str) -> None:
    assert "router.relay.connection" not in imported(module)


def test_limits_import_nothing_of_the_project() -> None:
    assert not {name for name in imported("limits") if name.startswith(("router", "registry"))}
