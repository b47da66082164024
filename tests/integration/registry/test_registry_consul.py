"""The registry's Consul-compatible API, read by the real `consul` client (py-consul) and
by raw HTTP the way Prometheus's and consul-template's Go client asks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import consul
import httpx
import pytest

from registry.consul import METRICS_SERVICE
from registry.server import RegistryServer
from tests.support.registry_harness import (
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

ENGINE, READ, ADMIN = "engine-token", "read-token", "admin-token"
SETTINGS: dict[str, Any] = {
    "heartbeat_interval_s": 1.0,
    "ttl_s": 30.0,
    "restart_grace_s": 30.0,
    "engine_token": ENGINE,
    "read_token": READ,
    "admin_token": ADMIN,
}
ZH = {"lang": "zh", "tier": "idc", "pool": "zh-public", "metrics_port": "9101"}
EN = {"lang": "en", "tier": "cvm", "pool": "en-public", "metrics_port": "9102"}


def consul_client(server: RegistryServer, token: str | None = READ) -> consul.Consul:
    host, port = server.http_address.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[RegistryServer, Clients]]:
    """A registry with two attached engines, zh-1 (weight 60) and en-1 (weight 100)."""
    async with (
        running_registry(tmp_path, **{**SETTINGS, **settings}) as server,
        clients(server, ADMIN) as c,
    ):
        await c.registry.Register(
            registration(9001, instance_id="zh-1", weight=60, labels=ZH), metadata=c.md
        )
        await c.registry.Register(registration(9002, instance_id="en-1", labels=EN), metadata=c.md)
        engines = [RawEngine(c, "zh-1"), RawEngine(c, "en-1")]
        for engine in engines:
            await engine.attach()
        try:
            yield server, c
        finally:
            for engine in engines:
                engine.break_stream()


async def test_py_consul_lists_services_with_their_tags(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (server, _c):
        index, services = await asyncio.to_thread(consul_client(server).catalog.services)
    assert int(index) >= 1
    assert services == {
        "speech": sorted(
            ["lang=en", "lang=zh", "pool=en-public", "pool=zh-public", "tier=cvm", "tier=idc"]
        ),
        METRICS_SERVICE: sorted(
            [
                "lang=en",
                "lang=zh",
                "pool=en-public",
                "pool=zh-public",
                "service=speech",
                "tier=cvm",
                "tier=idc",
            ]
        ),
    }


async def test_py_consul_reads_instances_with_address_tags_meta_and_weight(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path) as (server, _c):
        _index, nodes = await asyncio.to_thread(
            consul_client(server).catalog.service, "speech", tag="pool=zh-public"
        )
        _index, metrics = await asyncio.to_thread(
            consul_client(server).catalog.service, METRICS_SERVICE
        )
    assert len(nodes) == 1
    zh = nodes[0]
    assert (zh["Node"], zh["ServiceID"], zh["ServiceName"]) == ("zh-1", "zh-1", "speech")
    assert (zh["ServiceAddress"], zh["ServicePort"], zh["Address"]) == (
        "127.0.0.1",
        9001,
        "127.0.0.1",
    )
    assert zh["ServiceTags"] == ["pool=zh-public", "lang=zh", "tier=idc"]
    assert zh["ServiceMeta"] == ZH
    assert zh["ServiceWeights"] == {"Passing": 60, "Warning": 0}
    assert zh["Datacenter"] == "dc1"
    assert sorted((m["ServiceID"], m["ServicePort"]) for m in metrics) == [
        ("en-1-metrics", 9102),
        ("zh-1-metrics", 9101),
    ]


async def test_py_consul_healthy_instances_are_the_ready_ones(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (server, c):
        await c.admin.Drain(pb.DrainRequest(instance_id="en-1"), metadata=c.md)
        client = consul_client(server)
        _i, passing = await asyncio.to_thread(client.health.service, "speech", passing=True)
        _i, everyone = await asyncio.to_thread(client.health.service, "speech")
        _i, english = await asyncio.to_thread(client.health.service, "speech", tag="lang=en")
        _i, none = await asyncio.to_thread(
            client.health.service, "speech", tag="lang=en", passing=True
        )
    assert [entry["Service"]["ID"] for entry in passing] == ["zh-1"]
    statuses = {e["Service"]["ID"]: [ch["Status"] for ch in e["Checks"]] for e in everyone}
    assert statuses == {"zh-1": ["passing"], "en-1": ["warning"]}
    drained = next(e for e in everyone if e["Service"]["ID"] == "en-1")
    assert drained["Service"]["Weights"] == {"Passing": 0, "Warning": 0}
    assert drained["Checks"][0]["Output"] == "tidepool state: draining"
    assert drained["Node"]["Node"] == "en-1"
    assert [e["Service"]["ID"] for e in english] == ["en-1"]
    assert none == []


async def test_blocking_query_returns_as_soon_as_an_engine_is_drained(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (server, c):
        client = consul_client(server)
        index, before = await asyncio.to_thread(client.health.service, "speech", passing=True)
        assert len(before) == 2
        started = time.monotonic()
        blocked = asyncio.create_task(
            asyncio.to_thread(
                client.health.service, "speech", passing=True, index=index, wait="20s"
            )
        )
        await wait_for(
            lambda: server.consul.waiters.held, 5, "the blocking query never started waiting"
        )
        assert not blocked.done()
        await c.admin.Drain(pb.DrainRequest(instance_id="zh-1"), metadata=c.md)
        new_index, after = await asyncio.wait_for(blocked, 10)
    assert time.monotonic() - started < 5, "the drain did not wake the blocking query"
    assert int(new_index) > int(index)
    assert [entry["Service"]["ID"] for entry in after] == ["en-1"]


async def test_blocking_query_without_a_change_returns_the_same_index_after_wait(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path) as (server, _c):
        client = consul_client(server)
        index, _services = await asyncio.to_thread(client.catalog.services)
        started = time.monotonic()
        again, _services = await asyncio.to_thread(client.catalog.services, index=index, wait="1s")
    assert again == index
    assert 0.9 <= time.monotonic() - started < 5


async def test_an_index_from_before_a_restart_is_answered_at_once(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (server, _c):
        client = consul_client(server)
        index, _ = await asyncio.to_thread(client.catalog.services)
        started = time.monotonic()
        fresh, _ = await asyncio.to_thread(
            client.catalog.services, index=str(int(index) + 1000), wait="10s"
        )
    assert fresh == index
    assert time.monotonic() - started < 2


async def test_reads_need_the_read_token_by_header_or_query(tmp_path: Path) -> None:
    async with (
        fleet(tmp_path) as (server, _c),
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        with pytest.raises(consul.ACLPermissionDenied, match="read"):
            await asyncio.to_thread(consul_client(server, token=None).catalog.services)
        with pytest.raises(consul.ACLPermissionDenied):
            await asyncio.to_thread(consul_client(server, token=ENGINE).catalog.services)
        by_admin = await asyncio.to_thread(consul_client(server, token=ADMIN).catalog.services)
        by_query = await http.get("/v1/catalog/services", params={"token": READ})
        by_header = await http.get("/v1/health/service/speech", headers={"X-Consul-Token": READ})
        wrong = await http.get("/v1/catalog/services", params={"token": "nope"})
    assert METRICS_SERVICE in by_admin[1]
    assert by_query.status_code == 200
    assert by_query.headers["content-type"] == "application/json"
    assert by_header.status_code == 200
    assert len(by_header.json()) == 2
    assert wrong.status_code == 403
    assert "X-Consul-Token" in wrong.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/catalog/register"),
        ("PUT", "/v1/agent/service/register"),
        ("PUT", "/v1/catalog/deregister"),
        ("DELETE", "/v1/kv/anything"),
        ("POST", "/v1/catalog/services"),
    ],
)
async def test_writes_answer_405_pointing_at_tidepools_own_api(
    tmp_path: Path, method: str, path: str
) -> None:
    async with (
        fleet(tmp_path) as (server, _c),
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        response = await http.request(
            method, path, content=b'{"Node": "rogue"}', headers={"X-Consul-Token": ADMIN}
        )
        services = await http.get("/v1/catalog/services", headers={"X-Consul-Token": READ})
    assert response.status_code == 405
    assert "read-only" in response.text
    assert "tidepool ctl" in response.text
    assert "rogue" not in services.text


async def test_go_client_style_discovery_prometheus_consul_sd_sends(tmp_path: Path) -> None:
    """The requests Prometheus's consul_sd makes (agent/self for the datacenter, then a
    blocking health query with ?dc, ?stale and a millisecond wait) and the headers its
    Go client insists on (X-Consul-Index, X-Consul-LastContact, X-Consul-KnownLeader)."""
    headers = {"X-Consul-Token": READ}
    async with (
        fleet(tmp_path) as (server, c),
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=10) as http,
    ):
        agent = await http.get("/v1/agent/self", headers=headers)
        dc = agent.json()["Config"]["Datacenter"]
        first = await http.get(
            f"/v1/health/service/{METRICS_SERVICE}", params={"dc": dc}, headers=headers
        )
        index = first.headers["X-Consul-Index"]
        params = {"dc": dc, "stale": "", "index": index, "wait": "120000ms"}
        waiting = asyncio.create_task(
            http.get(f"/v1/health/service/{METRICS_SERVICE}", params=params, headers=headers)
        )
        await wait_for(lambda: server.consul.waiters.held, 5, "the query never blocked")
        await c.registry.Deregister(pb.DeregisterRequest(instance_id="en-1"), metadata=c.md)
        woken = await asyncio.wait_for(waiting, 5)
        elsewhere = await http.get("/v1/catalog/services", params={"dc": "dc2"}, headers=headers)
    assert agent.status_code == 200
    assert dc == "dc1"
    for response in (first, woken):
        assert response.status_code == 200
        assert int(response.headers["X-Consul-Index"]) >= 1
        assert response.headers["X-Consul-LastContact"] == "0"
        assert response.headers["X-Consul-KnownLeader"] == "true"
    assert int(woken.headers["X-Consul-Index"]) > int(index)
    assert [e["Service"]["ID"] for e in woken.json()] == ["zh-1-metrics"]
    assert (elsewhere.status_code, elsewhere.text) == (500, "No path to datacenter\n")


async def test_waiters_are_capped_per_client_and_a_hangup_frees_the_slot(
    tmp_path: Path,
) -> None:
    async with (
        fleet(tmp_path, consul_max_waiters_per_client=1) as (server, _c),
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=10) as http,
    ):
        params = {"token": READ}
        index = (await http.get("/v1/catalog/services", params=params)).headers["X-Consul-Index"]
        blocking = {"token": READ, "index": index, "wait": "30s"}
        first = asyncio.create_task(http.get("/v1/catalog/services", params=blocking))
        await wait_for(lambda: server.consul.waiters.held, 5, "the first query never blocked")
        refused = await http.get("/v1/catalog/services", params=blocking)
        assert refused.status_code == 429
        assert "blocking queries" in refused.text
        first.cancel()  # the client hangs up: its slot must come back before the wait ends
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await wait_for(
            lambda: not server.consul.waiters.held, 5, "a hung-up query kept its waiter slot"
        )
        second = asyncio.create_task(http.get("/v1/catalog/services", params=blocking))
        await wait_for(lambda: server.consul.waiters.held, 5, "the second query never blocked")
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second


async def test_stopping_the_registry_ends_blocked_queries(tmp_path: Path) -> None:
    async with fleet(tmp_path) as (server, _c):
        client = consul_client(server)
        index, _ = await asyncio.to_thread(client.catalog.services)
        blocked = asyncio.create_task(
            asyncio.to_thread(client.catalog.services, index=index, wait="60s")
        )
        await wait_for(lambda: server.consul.waiters.held, 5, "the query never blocked")
        started = time.monotonic()
        await server.status.stop()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the connection just closes
            await asyncio.wait_for(blocked, 10)
    assert time.monotonic() - started < 5


async def test_malformed_queries_answer_400_naming_the_parameter(tmp_path: Path) -> None:
    async with (
        fleet(tmp_path) as (server, _c),
        httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=5) as http,
    ):
        bad_index = await http.get("/v1/catalog/services", params={"token": READ, "index": "x"})
        bad_wait = await http.get(
            "/v1/catalog/services", params={"token": READ, "index": "1", "wait": "soon"}
        )
        unknown = await http.get("/v1/kv/foo", params={"token": READ})
    assert bad_index.status_code == 400
    assert bad_index.text.startswith("index:")
    assert bad_wait.status_code == 400
    assert bad_wait.text.startswith("wait:")
    assert unknown.status_code == 404
    assert "/v1/health/service/<name>" in unknown.text


async def test_open_roles_are_one_warning_naming_risk_and_flags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from registry import server as registry_server

    registry_server._warned_open.clear()
    with caplog.at_level(logging.WARNING, logger="tidepool.registry"):
        async with running_registry(tmp_path / "a", read_token=READ):
            pass
        async with running_registry(tmp_path / "b", read_token=READ):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert "engine/admin" in warning
    assert "--engine-token, --admin-token" in warning
    assert "TIDEPOOL_REGISTRY_ENGINE_TOKEN" in warning
    assert "take traffic" in warning
    assert "--read-token" not in warning
