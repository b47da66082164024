"""Wrong `--registry` addresses get a hint, and the `tidepool` command's own flags.

A registry, an engine stub and a router run as processes on 127.0.0.1; ctl is
pointed at each wrong port in turn and must say what it found there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fleet_harness import READ_TOKEN, EngineSpec, Fleet, tidepool_args
from tests.support.processes import REPO_ROOT, child_env

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

RUN_TIMEOUT_S = 30.0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tidepool_args(*args),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )


@dataclass(frozen=True)
class Ports:
    """Every port of a small fleet that is not the registry's gRPC port."""

    router: str
    router_http: str
    engine: str
    registry_http: str


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    with Fleet(Path(tmp_path_factory.mktemp("fleet"))) as fleet:
        registry = fleet.start_registry()
        [engine] = fleet.start_engines(EngineSpec("zh-1", pool="zh-public"))
        router = fleet.start_router()
        yield Ports(router.grpc, router.http, engine.grpc, registry.http)


def _hint(address: str, *flags: str) -> str:
    done = _run("ctl", "instances", *flags, "--registry", address, "--token", READ_TOKEN)
    assert done.returncode == 1, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"tidepool ctl: {address} is not a tidepool registry (it is ")
    return lines[0]


def test_a_router_is_named(ports: Ports) -> None:
    assert "(it is a tidepool router" in _hint(ports.router)


def test_an_engine_is_named(ports: Ports) -> None:
    assert "(it is a tidepool engine" in _hint(ports.engine)


@pytest.mark.parametrize("which", ["registry_http", "router_http"])
def test_an_http_port_is_named(ports: Ports, which: str) -> None:
    hint = _hint(getattr(ports, which))
    assert "(it is an HTTP port, probably a /metrics or status port" in hint


def test_watch_gets_the_same_hint(ports: Ports) -> None:
    assert "(it is a tidepool router" in _hint(ports.router, "--watch")


def test_nothing_listening_is_unavailable_not_a_hint() -> None:
    done = _run("ctl", "instances", "--registry", "127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.startswith("tidepool ctl: UNAVAILABLE: cannot reach the registry at")


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("tidepool ")
    assert done.stdout.split()[1][0].isdigit()


def test_router_help_lists_serve_and_serve_help_groups_flags() -> None:
    done = _run("router", "--help")
    assert done.returncode == 0
    assert "  serve " in done.stdout
    serve = _run("router", "serve", "--help")
    assert serve.returncode == 0
    for group in ("listening:", "registry:", "balancing:", "ejection:", "retries:",
                  "deadlines:", "TLS:", "process:"):  # fmt: skip
        assert f"\n{group}\n" in serve.stdout
    assert "{wrr,least-loaded}" in serve.stdout
    assert "{grpc,relay}" in serve.stdout
