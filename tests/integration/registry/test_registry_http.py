"""The registry's HTTP status endpoint: probes, Prometheus metrics, and nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.registry_harness import RawEngine, clients, registration, running_registry
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}


async def test_health_and_readiness_probes_answer_200(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path, **STEADY) as server,
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        healthz = await http.get("/healthz")
        readyz = await http.get("/readyz")
        assert (healthz.status_code, healthz.text) == (200, "ok\n")
        assert (readyz.status_code, readyz.text) == (200, "ready\n")


async def test_metrics_count_instances_by_state_and_heartbeats(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path, **STEADY) as server,
        clients(server) as c,
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.registry.Register(registration(9002, instance_id="e-2"))
        await c.admin.Drain(pb.DrainRequest(instance_id="e-2"))
        engine = RawEngine(c, "e-1")
        await engine.attach()  # its first beat is counted before it is acknowledged
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        lines = response.text.splitlines()
        assert 'tidepool_registry_instances{state="ready",tier="idc"} 1.0' in lines
        assert 'tidepool_registry_instances{state="draining",tier="idc"} 1.0' in lines
        assert 'tidepool_registry_instances{state="unhealthy",tier="idc"} 0.0' in lines
        assert "tidepool_registry_heartbeats_total 1.0" in lines
        assert "tidepool_registry_registrations_total 2.0" in lines
        engine.break_stream()


async def test_unknown_path_is_404(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path, **STEADY) as server,
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        response = await http.get("/admin")
        assert response.status_code == 404


async def test_only_get_is_served(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path, **STEADY) as server,
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        response = await http.post("/healthz", content=b"x")
        assert response.status_code == 405
