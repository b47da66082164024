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
CLIENT_PACKAGES = ("registry.sdk", "registry.client")
"""The registry's client side: the engine SDK and what routers, ctl and the scheduler share."""
SHARED = (RUNTIME, *GENERATED)


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


def _under(path: Path, package: str) -> bool:
    return path.is_relative_to(ROOT / package.replace(".", "/"))


def _is_public_client_api(name: str) -> bool:
    """The engine SDK and the registry-client package are used through their __init__ only."""
    return name in CLIENT_PACKAGES


@pytest.mark.parametrize("package", ["router", "engine_stub", "scheduler", "tidepool/ctl"])
def test_clients_of_the_registry_import_only_the_client_api_the_runtime_and_the_protocol(
    package: str,
) -> None:
    own = (package.replace("/", "."),)
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _project_imports(path)
        if not (_allowed(name, (*own, *SHARED)) or name in CLIENT_PACKAGES)
    }
    assert not bad, sorted(bad)


def test_nothing_outside_them_imports_a_submodule_of_the_sdk_or_the_client_package() -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for package in PROJECT
        if (ROOT / package).is_dir()
        for path in _modules(package)
        if not any(_under(path, pkg) for pkg in CLIENT_PACKAGES)
        for name in _project_imports(path)
        if any(name.startswith(pkg + ".") for pkg in CLIENT_PACKAGES)
    }
    assert not bad, sorted(bad)


def test_sdk_and_client_package_never_import_the_registry_server_side() -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for pkg in CLIENT_PACKAGES
        for path in _modules(pkg.replace(".", "/"))
        for name in _project_imports(path)
        if not _allowed(name, (*CLIENT_PACKAGES, RUNTIME, *GENERATED))
    }
    assert not bad, sorted(bad)


def test_the_engine_sdk_does_not_depend_on_the_registry_client_package() -> None:
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("registry/sdk")
        for name in _project_imports(path)
        if _allowed(name, ("registry.client",))
    }
    assert not bad, sorted(bad)


def test_registry_imports_only_itself_the_runtime_and_the_protocol() -> None:
    # etcd's own protocol: only registry replicas (and the scheduler's lease there) talk to etcd.
    allowed = ("registry", RUNTIME, *GENERATED, "tidepool.etcd.v3")
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
