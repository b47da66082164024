"""Clients given several registries (`--registry A,B`) use the next when one is down.

Real processes on loopback: two registry processes stand in for two replicas (each on
its own embedded store, so which one a client reached shows in what it sees), a port
that refuses connections stands in for a dead replica, and kill -9 makes one die.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.processes import RunningProcess, child_env, python_args
from tests.support.router_harness import (
    ENGINE_READY,
    REGISTRY_READY,
    ROUTER_READY,
    EngineSpec,
    RefusingPort,
    engine_args,
    http_json,
    metric,
    registry_args,
    router_args,
    scrape_metrics,
    start_all,
    stop_all,
    wait_routable,
)
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ALIAS = "zh-public"
CTL_TIMEOUT_S = 30.0
SWITCH_S = 5.0
"""Bound on a router's move to the other replica (it takes about a second)."""


def _put_alias(registry: RunningProcess) -> None:
    with grpc.insecure_channel(registry.grpc) as channel:
        alias = pb.Alias(name=ALIAS, selector="lang=zh")
        pb_grpc.AdminStub(channel).PutAlias(pb.PutAliasRequest(alias=alias), timeout=5)


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[list[RunningProcess]]:
    """Two registries (A and B), each with the alias."""
    started: list[RunningProcess] = []
    try:
        registries = start_all(
            started,
            [registry_args(tmp_path / "a"), registry_args(tmp_path / "b")],
            REGISTRY_READY,
        )
        for registry in registries:
            _put_alias(registry)
        yield registries
    finally:
        stop_all(started)


@pytest.fixture
def replicas(
    registries: list[RunningProcess],
) -> Iterator[tuple[list[RunningProcess], list[RunningProcess]]]:
    """The two registries, each with one echo engine of its own (e-a, e-b)."""
    started: list[RunningProcess] = []
    try:
        specs = [EngineSpec(f"e-{n}", {"lang": "zh"}) for n in ("a", "b")]
        engines = start_all(
            started,
            [engine_args(r.grpc, s) for r, s in zip(registries, specs, strict=True)],
            ENGINE_READY,
        )
        yield registries, engines
    finally:
        stop_all(started[::-1])


def _resolved_id(router: RunningProcess) -> str:
    status, body = http_json(router.http, f"/v1/resolve?alias={ALIAS}")
    assert status == 200, body
    return str(body["instance"]["id"])


def test_a_router_watches_the_next_replica_when_the_first_is_down(
    tmp_path: Path, replicas: tuple[list[RunningProcess], list[RunningProcess]]
) -> None:
    (_, registry_b), _ = replicas
    started: list[RunningProcess] = []
    with RefusingPort() as dead:
        try:
            (router,) = start_all(
                started,
                [router_args(f"{dead.address},{registry_b.grpc}", tmp_path / "view.json")],
                ROUTER_READY,
            )
            wait_routable(router, ALIAS, 1)
            assert _resolved_id(router) == "e-b"
        finally:
            stop_all(started)


def test_a_router_moves_to_the_other_replica_when_its_replica_is_killed(
    tmp_path: Path, replicas: tuple[list[RunningProcess], list[RunningProcess]]
) -> None:
    (registry_a, registry_b), _ = replicas
    started: list[RunningProcess] = []
    try:
        (router,) = start_all(
            started,
            [router_args(f"{registry_a.grpc},{registry_b.grpc}", tmp_path / "view.json")],
            ROUTER_READY,
        )
        wait_routable(router, ALIAS, 1)
        assert _resolved_id(router) == "e-a"
        registry_a.kill()
        killed_at = time.monotonic()
        deadline = killed_at + SWITCH_S
        while _resolved_id(router) != "e-b":
            assert time.monotonic() < deadline, (
                f"the router still routes on replica A's view {SWITCH_S} s after A died\n"
                + router.describe("router")
            )
            time.sleep(0.05)
        connected = metric(scrape_metrics(router.http), "tidepool_router_watch_connected")
        assert connected == 1, "the router's watch is not up on replica B"
    finally:
        stop_all(started)


def _ctl(registry: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_args("tidepool.cli", "ctl", "--registry", registry, *args),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT_S,
        check=False,
    )


def test_ctl_uses_the_next_replica_and_names_every_one_when_none_answers(
    replicas: tuple[list[RunningProcess], list[RunningProcess]],
) -> None:
    (_, registry_b), _ = replicas
    with RefusingPort() as dead, RefusingPort() as dead_too:
        listed = _ctl(f"{dead.address},{registry_b.grpc}", "instances", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert [i["id"] for i in json.loads(listed.stdout)] == ["e-b"]
        assert f"warning: listed without {dead.address}" in listed.stderr, listed.stderr

        failed = _ctl(f"{dead.address},{dead_too.address}", "instances")
        assert failed.returncode == 1
        assert "UNAVAILABLE" in failed.stderr, failed.stderr
        assert dead_too.address in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


def _ready_ids(registry: RunningProcess) -> list[str]:
    with grpc.insecure_channel(registry.grpc) as channel:
        listed = pb_grpc.RegistryStub(channel).ListInstances(pb.ListInstancesRequest(), timeout=5)
    return [i.id for i in listed.instances if i.state == pb.INSTANCE_STATE_READY]


def _wait_ready_on(registry: RunningProcess, engine: RunningProcess, bound_s: float) -> float:
    """Seconds until the engine is `ready` on `registry`; fails after `bound_s`."""
    started = time.monotonic()
    while "e-1" not in _ready_ids(registry):
        elapsed = time.monotonic() - started
        assert elapsed < bound_s, (
            f"the engine is not ready on {registry.grpc} after {bound_s} s\n"
            + engine.describe("engine")
        )
        time.sleep(0.02)
    return time.monotonic() - started


def test_an_engine_registers_with_the_next_replica_when_the_first_is_down(
    registries: list[RunningProcess],
) -> None:
    _, registry_b = registries
    started: list[RunningProcess] = []
    with RefusingPort() as dead:
        try:
            spec = EngineSpec("e-1", {"lang": "zh"})
            (engine,) = start_all(
                started, [engine_args(f"{dead.address},{registry_b.grpc}", spec)], ENGINE_READY
            )
            _wait_ready_on(registry_b, engine, SWITCH_S)
        finally:
            stop_all(started)


def test_an_engine_attaches_to_the_other_replica_when_its_replica_is_killed(
    registries: list[RunningProcess],
) -> None:
    registry_a, registry_b = registries
    started: list[RunningProcess] = []
    try:
        spec = EngineSpec("e-1", {"lang": "zh"})
        (engine,) = start_all(
            started, [engine_args(f"{registry_a.grpc},{registry_b.grpc}", spec)], ENGINE_READY
        )
        _wait_ready_on(registry_a, engine, SWITCH_S)
        assert "e-1" not in _ready_ids(registry_b)
        registry_a.kill()
        took = _wait_ready_on(registry_b, engine, SWITCH_S)
        print(f"engine ready on replica B {took:.2f} s after replica A was killed")
    finally:
        stop_all(started)
