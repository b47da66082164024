"""ConsulApi without sockets: methods, tokens, datacenter, blocking and waiter budgets."""

from __future__ import annotations

import asyncio
import json

import pytest

from registry.auth import TokenAuth
from registry.catalog import Catalog
from registry.config import RegistryConfig
from registry.consul_http import ConsulApi, WaiterBudget
from registry.errors import RateLimitedError
from registry.lease import LeaseConfig, LeaseTable
from registry.records import InstanceRecord, frozen_labels
from registry.server import parser
from tidepool.runtime.options import ConfigError
from tidepool.runtime.status_http import HttpRequest, HttpResponse


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _api(**changes: object) -> ConsulApi:
    catalog = Catalog(LeaseTable(LeaseConfig(ttl_s=3.0, stall_after_s=5.0)))
    catalog.revision = 1
    settings: dict[str, object] = {"auth": TokenAuth(read_token="r"), "clock": FakeClock()}
    settings.update(changes)
    return ConsulApi(catalog, **settings)  # type: ignore[arg-type]


def _get(path: str, query: str = "token=r", method: str = "GET") -> HttpRequest:
    return HttpRequest(method, path, query, {}, "10.0.0.9")


def _add(api: ConsulApi, instance_id: str) -> None:
    record = InstanceRecord(
        instance_id, "speech", "10.0.0.1:9000", 100, 1, frozen_labels({"lang": "zh"}), 0.0
    )
    api.catalog.leases.grant(instance_id, 0.0)
    api.observe(api.catalog.put(record, 0.0, 0.0))


def _header(response: HttpResponse, name: str) -> str:
    return dict(response.headers)[name]


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
async def test_every_write_is_405_and_says_to_use_tidepools_api(method: str) -> None:
    response = await _api().handle(_get("/v1/catalog/register", method=method))
    assert response.status == "405 Method Not Allowed"
    assert b"read-only" in response.body
    assert b"tidepool ctl" in response.body


async def test_no_token_is_403_saying_how_to_send_one() -> None:
    response = await _api().handle(_get("/v1/catalog/services", query=""))
    assert response.status == "403 Forbidden"
    assert response.body.startswith(b"Permission denied")
    assert b"X-Consul-Token" in response.body


async def test_answers_carry_the_revision_as_x_consul_index() -> None:
    api = _api()
    _add(api, "e-1")
    response = await api.handle(_get("/v1/catalog/services"))
    assert response.status == "200 OK"
    assert json.loads(response.body) == {"speech": ["lang=zh"]}
    assert _header(response, "X-Consul-Index") == str(api.catalog.revision)
    assert _header(response, "X-Consul-LastContact") == "0"


async def test_another_datacenter_is_refused_in_consuls_words() -> None:
    response = await _api().handle(_get("/v1/catalog/services", "token=r&dc=eu"))
    assert (response.status, response.body) == (
        "500 Internal Server Error",
        b"No path to datacenter\n",
    )


async def test_unknown_service_is_an_empty_list_like_consul() -> None:
    response = await _api().handle(_get("/v1/health/service/nope"))
    assert (response.status, json.loads(response.body)) == ("200 OK", [])


async def test_a_blocked_query_wakes_on_the_next_change_only() -> None:
    api = _api()
    index = api.catalog.revision
    blocked = asyncio.create_task(
        api.handle(_get("/v1/catalog/services", f"token=r&index={index}"))
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()
    assert api.waiters.held == {"10.0.0.9": 1}
    _add(api, "e-1")
    response = await asyncio.wait_for(blocked, 1)
    assert int(_header(response, "X-Consul-Index")) > index
    assert api.waiters.held == {}


async def test_a_stale_index_is_answered_without_waiting() -> None:
    api = _api()
    _add(api, "e-1")
    response = await asyncio.wait_for(
        api.handle(_get("/v1/catalog/services", "token=r&index=1")), 1
    )
    assert response.status == "200 OK"


def test_waiter_budget_caps_per_client_and_in_total() -> None:
    budget = WaiterBudget(per_client=2, total=3)
    budget.acquire("a")
    budget.acquire("a")
    with pytest.raises(RateLimitedError, match="client a already holds 2"):
        budget.acquire("a")
    budget.acquire("b")
    with pytest.raises(RateLimitedError, match="already holds 3 blocking queries"):
        budget.acquire("c")
    budget.release("a")
    budget.acquire("c")
    assert budget.held == {"a": 1, "b": 1, "c": 1}


async def test_over_budget_is_429() -> None:
    api = _api(max_waiters_per_client=1)
    query = f"token=r&index={api.catalog.revision}"
    blocked = asyncio.create_task(api.handle(_get("/v1/catalog/services", query)))
    for _ in range(5):
        await asyncio.sleep(0)
    refused = await api.handle(_get("/v1/catalog/services", query))
    assert refused.status == "429 Too Many Requests"
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert api.waiters.held == {}


def test_config_refuses_a_zero_waiter_budget_and_a_bad_datacenter() -> None:
    with pytest.raises(ConfigError, match="consul-max-waiters"):
        RegistryConfig(consul_max_waiters_per_client=0)
    with pytest.raises(ConfigError, match="consul-max-waiters"):
        RegistryConfig(consul_max_waiters=0)
    namespace = parser().parse_args(["--consul-datacenter", "eu west"])
    with pytest.raises(ConfigError, match="consul"):
        RegistryConfig.from_args(namespace, {})
    env = {"TIDEPOOL_REGISTRY_CONSUL_DATACENTER": "eu-west"}
    assert RegistryConfig.from_args(parser().parse_args([]), env).consul_datacenter == "eu-west"
