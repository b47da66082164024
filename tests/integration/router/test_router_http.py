"""The router's HTTP side (probes, /v1/resolve, /metrics) and its gRPC health service.

One registry, one echo engine and one router (processes, loopback) serve the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.processes import wait_until
from tests.support.router_harness import (
    UNARY,
    EchoStack,
    EngineSpec,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
    http_get,
    http_json,
    metric,
    scrape_metrics,
)

pytestmark = pytest.mark.timeout(30)

ENGINE = "http-e1"
LEAVER = "http-leaver"
LABELS = {"lang": "en", "tier": "cvm"}
SPEC = StackSpec(
    engines=[EngineSpec(ENGINE, LABELS, weight=70), EngineSpec(LEAVER, {"lang": "de"})],
    aliases={"echo-en": "lang=en", "empty": "lang=fr", "leaving": "lang=de"},
    tenants={("acme", "en"): ["echo-en"]},
    routers=each_data_path(),
)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    """One stack, one router per data path."""
    with echo_stack(tmp_path_factory.mktemp("http"), SPEC) as running:
        yield running


def test_probes_answer_ok_once_the_router_has_a_view(stack: EchoStack) -> None:
    router = stack.router().http
    assert http_get(router, "/healthz")[0] == 200
    status, body = http_get(router, "/readyz")
    assert status == 200, body


@pytest.mark.parametrize(
    "query", ["alias=echo-en", "tenant=acme&lang=en"], ids=["alias", "tenant-and-lang"]
)
def test_resolve_names_the_instance_a_call_would_go_to(stack: EchoStack, query: str) -> None:
    status, body = http_json(stack.router().http, f"/v1/resolve?{query}")
    assert status == 200, body
    assert body == {
        "alias": "echo-en",
        "instance": {
            "id": ENGINE,
            "address": stack.engines[ENGINE].grpc,
            "weight": 70,
            "labels": LABELS,
        },
    }


@pytest.mark.parametrize(
    ("query", "status", "code", "message"),
    [
        ("alias=nope", 404, "NOT_FOUND", "x-tidepool-alias: unknown alias 'nope'"),
        (
            "",
            400,
            "INVALID_ARGUMENT",
            "missing routing key: set x-tidepool-alias, or x-tidepool-tenant and x-tidepool-lang",
        ),
        (
            "tenant=acme",
            400,
            "INVALID_ARGUMENT",
            "x-tidepool-lang: required with x-tidepool-tenant",
        ),
        ("alias=empty", 503, "UNAVAILABLE", "no healthy instance in alias 'empty'"),
    ],
    ids=["unknown-alias", "no-key", "tenant-without-lang", "alias-without-instances"],
)
def test_resolve_errors_are_json_with_a_status_that_means_what_it_says(
    stack: EchoStack, query: str, status: int, code: str, message: str
) -> None:
    got, body = http_json(stack.router().http, f"/v1/resolve?{query}")
    assert (got, body) == (status, {"error": message, "code": code})


async def test_metrics_count_requests_by_alias_instance_and_code(
    stack: EchoStack, channel: grpc.aio.Channel
) -> None:
    labels = {"alias": "echo-en", "engine": ENGINE, "code": "OK"}
    before = metric(await stack.metrics_async(), "tidepool_router_requests_total", **labels)
    for _ in range(3):
        await channel.unary_unary(UNARY)(b"count me", metadata=alias_key("echo-en"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(UNARY)(b"lost", metadata=alias_key("nope"), timeout=5)
    samples = await stack.metrics_async()
    assert metric(samples, "tidepool_router_requests_total", **labels) == before + 3
    assert metric(samples, "tidepool_router_errors_total", code="NOT_FOUND") >= 1
    assert metric(samples, "tidepool_router_endpoints", alias="echo-en", state="routable") == 1
    text = (await asyncio.to_thread(http_get, stack.router().http, "/metrics"))[1]
    assert "# HELP tidepool_router_requests_total" in text


async def test_grpc_health_check_answers_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_an_instance_that_stopped_gracefully_is_no_longer_resolved(stacks: EchoStack) -> None:
    # Not per data path: the engine can leave once; every router must see it go.
    routers = [stacks.router(name).http for name in stacks.routers]
    for router in routers:
        status, body = http_json(router, "/v1/resolve?alias=leaving")
        assert (status, body["instance"]["id"]) == (200, LEAVER)
    leaver = stacks.engines[LEAVER]
    leaver.terminate()  # SIGTERM: drain, deregister, exit
    assert leaver.wait(timeout_s=10) == 0, leaver.describe("the engine did not stop cleanly")

    def state(router: str) -> str:
        samples = scrape_metrics(router)
        return (
            f"/v1/resolve answers {http_get(router, '/v1/resolve?alias=leaving')}, "
            f"last_resort={metric(samples, 'tidepool_router_last_resort', alias='leaving'):g}"
        )

    # A deregistration is final: the pool empties rather than keep a gone engine as
    # its last resort, and the router says so instead of naming a closed address.
    for router in routers:
        wait_until(
            lambda r=router: http_get(r, "/v1/resolve?alias=leaving")[0] == 503,  # type: ignore[misc]
            3.0,
            lambda r=router: f"{r} still routes to {LEAVER} after it deregistered: {state(r)}",  # type: ignore[misc]
        )
