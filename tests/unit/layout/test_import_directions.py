"""The import directions of STYLE.md §2, checked on the source text (no imports executed)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROJECT = ("registry", "router", "engine_stub", "scheduler", "tidepool", "loadtest")
RUNTIME = "tidepool.runtime"
GENERATED = ("tidepool.registry.v1", "tidepool.engine.v1")


def _modules(package: str) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if "_pb2" not in path.name:
            yield path


def _project_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PROJECT}


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", ["router", "engine_stub", "scheduler"])
def test_clients_of_the_registry_import_only_the_sdk_the_runtime_and_the_protocol(
    package: str,
) -> None:
    allowed = (package, "registry.sdk", RUNTIME, *GENERATED)
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _project_imports(path)
        if not _allowed(name, allowed)
    }
    assert not bad, sorted(bad)


def test_sdk_never_imports_the_registry_server_side() -> None:
    allowed = ("registry.sdk", RUNTIME, *GENERATED)
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("registry/sdk")
        for name in _project_imports(path)
        if not _allowed(name, allowed)
    }
    assert not bad, sorted(bad)


def test_registry_imports_only_itself_the_runtime_and_the_protocol() -> None:
    allowed = ("registry", RUNTIME, *GENERATED)
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("registry")
        for name in _project_imports(path)
        if not _allowed(name, allowed)
    }
    assert not bad, sorted(bad)


def test_nothing_imports_the_command_dispatcher() -> None:
    importers = {
        str(path.relative_to(ROOT))
        for package in PROJECT
        if (ROOT / package).is_dir()
        for path in _modules(package)
        if "tidepool.cli" in _project_imports(path) and path.name != "__main__.py"
    }
    assert not importers, sorted(importers)


def test_the_runtime_package_is_a_leaf() -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("tidepool/runtime")
        for name in _project_imports(path)
        if not _allowed(name, (RUNTIME,))
    }
    assert not bad, sorted(bad)


def test_the_day_simulator_may_use_the_scheduler_policy_but_nothing_imports_loadtest() -> None:
    importers = {
        str(path.relative_to(ROOT))
        for package in ("registry", "router", "engine_stub", "scheduler")
        for path in _modules(package)
        if any(name.split(".")[0] == "loadtest" for name in _project_imports(path))
    }
    assert not importers, sorted(importers)
