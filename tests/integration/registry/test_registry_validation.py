"""Bad input against a real registry: the right status, the field named, nothing half-applied."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.registry_harness import (
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call
    return excinfo.value


async def _state(c: Clients) -> tuple[Any, ...]:
    """Everything a caller can see; a refused request must leave all of it as it was."""
    instances = await c.registry.ListInstances(pb.ListInstancesRequest())
    for instance in instances.instances:  # what heartbeats alone move
        instance.ClearField("load")
        instance.ClearField("last_heartbeat_at")
    return (
        instances,
        await c.registry.ListAliases(pb.ListAliasesRequest()),
        await c.registry.ListTenants(pb.ListTenantsRequest()),
    )


async def _seed(c: Clients) -> None:
    await c.registry.Register(registration(9000, instance_id="e-0"))
    await c.admin.PutAlias(pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="lang=zh")))
    route = pb.TenantRoute(tenant="acme", lang="zh", aliases=["zh"])
    await c.admin.PutTenant(pb.PutTenantRequest(route=route))


def _labels(count: int) -> dict[str, str]:
    return {f"k{n}": "v" for n in range(count)}


def _case_id(changes: dict[str, Any]) -> str:
    (name, value), *_ = changes.items()
    shown = f"{len(value)} labels" if isinstance(value, dict) and len(value) > 2 else value
    return f"{name}={shown}"


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"service": "Speech_Pool"}, "service", "must be 1 to 63 characters"),
        ({"service": ""}, "service", "must be 1 to 63 characters"),
        ({"instance_id": "-e1"}, "instance_id", "must be 1 to 128 characters"),
        ({"instance_id": "e/1"}, "instance_id", "must be 1 to 128 characters"),
        ({"address": "localhost:9001"}, "address", "not a host name"),
        ({"address": "0x7f000001:9001"}, "address", "no integer, hex"),
        ({"address": "2130706433:9001"}, "address", "no integer, hex"),
        ({"address": "0177.0.0.1:9001"}, "address", "leading zero"),
        ({"address": "0.0.0.0:9001"}, "address", "unspecified"),
        ({"address": "[::]:9001"}, "address", "unspecified"),
        ({"address": "169.254.10.1:9001"}, "address", "link-local"),
        ({"address": "[fe80::1]:9001"}, "address", "link-local"),
        ({"address": "224.0.0.1:9001"}, "address", "multicast"),
        ({"address": "127.0.0.1"}, "address", "must include a port"),
        ({"address": "127.0.0.1:0"}, "address", "port must be"),
        ({"address": "127.0.0.1:65536"}, "address", "port must be"),
        ({"weight": 1001}, "weight", "from 0 to 1000, got 1001"),
        ({"capacity": 0}, "capacity", "from 1 to 4096, got 0"),
        ({"capacity": 4097}, "capacity", "from 1 to 4096, got 4097"),
        ({"labels": _labels(33)}, "labels", "at most 32 entries"),
        ({"labels": {"Lang": "zh"}}, "labels", 'key "Lang" must be'),
        ({"labels": {"lang": "zh cn"}}, 'labels["lang"]', "must be 1 to 63 characters"),
        ({"labels": {"lang": ""}}, 'labels["lang"]', "must be 1 to 63 characters"),
        ({"labels": {"lang": "zh|en"}}, 'labels["lang"]', "must be 1 to 63 characters"),
    ],
    ids=lambda value: _case_id(value) if isinstance(value, dict) else None,
)
async def test_malformed_registration_is_invalid_argument_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], field: str, rule: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        error = await _refused(c.registry.Register(registration(9001, **changes)))
        assert error.code() == INVALID
        details = error.details() or ""
        assert details.startswith(f"{field}: "), details
        assert rule in details
        assert await _state(c) == before


async def test_refused_re_registration_leaves_the_instance_as_it_was(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        # Every field but one is a valid update; the one bad field sinks the whole request.
        bad = registration(9000, instance_id="e-0", weight=7, labels={"lang": "en", "Bad": "x"})
        error = await _refused(c.registry.Register(bad))
        assert error.code() == INVALID
        assert await _state(c) == before


async def test_address_that_is_not_the_callers_is_permission_denied(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        # Only a string: no traffic goes to 10.0.0.1.
        request = registration(9001, instance_id="rogue", address="10.0.0.1:80")
        error = await _refused(c.registry.Register(request))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (error.details() or "").startswith("address: 10.0.0.1 is not the caller's")
        assert await _state(c) == before


async def test_healthy_instance_keeps_its_address_against_a_newcomer(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        error = await _refused(c.registry.Register(registration(9000, instance_id="e-9")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (error.details() or "").startswith("address: ")
        assert await _state(c) == before


def _put_alias(selector: str, name: str = "zh2") -> pb.PutAliasRequest:
    return pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector))


def _put_route(*aliases: str, tenant: str = "acme", lang: str = "zh") -> pb.PutTenantRequest:
    return pb.PutTenantRequest(route=pb.TenantRoute(tenant=tenant, lang=lang, aliases=aliases))


def _directive(kind: int, model: str = "") -> pb.SendDirectiveRequest:
    directive = pb.Directive(kind=kind, model=model)  # type: ignore[arg-type]
    return pb.SendDirectiveRequest(instance_id="e-0", directive=directive)


PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
BAD_ADMIN_INPUT = [
    pytest.param(pb.SetWeightRequest(instance_id="e-0", weight=1001), INVALID, "weight",
                 id="weight-over-1000"),
    pytest.param(pb.SetWeightRequest(instance_id="bad id", weight=5), INVALID, "instance_id",
                 id="weight-bad-instance-id"),
    pytest.param(pb.SetLabelsRequest(instance_id="e-0", set={"pool": "a", "tier": "no way"}),
                 INVALID, 'set["tier"]', id="labels-one-bad-value"),
    pytest.param(pb.SetLabelsRequest(instance_id="e-0", set={"Pool": "a"}), INVALID, "set",
                 id="labels-bad-key"),
    pytest.param(pb.SetLabelsRequest(instance_id="e-0", set=_labels(31)), INVALID, "set",
                 id="labels-over-32-in-all"),
    pytest.param(pb.SetLabelsRequest(instance_id="e-0", set={"pool": "a"}, remove=["pool"]),
                 INVALID, "remove", id="labels-set-and-removed"),
    pytest.param(pb.SetLabelsRequest(instance_id="e-0", remove=["No Key"]), INVALID,
                 "remove[0]", id="labels-remove-bad-key"),
    pytest.param(_directive(pb.Directive.KIND_UNSPECIFIED), INVALID, "directive.kind",
                 id="directive-no-kind"),
    pytest.param(_directive(pb.Directive.KIND_SWITCH_MODEL, "Chinese"), INVALID,
                 "directive.model", id="directive-bad-model"),
    pytest.param(_directive(pb.Directive.KIND_DRAIN), PRECONDITION, "instance_id",
                 id="directive-without-stream"),
    pytest.param(_put_alias("lang=zh", name="Zh_Pool"), INVALID, "alias.name",
                 id="alias-bad-name"),
    pytest.param(_put_alias("lang"), INVALID, "alias.selector", id="selector-no-value"),
    pytest.param(_put_alias(""), INVALID, "alias.selector", id="selector-empty"),
    pytest.param(_put_alias("lang=zh,,tier=idc"), INVALID, "alias.selector",
                 id="selector-empty-term"),
    pytest.param(_put_alias("lang=zh|zh"), INVALID, "alias.selector",
                 id="selector-repeated-value"),
    pytest.param(_put_alias("lang=zh,lang=en"), INVALID, "alias.selector",
                 id="selector-repeated-key"),
    pytest.param(_put_alias("lang=", name="zh"), INVALID, "alias.selector",
                 id="selector-replacing-existing-alias"),
    pytest.param(_put_route("zh", "missing"), PRECONDITION, "route.aliases[1]",
                 id="route-names-missing-alias"),
    pytest.param(_put_route(), INVALID, "route.aliases", id="route-no-aliases"),
    pytest.param(_put_route("zh", "zh"), INVALID, "route.aliases", id="route-repeats-alias"),
    pytest.param(_put_route("zh", lang="ZH"), INVALID, "route.lang", id="route-bad-lang"),
    pytest.param(_put_route("zh", tenant="Acme!"), INVALID, "route.tenant",
                 id="route-bad-tenant"),
    pytest.param(pb.DeleteAliasRequest(name="zh"), PRECONDITION, "name",
                 id="delete-alias-in-use"),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "code", "field"), BAD_ADMIN_INPUT)
async def test_bad_admin_input_is_refused_naming_the_field_and_changes_nothing(
    tmp_path: Path, request_: Any, code: grpc.StatusCode, field: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        method = getattr(c.admin, type(request_).__name__.removesuffix("Request"))
        error = await _refused(method(request_))
        assert error.code() == code, error.details()
        details = error.details() or ""
        assert details.startswith(f"{field}: "), details
        assert await _state(c) == before


@pytest.mark.parametrize(
    "request_",
    [
        pb.SetWeightRequest(instance_id="ghost", weight=5),
        pb.DrainRequest(instance_id="ghost"),
        pb.RestoreRequest(instance_id="ghost"),
        pb.SetLabelsRequest(instance_id="ghost", set={"pool": "a"}),
        pb.SendDirectiveRequest(
            instance_id="ghost", directive=pb.Directive(kind=pb.Directive.KIND_DRAIN)
        ),
        pb.DeleteAliasRequest(name="ghost"),
        pb.DeleteTenantRequest(tenant="ghost", lang="zh"),
    ],
    ids=lambda request: type(request).__name__,
)
async def test_admin_change_to_something_unknown_is_not_found(
    tmp_path: Path, request_: Any
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        before = await _state(c)
        method = getattr(c.admin, type(request_).__name__.removesuffix("Request"))
        error = await _refused(method(request_))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "ghost" in (error.details() or "")
        assert await _state(c) == before


async def test_deregistering_an_unknown_instance_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        error = await _refused(c.registry.Deregister(pb.DeregisterRequest(instance_id="ghost")))
        assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ResolveRequest(), "alias"),
        (pb.ResolveRequest(tenant="acme"), "alias"),
        (pb.ResolveRequest(alias="Zh Pool"), "alias"),
        (pb.ResolveRequest(tenant="acme", lang="Chinese"), "lang"),
        (pb.ListInstancesRequest(service="No_Such"), "service"),
    ],
)
async def test_bad_read_request_is_invalid_argument(
    tmp_path: Path, request_: Any, field: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        method = getattr(c.registry, type(request_).__name__.removesuffix("Request"))
        error = await _refused(method(request_))
        assert error.code() == INVALID
        assert (error.details() or "").startswith(f"{field}: ")


async def test_watch_of_a_malformed_service_is_invalid_argument(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        call = c.registry.Watch(pb.WatchRequest(service="Not A Name"))
        error = await _refused(asyncio.wait_for(call.read(), 2))
        assert error.code() == INVALID
        assert (error.details() or "").startswith("service: ")


async def test_huge_message_is_resource_exhausted_and_others_are_still_served(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        engine = RawEngine(c, "e-0")
        await engine.attach()
        before = await _state(c)
        huge = registration(9001, instance_id="huge", labels={"lang": "x" * (2 * 1024 * 1024)})
        error = await _refused(c.registry.Register(huge))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The same channel, an open heartbeat stream and new callers all still work.
        await engine.beat()
        assert await _state(c) == before
        response = await c.registry.Register(registration(9002, instance_id="e-2"))
        assert response.instance.state == pb.INSTANCE_STATE_READY
        assert engine.call.done() is False
        engine.break_stream()


async def test_registrations_beyond_the_rate_limit_are_resource_exhausted(
    tmp_path: Path,
) -> None:
    settings = {**STEADY, "register_rate": 0.01, "register_burst": 2}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        await c.registry.Register(registration(9002, instance_id="e-2"))
        before = await _state(c)
        error = await _refused(c.registry.Register(registration(9003, instance_id="e-3")))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many registrations" in (error.details() or "")
        assert await _state(c) == before
        # Only registration is limited: everything else carries on.
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=3))


async def test_heartbeat_stream_silent_after_opening_is_deadline_exceeded(
    tmp_path: Path,
) -> None:
    settings = {**STEADY, "first_message_timeout_s": 0.2}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        call = c.registry.Heartbeat()
        started = time.monotonic()
        error = await _refused(asyncio.wait_for(call.read(), 5))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started >= 0.15, "dropped before the first-message timeout"
        assert server.core.attachments == {}


@pytest.mark.parametrize(
    ("instance_id", "code"),
    [("ghost", grpc.StatusCode.NOT_FOUND), ("not valid", INVALID), ("", INVALID)],
)
async def test_heartbeat_for_an_unknown_or_malformed_instance_is_refused(
    tmp_path: Path, instance_id: str, code: grpc.StatusCode
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        call = c.registry.Heartbeat()
        await call.write(pb.HeartbeatRequest(instance_id=instance_id))
        error = await _refused(asyncio.wait_for(call.read(), 5))
        assert error.code() == code
        assert server.core.attachments == {}
