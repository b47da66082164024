"""Token checks on every method of a real registry, and that a refused call changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.registry_harness import Clients, clients, registration, running_registry
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

ENGINE, READ, ADMIN = "engine-secret", "read-secret", "admin-secret"
TOKENS = {
    "heartbeat_interval_s": 1.0,
    "ttl_s": 30.0,
    "restart_grace_s": 30.0,
    "engine_token": ENGINE,
    "read_token": READ,
    "admin_token": ADMIN,
}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

Call = Callable[[Clients], Awaitable[object]]


async def _heartbeat(c: Clients) -> object:
    call = c.registry.Heartbeat(metadata=c.md)
    await call.write(pb.HeartbeatRequest(instance_id="e-0", secret=c.secrets.get("e-0", "")))
    ack = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    return ack


async def _watch(c: Clients) -> object:
    call = c.registry.Watch(pb.WatchRequest(service="speech"), metadata=c.md)
    event = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    return event


# Each call, if it were allowed, would change (or read) state seeded by _seed.
ENGINE_CALLS: dict[str, Call] = {
    "Register": lambda c: c.registry.Register(registration(9001, instance_id="e-1"), metadata=c.md),
    "Heartbeat": _heartbeat,
    "Deregister": lambda c: c.registry.Deregister(
        pb.DeregisterRequest(instance_id="e-0"), metadata=c.md
    ),
}
READ_CALLS: dict[str, Call] = {
    "Watch": _watch,
    "Resolve": lambda c: c.registry.Resolve(pb.ResolveRequest(alias="zh"), metadata=c.md),
    "ResolveTenant": lambda c: c.registry.Resolve(
        pb.ResolveRequest(tenant="acme", lang="zh"), metadata=c.md
    ),
    "ListInstances": lambda c: c.registry.ListInstances(pb.ListInstancesRequest(), metadata=c.md),
    "ListAliases": lambda c: c.registry.ListAliases(pb.ListAliasesRequest(), metadata=c.md),
    "ListTenants": lambda c: c.registry.ListTenants(pb.ListTenantsRequest(), metadata=c.md),
}
ADMIN_CALLS: dict[str, Call] = {
    "SetWeight": lambda c: c.admin.SetWeight(
        pb.SetWeightRequest(instance_id="e-0", weight=5), metadata=c.md
    ),
    "Drain": lambda c: c.admin.Drain(pb.DrainRequest(instance_id="e-0"), metadata=c.md),
    "Restore": lambda c: c.admin.Restore(pb.RestoreRequest(instance_id="e-0"), metadata=c.md),
    "SetLabels": lambda c: c.admin.SetLabels(
        pb.SetLabelsRequest(instance_id="e-0", set={"pool": "stolen"}), metadata=c.md
    ),
    "PutAlias": lambda c: c.admin.PutAlias(
        pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="pool=stolen")), metadata=c.md
    ),
    "PutTenant": lambda c: c.admin.PutTenant(
        pb.PutTenantRequest(route=pb.TenantRoute(tenant="evil", lang="zh", aliases=["zh"])),
        metadata=c.md,
    ),
    "DeleteTenant": lambda c: c.admin.DeleteTenant(
        pb.DeleteTenantRequest(tenant="acme", lang="zh"), metadata=c.md
    ),
    "DeleteAlias": lambda c: c.admin.DeleteAlias(
        pb.DeleteAliasRequest(name="spare"), metadata=c.md
    ),
    # Needs an attached stream to succeed, but the token check comes first.
    "SendDirective": lambda c: c.admin.SendDirective(
        pb.SendDirectiveRequest(
            instance_id="e-0", directive=pb.Directive(kind=pb.Directive.KIND_DRAIN)
        ),
        metadata=c.md,
    ),
}
ALL_CALLS = {**ENGINE_CALLS, **READ_CALLS, **ADMIN_CALLS}


async def _seed(c: Clients) -> None:
    admin = c.with_token(ADMIN)
    await admin.registry.Register(registration(9000, instance_id="e-0"), metadata=admin.md)
    for name, selector in (("zh", "lang=zh"), ("spare", "lang=en")):
        request = pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector))
        await admin.admin.PutAlias(request, metadata=admin.md)
    route = pb.TenantRoute(tenant="acme", lang="zh", aliases=["zh"])
    await admin.admin.PutTenant(pb.PutTenantRequest(route=route), metadata=admin.md)


async def _state(c: Clients) -> tuple[Any, ...]:
    admin = c.with_token(ADMIN)
    instances = await admin.registry.ListInstances(pb.ListInstancesRequest(), metadata=admin.md)
    return (
        instances,
        await admin.registry.ListAliases(pb.ListAliasesRequest(), metadata=admin.md),
        await admin.registry.ListTenants(pb.ListTenantsRequest(), metadata=admin.md),
    )


async def _code_of(call: Call, c: Clients) -> grpc.StatusCode:
    try:
        await call(c)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _expect_refused(
    c: Clients, token: str | None, calls: dict[str, Call], code: grpc.StatusCode
) -> None:
    before = await _state(c)
    caller = c.with_token(token)
    codes = {name: await _code_of(call, caller) for name, call in calls.items()}
    assert codes == dict.fromkeys(calls, code)
    assert await _state(c) == before, "a refused call changed the registry"


async def test_missing_token_is_unauthenticated_on_every_method(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        await _expect_refused(c, None, ALL_CALLS, UNAUTHENTICATED)


async def test_wrong_token_is_unauthenticated_on_every_method(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        await _expect_refused(c, "guessed-secret", ALL_CALLS, UNAUTHENTICATED)


async def test_engine_token_cannot_read_or_administer(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        await _expect_refused(c, ENGINE, {**READ_CALLS, **ADMIN_CALLS}, DENIED)


async def test_read_token_cannot_register_heartbeat_or_administer(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        await _expect_refused(c, READ, {**ENGINE_CALLS, **ADMIN_CALLS}, DENIED)


async def test_read_token_can_watch_resolve_and_list(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        reader = c.with_token(READ)
        codes = {name: await _code_of(call, reader) for name, call in READ_CALLS.items()}
        assert codes == dict.fromkeys(READ_CALLS, grpc.StatusCode.OK)
        resolved = await reader.registry.Resolve(pb.ResolveRequest(alias="zh"), metadata=reader.md)
        assert [i.id for i in resolved.instances] == ["e-0"]


async def test_engine_token_can_register_heartbeat_and_deregister(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        engine = c.with_token(ENGINE)
        codes = {name: await _code_of(call, engine) for name, call in ENGINE_CALLS.items()}
        assert codes == dict.fromkeys(ENGINE_CALLS, grpc.StatusCode.OK)
        (instance,) = (await _state(c))[0].instances
        assert instance.id == "e-1"  # e-1 registered, e-0 deregistered


async def test_admin_token_can_do_everything(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        admin = c.with_token(ADMIN)
        # SendDirective needs an open heartbeat stream, so it gets one here.
        call = admin.registry.Heartbeat(metadata=admin.md)
        await call.write(pb.HeartbeatRequest(instance_id="e-0", secret=c.secrets.get("e-0", "")))
        await asyncio.wait_for(call.read(), 5)
        for name in (*READ_CALLS, "SendDirective"):
            assert await _code_of(ALL_CALLS[name], admin) == grpc.StatusCode.OK, name
        directive = await asyncio.wait_for(call.read(), 5)
        assert directive.directive.kind == pb.Directive.KIND_DRAIN
        for name in (*ADMIN_CALLS, *ENGINE_CALLS):
            assert await _code_of(ALL_CALLS[name], admin) == grpc.StatusCode.OK, name
        call.cancel()
        instances, aliases, tenants = await _state(c)
        assert [i.id for i in instances.instances] == ["e-1"]
        assert [(a.name, a.selector) for a in aliases.aliases] == [("zh", "pool=stolen")]
        assert [t.tenant for t in tenants.tenants] == ["evil"]


async def test_token_must_be_sent_as_a_bearer_credential(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        await _seed(c)
        for metadata in ((("authorization", ADMIN),), (("x-token", f"Bearer {ADMIN}"),)):
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await c.registry.ListAliases(pb.ListAliasesRequest(), metadata=metadata)
            assert excinfo.value.code() == UNAUTHENTICATED
